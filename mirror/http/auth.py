"""Registry authentication: Basic headers and bearer tokens (GET and OAuth2 POST), cached per scope set.

Tokens are cached per (realm, service, scopes) and fetched at most once at a time per key
(single flight). Token requests are sent by the caller's :data:`TokenCall` (the client sends them
through its one retry loop: a token fetch is retried exactly like any request, and not here).
Token and credential values never reach logs or error messages.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

import anyio
from msgspec import Struct, field
from yarl import URL

from mirror.aio import LRU
from mirror.errors import RegistryError, Unauthorized
from mirror.http.credentials import Credential
from mirror.http.headers import Challenge, parse_www_authenticate

MAX_TOKEN_BODY = 1 << 20
MAX_TOKEN_LIFETIME = 86_400.0  # cache a token a day at most, whatever expires_in says
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")
CLIENT_ID = "mirror"
TOKEN_SLOTS = 512  # scope sets whose token is kept per credential and registry

TokenCall = Callable[[str, URL, Mapping[str, str], bytes | None], Awaitable[tuple[int, bytes]]]
"""(method, url, headers, body) -> (status, body of at most MAX_TOKEN_BODY + 1 bytes); redirects are
not followed; ``TransientError`` when the token server cannot be reached (after the retries)."""


def basic_header(cred: Credential) -> str:
    raw = f"{cred.username}:{cred.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


class Token(Struct):
    value: str
    expires_at: float
    refresh_token: str | None = None

    def valid(self, now: float) -> bool:
        return now < self.expires_at - 10


class _Slot(Struct):
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    token: Token | None = None


def merge_scopes(*groups: Iterable[str]) -> tuple[str, ...]:
    """Union of scopes, merging actions of the same resource (``repository:a:pull`` + ``:push``)."""
    actions: dict[str, set[str]] = {}
    order: list[str] = []
    for group in groups:
        for scope in group:
            resource, sep, acts = scope.rpartition(":")
            if not sep:
                resource, acts = scope, ""
            if resource not in actions:
                actions[resource] = set()
                order.append(resource)
            actions[resource].update(a for a in acts.split(",") if a)
    return tuple(f"{r}:{','.join(sorted(actions[r]))}" for r in order)


class TokenCache:
    """Bearer tokens for one credential on one registry."""

    def __init__(self, call: TokenCall, credential: Credential, *, allow_plain_http: bool = False) -> None:
        self._call = call
        self._cred = credential
        self._plain_ok = allow_plain_http  # credentials may go to an http:// realm (--tls-verify=false)
        # One slot per scope set (a repository, a mount's pair of repositories): bounded, least
        # recently used dropped first; a dropped token is fetched again when needed.
        self._slots: LRU[tuple[str, str, tuple[str, ...]], _Slot] = LRU(TOKEN_SLOTS)

    def invalidate(self, challenge: Challenge, scopes: tuple[str, ...]) -> None:
        slot = self._slots.get(self._key(challenge, scopes))
        if slot is not None:
            slot.token = None

    @staticmethod
    def _key(challenge: Challenge, scopes: tuple[str, ...]) -> tuple[str, str, tuple[str, ...]]:
        return (challenge.params.get("realm", ""), challenge.params.get("service", ""), tuple(sorted(scopes)))

    async def get(self, challenge: Challenge, scopes: tuple[str, ...]) -> str:
        if self._cred.registry_token:
            return self._cred.registry_token
        key = self._key(challenge, scopes)
        slot = self._slots.get(key)
        if slot is None:
            slot = _Slot()
            self._slots.put(key, slot)
        async with slot.lock:
            if slot.token is None or not slot.token.valid(time.monotonic()):
                slot.token = await self._fetch(challenge, scopes)
            return slot.token.value

    async def _fetch(self, challenge: Challenge, scopes: tuple[str, ...]) -> Token:
        realm = challenge.params.get("realm")
        if not realm:
            raise Unauthorized("bearer challenge without a realm")
        try:
            url = URL(realm)
            usable = url.scheme in ("http", "https") and bool(url.host) and url.port is not None
        except ValueError:
            usable = False
        if not usable:
            raise Unauthorized(f"token realm {realm[:200]!r} is not an http(s) URL")
        if url.scheme == "http" and not self._plain_ok and (self._cred.username or self._cred.identity_token):
            raise Unauthorized(f"refusing to send credentials to token realm {url.host}:{url.port} over plain "
                               "HTTP (use --tls-verify=false to allow it)")
        service = challenge.params.get("service", "")
        if self._cred.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": self._cred.identity_token,
                    "service": service, "client_id": CLIENT_ID, "scope": " ".join(scopes)}
            status, body = await self._call("POST", url, {"Content-Type": "application/x-www-form-urlencoded"},
                                            urlencode(form).encode())
            if status not in (404, 405):
                return self._parse(status, body, url)
        query: list[tuple[str, str]] = [("service", service)] if service else []
        query += [("scope", s) for s in scopes]
        headers = {}
        if self._cred.username:
            query.append(("account", self._cred.username))
            headers["Authorization"] = basic_header(self._cred)
        status, body = await self._call("GET", url.with_query(query), headers, None)
        return self._parse(status, body, url)

    @staticmethod
    def _parse(status: int, body: bytes, realm: URL) -> Token:
        server = f"token server {realm.host}:{realm.port}"
        if status == 401:  # containers/image's words: "unable to retrieve auth token: invalid username/password"
            raise Unauthorized("unable to retrieve auth token: invalid username/password: unauthorized: "
                               f"authentication required ({server} answered HTTP 401: wrong username or password, "
                               "or an invalid refresh token)", status=status)
        if status == 403:
            raise Unauthorized(f"unable to retrieve auth token: denied: {server} answered HTTP 403", status=status)
        if status != 200:
            raise RegistryError(f"{server} answered HTTP {status}", status=status)
        if len(body) > MAX_TOKEN_BODY:
            raise RegistryError("token response too large")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            raise RegistryError("token response is not valid JSON") from None
        if not isinstance(data, dict):
            raise RegistryError("token response is not a JSON object")
        value = data.get("token") or data.get("access_token")
        if not isinstance(value, str) or not value:
            raise RegistryError("token response has no token")
        if not _TOKEN_CHARS.fullmatch(value):  # it goes into a header: no blanks, controls or non-ASCII
            raise RegistryError("token response has a malformed token")
        expires = data.get("expires_in", 60)
        if isinstance(expires, bool) or not isinstance(expires, int | float):
            expires = 60
        refresh = data.get("refresh_token")
        lifetime = min(max(60.0, float(expires)), MAX_TOKEN_LIFETIME)  # NaN -> 60 s (max keeps its first arg)
        return Token(value, time.monotonic() + lifetime,
                     refresh if isinstance(refresh, str) else None)


def futile_retry(challenge: Challenge, sent: str, scopes: tuple[str, ...]) -> bool:
    """Whether answering this 401 with new credentials cannot help.

    Basic credentials refused once are refused again. A bearer token refused with ``insufficient_scope``
    for scopes it was already asked for is all the token server grants (it answers with the intersection
    of asked and allowed rights), so fetching another one only repeats the exchange. An expired or
    otherwise ``invalid_token``, or a challenge naming new scopes, is worth one more try.
    """
    if challenge.scheme == "basic":
        return sent.startswith("Basic ")
    if challenge.scheme == "bearer" and challenge.params.get("error") == "insufficient_scope":
        return sent.startswith("Bearer ") and set(merge_scopes(scopes, challenge.scopes)) == set(merge_scopes(scopes))
    return False


def pick_challenge(headers: Mapping[str, str] | Any) -> Challenge | None:
    """The bearer challenge of a 401, else its basic one (every ``WWW-Authenticate`` header is read)."""
    values = headers.getall("WWW-Authenticate", []) if hasattr(headers, "getall") else (
        [headers["WWW-Authenticate"]] if "WWW-Authenticate" in headers else [])
    challenges = [c for v in values for c in parse_www_authenticate(v)]
    for scheme in ("bearer", "basic"):
        for challenge in challenges:
            if challenge.scheme == scheme:
                return challenge
    return None
