"""An in-memory OCI distribution registry behind the client's send seam: no sockets, no processes.

``FakeRegistry`` is a ``mirror.http.seam.Sender``: hand it to ``open_runtime(..., sender=fake)`` (or use
``support.fakeimages.fake_runtime``) and every request the client sends is answered here, in-process.

API (what tests use)::

    fake = FakeRegistry(auth=False, users=None, page_size=100, blob_redirect=None)
    fake.log                      # list[Logged]: method, host, path, query, status, sent, received,
                                  #   authorized, kind ("ping", "manifest", "blob", "upload", "tags",
                                  #   "catalog", "token", "cdn"); one entry per request, faults included
    fake.requests(kind=None, method=None, host=None)   # the log, filtered
    fake.fault(503, times=None, match=lambda request: ..., retry_after=None)
                                  # answer the next ``times`` (None: every) matching request with that
                                  #   status; status 0: the connection fails (``send`` raises
                                  #   ``TransientError``, as the aiohttp sender does); a 429 makes
                                  #   the client's host limiter pause (2 s without ``retry_after=0``)
    fake.cut_body(after, times=1, match=...)   # serve normally, but the body breaks after ``after``
                                  #   bytes (the reader sees ``TransientError``)
    fake.has_blob(host, repo, digest), fake.tags(host, repo), fake.manifest(host, repo, ref) -> bytes

Any host name is a registry (storage is per host and repository); ``auth.test`` is the token server
and ``cdn.test`` (any port or scheme) the blob store that ``blob_redirect="https://cdn.test"`` sends
blob GETs to (307, with a ``?sig=`` query as a presigned URL has).

Served: ``/v2/`` ping; manifests GET/HEAD/PUT/DELETE by tag or digest (PUT verifies a digest reference
and that referenced blobs/children exist); blobs HEAD/GET (``Range: bytes=N-`` → 206); uploads POST
(``?mount=&from=`` cross-repository mount, ``?digest=`` monolithic), PATCH (``Content-Range`` checked:
416 when it does not start at the session's size), PUT ``?digest=`` (verified), GET status (204 +
Range), DELETE; ``tags/list`` and ``/v2/_catalog`` (the host's repositories that have tags; at most
``page_size`` a page, whatever ``n`` asks) with ``n``/``last`` and a relative ``Link`` header.

With ``auth=True`` every registry request needs ``Authorization: Bearer <token>`` from the token server
(401 + ``WWW-Authenticate: Bearer realm="https://auth.test/token",service="fake",scope=...`` otherwise);
with ``users`` the token server wants matching Basic credentials.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from mirror.errors import TransientError
from mirror.http.seam import Request

TOKEN_HOST = "auth.test"
CDN_HOST = "cdn.test"
_UPLOAD = re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?P<uuid>[^/]*)$")
_ROUTE = re.compile(r"^/v2/(?P<name>.+)/(?P<what>manifests|blobs|tags)/(?P<ref>[^/]+)$")


@dataclass(frozen=True, slots=True)
class Logged:
    """One request as the fake saw it. ``sent``/``received``: body bytes of request and response."""

    method: str
    host: str
    path: str
    query: str
    status: int
    sent: int
    received: int
    authorized: bool
    kind: str


@dataclass(slots=True)
class Fault:
    status: int
    times: int | None
    match: Callable[[Request], bool]
    headers: Mapping[str, str]
    cut_after: int | None


class FakeResponse:
    """A ``mirror.http.seam.Response`` over bytes (identity-hashed: the client keys permits by it)."""

    def __init__(self, status: int, url: URL, body: bytes = b"", headers: Mapping[str, str] | None = None,
                 *, cut_after: int | None = None, piece: int = 64 << 10) -> None:
        self.status = status
        self.url = url
        self.headers = CIMultiDictProxy(CIMultiDict(headers or {}))
        self.body = body
        self.released = False
        self._cut_after = cut_after
        self._piece = piece

    async def chunks(self) -> AsyncIterator[bytes]:
        end = len(self.body) if self._cut_after is None else min(self._cut_after, len(self.body))
        for start in range(0, end, self._piece):
            yield self.body[start:min(start + self._piece, end)]
        if end < len(self.body):
            raise TransientError(f"reading {self.url.path}: connection reset (fake)")

    async def read(self, limit: int | None = None) -> bytes:
        data = b"".join([chunk async for chunk in self.chunks()])
        return data if limit is None else data[:limit + 1]

    def release(self) -> None:
        self.released = True


@dataclass(slots=True)
class _Repo:
    blobs: set[str] = field(default_factory=set)
    manifests: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # digest -> (media type, raw)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Upload:
    host: str
    name: str
    data: bytearray = field(default_factory=bytearray)


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def _error(status: int, code: str, url: URL, **headers: str) -> FakeResponse:
    body = json.dumps({"errors": [{"code": code, "message": code.lower().replace("_", " ")}]}).encode()
    return FakeResponse(status, url, body, {"Content-Type": "application/json", **headers})


class FakeRegistry:
    """See the module documentation."""

    def __init__(self, *, auth: bool = False, users: Mapping[str, str] | None = None, page_size: int = 100,
                 blob_redirect: str | None = None) -> None:
        self.auth = auth
        self.users = dict(users or {})
        self.page_size = page_size
        self.blob_redirect = blob_redirect
        self.log: list[Logged] = []
        self.blobs: dict[str, bytes] = {}  # content-addressed store shared by every repository
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._uploads: dict[str, _Upload] = {}
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)
        self.tokens: set[str] = {"admin"}  # "admin": what the image factory pushes with

    # -- test controls ---------------------------------------------------------------------------
    def fault(self, status: int, *, times: int | None = None, match: Callable[[Request], bool] = lambda _r: True,
              retry_after: float | None = None) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        self._faults.append(Fault(status, times, match, headers, None))

    def cut_body(self, after: int, *, times: int | None = 1,
                 match: Callable[[Request], bool] = lambda _r: True) -> None:
        self._faults.append(Fault(200, times, match, {}, after))

    def requests(self, kind: str | None = None, method: str | None = None, host: str | None = None) -> list[Logged]:
        return [e for e in self.log if (kind is None or e.kind == kind) and (method is None or e.method == method)
                and (host is None or e.host == host)]

    def has_blob(self, host: str, name: str, digest: str) -> bool:
        return digest in self._repo(host, name).blobs

    def tags(self, host: str, name: str) -> list[str]:
        return sorted(self._repo(host, name).tags)

    def manifest(self, host: str, name: str, ref: str) -> bytes:
        repo = self._repo(host, name)
        return repo.manifests[repo.tags.get(ref, ref)][1]

    def _repo(self, host: str, name: str) -> _Repo:
        return self._repos.setdefault((host, name), _Repo())

    # -- the seam --------------------------------------------------------------------------------
    async def send(self, request: Request) -> FakeResponse:
        body = await _collect(request.body)
        fault = self._take_fault(request)
        if fault is not None and fault.status == 0:
            self._note(request, body, 0, 0)
            raise TransientError(f"{request.method} {request.url.host}: connection refused (fake)")
        if fault is not None and fault.cut_after is None:
            resp = _error(fault.status, "FAULT", request.url, **fault.headers)
        else:
            resp = self._route(request, body)
            if fault is not None:
                resp = FakeResponse(resp.status, resp.url, resp.body, resp.headers, cut_after=fault.cut_after)
        received = 0 if request.method == "HEAD" else len(resp.body)
        if fault is not None and fault.cut_after is not None:
            received = min(received, fault.cut_after)
        self._note(request, body, resp.status, received)
        return resp

    def _note(self, request: Request, body: bytes, status: int, received: int) -> None:
        url = request.url
        self.log.append(Logged(request.method, url.host or "", url.path, url.query_string, status, len(body),
                               received, "Authorization" in request.headers, _kind(url)))

    def _take_fault(self, request: Request) -> Fault | None:
        for fault in self._faults:
            if fault.match(request):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                return fault
        return None

    def _route(self, request: Request, body: bytes) -> FakeResponse:
        url, method = request.url, request.method
        if url.host == TOKEN_HOST:
            return self._token(request)
        if url.host == CDN_HOST:
            data = self.blobs.get(url.path.rsplit("/", 1)[-1])
            return FakeResponse(200, url, data) if data is not None else _error(404, "BLOB_UNKNOWN", url)
        if self.auth and not self._authorized(request):
            return self._challenge(url)
        if url.path == "/v2/":
            return FakeResponse(200, url, b"{}")
        host = url.host or ""
        if url.path == "/v2/_catalog" and method == "GET":
            return self._catalog(url, host)
        if (m := _UPLOAD.match(url.path)) is not None:
            if m["uuid"]:
                return self._upload(method, url, m["uuid"], request.headers, body)
            if method == "POST":
                return self._start_upload(host, m["name"], url, body)
        elif (m := _ROUTE.match(url.path)) is not None:
            repo, what = self._repo(host, m["name"]), m["what"]
            if what == "manifests":
                return self._manifest(method, url, repo, m["ref"], request.headers, body)
            if what == "blobs" and method in ("GET", "HEAD"):
                return self._blob(method, url, repo, m["ref"], request.headers)
            if what == "tags" and m["ref"] == "list" and method == "GET":
                return self._tag_list(url, m["name"], repo)
        return _error(404, "NOT_FOUND", url)

    # -- auth --------------------------------------------------------------------------------------
    def _authorized(self, request: Request) -> bool:
        value = request.headers.get("Authorization", "")
        return value.startswith("Bearer ") and value[7:] in self.tokens

    def _challenge(self, url: URL) -> FakeResponse:
        params = f'realm="https://{TOKEN_HOST}/token",service="fake"'
        if (m := _ROUTE.match(url.path) or _UPLOAD.match(url.path)) is not None:
            params += f',scope="repository:{m["name"]}:pull,push"'
        return _error(401, "UNAUTHORIZED", url, **{"WWW-Authenticate": f"Bearer {params}"})

    def _token(self, request: Request) -> FakeResponse:
        if self.users:
            value = request.headers.get("Authorization", "")
            user, _, password = base64.b64decode(value[6:] or "Og==").decode().partition(":") \
                if value.startswith("Basic ") else ("", "", "")
            if self.users.get(user) != password:
                return _error(401, "UNAUTHORIZED", request.url)
        token = f"token-{next(self._ids)}"
        self.tokens.add(token)
        return FakeResponse(200, request.url, json.dumps({"token": token, "expires_in": 300}).encode(),
                            {"Content-Type": "application/json"})

    # -- manifests and blobs --------------------------------------------------------------------------
    def _manifest(self, method: str, url: URL, repo: _Repo, ref: str, headers: Mapping[str, str],
                  body: bytes) -> FakeResponse:
        if method == "PUT":
            return self._put_manifest(url, repo, ref, headers.get("Content-Type", ""), body)
        digest = repo.tags.get(ref, ref)
        if digest not in repo.manifests:
            return _error(404, "MANIFEST_UNKNOWN", url)
        if method == "DELETE":
            if ref == digest:
                del repo.manifests[digest]
                repo.tags = {t: d for t, d in repo.tags.items() if d != digest}
            else:
                del repo.tags[ref]
            return FakeResponse(202, url)
        media_type, raw = repo.manifests[digest]
        return FakeResponse(200, url, raw, {"Content-Type": media_type, "Docker-Content-Digest": digest,
                                            "Content-Length": str(len(raw))})

    def _put_manifest(self, url: URL, repo: _Repo, ref: str, media_type: str, raw: bytes) -> FakeResponse:
        digest = digest_of(raw)
        if ":" in ref and ref != digest:
            return _error(400, "DIGEST_INVALID", url)
        try:
            data = json.loads(raw)
        except ValueError:
            return _error(400, "MANIFEST_INVALID", url)
        blobs = [d["digest"] for d in [data.get("config") or {}, *data.get("layers", [])] if d]
        children = [d["digest"] for d in data.get("manifests", [])]
        if any(b not in repo.blobs for b in blobs) or any(c not in repo.manifests for c in children):
            return _error(400, "MANIFEST_BLOB_UNKNOWN", url)
        repo.manifests[digest] = (media_type, raw)
        if ref != digest:
            repo.tags[ref] = digest
        return FakeResponse(201, url, b"", {"Docker-Content-Digest": digest,
                                            "Location": f"{url.path.rsplit('/', 1)[0]}/{digest}"})

    def _blob(self, method: str, url: URL, repo: _Repo, digest: str, headers: Mapping[str, str]) -> FakeResponse:
        if digest not in repo.blobs:
            return _error(404, "BLOB_UNKNOWN", url)
        data = self.blobs[digest]
        if method == "GET" and self.blob_redirect is not None:
            return FakeResponse(307, url, b"", {"Location": f"{self.blob_redirect}/blobs/{digest}?sig=x%2By"})
        common = {"Docker-Content-Digest": digest, "Content-Type": "application/octet-stream"}
        found = re.fullmatch(r"bytes=(\d+)-(\d*)", headers.get("Range", ""))
        if found is None or method == "HEAD":
            common["Content-Length"] = str(len(data))
            return FakeResponse(200, url, b"" if method == "HEAD" else data, common)
        first, last = int(found[1]), int(found[2] or len(data) - 1)
        if first >= len(data):
            return _error(416, "RANGE_INVALID", url)
        common["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
        return FakeResponse(206, url, data[first:last + 1], common)

    def _tag_list(self, url: URL, name: str, repo: _Repo) -> FakeResponse:
        if not repo.tags:
            return _error(404, "NAME_UNKNOWN", url)
        n = int(url.query.get("n", self.page_size))
        last = url.query.get("last")
        remaining = [t for t in sorted(repo.tags) if last is None or t > last]
        page = remaining[:n]
        headers = {"Content-Type": "application/json"}
        if len(remaining) > n and page:
            headers["Link"] = f'</v2/{name}/tags/list?n={n}&last={quote(page[-1])}>; rel="next"'
        return FakeResponse(200, url, json.dumps({"name": name, "tags": page}).encode(), headers)

    def _catalog(self, url: URL, host: str) -> FakeResponse:
        names = sorted(name for (h, name), repo in self._repos.items() if h == host and repo.tags)
        n = min(int(url.query.get("n", self.page_size)), self.page_size)  # a registry may cap ``n``
        last = url.query.get("last")
        remaining = [name for name in names if last is None or name > last]
        page = remaining[:n]
        headers = {"Content-Type": "application/json"}
        if len(remaining) > n and page:
            headers["Link"] = f'</v2/_catalog?n={n}&last={quote(page[-1])}>; rel="next"'
        return FakeResponse(200, url, json.dumps({"repositories": page}).encode(), headers)

    # -- uploads -----------------------------------------------------------------------------------
    def _start_upload(self, host: str, name: str, url: URL, body: bytes) -> FakeResponse:
        repo = self._repo(host, name)
        mount, source = url.query.get("mount"), url.query.get("from")
        if mount and source and mount in self._repo(host, source).blobs:
            repo.blobs.add(mount)
            return self._created(name, mount, url)
        if (digest := url.query.get("digest")) is not None:
            return self._commit(repo, name, url, body, digest)
        uuid = f"u{next(self._ids)}"
        self._uploads[uuid] = _Upload(host, name)
        return FakeResponse(202, url, b"", {"Location": f"/v2/{name}/blobs/uploads/{uuid}?_state=s{uuid}",
                                            "Range": "0-0", "Docker-Upload-UUID": uuid})

    def _upload(self, method: str, url: URL, uuid: str, headers: Mapping[str, str], body: bytes) -> FakeResponse:
        upload = self._uploads.get(uuid)
        if upload is None:
            return _error(404, "BLOB_UPLOAD_UNKNOWN", url)
        status = {"Location": f"/v2/{upload.name}/blobs/uploads/{uuid}?_state=s{uuid}",
                  "Range": f"0-{max(len(upload.data) - 1, 0)}", "Docker-Upload-UUID": uuid}
        if method == "GET":
            return FakeResponse(204, url, b"", status)
        if method == "DELETE":
            del self._uploads[uuid]
            return FakeResponse(204, url)
        found = re.fullmatch(r"(\d+)-(\d+)", headers.get("Content-Range", ""))
        if found is not None and int(found[1]) != len(upload.data):
            return _error(416, "RANGE_INVALID", url)
        upload.data += body
        if method == "PATCH":
            status["Range"] = f"0-{max(len(upload.data) - 1, 0)}"
            return FakeResponse(202, url, b"", status)
        if method == "PUT" and (digest := url.query.get("digest")) is not None:
            del self._uploads[uuid]
            return self._commit(self._repo(upload.host, upload.name), upload.name, url, bytes(upload.data), digest)
        return _error(405, "UNSUPPORTED", url)

    def _commit(self, repo: _Repo, name: str, url: URL, data: bytes, digest: str) -> FakeResponse:
        if digest_of(data, digest.partition(":")[0]) != digest:
            return _error(400, "DIGEST_INVALID", url)
        self.blobs[digest] = data
        repo.blobs.add(digest)
        return self._created(name, digest, url)

    @staticmethod
    def _created(name: str, digest: str, url: URL) -> FakeResponse:
        return FakeResponse(201, url, b"", {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest})


async def _collect(body: bytes | AsyncIterable[bytes] | None) -> bytes:
    if body is None or isinstance(body, bytes):
        return body or b""
    return b"".join([piece async for piece in body])


def _kind(url: URL) -> str:
    if url.host == TOKEN_HOST:
        return "token"
    if url.host == CDN_HOST:
        return "cdn"
    if url.path == "/v2/":
        return "ping"
    if url.path == "/v2/_catalog":
        return "catalog"
    if _UPLOAD.match(url.path):
        return "upload"
    m = _ROUTE.match(url.path)
    return {"manifests": "manifest", "blobs": "blob", "tags": "tags"}[m["what"]] if m else "other"
