"""A small in-memory OCI distribution 1.1 registry with the referrers API, served over HTTP by aiohttp
on its own thread and event loop (127.0.0.1, a free port).

docker-registry 2.8 has no referrers API, so the API path of mirror's referrers support is tested
against this one. It serves what clients need to push and pull: the ``/v2/`` ping; blobs
HEAD/GET; uploads POST (``?digest=`` monolithic, ``?mount=&from=``), PATCH, PUT ``?digest=``
(verified), status GET, DELETE; manifests HEAD/GET/PUT/DELETE by tag or digest (a PUT by digest is
verified; a manifest with a ``subject`` is answered with ``OCI-Subject``); ``tags/list``; and
``GET /v2/<name>/referrers/<digest>`` (an OCI index of the manifests whose subject is that digest,
with ``artifactType`` and annotations; ``?artifactType=`` applied and announced in
``OCI-Filters-Applied``; at most ``page_size`` entries a page, with a ``Link`` to the next page).
Anonymous, no TLS. ``requests`` logs (method, path, raw query, status) of every request.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from .registry import Registry

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_ROUTE = re.compile(r"^/v2/(?P<name>.+)/(?P<what>manifests|blobs|tags|referrers)/(?P<ref>[^/]+)$")
_UPLOAD = re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?P<id>[^/]*)$")


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _error(status: int, code: str, message: str = "") -> web.Response:
    body = json.dumps({"errors": [{"code": code, "message": message or code.lower()}]})
    return web.Response(status=status, text=body, content_type="application/json")


@dataclass
class _Repo:
    manifests: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # digest -> (media type, raw)
    tags: dict[str, str] = field(default_factory=dict)


class OciRegistry:
    """The registry; ``start()``/``stop()`` or use as a context manager."""

    def __init__(self, page_size: int = 100) -> None:
        self.page_size = page_size
        self.blobs: dict[str, bytes] = {}  # one blob store for every repository
        self.repos: dict[str, _Repo] = {}
        self.uploads: dict[str, bytearray] = {}
        self.requests: list[tuple[str, str, str, int]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def registry(self) -> Registry:
        """A :class:`Registry` view (plain HTTP, anonymous) for ``support.images`` pushers and skopeo."""
        url = f"http://{self.host}"
        return Registry(host=self.host, url=url, storage=Path("/nonexistent"), log_path=Path("/nonexistent"),
                        config_path=Path("/nonexistent"), tls=False, cert_dir=None, ca_pem=None, username=None,
                        password=None, auth="none")

    def referrers(self, name: str, subject: str) -> list[dict[str, Any]]:
        """The entries the referrers API lists for ``subject`` in ``name``."""
        repo = self.repos.get(name, _Repo())
        out = []
        for digest, (media_type, raw) in repo.manifests.items():
            data = json.loads(raw)
            if (data.get("subject") or {}).get("digest") != subject:
                continue
            item: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": len(raw)}
            kind = data.get("artifactType") or (data.get("config") or {}).get("mediaType")
            if kind:
                item["artifactType"] = kind
            if data.get("annotations"):
                item["annotations"] = data["annotations"]
            out.append(item)
        return sorted(out, key=lambda item: item["digest"])

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> OciRegistry:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="oci-registry", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._astart(), loop).result(timeout=10)
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            if self._runner is not None:
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=10)
            loop.close()
            self._loop = None

    def __enter__(self) -> OciRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _astart(self) -> None:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])

    # -- routing --------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        resp = await self._route(request)
        self.requests.append((request.method, request.path, request.rel_url.raw_query_string, resp.status))
        return resp

    async def _route(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path in ("/v2", "/v2/"):
            return web.Response(status=200, text="{}", content_type="application/json")
        if (m := _UPLOAD.match(path)) is not None:
            return await self._upload(request, m["name"], m["id"])
        if (m := _ROUTE.match(path)) is None:
            return web.Response(status=404, text="404 page not found")
        name, what, ref = m["name"], m["what"], m["ref"]
        if what == "manifests":
            return await self._manifest(request, name, ref)
        if what == "blobs":
            return self._blob(request, ref)
        if what == "referrers":
            return self._referrers(request, name, ref)
        tags = sorted(self.repos[name].tags) if name in self.repos else None
        if tags is None:
            return _error(404, "NAME_UNKNOWN")
        return web.json_response({"name": name, "tags": tags})

    def _blob(self, request: web.Request, digest: str) -> web.StreamResponse:
        data = self.blobs.get(digest)
        if data is None:
            return _error(404, "BLOB_UNKNOWN")
        headers = {"Docker-Content-Digest": digest, "Content-Length": str(len(data))}
        if request.method == "HEAD":
            return web.Response(status=200, headers=headers)
        return web.Response(status=200, body=data, headers={"Docker-Content-Digest": digest},
                            content_type="application/octet-stream")

    async def _upload(self, request: web.Request, name: str, upload_id: str) -> web.StreamResponse:
        body = await request.read()
        if request.method == "POST" and not upload_id:
            mount = request.query.get("mount")
            if mount is not None and mount in self.blobs:
                return web.Response(status=201, headers={"Location": f"/v2/{name}/blobs/{mount}",
                                                         "Docker-Content-Digest": mount})
            wanted = request.query.get("digest")
            if wanted is not None:
                return self._commit(name, bytearray(body), wanted)
            upload_id = uuid.uuid4().hex
            self.uploads[upload_id] = bytearray()
            return self._accepted(name, upload_id)
        data = self.uploads.get(upload_id)
        if data is None:
            return _error(404, "BLOB_UPLOAD_UNKNOWN")
        if request.method == "DELETE":
            del self.uploads[upload_id]
            return web.Response(status=204)
        if request.method == "GET":
            return self._accepted(name, upload_id, status=204)
        data.extend(body)
        if request.method == "PATCH":
            return self._accepted(name, upload_id)
        if request.method == "PUT":
            del self.uploads[upload_id]
            return self._commit(name, data, request.query.get("digest", ""))
        return web.Response(status=405)

    def _accepted(self, name: str, upload_id: str, status: int = 202) -> web.Response:
        size = len(self.uploads[upload_id])
        return web.Response(status=status, headers={"Location": f"/v2/{name}/blobs/uploads/{upload_id}",
                                                    "Range": f"0-{max(size - 1, 0)}", "Docker-Upload-UUID": upload_id})

    def _commit(self, name: str, data: bytearray, wanted: str) -> web.Response:
        if _digest(bytes(data)) != wanted:
            return _error(400, "DIGEST_INVALID")
        self.blobs[wanted] = bytes(data)
        return web.Response(status=201, headers={"Location": f"/v2/{name}/blobs/{wanted}",
                                                 "Docker-Content-Digest": wanted})

    async def _manifest(self, request: web.Request, name: str, ref: str) -> web.StreamResponse:
        if request.method == "PUT":
            return self._put_manifest(name, ref, request.headers.get("Content-Type", ""), await request.read())
        repo = self.repos.get(name)
        digest = (ref if ref.startswith("sha256:") else repo.tags.get(ref)) if repo else None
        if repo is None or digest is None or digest not in repo.manifests:
            return _error(404, "MANIFEST_UNKNOWN")
        if request.method == "DELETE":
            del repo.manifests[digest]
            for tag in [t for t, d in repo.tags.items() if d == digest]:
                del repo.tags[tag]
            return web.Response(status=202)
        media_type, raw = repo.manifests[digest]
        headers = {"Docker-Content-Digest": digest, "Content-Type": media_type, "ETag": f'"{digest}"'}
        if request.method == "HEAD":
            return web.Response(status=200, headers={**headers, "Content-Length": str(len(raw))})
        return web.Response(status=200, body=raw, headers=headers)

    def _put_manifest(self, name: str, ref: str, media_type: str, raw: bytes) -> web.Response:
        digest = _digest(raw)
        if ref.startswith("sha256:") and ref != digest:
            return _error(400, "DIGEST_INVALID")
        data = json.loads(raw)
        for desc in [data.get("config") or {}, *(data.get("layers") or [])]:
            if desc and desc.get("digest") not in self.blobs:
                return _error(400, "MANIFEST_BLOB_UNKNOWN", str(desc.get("digest")))
        repo = self.repos.setdefault(name, _Repo())
        repo.manifests[digest] = (media_type.split(";")[0].strip(), raw)
        if not ref.startswith("sha256:"):
            repo.tags[ref] = digest
        headers = {"Docker-Content-Digest": digest, "Location": f"/v2/{name}/manifests/{digest}"}
        if data.get("subject"):
            headers["OCI-Subject"] = data["subject"]["digest"]
        return web.Response(status=201, headers=headers)

    def _referrers(self, request: web.Request, name: str, subject: str) -> web.Response:
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", subject):
            return _error(400, "DIGEST_INVALID")
        entries = self.referrers(name, subject)
        headers = {}
        wanted = request.query.get("artifactType")
        if wanted is not None:
            entries = [e for e in entries if e.get("artifactType") == wanted]
            headers["OCI-Filters-Applied"] = "artifactType"
        start = int(request.query.get("page", "0"))
        page = entries[start:start + self.page_size]
        if start + self.page_size < len(entries):
            query = f"page={start + self.page_size}" + (f"&artifactType={quote(wanted, safe='')}" if wanted else "")
            headers["Link"] = f'</v2/{name}/referrers/{subject}?{query}>; rel="next"'
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": page})
        return web.Response(status=200, body=body.encode(), headers={**headers, "Content-Type": OCI_INDEX})


@contextmanager
def start_oci_registry(page_size: int = 100) -> Iterator[OciRegistry]:
    with OciRegistry(page_size) as reg:
        yield reg
