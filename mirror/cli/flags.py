"""argparse helpers that reproduce skopeo's (cobra/pflag) flag syntax."""

from __future__ import annotations

import argparse
import re
import sys

from mirror.errors import UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: mirror --help does not need it
if TYPE_CHECKING:
    from typing import Any, NoReturn

_TRUE = ("true", "True", "TRUE", "t", "T", "1")
_FALSE = ("false", "False", "FALSE", "f", "F", "0")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


_UNKNOWN_COMMAND = re.compile(r"argument COMMAND: invalid choice: '([^']*)'")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one-line UsageErrors (exit 1, like skopeo)."""

    _adding = False
    _checker: argparse.HelpFormatter | None = None

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        # argparse makes a help formatter (asking the terminal's size) for every argument added, only to
        # check its metavar: one formatter for all these checks takes half the time off building a parser.
        self._adding = True
        try:
            return super().add_argument(*args, **kwargs)
        finally:
            self._adding = False

    def _get_formatter(self) -> argparse.HelpFormatter:
        if not self._adding:  # help output: a fresh formatter, as argparse makes
            return super()._get_formatter()
        if self._checker is None:
            self._checker = super()._get_formatter()
        return self._checker

    def error(self, message: str) -> NoReturn:
        unknown = _UNKNOWN_COMMAND.match(message)
        if unknown:  # skopeo's (cobra's) words, on one line
            raise UsageError(f"Unrecognized command `{self.prog} {unknown.group(1)}`; "
                             f"try '{self.prog} --help' for more information")
        raise UsageError(f"{message} (see '{self.prog} --help')")


def add_bool(parser: argparse.ArgumentParser | argparse._ArgumentGroup, name: str, help_text: str,
             default: bool | None = None, dest: str | None = None, short: str | None = None) -> None:
    """A pflag-style boolean: ``--name`` means true, ``--name=false`` / ``--name=true`` also work."""
    dest = dest or name.lstrip("-").replace("-", "_")
    names = [name] + ([short] if short else [])
    parser.add_argument(*names, dest=dest, action="store_const", const=True, default=default, help=help_text)
    for value in _TRUE:
        parser.add_argument(f"{name}={value}", dest=dest, action="store_const", const=True,
                            help=argparse.SUPPRESS)
    for value in _FALSE:
        parser.add_argument(f"{name}={value}", dest=dest, action="store_const", const=False,
                            help=argparse.SUPPRESS)


def duration(text: str) -> float:
    """A Go duration (``90s``, ``1m30s``, ``500ms``) or plain seconds, in seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    pos = 0
    total = 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (use e.g. 30s, 1m30s)")
    return total


def stdin_secret() -> str:
    data = sys.stdin.read()
    return data.rstrip("\r\n")


def get(args: Any, name: str, default: Any = None) -> Any:
    value = getattr(args, name, default)
    return default if value is None else value


def size_arg(text: str) -> int:
    """``--chunk-size``: a byte size read by :func:`mirror.core.size.parse_size` (binary units)."""
    from mirror.core.size import CHUNK_SIZE_MAX, CHUNK_SIZE_MIN, SizeError, parse_size  # not for --help

    try:
        return parse_size(text, "--chunk-size", minimum=CHUNK_SIZE_MIN, maximum=CHUNK_SIZE_MAX)
    except SizeError as exc:
        raise argparse.ArgumentTypeError(exc.problem) from None


def artifact_type_arg(text: str) -> str:
    """``--referrers-artifact-type``: a media type (``type/subtype``)."""
    from mirror.core.referrers import valid_artifact_type  # not for --help: it imports the manifest model

    if not valid_artifact_type(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a media type (type/subtype, e.g. application/spdx+json)")
    return text


def add_referrer_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--referrers`` and ``--referrers-artifact-type`` (copy and sync)."""
    add_bool(parser, "--referrers", "also copy the OCI referrers of every image copied (signatures, SBOMs, "
             "attestations attached by subject, and theirs); docker:// only")
    parser.add_argument("--referrers-artifact-type", action="append", default=[], type=artifact_type_arg,
                        metavar="TYPE", dest="referrers_artifact_type",
                        help="with --referrers: only referrers of this artifact type (repeatable)")


def add_pairs_flags(p: argparse.ArgumentParser) -> None:
    """``copy --pairs FILE`` and the flags that go with it (mirror/cli/pairs.py runs them)."""
    p.add_argument("--pairs", metavar="FILE", help="copy every 'SOURCE-IMAGE DESTINATION-IMAGE' line of FILE ('-': "
                   "stdin; '#' comments) in this one process, the flags applying to each; one 'ok'/'failed' line "
                   "per pair; exit 0 if all copied, 3 if some failed, 2 or 1 if all did; --digestfile gets "
                   "'DIGEST DESTINATION' lines")
    p.add_argument("--jobs", type=int, metavar="N", help="with --pairs: pairs copied at once (default 8)")
    p.add_argument("--report", metavar="FILE", help="with --pairs: write one JSON record per pair to FILE")
