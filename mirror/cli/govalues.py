"""Go values for the template renderer: %v formatting, printf, json, truthiness, and the functions."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal

from msgspec import Struct
from msgspec.structs import fields


class _Sentinel:
    __slots__ = ()


MISSING: object = _Sentinel()  # a missing map key (Go's invalid reflect.Value); prints <no value>


class _FuncError(Exception):
    pass


_JSON_ESC = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
_VERB = re.compile(r"%([-+# 0]*)([0-9]*)(?:\.([0-9]*))?(.?)", re.DOTALL)


def _go_quote(text: str) -> str:
    """strconv.Quote."""
    out = []
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif char.isprintable():
            out.append(char)
        elif char in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(char)])
        else:
            out.append(f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


# ------------------------------------------------------------------------------------- values, fmt, json
def _go_type(value: object) -> str:
    if value is None or value is MISSING:
        return "<nil>"
    for typ, name in ((bool, "bool"), (int, "int"), (float, "float64"), (str, "string")):
        if isinstance(value, typ):
            return name
    if isinstance(value, Mapping):
        return "map[string]interface {}"
    return "[]interface {}" if isinstance(value, list | tuple) else type(value).__name__


def _go_float(number: float, json: bool = False) -> str:
    """strconv.FormatFloat(x, 'g', -1, 64) as fmt's %v prints it, or as encoding/json does."""
    if not math.isfinite(number):
        return "NaN" if math.isnan(number) else "+Inf" if number > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, number) < 0 else ""
    parts = Decimal(repr(abs(number))).as_tuple()
    digits = "".join(map(str, parts.digits)).rstrip("0") or "0"
    exp = len(parts.digits) - 1 + int(parts.exponent) if digits != "0" else 0
    if exp < (-6 if json else -4) or exp >= (21 if json else 6):
        width = "" if json and exp < 0 else "02"  # json writes e-7 where fmt writes e-07
        return f"{sign}{digits[0]}{'.' if digits[1:] else ''}{digits[1:]}e{'-' if exp < 0 else '+'}{abs(exp):{width}}"
    if exp < 0:
        return sign + "0." + "0" * (-exp - 1) + digits
    return sign + digits[: exp + 1].ljust(exp + 1, "0") + ("." + digits[exp + 1 :] if digits[exp + 1 :] else "")


def _items(value: Mapping[object, object]) -> list[tuple[object, object]]:
    """Map entries in Go's order: fmt and range sort map keys."""
    return sorted(value.items(), key=lambda item: (not isinstance(item[0], int | float), str(item[0])))


def _fmt(value: object) -> str:
    """Go's fmt %v."""
    if value is None or value is MISSING or isinstance(value, bool):
        return {None: "<nil>", MISSING: "<nil>", True: "true", False: "false"}[value]
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{_fmt(k)}:{_fmt(v)}" for k, v in _items(value)) + "]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(map(_fmt, value)) + "]"
    if isinstance(value, Struct):
        return "{" + " ".join(_fmt(getattr(value, f.name)) for f in fields(value)) + "}"
    return str(value)


def _json(value: object) -> str:
    """encoding/json, compact, without HTML escaping (as skopeo's json); map keys in the order given."""
    if value is None or value is MISSING or isinstance(value, bool):
        return {None: "null", MISSING: "null", True: "true", False: "false"}[value]
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("unsupported value")
        return _go_float(value, json=True)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{_json(str(k))}:{_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(map(_json, value)) + "]"
    if isinstance(value, Struct):
        return _json({f.name: getattr(value, f.name) for f in fields(value)})
    escape = re.compile(r'["\\\x00-\x1f\u2028\u2029\ud800-\udfff]')
    return '"' + escape.sub(lambda m: _json_char(m.group()), str(value)) + '"'


def _json_char(char: str) -> str:
    if "\ud800" <= char <= "\udfff":
        return "\ufffd"  # Go replaces invalid UTF-8
    return _JSON_ESC.get(char) or f"\\u{ord(char):04x}"


def _truth(value: object) -> bool:
    if value is None or value is MISSING:
        return False
    return bool(value) if isinstance(value, bool | int | float | str | list | tuple | Mapping) else True


def _format_one(verb: str, arg: object, prec: str | None) -> str:
    is_int = isinstance(arg, int) and not isinstance(arg, bool)
    if verb == "v" or (verb == "s" and isinstance(arg, str | list | tuple | Mapping)):
        return _fmt(arg)[: int(prec or 0)] if prec is not None else _fmt(arg)
    if verb == "q" and isinstance(arg, str):
        return _go_quote(arg)
    if (verb == "d" and is_int) or (verb == "t" and isinstance(arg, bool)):
        return _fmt(arg)
    if verb == "f" and (is_int or isinstance(arg, float)):
        return f"{arg:.{int(prec or 6)}f}"
    return f"%!{verb}(<nil>)" if arg is None else f"%!{verb}({_go_type(arg)}={_fmt(arg)})"


def _sprintf(template: str, args: Sequence[object]) -> str:
    """fmt.Sprintf for %v %s %d %q %t %f with flags ``-`` and ``0``, width and precision."""
    out, pos, used = [], 0, 0
    for found in _VERB.finditer(template):
        flags, width, prec, verb = found.groups()
        out.append(template[pos : found.start()])
        pos = found.end()
        if verb in ("%", ""):
            out.append("%" if verb else "%!(NOVERB)")
        elif max(len(width), len(prec or "")) > 6:
            out.append("%!(BADWIDTH)")
        elif used >= len(args):
            out.append(f"%!{verb}(MISSING)")
        else:
            text, used, size = _format_one(verb, args[used], prec), used + 1, int(width or 0)
            if "0" in flags and "-" not in flags and verb in "df" and text[:1] != "%":
                sign = text[:1] if text[:1] == "-" else ""
                text = sign + text[len(sign) :].rjust(size - len(sign), "0")
            out.append(text.ljust(size) if "-" in flags else text.rjust(size))
    out.append(template[pos:])
    if used < len(args):
        out.append("%!(EXTRA " + ", ".join(f"{_go_type(a)}={_fmt(a)}" for a in args[used:]) + ")")
    return "".join(out)


# -------------------------------------------------------------------------------------------- functions
def _str(value: object) -> str:
    if not isinstance(value, str):
        raise _FuncError(f"wrong type for value; expected string; got {_go_type(value)}")
    return value


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _FuncError(f"wrong type for value; expected int; got {_go_type(value)}")
    return value


def _strings(value: object) -> list[str]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _FuncError(f"wrong type for value; expected []string; got {_go_type(value)}")
    return [str(v) for v in value]


def _len(args: Sequence[object]) -> object:
    if isinstance(value := args[0], str):
        return len(value.encode("utf-8", "surrogatepass"))  # Go counts bytes
    if isinstance(value, list | tuple | Mapping) or value is None:
        return len(value or ())
    raise _FuncError(f"error calling len: len of type {_go_type(value)}")


def _index(args: Sequence[object]) -> object:
    item = args[0]
    for key in args[1:]:
        if isinstance(item, Mapping) or item is None:
            if not isinstance(key, str):
                raise _FuncError(f"error calling index: value has type {_go_type(key)}; should be string")
            item = item or {}
            # Go yields the element type's zero value: "" for map[string]string such as Labels
            item = item.get(key, "" if all(isinstance(v, str) for v in item.values()) else None)
        elif isinstance(item, list | tuple | str):
            if not isinstance(key, int) or isinstance(key, bool):
                raise _FuncError(f"error calling index: cannot index slice/array with type {_go_type(key)}")
            seq = item.encode("utf-8", "surrogatepass") if isinstance(item, str) else item
            if not 0 <= key < len(seq):
                raise _FuncError(f"error calling index: index out of range: {key}")
            item = seq[key]
        else:
            raise _FuncError(f"error calling index: can't index item of type {_go_type(item)}")
    return item


def _kind(value: object) -> str:
    if value is None or isinstance(value, bool | str):
        return type(value).__name__
    return "number" if isinstance(value, int | float) else "other"


def _compare(name: str, left: object, right: object) -> bool:
    kinds = {_kind(left), _kind(right)}
    if name in ("eq", "ne") and "NoneType" in kinds:
        return (left is right) == (name == "eq")
    if len(kinds) > 1:
        raise _FuncError(f"error calling {name}: incompatible types for comparison")
    if kinds & {"other", "NoneType"} or (name not in ("eq", "ne") and kinds == {"bool"}):
        raise _FuncError(f"error calling {name}: invalid type for comparison")
    return bool(getattr(operator, name)(left, right))


def _eq(args: Sequence[object]) -> object:
    if len(args) < 2:
        raise _FuncError("error calling eq: missing argument for comparison")
    return any(_compare("eq", args[0], other) for other in args[1:])


def _json_func(args: Sequence[object]) -> object:
    try:
        return _json(args[0])
    except ValueError:  # skopeo's json ignores encoder errors and prints nothing
        return ""


def _print(args: Sequence[object]) -> object:
    """fmt.Sprint: a space between operands when neither is a string."""
    out = []
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(_fmt(arg))
    return "".join(out)


def _cmp_func(name: str) -> Callable[[Sequence[object]], object]:
    return lambda args: _compare(name, args[0], args[1])


_MANY = 1 << 30
_FUNCS: dict[str, tuple[Callable[[Sequence[object]], object], int, int]] = {
    "and": (lambda a: a[-1], 1, _MANY),  # and/or are evaluated lazily by _Exec.call
    "or": (lambda a: a[-1], 1, _MANY),
    "not": (lambda a: not _truth(a[0]), 1, 1),
    "len": (_len, 1, 1),
    "index": (_index, 1, _MANY),
    "print": (_print, 0, _MANY),
    "println": (lambda a: " ".join(map(_fmt, a)) + "\n", 0, _MANY),
    "printf": (lambda a: _sprintf(_str(a[0]), a[1:]), 1, _MANY),
    "eq": (_eq, 1, _MANY),
    **{name: (_cmp_func(name), 2, 2) for name in ("ne", "lt", "le", "gt", "ge")},
    "json": (_json_func, 1, 1),
    "join": (lambda a: _str(a[1]).join(_strings(a[0])), 2, 2),
    "lower": (lambda a: _str(a[0]).lower(), 1, 1),
    "upper": (lambda a: _str(a[0]).upper(), 1, 1),
    "title": (lambda a: re.sub(r"(?<!\w)\w", lambda m: m.group().upper(), _str(a[0])), 1, 1),
    "split": (lambda a: _str(a[0]).split(_str(a[1])) if a[1] else list(_str(a[0])), 2, 2),
    "pad": (lambda a: " " * _int(a[1]) + _str(a[0]) + " " * _int(a[2]), 3, 3),
    "truncate": (lambda a: _str(a[0])[: max(_int(a[1]), 0)], 2, 2),
}
