"""Tag selection and the regex dialect of the sync YAML.

skopeo compiles ``images-by-tag-regex`` with Go's ``regexp`` (RE2 syntax) and matches with
``MatchString``, i.e. a search anywhere in the tag, not a full match. mirror compiles every YAML
pattern (``images-by-tag-regex``, ``exclude-tags``/``images-exclude-tags``, catalog ``exclude`` and
``tags``) with RE2 itself, through the ``google-re2`` binding, and searches the same way. So the
syntax skopeo accepts is accepted (``\\pL``, ``[[:^alpha:]]``, ``(?U)``, ``\\Q..\\E``, ``\\z``),
what it refuses is refused (look-around, backreferences, atomic groups, possessive quantifiers,
``\\Z``, repeat counts over 1000), ``\\d \\w \\s \\b`` are ASCII-only as in Go, and matching
takes linear time whatever the pattern (no catastrophic backtracking on ``(a+)+$``).

RE2 C++ and Go's package differ in one accepted escape: ``\\C`` (any byte), which Go refuses; so do we.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol, cast

from mirror.config.schema import RepoSpec
from mirror.config.semver import cached_constraint, parse_version
from mirror.core.descriptor import Platform, matches
from mirror.core.reference import TAG_RE
from mirror.errors import ConfigError

if TYPE_CHECKING:  # RE2 is loaded by the first pattern compiled: a YAML without regexes needs none
    import re2

_ANY_BYTE = re.compile(r"(?<!\\)(?:\\\\)*\\C")  # \C not itself escaped
_HINTS = (
    ("invalid perl operator: (?=", "look-ahead is not supported"),
    ("invalid perl operator: (?!", "look-ahead is not supported"),
    ("invalid perl operator: (?<=", "look-behind is not supported"),
    ("invalid perl operator: (?<!", "look-behind is not supported"),
    ("invalid escape sequence: \\k", "backreferences are not supported"),
)


class TagPattern(Protocol):
    """A compiled pattern; ``search`` finds a match anywhere in the text (Go's ``MatchString``)."""

    def search(self, text: str) -> object | None: ...


def _options() -> re2.Options:
    import re2

    options = re2.Options()
    options.log_errors = False  # the error is raised (and reported once, on one line), not logged
    return options


@functools.lru_cache(maxsize=1024)
def _compile(pattern: str) -> TagPattern:
    if _ANY_BYTE.search(pattern):
        raise ValueError("invalid escape sequence: \\C")
    import re2

    try:
        return cast(TagPattern, re2.compile(pattern, _options()))
    except re2.error as exc:
        detail = exc.args[0] if exc.args else b""
        raise ValueError(detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)) from None


def _reason(message: str) -> str:
    if message.startswith("invalid escape sequence: \\") and message[-1:].isdigit():
        return f"{message} (backreferences are not supported: RE2 syntax, as Go's regexp)"
    for prefix, hint in _HINTS:
        if message.startswith(prefix):
            return f"{message} ({hint}: RE2 syntax, as Go's regexp)"
    return message


def compile_regex(pattern: str, where: str = "") -> TagPattern:
    """Compile a Go RE2 pattern for ``search``; a one-line ConfigError naming ``where`` when RE2 refuses it."""
    try:
        return _compile(pattern)
    except ValueError as exc:
        prefix = f"{where}: " if where else ""
        reason = _reason(str(exc).split("\n", 1)[0])
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
