"""An in-process aiohttp reverse proxy in front of a real registry, on its own thread and event loop.

Everything is forwarded and streamed; ``Location`` headers and the bearer ``realm`` are rewritten so
clients stay on the proxy (token requests go through ``/__auth__/...``).  Hooks:

* ``redirect_blobs``: blob GET/HEAD that the registry would answer 200 are answered ``307`` to a second
  server reached as ``http://localhost:<port2>/blobs/<digest>?repo=...&sig=...`` (another host name,
  like a CDN with pre-signed URLs); it fetches the blob upstream (with the credentials the proxy saw)
  and records the headers *it* received in :attr:`RegistryProxy.blob_requests`.
* ``corrupt_blob``: blob GET bodies for these digests have one byte flipped, same ``Content-Length``.
* ``tags_page_size``: ``GET /v2/<name>/tags/list`` is answered sorted and paginated (``n``, ``last``,
  ``Link: <...>; rel="next"``) with at most this many tags a page; distribution 2.8 itself ignores
  ``n``/``last`` there and returns every tag unsorted (``/v2/_catalog`` paginates natively).
* ``faults``: :class:`Fault` rules (predicate + async action) checked in order before forwarding.
* ``requests``: every request with its kind, status and request headers.
* ``upload_bytes``: request-body bytes the proxy received on upload POST/PATCH/PUT requests (what a
  client sent, re-sent bytes included); ``upload_bytes_by_session`` splits them per upload session
  (URL path) and ``completed_sessions`` holds the sessions whose closing PUT answered 201.
* :func:`chaos_fault`: one :class:`Fault` that, with a seeded RNG, injects a random fault fitting the
  request class into a configurable share of requests (resets before and mid body, truncated
  bodies, 500/502/503, 429 with ``Retry-After`` in both forms, slow trickles, expired upload
  sessions, a lagging upload ``Range``, wrong blob bytes, a failing token endpoint) and counts them.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import email.utils
import random
import re
import secrets
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, TypedDict, Unpack

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from .registry import Registry

RequestKind = Literal["ping", "manifest", "blob", "upload", "tags", "catalog", "token", "other"]
AUTH_PREFIX = "/__auth__"
HOP_BY_HOP = frozenset(
    "connection keep-alive proxy-authenticate proxy-authorization te trailer transfer-encoding upgrade host "
    "content-length".split()
)
_PATH_RE = re.compile(r"^/v2/(?P<repo>.+)/(?P<what>manifests|blobs|tags)/(?P<ref>.*)$")


@dataclass(frozen=True)
class RequestInfo:
    """What a :class:`Fault` predicate sees. Header names are lower-case."""

    method: str
    path: str
    query: str
    kind: RequestKind
    repo: str | None
    reference: str | None
    headers: dict[str, str]


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    query: str
    kind: RequestKind
    status: int
    headers: dict[str, str]  # request headers, lower-case names

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


FaultAction = Callable[[web.Request, RequestInfo], Awaitable[web.StreamResponse | None]]


@dataclass
class Fault:
    """A rule: when ``predicate`` matches (at most ``times`` times; ``None`` = always), run ``action``.

    The action returns a response to send instead of forwarding, or ``None`` to forward as usual
    (e.g. after a delay)."""

    predicate: Callable[[RequestInfo], bool]
    action: FaultAction
    times: int | None = 1
    hits: int = 0

    @staticmethod
    def match(
        kind: RequestKind | None = None, method: str | None = None, path: str | None = None
    ) -> Callable[[RequestInfo], bool]:
        """A predicate on request kind, method and a regex searched in the path."""
        rx = re.compile(path) if path is not None else None
        return lambda r: (
            (kind is None or r.kind == kind)
            and (method is None or r.method == method)
            and (rx is None or rx.search(r.path) is not None)
        )

    @classmethod
    def respond(
        cls,
        predicate: Callable[[RequestInfo], bool],
        status: int,
        *,
        times: int | None = 1,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> Fault:
        async def action(_req: web.Request, _info: RequestInfo) -> web.StreamResponse:
            return web.Response(status=status, body=body, headers=headers)

        return cls(predicate, action, times)


BodyFault = Literal["reset", "truncate", "trickle"]


def _drop_connection(request: web.Request, *, reset: bool) -> None:
    """Close the client connection now: with an RST (``SO_LINGER`` 0) or a plain FIN."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if reset and sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()


async def _trickle(resp: web.StreamResponse, data: bytes, piece: int = 4096, pause: float = 0.05,
                   budget: float = 1.5) -> None:
    """Write ``data`` in small pieces with pauses (a slow link), for at most ``budget`` seconds of
    pausing; the rest goes at once."""
    spent = 0.0
    while data:
        await resp.write(data[:piece])
        data = data[piece:]
        if spent < budget:
            await asyncio.sleep(pause)  # the fault itself: a slow peer, not synchronisation
            spent += pause


def classify(method: str, path: str) -> tuple[RequestKind, str | None, str | None]:
    if path.startswith(AUTH_PREFIX):
        return "token", None, None
    if path in ("/v2", "/v2/"):
        return "ping", None, None
    if path == "/v2/_catalog":
        return "catalog", None, None
    m = _PATH_RE.match(path)
    if m is None:
        return "other", None, None
    repo, what, ref = m.group("repo"), m.group("what"), m.group("ref")
    if what == "blobs" and (ref == "uploads" or ref.startswith("uploads/")):
        return "upload", repo, ref[len("uploads/") :] or None
    kinds: dict[str, RequestKind] = {"manifests": "manifest", "blobs": "blob", "tags": "tags"}
    return kinds[what], repo, ref


Transform = Callable[[int, bytes], bytes]


def _flip_at(target: int) -> Transform:
    def transform(offset: int, chunk: bytes) -> bytes:
        if offset <= target < offset + len(chunk):
            i = target - offset
            return chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :]
        return chunk

    return transform


class ProxyOptions(TypedDict, total=False):
    redirect_blobs: bool
    corrupt_blob: Iterable[str]
    faults: Iterable[Fault]
    tags_page_size: int | None


class RegistryProxy:
    """The proxy; options are :class:`ProxyOptions` and stay mutable while it runs."""

    def __init__(self, upstream: Registry, **options: Unpack[ProxyOptions]) -> None:
        self.upstream = upstream
        self.redirect_blobs: bool = options.get("redirect_blobs", False)
        self.corrupt_blob: set[str] = set(options.get("corrupt_blob", ()))
        self.faults: list[Fault] = list(options.get("faults", ()))
        self.tags_page_size: int | None = options.get("tags_page_size")
        self.corrupted: list[str] = []  # digests served corrupted, in order
        self._lock = threading.Lock()
        self._requests: list[LoggedRequest] = []
        self._blob_requests: list[LoggedRequest] = []
        self._signed: dict[str, tuple[str, str | None]] = {}  # sig -> (repo, Authorization)
        self._auth_origin: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runners: list[web.AppRunner] = []
        self._session: aiohttp.ClientSession | None = None
        self.port = 0
        self.blob_port = 0
        self.upload_bytes = 0
        self.upload_bytes_by_session: collections.Counter[str] = collections.Counter()
        self.completed_sessions: set[str] = set()

    # ------------------------------------------------------------------ addresses
    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def blob_url(self) -> str:
        return f"http://localhost:{self.blob_port}"

    @property
    def registry(self) -> Registry:
        """A :class:`Registry` view of the proxy (plain HTTP, upstream credentials) for skopeo and pushers."""
        return dataclasses.replace(
            self.upstream, host=self.host, url=self.url, tls=False, cert_dir=None, ca_pem=None, pid=None
        )

    def ref(self, repo: str, tag_or_digest: str = "latest") -> str:
        return self.registry.ref(repo, tag_or_digest)

    def skopeo_args(self, prefix: str = "--") -> list[str]:
        return self.registry.skopeo_args(prefix)

    @property
    def requests(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def blob_requests(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._blob_requests)

    def add_fault(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> RegistryProxy:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="registry-proxy", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._astart(), loop).result(timeout=10)
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._astop(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=10)
            loop.close()
            self._loop = None

    def __enter__(self) -> RegistryProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _serve(self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> int:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self._runners.append(runner)
        return int(runner.addresses[0][1])

    async def _astart(self) -> None:
        connector = aiohttp.TCPConnector(ssl=self.upstream.ssl_context() or False)
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, timeout=aiohttp.ClientTimeout(total=120)
        )
        self.port = await self._serve(self._handle)
        self.blob_port = await self._serve(self._handle_blob_host)

    async def _astop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------------ helpers
    def _log(self, target: list[LoggedRequest], request: web.Request, kind: RequestKind, status: int) -> None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        with self._lock:
            target.append(
                LoggedRequest(request.method, request.path, request.query_string, kind, status, headers)
            )

    def _rewrite_location(self, value: str) -> str:
        for prefix in (
            self.upstream.url,
            f"{'https' if self.upstream.tls else 'http'}://{self.upstream.alt_host}",
        ):
            if value.startswith(prefix):
                return self.url + value[len(prefix) :]
        return value

    def _rewrite_challenge(self, value: str) -> str:
        m = re.search(r'realm="([^"]+)"', value)
        if m is None or not value.lower().startswith("bearer"):
            return value
        realm = urllib.parse.urlsplit(m.group(1))
        self._auth_origin = f"{realm.scheme}://{realm.netloc}"
        new_realm = f"{self.url}{AUTH_PREFIX}{realm.path}" + (f"?{realm.query}" if realm.query else "")
        return value[: m.start(1)] + new_realm + value[m.end(1) :]

    async def _forward(
        self,
        request: web.Request,
        url: str,
        *,
        headers: CIMultiDict[str] | None = None,
        corrupt: str | None = None,
        rewrite: bool = True,
        body_fault: BodyFault | None = None,
        alter: Callable[[CIMultiDict[str]], None] | None = None,
    ) -> web.StreamResponse:
        """Stream ``request`` to ``url`` and the answer back; ``corrupt``: flip a byte of a 200 body;
        ``body_fault``: break a 200 response body half way (``reset``: RST, ``truncate``: a clean
        close short of Content-Length, ``trickle``: dribble it out slowly); ``alter``: edit the
        response headers."""
        assert self._session is not None
        if headers is None:
            headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP)
            if request.content_length is not None:
                headers["Content-Length"] = str(request.content_length)
        data: object = request.content if request.body_exists else None
        if data is not None and request.method in ("PATCH", "PUT", "POST") and "/blobs/uploads" in request.path:
            data = self._counted(request)
        try:
            up_cm = self._session.request(
                request.method,
                URL(url, encoded=True),
                headers=headers,
                data=data,
                allow_redirects=False,
                skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
            )
            async with up_cm as up:
                resp = web.StreamResponse(status=up.status, reason=up.reason)
                for k, v in up.headers.items():
                    lk = k.lower()
                    if lk in HOP_BY_HOP or lk in ("date", "server"):
                        continue
                    if rewrite and lk == "location":
                        v = self._rewrite_location(v)
                    elif rewrite and lk == "www-authenticate":
                        v = self._rewrite_challenge(v)
                    resp.headers.add(k, v)
                if alter is not None:
                    alter(resp.headers)
                if up.content_length is not None:
                    resp.content_length = up.content_length
                transform = None
                if corrupt is not None and up.status == 200 and request.method == "GET":
                    with self._lock:
                        self.corrupted.append(corrupt)
                    transform = _flip_at((up.content_length or 1) // 2)
                await resp.prepare(request)
                if request.method != "HEAD":
                    offset = 0
                    cut = (up.content_length or 0) // 2 if body_fault is not None and up.status in (200, 206) else -1
                    async for chunk in up.content.iter_any():
                        out = transform(offset, chunk) if transform is not None else chunk
                        if cut >= 0 and offset + len(out) > cut:
                            assert body_fault is not None
                            if body_fault == "trickle":
                                await _trickle(resp, out)
                                offset += len(chunk)
                                continue
                            await resp.write(out[: max(0, cut - offset)])
                            _drop_connection(request, reset=body_fault == "reset")
                            return resp
                        offset += len(chunk)
                        await resp.write(out)
                await resp.write_eof()
                return resp
        except aiohttp.ClientError as e:
            return web.Response(status=502, text=f"proxy upstream error: {e}")

    async def _counted(self, request: web.Request) -> AsyncIterator[bytes]:
        async for chunk in request.content.iter_any():
            self._count_upload(request, len(chunk))
            yield chunk

    def _count_upload(self, request: web.Request, n: int) -> None:
        with self._lock:
            self.upload_bytes += n
            self.upload_bytes_by_session[request.path] += n

    def abandoned_upload_bytes(self) -> int:
        """Bytes sent into upload sessions that never completed (cancelled, invalidated, expired)."""
        with self._lock:
            return sum(n for path, n in self.upload_bytes_by_session.items() if path not in self.completed_sessions)

    # ------------------------------------------------------------------ handlers
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        kind, repo, ref = classify(request.method, request.path)
        headers = {k.lower(): v for k, v in request.headers.items()}
        info = RequestInfo(request.method, request.path, request.query_string, kind, repo, ref, headers)
        resp = await self._dispatch(request, info)
        self._log(self._requests, request, kind, resp.status)
        if kind == "upload" and request.method == "PUT" and resp.status == 201:
            with self._lock:
                self.completed_sessions.add(request.path)
        return resp

    async def _dispatch(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        for fault in list(self.faults):
            if (fault.times is None or fault.hits < fault.times) and fault.predicate(info):
                fault.hits += 1
                result = await fault.action(request, info)
                if result is not None:
                    return result
        if info.kind == "token":
            if self._auth_origin is None:
                return web.Response(status=404, text="no auth realm seen yet")
            return await self._forward(
                request, self._auth_origin + request.raw_path[len(AUTH_PREFIX) :], rewrite=False
            )
        upstream_url = self.upstream.url + request.raw_path
        if info.kind == "tags" and request.method == "GET" and self.tags_page_size and info.repo:
            return await self._paginated_tags(request, info.repo)
        if info.kind == "blob" and request.method in ("GET", "HEAD"):
            if self.redirect_blobs and info.repo is not None and info.reference is not None:
                probe = await self._probe_blob(request, upstream_url)
                if probe == 200:
                    sig = secrets.token_urlsafe(12)
                    with self._lock:
                        self._signed[sig] = (info.repo, request.headers.get("Authorization"))
                    q = urllib.parse.urlencode({"repo": info.repo, "sig": sig})
                    location = f"{self.blob_url}/blobs/{info.reference}?{q}"
                    return web.Response(status=307, headers={"Location": location})
            if info.reference in self.corrupt_blob:
                return await self._forward(request, upstream_url, corrupt=info.reference)
        return await self._forward(request, upstream_url)

    async def _paginated_tags(self, request: web.Request, repo: str) -> web.StreamResponse:
        assert self._session is not None and self.tags_page_size is not None
        url = f"{self.upstream.url}/v2/{repo}/tags/list"
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "accept")}
        async with self._session.get(url, headers=headers, allow_redirects=False) as up:
            if up.status != 200:
                return await self._forward(request, url)
            body = await up.json(content_type=None)
        tags = sorted(body.get("tags") or [])
        last = request.query.get("last")
        if last is not None:
            tags = [t for t in tags if t > last]
        n = min(int(request.query.get("n") or self.tags_page_size), self.tags_page_size)
        page = tags[:n]
        resp = web.json_response({"name": repo, "tags": page})
        if len(tags) > n and page:
            q = urllib.parse.urlencode({"last": page[-1], "n": n})
            resp.headers["Link"] = f'</v2/{repo}/tags/list?{q}>; rel="next"'
        return resp

    async def _probe_blob(self, request: web.Request, url: str) -> int:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization",)}
        async with self._session.head(url, headers=headers, allow_redirects=False) as up:
            return up.status

    async def _handle_blob_host(self, request: web.Request) -> web.StreamResponse:
        m = re.match(r"^/blobs/(sha256:[0-9a-f]{64})$", request.path)
        sig = request.query.get("sig", "")
        with self._lock:
            signed = self._signed.get(sig)
        if m is None or signed is None or request.method not in ("GET", "HEAD"):
            resp: web.StreamResponse = web.Response(status=403, text="bad signature")
        else:
            repo, authorization = signed
            digest = m.group(1)
            headers: CIMultiDict[str] = CIMultiDict()
            if authorization:
                headers["Authorization"] = authorization
            if "Range" in request.headers:
                headers["Range"] = request.headers["Range"]
            url = f"{self.upstream.url}/v2/{repo}/blobs/{digest}"
            corrupt = digest if digest in self.corrupt_blob else None
            resp = await self._forward(request, url, headers=headers, corrupt=corrupt, rewrite=False)
        self._log(self._blob_requests, request, "blob", resp.status)
        return resp


@contextmanager
def start_proxy(upstream: Registry, **options: Unpack[ProxyOptions]) -> Iterator[RegistryProxy]:
    """Run a :class:`RegistryProxy` in front of ``upstream`` for the ``with`` block."""
    proxy = RegistryProxy(upstream, **options)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


# ---------------------------------------------------------------------------------- chaos
STATUS_KINDS = ("500", "502", "503", "429-seconds", "429-date")
CHAOS_KINDS = (
    *STATUS_KINDS, "reset-before", "reset-mid", "truncate", "trickle", "corrupt",
    "upload-reset-mid", "upload-expired", "upload-range-lag", "token-fail",
)


def _error_body(code: str, message: str) -> bytes:
    return f'{{"errors":[{{"code":"{code}","message":"{message}"}}]}}'.encode()


class Chaos:
    """Random faults at ``rate`` (0..1) over every request class, from a seeded RNG.

    ``kinds`` limits the fault kinds (default: all of :data:`CHAOS_KINDS`). Install with
    ``proxy.add_fault(chaos.fault())``; :attr:`counts` holds the faults injected, by kind."""

    def __init__(self, proxy: RegistryProxy, rate: float, seed: int = 0,
                 kinds: Iterable[str] | None = None) -> None:
        self.proxy = proxy
        self.rate = rate
        self.rng = random.Random(seed)
        self.kinds = frozenset(kinds) if kinds is not None else frozenset(CHAOS_KINDS)
        unknown = self.kinds - set(CHAOS_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}")
        self.counts: collections.Counter[str] = collections.Counter()
        self.enabled = True

    def fault(self) -> Fault:
        return Fault(lambda _info: self.enabled, self._act, times=None)

    def candidates(self, request: web.Request, info: RequestInfo) -> list[str]:
        m = info.method
        if info.kind == "token":
            return ["token-fail"]
        out = [*STATUS_KINDS, "reset-before"]
        if info.kind in ("manifest", "blob", "tags", "catalog") and m == "GET":
            out += ["reset-mid", "truncate", "trickle"]
        if info.kind == "blob" and m == "GET":
            out.append("corrupt")
        if info.kind == "upload" and info.reference:
            out.append("upload-expired")
            if m == "PATCH":
                out += ["upload-reset-mid", "upload-range-lag"]
        return [k for k in out if k in self.kinds]

    async def _act(self, request: web.Request, info: RequestInfo) -> web.StreamResponse | None:
        kinds = self.candidates(request, info)
        if not kinds or self.rng.random() >= self.rate:
            return None
        kind = self.rng.choice(kinds)
        self.counts[kind] += 1
        proxy = self.proxy
        upstream_url = proxy.upstream.url + request.raw_path
        if kind in ("500", "502", "503"):
            return web.Response(status=int(kind), body=_error_body("UNKNOWN", "chaos"),
                                content_type="application/json")
        if kind.startswith("429"):
            retry_after = "1" if kind == "429-seconds" else email.utils.formatdate(time.time() + 1, usegmt=True)
            return web.Response(status=429, body=_error_body("TOOMANYREQUESTS", "chaos"),
                                headers={"Retry-After": retry_after}, content_type="application/json")
        if kind in ("reset-before", "token-fail"):
            if kind == "token-fail" and self.rng.random() < 0.5:
                return web.Response(status=503, text="token service unavailable")
            _drop_connection(request, reset=True)
            return web.Response(status=599)  # logged only; the client saw a reset
        if kind in ("reset-mid", "truncate", "trickle"):
            fault: BodyFault = "reset" if kind == "reset-mid" else kind  # type: ignore[assignment]
            return await proxy._forward(request, upstream_url, body_fault=fault)
        if kind == "corrupt":
            return await proxy._forward(request, upstream_url, corrupt=info.reference)
        if kind == "upload-expired":
            return web.Response(status=404, body=_error_body("BLOB_UPLOAD_UNKNOWN", "blob upload unknown"),
                                content_type="application/json")
        if kind == "upload-reset-mid":
            want = max(1, (request.content_length or 1 << 20) // 2)
            got = 0
            async for chunk in request.content.iter_any():
                got += len(chunk)
                proxy._count_upload(request, len(chunk))
                if got >= want:
                    break
            _drop_connection(request, reset=True)
            return web.Response(status=599)
        # upload-range-lag: forward, then claim the registry holds fewer bytes than it does
        rng = self.rng

        def lag(headers: CIMultiDict[str]) -> None:
            m = re.fullmatch(r"0-(\d+)", headers.get("Range", ""))
            if m is not None and int(m.group(1)) > 0:
                headers["Range"] = f"0-{rng.randint(0, int(m.group(1)) - 1)}"

        return await proxy._forward(request, upstream_url, alter=lag)
