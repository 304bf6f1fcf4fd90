"""Registry authentication: Basic headers and bearer tokens (GET and OAuth2 POST), cached per scope set.

Tokens are cached per (realm, service, scopes) and fetched at most once at a time per key
(single flight). Token and credential values never reach logs or error messages.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import aiohttp
import anyio
from yarl import URL

from mirror.aio import LRU
from mirror.errors import RegistryError, TransientError, Unauthorized
from mirror.http.body import read_limited
from mirror.http.credentials import Credential
from mirror.http.headers import Challenge

MAX_TOKEN_BODY = 1 << 20
MAX_TOKEN_LIFETIME = 86_400.0  # cache a token a day at most, whatever expires_in says
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")
CLIENT_ID = "mirror"
TOKEN_SLOTS = 512  # scope sets whose token is kept per credential and registry


def basic_header(cred: Credential) -> str:
    raw = f"{cred.username}:{cred.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


@dataclass(slots=True)
class Token:
    value: str
    expires_at: float
    refresh_token: str | None = None

    def valid(self, now: float) -> bool:
        return now < self.expires_at - 10


@dataclass(slots=True)
class _Slot:
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

    def __init__(self, session: aiohttp.ClientSession, credential: Credential,
                 ssl_ctx: ssl.SSLContext | bool, user_agent: str, *, allow_plain_http: bool = False) -> None:
        self._session = session
        self._cred = credential
        self._plain_ok = allow_plain_http  # credentials may go to an http:// realm (--tls-verify=false)
        self._ssl = ssl_ctx
        self._ua = user_agent
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
            status, body = await self._call("POST", url, data=form)
            if status not in (404, 405):
                return self._parse(status, body, url)
        query: list[tuple[str, str]] = [("service", service)] if service else []
        query += [("scope", s) for s in scopes]
        headers = {}
        if self._cred.username:
            query.append(("account", self._cred.username))
            headers["Authorization"] = basic_header(self._cred)
        status, body = await self._call("GET", url.with_query(query), headers=headers)
        return self._parse(status, body, url)

    async def _call(self, method: str, url: URL, *, headers: dict[str, str] | None = None,
                    data: dict[str, str] | None = None) -> tuple[int, bytes]:
        hdrs = {"User-Agent": self._ua, **(headers or {})}
        for attempt in range(3):
            try:
                async with self._session.request(method, url, headers=hdrs, data=data, ssl=self._ssl,
                                                 allow_redirects=False) as resp:
                    body = await read_limited(resp.content, MAX_TOKEN_BODY)
                    if resp.status in (500, 502, 503, 504) and attempt < 2:
                        await anyio.sleep(0.2 * (attempt + 1))
                        continue
                    return resp.status, body
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                if attempt == 2:
                    raise TransientError(f"token request to {url.host} failed: {type(exc).__name__}") from None
                await anyio.sleep(0.2 * (attempt + 1))
        raise TransientError(f"token request to {url.host} failed")

    @staticmethod
    def _parse(status: int, body: bytes, realm: URL) -> Token:
        server = f"token server {realm.host}:{realm.port}"
        if status in (401, 403):
            raise Unauthorized(f"authentication failed: {server} answered HTTP {status} "
                               "(wrong username or password, or an invalid refresh token)", status=status)
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
