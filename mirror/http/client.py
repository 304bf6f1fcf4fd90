"""The HTTP client: one ``Sender`` per run; per registry endpoint: ping, auth, redirects, retries.

Contract:
- Every request goes through the ``Sender`` seam (``http.seam``; aiohttp in production,
  ``http.sender``), once per try: this module adds headers, auth, redirects, limits and retries.
- Retries live here and only here (``http.retry``): connection errors, timeouts, broken bodies and
  408/429/5xx are retried for idempotent requests whose body can be sent again, with jittered
  backoff honouring Retry-After. The ping and token fetches go through the same loop and policy.
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
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from msgspec import Struct, field
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from mirror.errors import RegistryError, TLSError, TransientError, Unauthorized
from mirror.http.auth import MAX_TOKEN_BODY, TokenCache, basic_header, futile_retry, merge_scopes, pick_challenge
from mirror.http.credentials import Credential
from mirror.http.errors import PLAIN_HTTP_SERVER, error_for
from mirror.http.headers import Challenge
from mirror.http.ratelimit import HostLimiter, HostPolicy, Permit
from mirror.http.retry import RETRY_STATUSES, Exhausted, RetryPolicy, may_retry, retrying
from mirror.http.seam import Body, Request, Response, Sender
from mirror.http.tls import TLSOptions, allows_plain_http, context_key, ssl_context
from mirror.log import get_logger

log = get_logger("mirror.http")

REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
MAX_ERROR_READ = 1 << 16


class Reply(Struct, frozen=True):
    """A fully read response."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: URL


class EndpointKey(Struct, frozen=True):
    registry: str
    credential: Credential
    tls: TLSOptions


class HttpClient:
    """Owns the run's sender and one ``Endpoint`` per (registry, credential, TLS) triple."""

    def __init__(self, sender: Sender, *, retry: RetryPolicy | None = None, user_agent: str = "mirror",
                 certs_roots: Sequence[Path] = (), policies: Mapping[str, HostPolicy] | None = None) -> None:
        self.sender = sender
        self.retry = retry or RetryPolicy()
        self.user_agent = user_agent
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


class _AuthState(Struct):
    challenge: Challenge | None = None
    lock: anyio.Lock = field(default_factory=anyio.Lock)


class Endpoint:
    """One registry as seen with one credential and one TLS setting."""

    def __init__(self, client: HttpClient, registry: str, credential: Credential, tls: TLSOptions) -> None:
        self.client = client
        self.registry = registry
        self.credential = credential
        self.tls = tls
        self._ssl = client.ssl_context(registry, tls)
        self._base: URL | None = None
        self._state = _AuthState()
        self._limiter = client.limiter(registry)
        self._origin = _authority(registry)
        self._permits: dict[Response, Permit] = {}
        self._tokens = TokenCache(self._token_call, credential, allow_plain_http=allows_plain_http(tls))

    # -- connection set-up -------------------------------------------------------------------
    async def base_url(self) -> URL:
        """Ping ``/v2/`` (https first; http only when TLS verification is off) and learn the auth scheme.
        The ping is sent once per call; its failures are retried by the request that needed it."""
        if self._base is not None:  # known: no lock (taking an anyio lock yields to the event loop)
            return self._base
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
                resp = await self._open("GET", url, {}, None)
            except (TLSError, TransientError) as exc:
                last = exc
                continue
            try:
                status, headers = resp.status, resp.headers
                await resp.read(MAX_ERROR_READ)  # read to the end, so that the connection can be reused
            except TransientError as exc:
                last = exc
                continue
            finally:
                self._release(resp)
            if status == 401:
                self._state.challenge = pick_challenge(headers)
            elif status in RETRY_STATUSES:  # retried by the request loop, like any request
                last = TransientError(f"GET {url}: HTTP {status}")
                continue
            elif status != 200:
                raise RegistryError(f"{self.registry} is not a registry: GET /v2/ answered {status}",
                                    status=status)
            return URL(f"{scheme}://{self.registry}")
        assert last is not None
        if isinstance(last, TLSError) and "http" not in schemes:
            if PLAIN_HTTP_SERVER in str(last):
                raise TLSError(f"pinging container registry {self.registry}: {last} (use --tls-verify=false "
                               f"for a plain-HTTP registry)")
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
                                  what=what, repeatable=repeatable, read_limit=limit) as (resp, body):
            if len(body) > limit:
                raise RegistryError(f"{what or method}: response larger than {limit} bytes")
            headers = resp.headers  # aiohttp's are an immutable proxy already: not copied
            return Reply(resp.status, headers if isinstance(headers, CIMultiDictProxy)
                         else CIMultiDictProxy(CIMultiDict(headers)), body, resp.url)

    @asynccontextmanager
    async def stream(self, method: str, target: str | URL, *, scopes: Sequence[str] = (),
                     headers: Mapping[str, str] | None = None, data: Body = None,
                     ok: Sequence[int] = (200,), what: str = "") -> AsyncIterator[Response]:
        """A response whose status is in ``ok``, body unread; released on exit."""
        async with self._exchange(method, target, scopes=scopes, headers=headers, data=data, ok=ok,
                                  what=what) as (resp, _body):
            yield resp

    @asynccontextmanager
    async def _exchange(self, method: str, target: str | URL, *, scopes: Sequence[str],
                        headers: Mapping[str, str] | None, data: Body, ok: Sequence[int], what: str,
                        repeatable: bool = False, read_limit: int | None = None,
                        ) -> AsyncIterator[tuple[Response, bytes]]:
        """One request through the retry loop. With ``read_limit`` the body (up to that many bytes + 1)
        is read inside the loop, so a broken body is retried too."""
        resendable = data is None or isinstance(data, bytes)
        sent = dict(headers or {})

        async def attempt() -> _Pair:
            base = await self.base_url()  # the ping's failures are retried here too
            url = target if isinstance(target, URL) else URL(str(base) + target, encoded=True)
            resp = await self._authorized(method, url, sent, data, tuple(scopes), resendable)
            if read_limit is None or method == "HEAD" or resp.status not in ok:
                return _Pair(resp, b"", self._release)
            try:
                return _Pair(resp, await resp.read(read_limit), self._release)
            except TransientError as exc:
                self._release(resp)
                raise TransientError(f"{what or method}: reading the response: {exc}") from None
            except BaseException:
                self._release(resp)
                raise

        pair = await retrying(self.client.retry, method, attempt, ok=ok,
                              retryable=may_retry(method, resendable, repeatable), what=what)
        resp, body = pair.resp, pair.body
        try:
            if resp.status not in ok:
                await self._raise_for(method, resp, what)
            yield resp, body
        finally:
            self._release(resp)

    async def _raise_for(self, method: str, resp: Response, what: str) -> None:
        try:
            body = await resp.read(MAX_ERROR_READ) if method != "HEAD" else b""
        except TransientError:
            body = b""  # the status says enough
        error = error_for(resp.status, body, what or f"{method} {resp.url.path}", resp.headers.get("Retry-After"))
        if resp.status == 401:
            if getattr(error, "code", None) is None:  # no error body: say it in the registry's words
                error = Unauthorized(f"{what or f'{method} {resp.url.path}'}: unauthorized: authentication required "
                                     "(HTTP 401)", status=401)
            raise Unauthorized(f"{error}; {self._unauthorized_hint()}", status=401, code=getattr(error, "code", None))
        raise error

    async def _authorized(self, method: str, url: URL, headers: dict[str, str], data: Body,
                          scopes: tuple[str, ...], resendable: bool) -> Response:
        auth = await self._auth_header(scopes)
        resp = await self._follow(method, url, headers, auth, data)
        if resp.status != 401 or not resendable:
            return resp
        challenge = pick_challenge(resp.headers)
        if challenge is not None and auth is not None and futile_retry(challenge, auth, scopes):
            return resp  # the caller reports this 401
        if challenge is not None and challenge.scheme == "basic" and not self.credential.username:
            return resp  # nothing to answer Basic with: the caller reports the 401 with what it was doing
        self._release(resp)
        if challenge is None:
            raise Unauthorized(f"{method} {url.path}: unauthorized: HTTP 401 without a usable challenge", status=401)
        wanted = scopes
        if challenge.scheme == "bearer":
            wanted = merge_scopes(scopes, challenge.scopes)
            if self._state.challenge is not None:
                self._tokens.invalidate(self._state.challenge, scopes)
        self._state.challenge = challenge
        auth = await self._auth_header(wanted)
        if auth is None:
            raise Unauthorized(f"{method} {url.path}: unauthorized: authentication required (HTTP 401); "
                               f"{self._unauthorized_hint()}", status=401)
        return await self._follow(method, url, headers, auth, data)

    def _unauthorized_hint(self) -> str:
        """Why a 401 happened, in words; names the registry, never a credential."""
        if self.credential.is_anonymous:
            return f"no credentials were used for {self.registry} (use --creds, --authfile or mirror login)"
        return f"{self.registry} refused the credentials, or they do not grant this access"

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

    async def _token_call(self, method: str, url: URL, headers: Mapping[str, str],
                          body: bytes | None) -> tuple[int, bytes]:
        """A token-server request (``auth.TokenCall``): same retry loop and policy as any request;
        not rate limited (the token server is not the registry), never redirected."""
        request = Request(method, url, {"User-Agent": self.client.user_agent, **headers}, body, self._ssl)

        async def attempt() -> _Pair:
            resp = await self.client.sender.send(request)
            try:
                body = await resp.read(MAX_TOKEN_BODY) if resp.status in (200, 201) else b""
            finally:
                resp.release()
            return _Pair(resp, body, lambda done: done.release())

        # An OAuth2 refresh POST only asks for another token: it is as safe to repeat as the GET.
        try:
            pair = await retrying(self.client.retry, method, attempt, ok=(200, 201), retryable=True,
                                  what=f"token request to {url.host}")
        except TransientError as exc:  # out of tries: the request that needed the token must not try again
            raise Exhausted(f"token request to {url.host} failed: {exc}") from None
        return pair.status, pair.body

    async def _follow(self, method: str, url: URL, headers: dict[str, str], auth: str | None,
                      data: Body) -> Response:
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

    def _release(self, resp: Response) -> None:
        """Release a response and, with it, its host's connection slot."""
        resp.release()
        permit = self._permits.pop(resp, None)
        if permit is not None:
            permit.release()

    async def _open(self, method: str, url: URL, headers: dict[str, str], data: Body) -> Response:
        """Send once through the sender, admitted by the host's limiter when it goes to the registry."""
        request = Request(method, url, {"User-Agent": self.client.user_agent, "Accept-Encoding": "identity",
                                        **headers}, data, self._ssl)
        permit: Permit | None = None
        if _same_origin(url, self._origin):
            # A body fed by another request while it is sent (a blob upload) takes no connection slot:
            # it could wait forever for a slot held by the reads it waits for.
            permit = await self._limiter.admit(hold_slot=not request.streamed)
        try:
            resp = await self.client.sender.send(request)
        except BaseException:
            if permit is not None:
                permit.release()
            raise
        if permit is not None:
            permit.observe(resp.status, resp.headers)
            self._permits[resp] = permit
        log.debug("http_request", method=method, host=url.host, path=url.path, status=resp.status)
        return resp


class _Pair(Struct, frozen=True, eq=False):
    """A response with its (possibly pre-read) body, as the retry loop sees it."""

    resp: Response
    body: bytes
    done: Callable[[Response], None]

    @property
    def status(self) -> int:
        return self.resp.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self.resp.headers

    def release(self) -> None:
        self.done(self.resp)


def _authority(registry: str) -> tuple[str, int | None]:
    """``host[:port]`` → (lowercased host, explicit port or None)."""
    parsed = URL(f"https://{registry}")
    return (parsed.host or registry).lower(), parsed.explicit_port


def _same_origin(url: URL, origin: tuple[str, int | None]) -> bool:
    """Whether ``url`` is on the registry's own host (without a port: the scheme's default port)."""
    host, port = origin
    return (url.host or "").lower() == host and url.port == (port or (443 if url.scheme == "https" else 80))
