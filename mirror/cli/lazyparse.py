"""argparse subcommands whose parsers are built on first use.

``mirror copy ...`` builds the parser of ``copy`` only, and ``mirror --help`` none: building all twelve
took about as long as the rest of the start-up, and a command's flags may need helpers that import more.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Iterator

from mirror.cli.flags import Parser

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: mirror --help does not need it
if TYPE_CHECKING:
    from typing import Any


class _Listed(Exception):
    """Raised by :class:`LazyCommands` while it only lists a command: its name and one-line help."""


class _Parsers(dict[str, Parser]):
    """The subcommands' parsers by name, each built on first use: ``mirror copy`` builds (and imports the
    flag helpers of) ``copy``'s parser only. Every name is a key from the start (for argparse's choice
    check and ``--help``); reading a value, or iterating, builds it."""

    def __init__(self) -> None:
        super().__init__()
        self._builders: dict[str, Callable[[], object]] = {}

    def declare(self, name: str, build: Callable[[], object]) -> None:
        """``name``'s parser is made by ``build``, which hands it to :meth:`store`."""
        self._builders[name] = build
        super().__setitem__(name, None)  # type: ignore[assignment]  # a placeholder until built

    def store(self, name: str, parser: Parser) -> None:
        self._builders.pop(name, None)
        super().__setitem__(name, parser)

    def __getitem__(self, name: str) -> Parser:
        build = self._builders.pop(name, None)
        if build is not None:
            build()
        return super().__getitem__(name)

    def __iter__(self) -> Iterator[str]:  # also makes dict(parsers) read values through __getitem__
        return iter(list(self.keys()))

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in self else default

    def values(self) -> Any:
        return [self[name] for name in self]

    def items(self) -> Any:
        return [(name, self[name]) for name in self]


if TYPE_CHECKING:
    _SubParsersBase = argparse._SubParsersAction[Parser]
else:  # not subscriptable at run time
    _SubParsersBase = argparse._SubParsersAction


class LazyCommands(_SubParsersBase):
    """argparse's subcommands action, whose parsers :class:`_Parsers` builds on first use.

    A command's builder (``mirror.cli.main._copy``...) starts with ``sub.add_parser(name, help=...)``:
    to list it, the builder is called once with :meth:`add_parser` raising :class:`_Listed` there, so the
    name and help come from the one place they are written, and none of its flags are added."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._parsers = _Parsers()
        self._name_parser_map = self.choices = self._parsers
        self._listing = False

    def add_command(self, build: Callable[[argparse._SubParsersAction[Parser]], None]) -> None:
        self._listing = True
        try:
            build(self)
            raise AssertionError(f"{build.__name__} added no parser")
        except _Listed as listed:
            name, help_text = listed.args
        finally:
            self._listing = False
        self._choices_actions.append(self._ChoicesPseudoAction(name, (), help_text))
        self._parsers.declare(name, lambda: build(self))

    def add_parser(self, name: str, **kwargs: Any) -> Parser:
        help_text = kwargs.pop("help", None)
        if self._listing:
            raise _Listed(name, help_text)
        kwargs.setdefault("prog", f"{self._prog_prefix} {name}")
        parser: Parser = self._parser_class(**kwargs)
        self._parsers.store(name, parser)
        return parser


class LazyModule:
    """A command module imported only when one of its commands runs, so ``mirror --version`` and
    ``--help`` import no HTTP client: ``commands.inspect`` is a function that imports, then calls."""

    def __init__(self, module: str) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Callable[[argparse.Namespace], int]:
        def run(args: argparse.Namespace) -> int:
            result: int = getattr(importlib.import_module(self._module), name)(args)
            return result

        return run
