"""The lexer and parser of the Go ``text/template`` subset ``gotemplate.py`` executes: source text to
a tree of literal text and ``{{…}}`` blocks (fields, literals, function calls, pipelines, if/range/with).
Errors are :class:`_Fail` with Go's messages; ``gotemplate.render`` positions them."""

from __future__ import annotations

import math
import re
from typing import NoReturn, TypeAlias

from msgspec import Struct

from mirror.cli.govalues import _FUNCS, _go_quote

_SPACE = (" ", "\t", "\r", "\n")
_KEYWORDS = frozenset("if else end range with break continue define template block".split())
_ACTION = re.compile(
    r"""(?P<space>[ \t\r\n]+)
    |(?P<number>[-+]?(?:0[xXoObB][0-9a-fA-F_]+|(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9_]+)?))
    |(?P<field>(?:\.[^\W\d]\w*)+)|(?P<var>\$\w*(?:\.[^\W\d]\w*)*)|(?P<dot>\.)
    |(?P<string>"(?:[^"\\\n]|\\.)*")|(?P<raw>`[^`]*`)|(?P<char>'(?:[^'\\\n]|\\[^\n][^'\n]*)')
    |(?P<decl>:=)|(?P<assign>=)|(?P<pipe>\|)|(?P<lparen>\()|(?P<rparen>\))|(?P<comma>,)
    |(?P<ident>[^\W\d]\w*)""",
    re.VERBOSE,
)
_ESCAPE = re.compile(r"\\(?:([abfnrtv\\'\"])|x([0-9a-fA-F]{2})|([0-7]{3})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|)")
_C_ESC = dict(zip("abfnrtv", "\a\b\f\n\r\t\v", strict=True))


class _Fail(Exception):
    """A parse error (``node`` is None) or an execution error at ``node`` (its source text)."""

    def __init__(self, pos: int, msg: str, node: str | None = None) -> None:
        super().__init__(msg)
        self.pos, self.msg, self.node = pos, msg, node


class _Tok(Struct, frozen=True):
    kind: str
    val: str
    pos: int


class _Field(Struct, frozen=True):  # ".A.B" and "." (var None), "$x.A" and "$"
    var: str | None
    chain: tuple[str, ...]
    pos: int
    text: str


class _Lit(Struct, frozen=True):
    value: object
    pos: int
    text: str


class _Func(Struct, frozen=True):
    name: str
    pos: int
    text: str


class _Sub(Struct, frozen=True):  # (pipeline).Chain
    pipe: _Pipe
    chain: tuple[str, ...]
    pos: int
    text: str


class _Cmd(Struct, frozen=True):
    args: tuple[_Arg, ...]
    pos: int
    text: str


class _Pipe(Struct, frozen=True):
    decl: tuple[str, ...]
    assign: bool
    cmds: tuple[_Cmd, ...]


class _Block(Struct, frozen=True):  # kind "" is a plain {{action}}; else "if", "range" or "with"
    kind: str
    pipe: _Pipe
    body: tuple[_Node, ...] = ()
    alt: tuple[_Node, ...] | None = None


_Arg: TypeAlias = _Field | _Lit | _Func | _Sub
_Node: TypeAlias = str | _Block  # str: literal text
_Where: TypeAlias = _Field | _Lit | _Func | _Cmd | _Sub


# ----------------------------------------------------------------------------------------------- lexing
def _right_delim(src: str, pos: int) -> tuple[int, bool] | None:
    """End of ``}}`` or `` -}}`` at ``pos``, and whether it trims the text after it."""
    if src.startswith("}}", pos):
        return pos + 2, False
    end = pos
    while src[end : end + 1] in _SPACE:
        end += 1
    return (end + 3, True) if end > pos and src.startswith("-}}", end) else None


def _lex_action(src: str, start: int, toks: list[_Tok]) -> tuple[int, bool]:
    pos = start + 2
    if src[pos : pos + 1] == "-" and src[pos + 1 : pos + 2] in _SPACE:
        pos += 2
    if src.startswith("/*", pos):
        close = src.find("*/", pos + 2)
        end = _right_delim(src, close + 2) if close >= 0 else None
        if end is None:
            raise _Fail(start, "unclosed comment" if close < 0 else "comment ends before closing delimiter")
        return end
    toks.append(_Tok("left", "", start))
    while (end := _right_delim(src, pos)) is None:
        if pos >= len(src):
            raise _Fail(pos, "unclosed action")
        found = _ACTION.match(src, pos)
        if found is None:
            char = src[pos]
            if what := {'"': "quoted string", "`": "raw quoted string", "'": "character constant"}.get(char):
                raise _Fail(pos, f"unterminated {what}")
            if " " < char < "\x7f":
                raise _Fail(pos, f"unexpected {_go_quote(char)} in operand")
            shown = f" '{char}'" if char.isprintable() else ""
            raise _Fail(pos, f"unrecognized character in action: U+{ord(char):04X}{shown}")
        kind = found.lastgroup or ""
        if kind == "number" and re.match(r"\w", src[found.end() : found.end() + 1]):
            raise _Fail(pos, f"bad number syntax: {_go_quote(src[pos : found.end() + 1])}")
        if kind != "space":
            toks.append(_Tok(kind, found.group(), pos))
        pos = found.end()
    toks.append(_Tok("right", "}}", pos))
    return end


def _lex(src: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos, trim = 0, False
    while True:
        start = src.find("{{", pos)
        text = src[pos : len(src) if start < 0 else start]
        text = text.lstrip("".join(_SPACE)) if trim else text
        if start >= 0 and src[start + 2 : start + 3] == "-" and src[start + 3 : start + 4] in _SPACE:
            text = text.rstrip("".join(_SPACE))
        if text:
            toks.append(_Tok("text", text, pos))
        if start < 0:
            return [*toks, _Tok("eof", "", len(src))]
        pos, trim = _lex_action(src, start, toks)


def _unquote(body: str, quote: str) -> str:
    def one(found: re.Match[str]) -> str:
        simple, hex2, octal, hex4, hex8 = found.groups()
        if simple and (simple not in "'\"" or simple == quote):
            return _C_ESC.get(simple, simple)
        code = int(octal, 8) if octal else int(hex2 or hex4 or hex8 or "-1", 16)
        if code < 0 or code > 0x10FFFF or 0xD800 <= code < 0xE000 or (octal and code > 255):
            raise ValueError(found.group())
        return chr(code)

    return _ESCAPE.sub(one, body)


def _literal(tok: _Tok) -> object:
    val = tok.val
    try:
        if tok.kind in ("string", "char"):
            text = _unquote(val[1:-1], val[0])
            if tok.kind == "char" and len(text) != 1:
                raise ValueError(val)
            return text if tok.kind == "string" else ord(text)
        if tok.kind == "raw":
            return val[1:-1].replace("\r", "")
        body, sign = val.lstrip("+-"), -1 if val.startswith("-") else 1
        if re.fullmatch(r"0[0-7_]+", body):
            return sign * int(body.replace("_", ""), 8)  # Go's legacy octal
        if body[:2].lower() not in ("0x", "0o", "0b") and re.search(r"[.eE]", body):
            if math.isinf(number := float(body)):
                raise ValueError(val)
            return sign * number
        return sign * int(body, 0)
    except ValueError:
        msg = f"bad number syntax: {_go_quote(val)}" if tok.kind == "number" else "invalid syntax"
        raise _Fail(tok.pos, msg) from None


# ---------------------------------------------------------------------------------------------- parsing
class _Parser:
    def __init__(self, src: str) -> None:
        self.src, self.toks, self.i, self.vars = src, _lex(src), 0, ["$"]

    def next(self) -> _Tok:
        self.i += 1
        return self.toks[self.i - 1]

    def peek(self, kind: str = "", val: str | None = None) -> bool:
        tok = self.toks[self.i]
        return tok.kind == kind and val in (None, tok.val)

    def fail(self, msg: str, tok: _Tok | None = None) -> NoReturn:
        raise _Fail((tok or self.toks[self.i]).pos, msg)

    def expect_right(self, context: str) -> None:
        if (tok := self.next()).kind != "right":
            self.fail(f"unexpected {_describe(tok)} in {context}", tok)

    def parse(self) -> tuple[_Node, ...]:
        nodes, stop = self.items()
        if stop.kind != "eof":
            self.fail(f"unexpected {{{{{stop.val}}}}}", stop)
        return nodes

    def items(self) -> tuple[tuple[_Node, ...], _Tok]:
        """Nodes up to EOF, {{end}} or {{else}} (returned as the stop token, its "}}" not consumed)."""
        nodes: list[_Node] = []
        while (tok := self.next()).kind != "eof":
            if tok.kind == "text":
                nodes.append(tok.val)
            elif self.peek("ident", "end") or self.peek("ident", "else"):
                return tuple(nodes), self.next()
            elif any(self.peek("ident", kw) for kw in ("if", "range", "with")):
                nodes.append(self.block(self.next().val))
            elif any(self.peek("ident", kw) for kw in ("define", "template", "block", "break", "continue")):
                self.fail(f"{{{{{self.toks[self.i].val}}}}} is not supported")
            else:
                nodes.append(_Block("", self.pipeline("command")))
        return tuple(nodes), tok

    def block(self, kind: str) -> _Block:
        mark = len(self.vars)
        pipe = self.pipeline(kind)
        body, stop = self.items()
        alt: tuple[_Node, ...] | None = None
        if stop.kind == "eof":
            self.fail("unexpected EOF", stop)
        if stop.val == "else" and kind != "range" and self.peek("ident", kind):
            alt = (self.block(self.next().val),)  # {{else if}} / {{else with}}: the inner block eats {{end}}
        elif stop.val == "else":
            self.expect_right("else")
            alt, stop = self.items()
            if stop.val != "end":
                self.fail("unexpected EOF" if stop.kind == "eof" else "expected end; found {{else}}", stop)
        if stop.val == "end":
            self.expect_right("end")
        del self.vars[mark:]
        return _Block(kind, pipe, body, alt)

    def declarations(self, context: str) -> tuple[tuple[str, ...], bool]:
        save, names = self.i, []
        while self.peek("var") and "." not in self.toks[self.i].val:
            names.append(self.next().val)
            if context != "range" or len(names) > 1 or not self.peek("comma"):
                break
            self.i += 1
        if not names or not (self.peek("decl") or self.peek("assign")):
            self.i = save
            return (), False
        if assign := self.next().kind == "assign":
            for name in names:
                if name not in self.vars:
                    self.fail(f'undefined variable "{name}"', self.toks[save])
        self.vars.extend(names)
        return tuple(names), assign

    def pipeline(self, context: str) -> _Pipe:
        decl, assign = self.declarations(context)
        cmds: list[_Cmd] = []
        while True:
            start, args = self.toks[self.i], list[_Arg]()
            while not (self.peek("pipe") or self.peek("right") or self.peek("rparen")):
                args.append(self.operand())
            if not args:
                self.fail(f"missing value for {context}" if not cmds else "missing command")
            if isinstance(args[0], _Lit) and args[0].text == "nil":
                self.fail("nil is not a command", start)
            dot = isinstance(args[0], _Field) and args[0].var is None and not args[0].chain
            if cmds and (dot or isinstance(args[0], _Lit)):
                self.fail(f"non executable command in pipeline stage {len(cmds) + 1}", start)
            last = self.toks[self.i - 1]
            cmds.append(_Cmd(tuple(args), start.pos, self.src[start.pos : last.pos + len(last.val)]))
            tok = self.next()
            if tok.kind == "right" and context == "parenthesized pipeline":
                self.fail("unclosed left paren", tok)
            if tok.kind == ("rparen" if context == "parenthesized pipeline" else "right"):
                return _Pipe(decl, assign, tuple(cmds))
            if tok.kind != "pipe":
                self.fail(f"unexpected {_describe(tok)} in {context}", tok)

    def operand(self) -> _Arg:
        tok = self.next()
        if tok.kind in ("field", "dot", "var"):
            head, *chain = [""] if tok.kind == "dot" else tok.val.split(".")
            if tok.kind == "var" and head not in self.vars:
                self.fail(f'undefined variable "{head}"', tok)
            # Go reports a chain at its second element ($x.A: at .A)
            offset = len(head) if head else len(chain[0]) + 1 if len(chain) > 1 else 0
            return _Field(head or None, tuple(chain), tok.pos + offset, tok.val)
        if tok.kind in ("number", "string", "raw", "char"):
            return _Lit(_literal(tok), tok.pos, tok.val)
        if tok.kind == "ident" and tok.val in ("true", "false", "nil"):
            return _Lit(None if tok.val == "nil" else tok.val == "true", tok.pos, tok.val)
        if tok.kind == "ident" and tok.val not in _KEYWORDS:
            if tok.val not in _FUNCS:
                self.fail(f'function "{tok.val}" not defined', tok)
            return _Func(tok.val, tok.pos, tok.val)
        if tok.kind != "lparen":
            self.fail(f"unexpected {_describe(tok)} in operand", tok)
        pipe, close = self.pipeline("parenthesized pipeline"), self.toks[self.i - 1]
        fields: tuple[str, ...] = ()
        if self.peek("field") and self.toks[self.i].pos == close.pos + 1:
            fields = tuple(self.next().val[1:].split("."))
        end = self.toks[self.i - 1]
        return _Sub(pipe, fields, tok.pos, self.src[tok.pos : end.pos + len(end.val)])


def _describe(tok: _Tok) -> str:
    return f"<{tok.val}>" if tok.kind == "ident" and tok.val in _KEYWORDS else _go_quote(tok.val)
