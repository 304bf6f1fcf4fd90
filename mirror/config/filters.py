"""Tag selection and the regex dialect of the sync YAML.

skopeo compiles ``images-by-tag-regex`` with Go's RE2 (``regexp.Compile``) and matches with
``MatchString``, i.e. a search anywhere in the tag, not a full match. We use Python's ``re`` with
``search`` and ``re.ASCII`` (Go's ``\\d \\w \\s \\b`` are ASCII-only), after a cheap translation:

* refused, because RE2 has no such thing (a pattern skopeo would reject too): look-around
  ``(?= (?! (?<= (?<!``, backreferences ``\\1`` ``(?P=n)`` ``\\k<n>``, atomic groups ``(?>``,
  possessive quantifiers ``a*+``, conditionals ``(?(``, comments ``(?#``, ``\\Z``, Python-only
  flags ``x a L u``, repeat counts over 1000;
* translated to the Python spelling: ``(?<name>`` → ``(?P<name>``, ``\\z`` → ``\\Z``, POSIX classes
  ``[[:alpha:]]``, a ``{`` that does not start a Go repeat (a literal in Go);
* refused because Python cannot evaluate them (rare in tags): ``\\p{..}``, ``[[:^alpha:]]``,
  ``(?U)``; others (``\\Q..\\E``, ``\\x{..}``, flags in mid-pattern) fail in ``re`` with its message.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence

from mirror.config.schema import RepoSpec
from mirror.config.semver import cached_constraint, parse_version
from mirror.core.descriptor import Platform, matches
from mirror.core.reference import TAG_RE
from mirror.errors import ConfigError

MAX_REPEAT = 1000
_REPEAT_RE = re.compile(r"\{(\d+)(,(\d*))?\}")
_POSIX = {
    "alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7f", "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f", "digit": "0-9", "graph": "!-~", "lower": "a-z", "print": " -~",
    "punct": "!-/:-@\\[-`{-~", "space": "\\t\\n\\v\\f\\r ", "upper": "A-Z", "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_GROUP_REFUSED = (
    ("=", "look-ahead (?=...)"), ("!", "negative look-ahead (?!...)"), ("<=", "look-behind (?<=...)"),
    ("<!", "negative look-behind (?<!...)"), ("P=", "backreferences (?P=name)"), (">", "atomic groups (?>...)"),
    ("(", "conditionals (?(...)"), ("#", "comments (?#...)"),
)
_GO_FLAGS = frozenset("imsU-")


class _Refused(Exception):
    pass


def _escape(pattern: str, i: int, in_class: bool) -> tuple[str, int]:
    if i + 1 >= len(pattern):
        raise _Refused("trailing backslash")
    d = pattern[i + 1]
    if d in "123456789":
        raise _Refused("RE2 doesn't support backreferences (\\1)")
    if d == "k" and not in_class:
        raise _Refused("RE2 doesn't support backreferences (\\k<name>)")
    if d == "Z":
        raise _Refused("RE2 doesn't support \\Z (use \\z or $)")
    if d in "pP":
        raise _Refused("Unicode classes \\p{...} are not supported (tags are ASCII)")
    if d == "z" and not in_class:
        return "\\Z", i + 2
    return pattern[i : i + 2], i + 2


def _group(pattern: str, i: int) -> tuple[str, int]:
    rest = pattern[i + 2 :]
    for prefix, what in _GROUP_REFUSED:
        if rest.startswith(prefix):
            raise _Refused(f"RE2 doesn't support {what}")
    if rest.startswith("<"):
        return "(?P<", i + 3
    if rest.startswith("P<"):
        return "(?P<", i + 4
    flags = re.match(r"[^:)]*", rest)
    text = flags[0] if flags else ""
    bad = sorted(set(text) - _GO_FLAGS)
    if bad:
        raise _Refused(f"RE2 doesn't support the flag {bad[0]!r} in (?{text}...)")
    if "U" in text:
        raise _Refused("the ungreedy flag (?U) is not supported (use lazy quantifiers like *?)")
    return "(?", i + 2


def _class_item(pattern: str, i: int) -> tuple[str, int] | None:
    if not pattern.startswith("[:", i):
        return None
    end = pattern.find(":]", i + 2)
    if end == -1:
        return None
    name = pattern[i + 2 : end]
    if name.startswith("^"):
        raise _Refused(f"negated POSIX classes [:{name}:] are not supported")
    if name not in _POSIX:
        raise _Refused(f"unknown POSIX class [:{name}:]")
    return _POSIX[name], end + 2


def _translate(pattern: str) -> str:
    """Go RE2 syntax -> Python ``re`` syntax; raises _Refused for what RE2 or we can't do."""
    out: list[str] = []
    i, n = 0, len(pattern)
    class_start = -1  # index of the first member of the current [...] or -1 outside
    while i < n:
        c = pattern[i]
        if c == "\\":
            piece, i = _escape(pattern, i, class_start >= 0)
            out.append(piece)
            continue
        if class_start >= 0:
            item = _class_item(pattern, i) if c == "[" else None
            if item is not None:
                out.append(item[0])
                i = item[1]
                continue
            if c == "]" and i != class_start:
                class_start = -1
            elif c in "[&~|":
                c = "\\" + c  # literals in Go; Python warns about nested sets and set operations
            out.append(c)
            i += 1
            continue
        if c == "[":
            class_start = i + 1 + (pattern.startswith("^", i + 1))
            out.append(pattern[i:class_start])
            i = class_start
            continue
        if c == "(" and pattern.startswith("(?", i):
            piece, i = _group(pattern, i)
            out.append(piece)
            continue
        if c == "{":
            m = _REPEAT_RE.match(pattern, i)
            if m is None:
                out.append("\\{")
                i += 1
                continue
            if any(g and int(g) > MAX_REPEAT for g in (m[1], m[3])):
                raise _Refused(f"RE2 doesn't support repeat counts over {MAX_REPEAT}")
            out.append(m[0])
            i = m.end()
            quantifier = True
        else:
            out.append(c)
            i += 1
            quantifier = c in "*+?"
        if quantifier and pattern.startswith("+", i):
            raise _Refused("RE2 doesn't support possessive quantifiers (a*+)")
    return "".join(out)


@functools.lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(_translate(pattern), re.ASCII)


def compile_regex(pattern: str, where: str = "") -> re.Pattern[str]:
    """Compile a Go RE2 pattern for ``search``; ConfigError naming ``where`` when it is refused."""
    try:
        return _compile(pattern)
    except (_Refused, re.error, RecursionError, OverflowError) as exc:
        prefix = f"{where}: " if where else ""
        reason = str(exc).split("\n", 1)[0]
        raise ConfigError(f"{prefix}invalid regular expression {pattern[:200]!r}: {reason}") from None


def is_digest(ref: str) -> bool:
    return ":" in ref


def select_tags(available: Iterable[str], spec: RepoSpec) -> list[str]:
    """The tags and digests to copy for ``spec``, given the source listing ``available``.

    Order: the selected tags of the listing in listing order, then the explicitly listed tags that
    the listing lacks and the digests, in YAML order. Explicit tags and digests are kept without
    checking the listing (as skopeo does; with no listing, ``available`` may be empty). A tag is
    selected when it is listed explicitly, or ``all_tags`` is set, or it matches ``regex``
    (search), or it parses as a version satisfying ``semver`` — the union of the YAML keys. Then
    tags matching any ``exclude`` pattern are dropped, explicitly listed ones included; digests are
    never excluded. Listing entries that are not valid tags are ignored (skopeo skips them too).
    """
    explicit = list(dict.fromkeys(spec.tags))
    wanted = set(explicit)
    regex = compile_regex(spec.regex, f"{spec.path}: regex") if spec.regex is not None else None
    constraint = cached_constraint(spec.semver) if spec.semver is not None else None
    excludes = [compile_regex(p, f"{spec.path}: exclude") for p in spec.exclude]

    def chosen(tag: str) -> bool:
        if spec.all_tags or tag in wanted or (regex is not None and regex.search(tag)):
            return True
        if constraint is None:
            return False
        version = parse_version(tag)
        return version is not None and constraint.check(version)

    selected: dict[str, None] = {}
    for tag in available:
        if tag not in selected and TAG_RE.match(tag) and chosen(tag):
            selected[tag] = None
    for ref in explicit:
        selected.setdefault(ref, None)
    return [ref for ref in selected if is_digest(ref) or not any(rx.search(ref) for rx in excludes)]


_PLATFORM_RE = re.compile(r"[a-z0-9][a-z0-9._-]*(?:/[a-z0-9][a-z0-9._-]*){1,2}")
_ARCH_ALIASES = {
    "x86_64": ("amd64", None), "x86-64": ("amd64", None), "aarch64": ("arm64", None),
    "i386": ("386", None), "i686": ("386", None), "armhf": ("arm", "v7"), "armel": ("arm", "v6"),
}


def parse_platform(text: str) -> Platform:
    """``os/arch[/variant]`` (lowercased; ``x86_64``→``amd64``, ``aarch64``→``arm64``...); ValueError if malformed."""
    low = text.strip().lower()
    if not _PLATFORM_RE.fullmatch(low):
        raise ValueError(f"invalid platform {text[:80]!r} (expected os/arch or os/arch/variant, e.g. linux/arm64/v8)")
    os_, arch, *rest = low.split("/")
    variant = rest[0] if rest else None
    alias = _ARCH_ALIASES.get(arch)
    if alias is not None:
        arch, default_variant = alias
        if variant is None:
            variant = default_variant
    return Platform(os_, arch, variant)


def platform_matches(platforms: Sequence[str], os: str, arch: str, variant: str | None = None) -> bool:
    """Whether an index entry for ``os/arch/variant`` is wanted by a YAML ``platforms`` list (empty:
    all). A wanted entry without variant matches every variant; arm64 without variant counts as v8."""
    if not platforms:
        return True
    candidate = Platform(os, arch, variant or None)
    return any(matches(candidate, parse_platform(p)) for p in platforms)
