"""Semantic versions and constraints with the semantics of Masterminds/semver v3 (v3.5.0, the version
skopeo vendors for ``images-by-semver``).

Parsing follows ``NewVersion`` with its default ``CoerceNewVersion = true``: an optional lowercase
``v``, one to three numeric parts (missing ones are 0, leading zeros are accepted and coerced: ``08``
is 8), an optional ``-prerelease`` (numeric identifiers must not have leading zeros) and ``+metadata``.
Comparison follows semver 2.0 (prerelease lower than release, metadata ignored).

Constraints follow ``NewConstraint``/``Check``: AND by comma or space, OR by ``||``, operators
``= != > < >= => <= =< ~ ~> ^``, wildcards ``x X *`` in any part, hyphen ranges ``1.2 - 1.4.5``,
and the prerelease rule: a prerelease version only satisfies an AND group that itself names a
prerelease. The regular expressions are the upstream ones, rewritten without ambiguity (possessive
quantifiers, nested optional parts) so that Python's backtracking stays linear like Go's RE2.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

from msgspec import Struct

from mirror.errors import ConfigError

MAX_VERSION_LEN = 256
MAX_CONSTRAINT_LEN = 512
MAX_CONSTRAINT_GROUPS = 32
_UINT64_MAX = 2**64 - 1

# Patterns are compiled on first use (the re module caches them), not at import: sync imports this
# module whether or not a YAML uses semver, and compiling the five took ~4 ms of its start-up.
_LOOSE_VERSION_RE = (
    r"v?([0-9]+)(\.[0-9]+)?(\.[0-9]+)?"
    r"(-([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?"
    r"(\+([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?"
)
_IDENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-0123456789")

_WS = r"[\t\n\f\r ]"  # Go's \s
_OPS = r"=||!=|>|<|>=|=>|<=|=<|~|~>|\^"
_CV = (
    r"v?([0-9|xX*]++)(?:(\.[0-9|xX*]++)(\.[0-9|xX*]++)?)?"
    r"(-([0-9A-Za-z\-]++(\.[0-9A-Za-z\-]++)*+))?"
    r"(\+([0-9A-Za-z\-]++(\.[0-9A-Za-z\-]++)*+))?"
)
_CONSTRAINT_RE = rf"{_WS}*+({_OPS}){_WS}*+({_CV}){_WS}*+"
_RANGE_RE = rf"{_WS}*+({_CV}){_WS}++-{_WS}++({_CV}){_WS}*+"
_FIND_RE = rf"({_OPS}){_WS}*+({_CV})"
# Upstream: ^(\s*(ops)\s*(cv)\s*)((?:\s+|,\s*)(ops)\s*(cv)\s*)*$ -- the same language, written so
# that runs of blanks have exactly one owner.
_TERM = rf"(?:{_OPS}){_WS}*+{_CV}"
_VALID_RE = rf"{_WS}*+{_TERM}(?:(?:{_WS}++|{_WS}*+,{_WS}*+){_TERM})*{_WS}*+"


def _uint(text: str) -> int | None:
    """Go's ``strconv.ParseUint(text, 10, 64)``: None when not all ASCII digits or out of range."""
    if not text or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= _UINT64_MAX else None


def _valid_prerelease(pre: str) -> bool:
    for part in pre.split("."):
        if not part or not set(part) <= _IDENT_CHARS:
            return False
        if part.isdigit() and len(part) > 1 and part[0] == "0":
            return False
    return True


def _compare_pre_part(s: str, o: str) -> int:
    if s == o:
        return 0
    if s == "":
        return -1
    if o == "":
        return 1
    si, oi = _uint(s), _uint(o)
    if si is None and oi is None:
        return 1 if s > o else -1
    if oi is None:  # s numeric, o alphanumeric: numbers sort first
        return -1
    if si is None:
        return 1
    return 1 if si > oi else -1


def _compare_prerelease(a: str, b: str) -> int:
    aparts, bparts = a.split("."), b.split(".")
    for i in range(max(len(aparts), len(bparts))):
        d = _compare_pre_part(aparts[i] if i < len(aparts) else "", bparts[i] if i < len(bparts) else "")
        if d:
            return d
    return 0


@functools.total_ordering
class Version(Struct, frozen=True, eq=False):
    """A parsed version; equality and ordering ignore ``metadata``."""

    major: int
    minor: int
    patch: int
    pre: str = ""
    metadata: str = ""

    @classmethod
    def parse(cls, text: str) -> Version:
        version = parse_version(text)
        if version is None:
            raise ConfigError(f"invalid semantic version {text[:80]!r}")
        return version

    def compare(self, other: Version) -> int:
        for a, b in ((self.major, other.major), (self.minor, other.minor), (self.patch, other.patch)):
            if a != b:
                return -1 if a < b else 1
        if self.pre == other.pre:
            return 0
        if not self.pre:
            return 1
        if not other.pre:
            return -1
        return _compare_prerelease(self.pre, other.pre)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self.compare(other) == 0

    def __ne__(self, other: object) -> bool:  # a Struct's own != would not go through __eq__
        return not self == other

    def __lt__(self, other: Version) -> bool:
        return self.compare(other) < 0

    def __hash__(self) -> int:
        return hash((self.major, self.minor, self.patch, self.pre))

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.pre:
            text += f"-{self.pre}"
        return f"{text}+{self.metadata}" if self.metadata else text


def parse_version(text: str) -> Version | None:
    """Masterminds ``NewVersion``; None when ``text`` is not a version (e.g. the tag ``latest``)."""
    if len(text) > MAX_VERSION_LEN:
        return None
    m = re.fullmatch(_LOOSE_VERSION_RE, text)
    if m is None:
        return None
    major = _uint(m[1])
    minor = _uint(m[2][1:]) if m[2] else 0
    patch = _uint(m[3][1:]) if m[3] else 0
    if major is None or minor is None or patch is None:
        return None
    pre, metadata = m[5] or "", m[8] or ""
    if pre and not _valid_prerelease(pre):
        return None
    return Version(major, minor, patch, pre, metadata)


class _Term(Struct, frozen=True):
    op: str
    con: Version
    orig: str
    dirty: bool = False
    minor_dirty: bool = False
    patch_dirty: bool = False

    def check(self, v: Version, include_pre: bool) -> bool:
        if v.pre and not include_pre:
            return False
        return _OPERATORS[self.op](v, self)


def _is_x(part: str) -> bool:
    return part in ("x", "X", "*")


def _parse_term(text: str) -> _Term:
    m = re.fullmatch(_CONSTRAINT_RE, text)
    if m is None:
        raise ConfigError(f"improper constraint: {text.strip()!r}")
    op, cv, major, minor, patch, pre = m[1], m[2], m[3], m[4] or "", m[5] or "", m[6] or ""
    dirty = minor_dirty = patch_dirty = False
    ver = cv
    if _is_x(major):
        ver, dirty = f"0.0.0{pre}", True
    elif _is_x(minor[1:]) or not minor:
        ver, dirty, minor_dirty = f"{major}.0.0{pre}", True, True
    elif _is_x(patch[1:]) or not patch:
        ver, dirty, patch_dirty = f"{major}{minor}.0{pre}", True, True
    con = parse_version(ver)
    if con is None:
        raise ConfigError(f"improper constraint: {text.strip()!r}")
    return _Term(op, con, cv, dirty, minor_dirty, patch_dirty)


def _not_equal(v: Version, c: _Term) -> bool:
    if c.dirty:
        if c.con.major != v.major:
            return True
        if c.con.minor != v.minor and not c.minor_dirty:
            return True
        if c.minor_dirty:
            return False
        if c.con.patch != v.patch and not c.patch_dirty:
            return True
        if c.patch_dirty:
            if v.pre or c.con.pre:
                return _compare_prerelease(v.pre, c.con.pre) != 0
            return False
    return v != c.con


def _greater(v: Version, c: _Term) -> bool:
    if not c.dirty:
        return v.compare(c.con) > 0
    if v.major != c.con.major:
        return v.major > c.con.major
    if c.minor_dirty:
        return False
    if c.patch_dirty:
        return v.minor > c.con.minor
    return v.compare(c.con) > 0


def _less_equal(v: Version, c: _Term) -> bool:
    if not c.dirty:
        return v.compare(c.con) <= 0
    if v.major > c.con.major:
        return False
    return not (v.major == c.con.major and v.minor > c.con.minor and not c.minor_dirty)


def _tilde(v: Version, c: _Term) -> bool:
    if v < c.con:
        return False
    if (c.con.major, c.con.minor, c.con.patch) == (0, 0, 0) and not c.minor_dirty and not c.patch_dirty:
        return True
    if v.major != c.con.major:
        return False
    return v.minor == c.con.minor or c.minor_dirty


def _tilde_or_equal(v: Version, c: _Term) -> bool:
    return _tilde(v, c) if c.dirty else v == c.con


def _caret(v: Version, c: _Term) -> bool:
    if v < c.con:
        return False
    if c.con.major > 0 or c.minor_dirty:
        return v.major == c.con.major
    if v.major > 0:
        return False
    if c.con.minor > 0 or c.patch_dirty:
        return v.minor == c.con.minor
    if v.minor > 0:
        return False
    return v.patch == c.con.patch


_OPERATORS: dict[str, Callable[[Version, _Term], bool]] = {
    "": _tilde_or_equal,
    "=": _tilde_or_equal,
    "!=": _not_equal,
    ">": _greater,
    "<": lambda v, c: v.compare(c.con) < 0,
    ">=": lambda v, c: v.compare(c.con) >= 0,
    "=>": lambda v, c: v.compare(c.con) >= 0,
    "<=": _less_equal,
    "=<": _less_equal,
    "~": _tilde,
    "~>": _tilde,
    "^": _caret,
}


def _rewrite_ranges(text: str) -> str:
    out = text
    for m in re.finditer(_RANGE_RE, text):
        out = out.replace(m[0], f">= {m[1]}, <= {m[11]} ", 1)
    return out


class Constraint(Struct, frozen=True):
    """A parsed constraint set: OR of AND groups."""

    text: str
    groups: tuple[tuple[_Term, ...], ...]
    group_has_pre: tuple[bool, ...]

    @classmethod
    def parse(cls, text: str) -> Constraint:
        """Masterminds ``NewConstraint``; raises ConfigError (and nothing else) on bad input."""
        if len(text) > MAX_CONSTRAINT_LEN:
            raise ConfigError(f"constraint is too long (max {MAX_CONSTRAINT_LEN} characters)")
        ors = _rewrite_ranges(text).split("||")
        if len(ors) > MAX_CONSTRAINT_GROUPS:
            raise ConfigError(f"too many constraint groups (max {MAX_CONSTRAINT_GROUPS})")
        groups: list[tuple[_Term, ...]] = []
        for part in ors:
            if re.fullmatch(_VALID_RE, part) is None:
                raise ConfigError(f"improper constraint: {part.strip()[:80]!r}")
            found = [m[0] for m in re.finditer(_FIND_RE, part)] or [part]
            groups.append(tuple(_parse_term(s) for s in found))
        has_pre = tuple(any(t.con.pre for t in group) for group in groups)
        return cls(text, tuple(groups), has_pre)

    def check(self, version: Version) -> bool:
        return any(
            all(term.check(version, pre) for term in group)
            for group, pre in zip(self.groups, self.group_has_pre, strict=True)
        )

    def __str__(self) -> str:
        return self.text


@functools.lru_cache(maxsize=256)
def cached_constraint(text: str) -> Constraint:
    return Constraint.parse(text)
