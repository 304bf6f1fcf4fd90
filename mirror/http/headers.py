"""Parsers for the HTTP headers of the registry protocol. Pure functions, no I/O.

Every parser accepts arbitrary text from an untrusted server: it either returns a value or raises
:class:`~mirror.errors.RegistryError` (only where a clear error is more useful than a silent ``None``),
and never anything else. Numbers are limited to 19 ASCII digits, so no input is slow to parse.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from urllib.parse import urljoin, urlsplit

from msgspec import Struct, field
from msgspec.structs import force_setattr
from yarl import URL

from mirror.errors import RegistryError

__all__ = [
    "MAX_RETRY_AFTER",
    "Challenge",
    "parse_content_range",
    "parse_link_next",
    "parse_ratelimit",
    "parse_retry_after",
    "parse_upload_range",
    "parse_www_authenticate",
    "strip_media_type",
]

MAX_RETRY_AFTER = 3600.0
"""Upper bound, in seconds, of what :func:`parse_retry_after` returns."""

_SP = " \t"
# RFC 7230 tchar.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 7235 token68, only when followed by the end of the challenge (a comma or the end of the header).
_TOKEN68 = re.compile(r"([A-Za-z0-9\-._~+/]+=*)[ \t]*(?=,|$)")
# A bare (unquoted) parameter value: tolerant, runs to the next comma or blank.
_BARE = re.compile(r"[^,\s]+")
_NUM = "[0-9]{1,19}"
_UPLOAD_RANGE = re.compile(rf"(?:bytes=)?({_NUM})-({_NUM})", re.IGNORECASE)
_CONTENT_RANGE = re.compile(rf"bytes[ \t]+({_NUM})-({_NUM})/({_NUM}|\*)", re.IGNORECASE)
_SECONDS = re.compile(r"[0-9]{1,19}(?:\.[0-9]{1,19})?")
_RATELIMIT = re.compile(rf"[ \t]*({_NUM})[ \t]*(?:;(.*))?")


class Challenge(Struct, frozen=True):
    """One challenge of a ``WWW-Authenticate`` header (RFC 7235).

    ``scheme`` is lowercased (``"bearer"``, ``"basic"``); ``params`` keys are lowercased, values are
    unquoted and unescaped. ``token68`` holds the rare ``Scheme token68`` form.
    """

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)
    token68: str | None = None

    def __hash__(self) -> int:  # params (a mapping) is compared but not hashed
        return hash((self.scheme, self.token68))

    def __post_init__(self) -> None:
        force_setattr(self, "scheme", self.scheme.lower())
        lowered = {key.lower(): value for key, value in self.params.items()}
        force_setattr(self, "params", MappingProxyType(lowered))

    @property
    def scopes(self) -> tuple[str, ...]:
        """The space-separated scopes of the ``scope`` parameter (several are allowed)."""
        return tuple(self.params.get("scope", "").split())

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def error(self) -> str | None:
        """``insufficient_scope`` (get a wider token) or ``invalid_token`` (refetch), if present."""
        return self.params.get("error")


class _Scanner:
    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip(self, chars: str) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in chars:
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def match(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        found = pattern.match(self.text, self.pos)
        if found:
            self.pos = found.end()
        return found

    def quoted(self) -> str:
        """Read a quoted-string starting at the opening quote; an unterminated one runs to the end."""
        out: list[str] = []
        self.pos += 1
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == '"':
                break
            if char == "\\" and self.pos < len(self.text):
                char = self.text[self.pos]
                self.pos += 1
            out.append(char)
        return "".join(out)

    def value(self) -> str | None:
        if self.peek() == '"':
            return self.quoted()
        bare = self.match(_BARE)
        return bare.group() if bare else None

    def skip_garbage(self) -> None:
        """Skip to the next top-level comma, stepping over quoted strings."""
        while self.pos < len(self.text) and self.text[self.pos] != ",":
            if self.text[self.pos] == '"':
                self.quoted()
            else:
                self.pos += 1


def parse_www_authenticate(value: str) -> list[Challenge]:
    """Parse every challenge of a ``WWW-Authenticate`` value (RFC 7235); never raises.

    Several challenges may share one header, separated by commas like their parameters. Parameters
    are ``k="v"`` (backslash escapes) or ``k=token``; a repeated key keeps its last value. Garbage is
    skipped up to the next comma; parameters seen before any scheme are dropped.
    """
    scan = _Scanner(value)
    found: list[tuple[str, dict[str, str], str | None]] = []
    while True:
        scan.skip(_SP + ",")
        if scan.pos >= len(scan.text):
            break
        token = scan.match(_TOKEN)
        if token is None:
            scan.skip_garbage()
            continue
        scan.skip(_SP)
        if scan.peek() == "=":  # a parameter of the current challenge
            scan.pos += 1
            scan.skip(_SP)
            param = scan.value()
            if param is None:
                scan.skip_garbage()
            elif found:
                found[-1][1][token.group().lower()] = param
            continue
        token68 = scan.match(_TOKEN68)
        found.append((token.group(), {}, token68.group(1) if token68 else None))
    return [Challenge(scheme, params, t68) for scheme, params, t68 in found]


def _split_links(value: str) -> list[tuple[str, str]]:
    """``<target>; params, <target>; params`` → [(target, params text)]; unparseable pieces dropped."""
    links: list[tuple[str, str]] = []
    scan = _Scanner(value)
    while True:
        scan.skip(_SP + ",")
        if scan.pos >= len(scan.text):
            return links
        if scan.peek() != "<":
            scan.skip_garbage()
            continue
        end = scan.text.find(">", scan.pos)
        if end < 0:
            raise RegistryError(f"malformed Link header (unterminated <): {value[:200]!r}")
        target = scan.text[scan.pos + 1 : end].strip()
        scan.pos = end + 1
        start = scan.pos
        scan.skip_garbage()
        links.append((target, scan.text[start : scan.pos]))


def _rels(params: str) -> list[str]:
    rels: list[str] = []
    for name, quoted, bare in re.findall(r';\s*([^=;,\s]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;,\s]*))', params):
        if name.lower() == "rel":
            rels.extend((quoted or bare).lower().split())
    return rels


def parse_link_next(value: str | None, base_url: str) -> str | None:
    """The ``rel="next"`` target of a ``Link`` header, resolved against ``base_url``, or ``None``.

    The target's query string is kept exactly as sent (wrap the result in ``yarl.URL(s, encoded=True)``).
    The result may point at another host; the caller decides whether credentials may follow it.
    Raises RegistryError when the next link is unusable (not http(s), or not a URL).
    """
    if not value:
        return None
    for target, params in _split_links(value):
        if "next" not in _rels(params):
            continue
        if not target:
            raise RegistryError("malformed Link header: empty next target")
        try:
            resolved = urljoin(base_url, target)
            parts = urlsplit(resolved)
            url = URL(resolved, encoded=True)  # what the caller will request: host and port must be valid
            usable = parts.scheme.lower() in ("http", "https") and bool(url.host) and url.port is not None
        except ValueError:
            raise RegistryError(f"malformed Link header target: {target[:200]!r}") from None
        if not usable:
            raise RegistryError(f"unusable Link header target: {target[:200]!r}")
        return resolved
    return None


def parse_upload_range(value: str | None, *, zero_zero_means_empty: bool = True) -> int | None:
    """The next upload offset from an upload-status ``Range: 0-N`` (or ``bytes=0-N``) header: N+1.

    ``None`` when the header is absent or blank. Distribution answers ``0-0`` both for an empty
    session and after exactly one byte (its end is ``size-1`` floored at 0), so ``0-0`` is ambiguous:
    it is read as offset 0 when ``zero_zero_means_empty`` (the safe default: re-sending a byte is
    harmless, skipping one corrupts the blob), else as 1.
    """
    if value is None or not value.strip():
        return None
    found = _UPLOAD_RANGE.fullmatch(value.strip())
    if found is None:
        raise RegistryError(f"malformed upload Range header: {value[:100]!r}")
    first, last = int(found.group(1)), int(found.group(2))
    if first != 0 or last < first:
        raise RegistryError(f"unexpected upload Range header (want 0-N): {value[:100]!r}")
    if last == 0 and zero_zero_means_empty:
        return 0
    return last + 1


def parse_content_range(value: str) -> tuple[int, int, int | None]:
    """``bytes first-last/total`` of a 206 response → (first, last, total); total ``*`` → None."""
    found = _CONTENT_RANGE.fullmatch(value.strip())
    if found is None:
        raise RegistryError(f"malformed Content-Range header: {value[:100]!r}")
    first, last = int(found.group(1)), int(found.group(2))
    total = None if found.group(3) == "*" else int(found.group(3))
    if last < first or (total is not None and last >= total):
        raise RegistryError(f"inconsistent Content-Range header: {value[:100]!r}")
    return first, last, total


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` (delay-seconds, decimal tolerated, or an HTTP-date) → seconds to wait.

    Never negative, capped at :data:`MAX_RETRY_AFTER`; ``None`` when absent or unparseable.
    ``now`` (default: the current time) is the reference for dates; a naive one is taken as UTC.
    """
    if value is None:
        return None
    text = value.strip()
    if _SECONDS.fullmatch(text):
        return min(float(text), MAX_RETRY_AFTER)
    if len(text) > 64 or not text:
        return None
    import email.utils  # an HTTP date in Retry-After is rare: not imported at every start-up

    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    reference = now or datetime.now(UTC)
    if reference.tzinfo is None:
        reference = reference.replace(tzinfo=UTC)
    try:
        delay = (when - reference).total_seconds()
    except OverflowError:
        return None
    if math.isnan(delay):
        return None
    return min(max(delay, 0.0), MAX_RETRY_AFTER)


def parse_ratelimit(value: str | None) -> tuple[int, int | None] | None:
    """Docker Hub ``ratelimit-limit``/``ratelimit-remaining`` (``20;w=21600``) → (count, window seconds).

    The window is ``None`` when not given. Only the first comma-separated element is read.
    ``None`` when absent or unparseable (no header means no limit).
    """
    if value is None:
        return None
    found = _RATELIMIT.fullmatch(value.split(",", 1)[0])
    if found is None:
        return None
    window: int | None = None
    for param in (found.group(2) or "").split(";"):
        key, _, number = param.partition("=")
        if key.strip().lower() == "w" and re.fullmatch(_NUM, number.strip()):
            window = int(number.strip())
    return int(found.group(1)), window


def strip_media_type(content_type: str | None) -> str | None:
    """``application/vnd.oci.image.manifest.v1+json; charset=utf-8`` → the bare, lowercased type.

    ``None`` when absent or blank.
    """
    if content_type is None:
        return None
    bare = content_type.split(";", 1)[0].strip().lower()
    return bare or None
