"""A small Go ``text/template`` renderer for ``mirror inspect --format`` (skopeo formats). Pure, no I/O.

Data is JSON-like (dicts, lists, str, int, float, bool, None) or objects whose attributes are read
(``.RepoTags`` also finds ``repo_tags``). A missing map key prints ``<no value>``; ``None`` behaves like
Go's nil map or nil pointer. Functions: Go's and, or, not, len, index, print, printf, println, eq, ne,
lt, le, gt, ge, and skopeo's (containers/common report) json, join, lower, upper, title, split, pad,
truncate. Not supported: define/template/block, break/continue, html/js/urlquery/slice/call, methods.
Every error is a :class:`UsageError` carrying Go's one-line message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import NoReturn

from mirror.cli.goparse import _Arg, _Block, _Fail, _Field, _Func, _Lit, _Node, _Parser, _Pipe, _Sub, _Where
from mirror.cli.govalues import (
    _FUNCS,
    MISSING,
    _fmt,
    _FuncError,
    _go_quote,
    _go_type,
    _items,
    _Sentinel,
    _truth,
)
from mirror.errors import UsageError

__all__ = ["normalize_format", "render"]


_NOARG: object = _Sentinel()  # no value piped into a command


class _Exec:
    def __init__(self, data: object) -> None:
        self.vars: list[tuple[str, object]] = [("$", data)]
        self.out: list[str] = []

    @staticmethod
    def fail(where: _Where, msg: str) -> NoReturn:
        raise _Fail(where.pos, msg, where.text)

    def walk(self, dot: object, nodes: Sequence[_Node]) -> None:
        for node in nodes:
            if isinstance(node, str):
                self.out.append(node)
                continue
            mark = len(self.vars)
            value = self.pipe(dot, node.pipe, declare=node.kind != "range")
            if node.kind == "":  # a plain action; its declarations outlive it
                if not node.pipe.decl:
                    self.out.append("<no value>" if value is None or value is MISSING else _fmt(value))
                continue
            if node.kind == "range":
                self.range(dot, node, value)
            elif _truth(value):
                self.walk(value if node.kind == "with" else dot, node.body)
            elif node.alt is not None:
                self.walk(dot, node.alt)
            del self.vars[mark:]

    def range(self, dot: object, node: _Block, value: object) -> None:
        items: list[tuple[object, object]] = []
        if isinstance(value, Mapping):
            items = _items(value)
        elif isinstance(value, list | tuple):
            items = list(enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            items = [(i, i) for i in range(value)]
        elif value is not None and value is not MISSING:
            self.fail(node.pipe.cmds[-1], f"range can't iterate over {_fmt(value)}")
        if not items and node.alt is not None:
            self.walk(dot, node.alt)
        mark, decl = len(self.vars), node.pipe.decl
        for key, elem in items:
            for name, val in zip(decl, (elem,) if len(decl) == 1 else (key, elem), strict=False):
                self.setvar(name, val, node.pipe.assign)
            self.walk(elem, node.body)
            del self.vars[mark:]

    def setvar(self, name: str, value: object, assign: bool) -> None:
        for i in range(len(self.vars) - 1, -1, -1) if assign else ():
            if self.vars[i][0] == name:
                self.vars[i] = (name, value)
                return
        self.vars.append((name, value))

    def pipe(self, dot: object, pipe: _Pipe, declare: bool = True) -> object:
        value = _NOARG
        for cmd in pipe.cmds:
            first = cmd.args[0]
            if isinstance(first, _Func):
                value = self.call(dot, first, cmd.args[1:], value, cmd)
            elif len(cmd.args) > 1 or value is not _NOARG:
                self.fail(first, f"can't give argument to non-function {first.text}")
            else:
                value = self.arg(dot, first)
        for name in pipe.decl if declare else ():
            self.setvar(name, value, pipe.assign)
        return value

    def arg(self, dot: object, arg: _Arg) -> object:
        if isinstance(arg, _Lit):
            return arg.value
        if isinstance(arg, _Func):
            return self.call(dot, arg, (), _NOARG, arg)
        if isinstance(arg, _Sub):
            value = self.pipe(dot, arg.pipe)
        elif arg.var is None:
            value = dot
        elif (value := next((v for n, v in reversed(self.vars) if n == arg.var), _NOARG)) is _NOARG:
            self.fail(arg, f"undefined variable: {arg.var}")
        for name in arg.chain:
            value = self.field(value, name, arg)
        return value

    def field(self, value: object, name: str, where: _Field | _Sub) -> object:
        if value is None or value is MISSING:
            return MISSING  # a nil map has no keys
        if isinstance(value, Mapping):
            return value.get(name, MISSING)
        if not isinstance(value, bool | int | float | str | bytes | list | tuple) and name[:1] != "_":
            for attr in (name, re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()):
                if (found := getattr(value, attr, _NOARG)) is not _NOARG and not callable(found):
                    return found
        self.fail(where, f"can't evaluate field {name} in type {_go_type(value)}")

    def call(self, dot: object, func: _Func, nodes: Sequence[_Arg], final: object, where: _Where) -> object:
        impl, low, high = _FUNCS[func.name]
        count = len(nodes) + (final is not _NOARG)
        if not low <= count <= high:
            want = f"at least {low}" if high > low else str(low)
            self.fail(func, f"wrong number of args for {func.name}: want {want} got {count}")

        def value_at(i: int) -> object:
            value = self.arg(dot, nodes[i]) if i < len(nodes) else final
            return None if value is MISSING else value

        if func.name in ("and", "or"):  # short-circuit: {{if and .A .A.B}}
            for i in range(count):
                if _truth(value := value_at(i)) != (func.name == "and"):
                    break
            return value
        try:
            return impl([value_at(i) for i in range(count)])
        except _FuncError as err:
            self.fail(where, str(err))


def _position(src: str, pos: int) -> tuple[int, int]:
    """Line (1-based) and byte column (0-based) of ``pos``, as Go reports them."""
    line_start = src.rfind("\n", 0, pos) + 1
    return src.count("\n", 0, pos) + 1, len(src[line_start:pos].encode("utf-8", "surrogatepass"))


def render(template: str, data: object, *, name: str = "") -> str:
    """Execute the Go template ``template`` on ``data``; every failure is a one-line UsageError.

    ``name`` appears in error messages as Go's template name does (``template: NAME:1: ...``).
    """
    try:
        executor = _Exec(data)
        executor.walk(data, _Parser(template).parse())
        return "".join(executor.out)
    except _Fail as err:
        line, col = _position(template, err.pos)
        where = f"{line}:{col}: executing {_go_quote(name)} at <{err.node}>" if err.node is not None else line
        message = f"template: {name}:{where}: {err.msg}"
    except RecursionError:
        message = f"template: {name}: nested too deeply"
    raise UsageError(message.replace("\r", "\\r").replace("\n", "\\n"))


def normalize_format(text: str) -> str:
    r"""skopeo's ``--format`` preprocessing: literal ``\t`` and ``\n`` become tab and newline, and the
    output ends with a newline. (skopeo also aligns tab-separated columns with a tabwriter.)"""
    text = text.replace(r"\t", "\t").replace(r"\n", "\n")
    return text if text.endswith("\n") else text + "\n"
