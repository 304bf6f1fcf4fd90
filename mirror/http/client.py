"""The HTTP client: one aiohttp session per run; per registry endpoint: ping, auth, redirects, retries.

Contract:
- Retries live here and only here: connection errors, timeouts and 408/429/5xx are retried for
  idempotent requests whose body can be sent again, with jittered backoff honouring Retry-After.
- Redirects are followed by hand; ``Authorization`` is sent only to the registry's own origin and
  dropped when a redirect leaves it. Redirect and upload URLs are kept exactly as encoded.
- Error responses become ``mirror.errors`` exceptions in this module (see ``http.errors``).
- Every request to a registry's own host is admitted by that host's ``HostLimiter`` (``http.ratelimit``:
  rate, connection cap, shared 429 cooldown) and holds its permit until the response is released.
  Token-server requests and redirects to other hosts are not limited. 429s have their own retry budget.
- Nothing here knows about manifests.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import structlog
from yarl import URL

from mirror.errors import MirrorError, RegistryError, TLSError, TransientError, Unauthorized
from mirror.http.auth import TokenCache, basic_header, merge_scopes
from mirror.http.body import read_limited
from mirror.http.credentials import Credential
from mirror.http.errors import error_for
from mirror.http.headers import Challenge, parse_retry_after, parse_www_authenticate
from mirror.http.ratelimit import RATE_LIMITED_RETRIES, HostLimiter, HostPolicy, Permit
from mirror.http.retry import IDEMPOTENT, RETRY_STATUSES, RetryPolicy
from mirror.http.tls import TLSOptions, allows_plain_http, context_key, ssl_context

log = structlog.get_logger("mirror.http")

REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
Body = bytes | aiohttp.payload.Payload | None


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 30.0
    read: float = 120.0


@dataclass(frozen=True, slots=True)
class Reply:
    """A fully read response."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: URL


@dataclass(frozen=True, slots=True)
class EndpointKey:
    registry: str
    credential: Credential
    tls: TLSOptions


class HttpClient:
    """Owns the run's aiohttp session and one ``Endpoint`` per (registry, credential, TLS) triple."""

    def __init__(self, session: aiohttp.ClientSession, *, retry: RetryPolicy | None = None,
                 user_agent: str = "mirror", timeouts: Timeouts | None = None,
                 certs_roots: Sequence[Path] = (), policies: Mapping[str, HostPolicy] | None = None) -> None:
        self.session = session
        self.retry = retry or RetryPolicy()
        self.user_agent = user_agent
        self.timeouts = timeouts or Timeouts()
        self.certs_roots = tuple(certs_roots)
        self.policies = {host.lower(): policy for host, policy in (policies or {}).items()}
        self._endpoints: dict[EndpointKey, Endpoint] = {}
        self._ssl_contexts: dict[tuple[bool, Path | None], ssl.SSLContext] = {}
        self._limiters: dict[str, HostLimiter] = {}

    def limiter(self, host: str) -> HostLimiter:
        """The limiter of a registry ``host[:port]`` (as given to ``endpoint``), made on first use."""
        key = host.lower()
        if key not in self._limiters:
            self._limiters[key] = HostLimiter(key, self.policies.get(key))
        return self._limiters[key]

    @property
    def limiters(self) -> Mapping[str, HostLimiter]:
        """Every limiter made so far, by host (for reporting)."""
        return dict(self._limiters)

    def ssl_context(self, registry: str, tls: TLSOptions) -> ssl.SSLContext:
        """One context per distinct (verification, cert directory): shared by hosts that agree."""
        key = context_key(registry, tls, self.certs_roots)
        if key not in self._ssl_contexts:
            self._ssl_contexts[key] = ssl_context(registry, tls, self.certs_roots)
        return self._ssl_contexts[key]

    def endpoint(self, registry: str, credential: Credential, tls: TLSOptions) -> Endpoint:
        key = EndpointKey(registry, credential, tls)
        if key not in self._endpoints:
            self._endpoints[key] = Endpoint(self, registry, credential, tls)
        return self._endpoints[key]


@dataclass(slots=True)
class _AuthState:
    challenge: Challenge | None = None
    pinged: bool = False
    lock: anyio.Lock = field(default_factory=anyio.Lock)


class Endpoint:
    """One registry as seen with one credential and one TLS setting."""

    def __init__(self, client: HttpClient, registry: str, credential: Credential, tls: TLSOptions) -> None:
        self.client = client
        self.registry = registry
        self.credential = credential
        self.tls = tls
        try:
            self._ssl: ssl.SSLContext = client.ssl_context(registry, tls)
        except MirrorError:
            raise
        self._base: URL | None = None
        self._state = _AuthState()
        self._limiter = client.limiter(registry)
        self._origin = _authority(registry)
        self._permits: dict[aiohttp.ClientResponse, Permit] = {}
        self._tokens = TokenCache(client.session, credential, self._ssl, client.user_agent,
                                  allow_plain_http=allows_plain_http(tls))

    # -- connection set-up -------------------------------------------------------------------
    async def base_url(self) -> URL:
        """Ping ``/v2/`` (https first; http only when TLS verification is off) and learn the auth scheme."""
        async with self._state.lock:
            if self._base is None:
                self._base = await self._ping()
        return self._base

    async def _ping(self) -> URL:
        schemes = ["https", "http"] if allows_plain_http(self.tls) else ["https"]
        last: Exception | None = None
        for scheme in schemes:
            url = URL(f"{scheme}://{self.registry}/v2/")
            try:
                reply = await self._raw("GET", url, {}, None, want_body=True)
            except TLSError as exc:
                last = exc
                continue
            except TransientError as exc:
                last = exc
                continue
            if reply.status == 401:
                self._state.challenge = _pick_challenge(reply.headers)
            elif reply.status in RETRY_STATUSES:  # retried by the request loop, like any request
                last = TransientError(f"GET {url}: HTTP {reply.status}")
                continue
            elif reply.status != 200:
                raise RegistryError(f"{self.registry} is not a registry: GET /v2/ answered {reply.status}",
                                    status=reply.status)
            return URL(f"{scheme}://{self.registry}")
        assert last is not None
        if isinstance(last, TLSError) and "http" not in schemes:
            raise TLSError(f"{last} (use --tls-verify=false or --cert-dir for {self.registry})")
        raise last

    # -- requests -----------------------------------------------------------------------------
    async def fetch(self, method: str, target: str | URL, *, scopes: Sequence[str] = (),
                    headers: Mapping[str, str] | None = None, data: Body = None,
                    ok: Sequence[int] = (200,), limit: int = 4 << 20, what: str = "",
                    repeatable: bool = False) -> Reply:
        """Send and read the whole body (at most ``limit`` bytes); non-``ok`` statuses raise.

        A body cut short (reset, truncated, timed out) is retried like a failed request.
        ``repeatable``: the request may be sent again though its method is not idempotent (a POST
        that opens an upload session: a repeat only opens another one)."""
        async with self._exchange(method, target, scopes=scopes, headers=headers, data=data, ok=ok,
                                  what=what, resendable=None, repeatable=repeatable,
                                  read_limit=limit) as (resp, body):
            assert body is not None
            if len(body) > limit:
                raise RegistryError(f"{what or method}: response larger than {limit} bytes")
            return Reply(resp.status, dict(resp.headers), body, resp.url)

    @asynccontextmanager
    async def stream(self, method: str, target: str | URL, *, scopes: Sequence[str] = (),
                     headers: Mapping[str, str] | None = None, data: Body = None,
                     ok: Sequence[int] = (200,), what: str = "",
                     resendable: bool | None = None) -> AsyncIterator[aiohttp.ClientResponse]:
        """A response whose status is in ``ok``, body unread; released on exit."""
        async with self._exchange(method, target, scopes=scopes, headers=headers, data=data, ok=ok,
                                  what=what, resendable=resendable) as (resp, _body):
            yield resp

    @asynccontextmanager
    async def _exchange(self, method: str, target: str | URL, *, scopes: Sequence[str],
                        headers: Mapping[str, str] | None, data: Body, ok: Sequence[int], what: str,
                        resendable: bool | None, repeatable: bool = False, read_limit: int | None = None,
                        ) -> AsyncIterator[tuple[aiohttp.ClientResponse, bytes | None]]:
        """The retry loop. With ``read_limit`` the body (up to that many bytes + 1) is read inside it."""
        if resendable is None:
            resendable = data is None or isinstance(data, bytes)
        idempotent = method in IDEMPOTENT or repeatable
        policy = self.client.retry
        failures = 0  # connection errors and retryable statuses but 429: ``policy.attempts`` tries in all
        throttled = 0  # 429s: their own budget; the host's limiter has already paused the other requests
        while True:
            try:
                base = await self.base_url()  # the ping's failures are retried here too
                url = target if isinstance(target, URL) else URL(str(base) + target, encoded=True)
                resp = await self._authorized(method, url, dict(headers or {}), data, tuple(scopes), resendable)
            except TransientError:
                failures += 1
                if failures < policy.attempts and idempotent and resendable:
                    await anyio.sleep(policy.delay(failures))
                    continue
                raise
            if resp.status not in ok and policy.should_retry_status(method, resp.status, resendable, repeatable):
                if resp.status == 429:
                    throttled += 1
                    again, tries = throttled <= RATE_LIMITED_RETRIES, throttled
                else:
                    failures += 1
                    again, tries = failures < policy.attempts, failures
                if again:
                    wait = policy.delay(tries, parse_retry_after(resp.headers.get("Retry-After")))
                    log.debug("http_retry", method=method, status=resp.status, wait=round(wait, 2))
                    self._release(resp)
                    await anyio.sleep(wait)
                    continue
            try:
                if resp.status not in ok:
                    try:
                        body = await read_limited(resp.content, 1 << 16) if method != "HEAD" else b""
                    except (aiohttp.ClientError, TimeoutError, OSError):
                        body = b""  # the status says enough
                    error = error_for(resp.status, body, what or f"{method} {url.path}",
                                      resp.headers.get("Retry-After"))
                    if resp.status == 401:
                        raise Unauthorized(f"{error}: {self._unauthorized_hint()}", status=401,
                                           code=getattr(error, "code", None))
                    raise error
                got: bytes | None = None
                if read_limit is not None and method != "HEAD":
                    try:
                        got = await read_limited(resp.content, read_limit)
                    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                        failures += 1
                        log.debug("http_retry", method=method, error=_short(exc))
                        if failures < policy.attempts and idempotent and resendable:
                            await anyio.sleep(policy.delay(failures))
                            continue
                        raise TransientError(f"{what or method}: reading the response: {_short(exc)}") from None
                yield resp, (b"" if got is None else got)
            finally:
                self._release(resp)
            return

    async def _authorized(self, method: str, url: URL, headers: dict[str, str], data: Body,
                          scopes: tuple[str, ...], resendable: bool) -> aiohttp.ClientResponse:
        auth = await self._auth_header(scopes)
        resp = await self._follow(method, url, headers, auth, data)
        if resp.status != 401 or not resendable:
            return resp
        challenge = _pick_challenge(resp.headers)
        if challenge is not None and auth is not None and _futile_retry(challenge, auth, scopes):
            return resp  # the caller reports this 401
        self._release(resp)
        if challenge is None:
            raise Unauthorized(f"{method} {url.path}: HTTP 401 without a usable challenge", status=401)
        wanted = scopes
        if challenge.scheme == "bearer":
            wanted = merge_scopes(scopes, challenge.scopes)
            if self._state.challenge is not None:
                self._tokens.invalidate(self._state.challenge, scopes)
        self._state.challenge = challenge
        auth = await self._auth_header(wanted)
        if auth is None:
            raise Unauthorized(f"{method} {url.path}: HTTP 401: {self._unauthorized_hint()}", status=401)
        return await self._follow(method, url, headers, auth, data)

    def _unauthorized_hint(self) -> str:
        """Why a 401 happened, in words; names the registry, never a credential."""
        if self.credential.is_anonymous:
            return (f"authentication required, and no credentials were used for {self.registry} "
                    "(use --creds, --authfile or mirror login)")
        return f"unauthorized: {self.registry} refused the credentials, or they do not grant this access"

    async def _auth_header(self, scopes: tuple[str, ...]) -> str | None:
        challenge = self._state.challenge
        cred = self.credential
        if cred.registry_token and (challenge is None or challenge.scheme == "bearer"):
            return f"Bearer {cred.registry_token}"
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return basic_header(cred) if cred.username else None
        if challenge.scheme == "bearer":
            return "Bearer " + await self._tokens.get(challenge, scopes)
        return None

    async def _follow(self, method: str, url: URL, headers: dict[str, str], auth: str | None,
                      data: Body) -> aiohttp.ClientResponse:
        origin = (url.scheme, url.host, url.port)
        for _ in range(MAX_REDIRECTS + 1):
            send = dict(headers)
            if auth is not None and (url.scheme, url.host, url.port) == origin and self._may_authorize(url):
                send["Authorization"] = auth
            resp = await self._open(method, url, send, data)
            location = resp.headers.get("Location")
            if resp.status not in REDIRECTS or not location or method not in ("GET", "HEAD"):
                return resp
            self._release(resp)
            url = url.join(URL(location, encoded=True))
            if url.scheme not in ("http", "https"):
                raise RegistryError(f"redirect to unsupported URL scheme {url.scheme!r}")
            if url.scheme == "http" and origin[0] == "https" and not allows_plain_http(self.tls):
                raise RegistryError(f"refusing redirect from https to plain http ({url.host})")
        raise RegistryError(f"{method} {url.path}: too many redirects")

    def _may_authorize(self, url: URL) -> bool:
        """Credentials go only to the registry's own host and port (not to a host named by a Link or
        Location header), and over plain HTTP only when TLS verification is off."""
        return _same_origin(url, self._origin) and (url.scheme == "https" or allows_plain_http(self.tls))

    async def _raw(self, method: str, url: URL, headers: dict[str, str], data: Body,
                   want_body: bool) -> Reply:
        resp = await self._open(method, url, headers, data)
        try:
            body = await resp.content.read(1 << 16) if want_body else b""
            return Reply(resp.status, dict(resp.headers), body, resp.url)
        finally:
            self._release(resp)

    def _release(self, resp: aiohttp.ClientResponse) -> None:
        """Release a response and, with it, its host's connection slot."""
        resp.release()
        permit = self._permits.pop(resp, None)
        if permit is not None:
            permit.release()

    async def _open(self, method: str, url: URL, headers: dict[str, str], data: Body) -> aiohttp.ClientResponse:
        client = self.client
        send = {"User-Agent": client.user_agent, "Accept-Encoding": "identity", **headers}
        timeout = aiohttp.ClientTimeout(total=None, connect=client.timeouts.connect,
                                        sock_connect=client.timeouts.connect, sock_read=client.timeouts.read)
        kwargs: dict[str, Any] = {"headers": send, "allow_redirects": False, "timeout": timeout,
                                  "auto_decompress": False}
        if data is not None:
            kwargs["data"] = data
        if url.scheme == "https":
            kwargs["ssl"] = self._ssl
        permit: Permit | None = None
        if _same_origin(url, self._origin):
            # A body fed by another request while it is sent (a blob upload) takes no connection slot:
            # it could wait forever for a slot held by the reads it waits for.
            permit = await self._limiter.admit(hold_slot=not isinstance(data, aiohttp.AsyncIterablePayload))
        try:
            resp = await self._send(method, url, kwargs)
        except BaseException:
            if permit is not None:
                permit.release()
            raise
        if permit is not None:
            permit.observe(resp.status, resp.headers)
            self._permits[resp] = permit
        log.debug("http_request", method=method, host=url.host, path=url.path, status=resp.status)
        return resp

    async def _send(self, method: str, url: URL, kwargs: dict[str, Any]) -> aiohttp.ClientResponse:
        """One request on the session; aiohttp's exceptions become ``TLSError`` or ``TransientError``."""
        try:
            return await self.client.session.request(method, url, **kwargs)
        except aiohttp.ClientConnectorCertificateError as exc:
            raise TLSError(f"TLS verification failed for {url.host}:{url.port}: "
                           f"{exc.certificate_error.__class__.__name__}: "
                           f"{getattr(exc.certificate_error, 'verify_message', '')}".rstrip(": ")) from None
        except aiohttp.ClientSSLError as exc:
            # The underlying ssl error, not aiohttp's text (which embeds the SSLContext repr).
            reason = getattr(exc, "os_error", None) or exc
            raise TLSError(f"TLS handshake with {url.host}:{url.port} failed: {_short(reason)}") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransientError(f"{method} {url.host}:{url.port}{url.path}: {_short(exc)}") from None


def _authority(registry: str) -> tuple[str, int | None]:
    """``host[:port]`` → (lowercased host, explicit port or None)."""
    parsed = URL(f"https://{registry}")
    return (parsed.host or registry).lower(), parsed.explicit_port


def _same_origin(url: URL, origin: tuple[str, int | None]) -> bool:
    """Whether ``url`` is on the registry's own host (without a port: the scheme's default port)."""
    host, port = origin
    return (url.host or "").lower() == host and url.port == (port or (443 if url.scheme == "https" else 80))


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _futile_retry(challenge: Challenge, sent: str, scopes: tuple[str, ...]) -> bool:
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


def _pick_challenge(headers: Mapping[str, str] | Any) -> Challenge | None:
    values = headers.getall("WWW-Authenticate", []) if hasattr(headers, "getall") else (
        [headers["WWW-Authenticate"]] if "WWW-Authenticate" in headers else [])
    challenges = [c for v in values for c in parse_www_authenticate(v)]
    for scheme in ("bearer", "basic"):
        for challenge in challenges:
            if challenge.scheme == scheme:
                return challenge
    return None
