"""Chunked, resumable blob uploads and the state file that makes them resumable across runs.

Every upload goes to a real registry (distribution 2.8), most through the fault proxy so the test can
read request headers and break connections. Blob sources are in-memory ``BlobOpener`` s (the
destination contract's own seam) that record where they were (re)opened; the kill test copies from
a real source registry in a subprocess that is SIGKILLed.

distribution 2.8 signs the session offset into the upload URL and cancels a session addressed with
an older offset than it holds, so a session resumes only when the registry stopped exactly at the
last acknowledged chunk: the faults here either never let the broken chunk reach the registry, or
(``partial``) deliver half of it and check that the upload restarts cleanly in a new session.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import itertools
import json
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.lowlevel
import pytest
from aiohttp import web
from structlog.testing import capture_logs
from support import run_skopeo
from support.images import Client
from support.mirror_cli import ROOT
from support.proxy import Fault, LoggedRequest, RegistryProxy, RequestInfo
from support.registry import Registry, wait_until

from mirror.core.descriptor import Descriptor
from mirror.core.digest import Digest
from mirror.core.reference import Repo
from mirror.errors import ConfigError, DigestMismatch
from mirror.http.client import HttpClient
from mirror.http.credentials import Credential
from mirror.http.sender import AiohttpSender
from mirror.http.tls import TLSOptions
from mirror.state import StateStore, UploadRecord, default_state_path
from mirror.transports.registry.destination import RegistryDestination
from mirror.transports.registry.uploadopts import UploadOptions, resume_settings

MiB = 1 << 20
CHUNK = 4 * MiB
UPLOADS = UploadOptions(chunk_size=CHUNK, threshold=8 * MiB)
SIZE = 40 * MiB + 123  # ten full chunks and a short eleventh
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


# -- helpers ----------------------------------------------------------------------------------
class MemorySource:
    """A ``BlobOpener`` over bytes, in odd-sized pieces; remembers every offset it was opened at."""

    def __init__(self, data: bytes, piece: int = 300_007) -> None:
        self.data = data
        self.piece = piece
        self.opens: list[int] = []

    def __call__(self, offset: int) -> Any:
        return self._open(offset)

    @asynccontextmanager
    async def _open(self, offset: int) -> AsyncIterator[AsyncIterator[bytes]]:
        self.opens.append(offset)
        yield self._pieces(offset)

    async def _pieces(self, offset: int) -> AsyncIterator[bytes]:
        for start in range(offset, len(self.data), self.piece):
            yield self.data[start:start + self.piece]


def blob(size: int = SIZE, seed: int = 1) -> tuple[bytes, Descriptor]:
    data = random.Random(seed).randbytes(size)
    return data, Descriptor(LAYER, Digest.of(data), size)


@asynccontextmanager
async def destination(host: str, repo: str, state: StateStore | None = None,
                      uploads: UploadOptions = UPLOADS) -> AsyncIterator[RegistryDestination]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        endpoint = HttpClient(AiohttpSender(session)).endpoint(host, Credential(), TLSOptions(verify=False))
        yield RegistryDestination(endpoint, Repo(host, repo), state=state, uploads=uploads)


def uploads_of(requests: list[LoggedRequest], method: str) -> list[LoggedRequest]:
    return [r for r in requests if r.kind == "upload" and r.method == method]


def logged_until(proxy: RegistryProxy, method: str, timeout: float = 10.0) -> list[LoggedRequest]:
    """The proxy's log once it holds an upload request with ``method`` (the proxy logs a request
    after writing its response, so the client can be done a moment before the last line lands)."""
    wait_until(lambda: bool(uploads_of(proxy.requests, method)), timeout, f"a logged upload {method}")
    return proxy.requests


def content_ranges(requests: list[LoggedRequest]) -> list[tuple[int, int]]:
    out = []
    for r in uploads_of(requests, "PATCH"):
        first, _, last = (r.header("Content-Range") or "").partition("-")
        out.append((int(first), int(last)))
    return out


def expected_ranges(start: int, size: int, chunk: int = CHUNK) -> list[tuple[int, int]]:
    return [(s, min(s + chunk, size) - 1) for s in range(start, size, chunk)]


def assert_blob(reg: Registry, repo: str, data: bytes) -> None:
    """HEAD says the right size, GET hashes to the digest: byte-identical."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    client = Client(reg)
    head = client.request("HEAD", f"/v2/{repo}/blobs/{digest}")
    assert int(head.headers["Content-Length"]) == len(data)
    assert hashlib.sha256(client.get_blob(repo, digest)).hexdigest() == digest.removeprefix("sha256:")


def assert_no_blob(reg: Registry, repo: str, digest: Digest) -> None:
    assert not Client(reg).blob_exists(repo, str(digest))


def push_manifest_for(reg: Registry, repo: str, tag: str, layer: Descriptor) -> bytes:
    """A config blob and an OCI manifest naming ``layer``, pushed by the test bed's own client."""
    client = Client(reg)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [str(layer.digest)]}}).encode()
    config_digest = client.push_blob(repo, config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": LAYER, "digest": str(layer.digest), "size": layer.size}],
    }).encode()
    client.put_manifest(repo, tag, manifest, OCI_MANIFEST)
    return manifest


def nth_patch(n: int) -> Callable[[RequestInfo], bool]:
    """A fault predicate matching the ``n``-th PATCH of an upload seen by the proxy."""
    seen = itertools.count(1)
    return lambda info: info.kind == "upload" and info.method == "PATCH" and next(seen) == n


def reset_after(read: int) -> Callable[[web.Request, RequestInfo], Any]:
    """Read ``read`` body bytes from the client, then drop its connection; nothing goes upstream."""
    async def action(request: web.Request, _info: RequestInfo) -> web.StreamResponse:
        await request.content.readexactly(read)
        assert request.transport is not None
        request.transport.abort()
        return web.Response(status=499)
    return action


def forward_part_then_reset(upstream: Registry, part: int) -> Callable[[web.Request, RequestInfo], Any]:
    """Send the PATCH upstream with only ``part`` body bytes and hang up on both sides, once the
    registry has handled (logged) the truncated request."""
    async def action(request: web.Request, _info: RequestInfo) -> web.StreamResponse:
        before = sum(1 for e in upstream.access_log_requests() if e[0] == "PATCH")
        host, port = upstream.host.rsplit(":", 1)
        _reader, writer = await asyncio.open_connection(host, int(port))
        head = [f"PATCH {request.raw_path} HTTP/1.1", f"Host: {upstream.host}"]
        head += [f"{k}: {v}" for k, v in request.headers.items()
                 if k.lower() in ("content-type", "content-range", "content-length")]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + await request.content.readexactly(part))
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        await asyncio.to_thread(upstream.wait_for_access_log,
                                lambda es: sum(1 for e in es if e[0] == "PATCH") > before, 10.0)
        assert request.transport is not None
        request.transport.abort()
        return web.Response(status=499)
    return action


def raw_session(reg: Registry, repo: str, data: bytes) -> str:
    """Open an upload session with the test bed's client and PATCH ``data`` into it; its Location."""
    client = Client(reg)
    start = client.request("POST", f"/v2/{repo}/blobs/uploads/", {"Content-Length": "0"}, b"", ok=(202,))
    location = start.headers["Location"]
    if data:
        patched = client.request("PATCH", location, {"Content-Type": "application/octet-stream",
                                                     "Content-Range": f"0-{len(data) - 1}"}, data, ok=(202,))
        location = patched.headers["Location"]
    return str(location)


# -- chunked uploads in process --------------------------------------------------------------
@pytest.mark.anyio
async def test_chunked_upload_patches_in_ranges_and_saves_each_offset(
        registry: Registry, tmp_path: Path) -> None:
    data, desc = blob()
    source = MemorySource(data)
    with StateStore.open(tmp_path / "state.sqlite") as state, RegistryProxy(registry) as proxy:
        saved_at_patch: list[int | None] = []

        async def observe(_request: web.Request, _info: RequestInfo) -> None:
            record = state.get_upload(proxy.host, "chunked/app", str(desc.digest))
            saved_at_patch.append(None if record is None else record.offset)
            return None  # forward as usual

        proxy.add_fault(Fault(Fault.match("upload", "PATCH"), observe, times=None))
        async with destination(proxy.host, "chunked/app", state) as dst:
            sent = await dst.put_blob(desc, source)
        requests = logged_until(proxy, "PUT")

        assert sent == SIZE and source.opens == [0]
        assert len(uploads_of(requests, "POST")) == 1
        patches = uploads_of(requests, "PATCH")
        assert content_ranges(requests) == expected_ranges(0, SIZE) and len(patches) == 11
        for patch, (first, last) in zip(patches, expected_ranges(0, SIZE), strict=True):
            assert patch.status == 202
            assert patch.header("Content-Length") == str(last - first + 1)
            assert patch.header("Content-Type") == "application/octet-stream"
        # Every chunk started where the previous acknowledgement had been saved.
        assert saved_at_patch == [first for first, _ in expected_ranges(0, SIZE)]
        (put,) = uploads_of(requests, "PUT")
        assert put.status == 201 and put.query.endswith(f"&digest={desc.digest}")  # (logged decoded)
        assert "_state=" in put.query  # the opaque Location was kept, digest appended with &
        assert not uploads_of(requests, "GET") and not uploads_of(requests, "DELETE")
        # Finished: no session left to resume; the blob is known to be in the repository.
        assert state.uploads() == []
        assert state.known_repos(proxy.host, str(desc.digest)) == ["chunked/app"]

    entries = registry.wait_for_access_log(lambda es: any(e[0] == "PUT" for e in es))
    assert [e[2] for e in entries if e[0] == "PATCH"] == [202] * 11
    assert [(e[0], e[2]) for e in entries if e[0] == "PUT"] == [("PUT", 201)]
    assert_blob(registry, "chunked/app", data)
    push_manifest_for(registry, "chunked/app", "v1", desc)
    run_skopeo("copy", "--src-tls-verify=false", registry.ref("chunked/app", "v1"), f"dir:{tmp_path / 'out'}")
    assert (tmp_path / "out" / desc.digest.hex).read_bytes() == data


@pytest.mark.anyio
async def test_small_blobs_take_fewer_requests(registry: Registry) -> None:
    """≤ 1 MiB: POST + PUT with the body. Under the threshold: POST, one PATCH without range, PUT."""
    tiny, tiny_desc = blob(1000, seed=2)
    medium, medium_desc = blob(3 * MiB + 7, seed=3)
    async with destination(registry.host, "small/app") as dst:
        await dst.has_blob(tiny_desc)  # ping and auth out of the way
        before = len(registry.access_log_requests())
        assert await dst.put_blob(tiny_desc, MemorySource(tiny)) == 1000
        entries = registry.wait_for_access_log(lambda es: len(es) >= before + 2)[before:]
        assert [(e[0], e[2]) for e in entries] == [("POST", 202), ("PUT", 201)]

        with RegistryProxy(registry) as proxy:
            async with destination(proxy.host, "small/app") as via_proxy:
                assert await via_proxy.put_blob(medium_desc, MemorySource(medium)) == len(medium)
            requests = [r for r in logged_until(proxy, "PUT") if r.kind == "upload"]
    assert [(r.method, r.status) for r in requests] == [("POST", 202), ("PATCH", 202), ("PUT", 201)]
    assert requests[1].header("Content-Range") is None
    assert requests[1].header("Content-Length") == str(len(medium))
    assert_blob(registry, "small/app", tiny)
    assert_blob(registry, "small/app", medium)
    # A zero-size descriptor (size unknown, or the empty blob) streams without Content-Length.
    empty = Descriptor(LAYER, Digest.of(b""), 0)
    async with destination(registry.host, "small/app") as dst:
        assert await dst.put_blob(empty, MemorySource(b"")) == 0
        assert await dst.has_blob(empty)


# -- failures within one process ---------------------------------------------------------------
@pytest.mark.anyio
async def test_broken_patch_resumes_from_registry_offset(registry: Registry, tmp_path: Path) -> None:
    """The 3rd PATCH dies mid-body before reaching the registry: ask the registry, go on from 2 chunks."""
    data, desc = blob()
    source = MemorySource(data)
    with StateStore.open(tmp_path / "state.sqlite") as state, RegistryProxy(registry) as proxy:
        proxy.add_fault(Fault(nth_patch(3), reset_after(CHUNK // 3)))
        async with destination(proxy.host, "broken/app", state) as dst:
            sent = await dst.put_blob(desc, source)
        requests = logged_until(proxy, "PUT")
        assert state.uploads() == []

    ranges = content_ranges(requests)
    assert ranges[:3] == expected_ranges(0, SIZE)[:3]
    assert ranges[3:] == expected_ranges(2 * CHUNK, SIZE)  # resumed at the registry's offset, not 0
    assert [r.status for r in uploads_of(requests, "PATCH")][2] == 499
    status = uploads_of(requests, "GET")
    assert [r.status for r in status] == [204]
    assert len(uploads_of(requests, "POST")) == 1 and len(uploads_of(requests, "PUT")) == 1
    # The source was reopened at the acknowledged boundary: nothing before it was read twice.
    assert source.opens == [0, 2 * CHUNK]
    # Re-sent: only what was lost in the broken PATCH (at most one chunk).
    assert SIZE < sent <= SIZE + CHUNK
    entries = registry.wait_for_access_log(lambda es: any(e[0] == "PUT" for e in es))
    assert [e[2] for e in entries if e[0] == "PATCH"] == [202] * 11
    assert_blob(registry, "broken/app", data)


@pytest.mark.anyio
async def test_partly_delivered_patch_restarts_in_new_session(registry: Registry, tmp_path: Path) -> None:
    """Half of the 3rd chunk reaches distribution: it then refuses the older upload URL (and drops
    the session), so the upload starts again in a new session and still ends byte-identical."""
    data, desc = blob()
    source = MemorySource(data)
    with StateStore.open(tmp_path / "state.sqlite") as state, RegistryProxy(registry) as proxy:
        proxy.add_fault(Fault(nth_patch(3), forward_part_then_reset(registry, CHUNK // 2)))
        async with destination(proxy.host, "partial/app", state) as dst:
            sent = await dst.put_blob(desc, source)
        requests = logged_until(proxy, "PUT")
        assert state.uploads() == []

    status = uploads_of(requests, "GET")
    assert [r.status for r in status] == [404]
    posts = uploads_of(requests, "POST")
    assert len(posts) == 2
    assert content_ranges(requests)[3:] == expected_ranges(0, SIZE)  # the new session, from 0
    assert source.opens == [0, 0]  # a new session needs a new hash: the source is read again
    assert SIZE + 2 * CHUNK < sent <= SIZE + 3 * CHUNK
    assert_blob(registry, "partial/app", data)


@pytest.mark.anyio
async def test_cancelled_upload_finishes_its_chunk_then_resumes(registry: Registry, tmp_path: Path) -> None:
    """Cancelled while the 4th chunk is on its way: that chunk completes and its offset is saved (on
    distribution a half-sent chunk would make the session unusable); a later upload sends the rest."""
    data, desc = blob()
    arrived, release = threading.Event(), threading.Event()

    async def hold(_request: web.Request, _info: RequestInfo) -> None:
        arrived.set()
        await asyncio.to_thread(release.wait, 60)
        return None  # then forward the chunk as usual

    with StateStore.open(tmp_path / "state.sqlite") as state, RegistryProxy(registry) as proxy:
        proxy.add_fault(Fault(nth_patch(4), hold))
        scope = anyio.CancelScope()
        async with destination(proxy.host, "stopped/app", state) as dst:
            async def upload() -> None:
                with scope:
                    await dst.put_blob(desc, MemorySource(data))

            try:
                with capture_logs() as logs:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(upload)
                        assert await anyio.to_thread.run_sync(arrived.wait, 60)
                        scope.cancel()
                        await anyio.wait_all_tasks_blocked()  # the upload has seen the cancellation
                        assert [e["event"] for e in logs if e["event"].startswith("upload_stop")] == \
                            ["upload_stopping"]
                        release.set()
            finally:
                release.set()
            assert scope.cancelled_caught
            assert [e["offset"] for e in logs if e["event"] == "upload_stopped"] == [4 * CHUNK]
            (saved,) = state.uploads()
            assert saved.offset == 4 * CHUNK
            wait_until(lambda: len(uploads_of(proxy.requests, "PATCH")) >= 4, 10, "the 4th PATCH logged")
            assert [r.status for r in uploads_of(proxy.requests, "PATCH")] == [202] * 4

            mark = len(proxy.requests)
            source = MemorySource(data)
            sent = await dst.put_blob(desc, source)
        requests = logged_until(proxy, "PUT")[mark:]
        assert state.uploads() == []
    assert sent == SIZE - 4 * CHUNK and source.opens == [0]
    assert [r.status for r in uploads_of(requests, "GET")] == [204] and not uploads_of(requests, "POST")
    assert content_ranges(requests) == expected_ranges(4 * CHUNK, SIZE)
    assert_blob(registry, "stopped/app", data)


# -- sessions saved by an earlier run --------------------------------------------------------
@pytest.mark.anyio
async def test_saved_session_resumes_and_rehashes_prefix(registry: Registry, tmp_path: Path) -> None:
    """A session an earlier run left at 2 chunks: only the rest is sent, every byte is hashed."""
    data, desc = blob()
    location = raw_session(registry, "saved/app", data[:2 * CHUNK])
    source = MemorySource(data)
    with StateStore.open(tmp_path / "state.sqlite") as state:
        state.save_upload(UploadRecord(registry.host, "saved/app", str(desc.digest), location, 2 * CHUNK, CHUNK))
        before = len(registry.access_log_requests())
        async with destination(registry.host, "saved/app", state) as dst:
            sent = await dst.put_blob(desc, source)
        assert state.uploads() == []
    assert sent == SIZE - 2 * CHUNK
    assert source.opens == [0]  # bytes 0..2 chunks were read for the hash, not sent
    entries = registry.wait_for_access_log(lambda es: any(e[0] == "PUT" for e in es[before:]))[before:]
    uploads = [(e[0], e[2]) for e in entries if "/blobs/uploads/" in e[1]]
    assert uploads == [("GET", 204)] + [("PATCH", 202)] * len(expected_ranges(2 * CHUNK, SIZE)) + [("PUT", 201)]
    assert_blob(registry, "saved/app", data)


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["deleted", "other-registry"])
async def test_expired_saved_session_starts_over(how: str, registry: Registry, registry2: Registry,
                                                 tmp_path: Path) -> None:
    data, desc = blob()
    if how == "deleted":
        location = raw_session(registry, "expired/app", data[:CHUNK])
        Client(registry).request("DELETE", location, ok=(204,))
    else:  # a live session, but of another registry instance: this one never heard of it
        location = raw_session(registry2, "expired/app", data[:CHUNK]).replace(registry2.host, registry.host)
    source = MemorySource(data)
    with StateStore.open(tmp_path / "state.sqlite") as state:
        state.save_upload(UploadRecord(registry.host, "expired/app", str(desc.digest), location, CHUNK, CHUNK))
        before = len(registry.access_log_requests())
        async with destination(registry.host, "expired/app", state) as dst:
            sent = await dst.put_blob(desc, source)
        assert state.uploads() == []
        assert state.known_repos(registry.host, str(desc.digest)) == ["expired/app"]
    assert sent == SIZE and source.opens == [0]
    entries = registry.wait_for_access_log(lambda es: any(e[0] == "PUT" for e in es[before:]))[before:]
    uploads = [(e[0], e[2]) for e in entries if "/blobs/uploads/" in e[1] and e[0] != "PATCH"]
    assert uploads == [("GET", 404), ("POST", 202), ("PUT", 201)]
    assert_blob(registry, "expired/app", data)


# -- integrity ---------------------------------------------------------------------------------
def _corrupt(kind: str, data: bytes) -> bytes:
    if kind == "flipped":
        at = 30 * MiB + 5
        return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]
    if kind == "short":
        return data[:-(MiB + 5)]
    return data + b"extra"


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["flipped", "short", "long"])
async def test_corrupt_source_is_never_published(kind: str, registry: Registry, tmp_path: Path) -> None:
    data, desc = blob()
    with StateStore.open(tmp_path / "state.sqlite") as state, RegistryProxy(registry) as proxy:
        async with destination(proxy.host, "corrupt/app", state) as dst:
            with pytest.raises(DigestMismatch) as caught:
                await dst.put_blob(desc, MemorySource(_corrupt(kind, data)))
        requests = logged_until(proxy, "DELETE")
        assert state.uploads() == []
        assert state.known_repos(proxy.host, str(desc.digest)) == []
    assert str(desc.digest) in str(caught.value) and "\n" not in str(caught.value)
    assert not uploads_of(requests, "PUT")  # the digest was never offered to the registry
    (delete,) = uploads_of(requests, "DELETE")
    assert delete.path == uploads_of(requests, "PATCH")[-1].path  # the session that was used
    # With the latest Location (a stale one makes distribution cancel through a path that leaves
    # the data behind), and after a clean end of every request (a short source is padded).
    assert delete.status == 204
    # distribution's cancel removes the session's data and start time; a hash-state stub remains.
    sessions = registry.storage / "docker/registry/v2/repositories/corrupt/app/_uploads"
    assert list(sessions.glob("*/data")) == [] and list(sessions.glob("*/startedat")) == []
    assert_no_blob(registry, "corrupt/app", desc.digest)


# -- a run killed with SIGKILL, then run again -----------------------------------------------
LAYER_SIZE = 80 * MiB + 4321

DRIVER = r'''
"""Copy one image with the product's registry transports, with state and upload options from the
environment, exactly as runtime.py is meant to wire them (see resume_settings)."""
import json, os, sys

import anyio
import anyio.lowlevel
import structlog

from mirror.core.reference import parse_docker
from mirror.http.tls import TLSOptions
from mirror.runtime import GlobalOptions, open_runtime
from mirror.state import StateStore
from mirror.transports.registry.destination import RegistryDestination
from mirror.transports.registry.source import RegistrySource
from mirror.transports.registry.uploadopts import resume_settings
from mirror.transports.side import SideOptions

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))


async def main(src_text: str, dst_text: str) -> None:
    settings = resume_settings(os.environ)
    side = SideOptions(tls=TLSOptions(verify=False))
    src_ref, dst_ref = parse_docker(src_text), parse_docker(dst_text)
    async with open_runtime(GlobalOptions()) as rt:
        with StateStore.open(settings.state_path) as state:
            src = RegistrySource(rt.registry.endpoint(src_ref.repo, side), src_ref.repo)
            dst = RegistryDestination(rt.registry.endpoint(dst_ref.repo, side), dst_ref.repo, state=state,
                                      uploads=settings.uploads)
            manifest = await src.get_manifest(src_ref.ref)
            sent = 0
            for desc in manifest.blobs():
                if not await dst.has_blob(desc):
                    sent += await dst.put_blob(desc, lambda offset, d=desc: src.open_blob(d, offset))
            await dst.put_manifest(manifest, dst_ref.ref)
    print(json.dumps({"sent": sent}))


anyio.run(main, sys.argv[1], sys.argv[2], backend="asyncio", backend_options={"use_uvloop": True})
'''


def _load_bench() -> Any:
    spec = importlib.util.spec_from_file_location("mirror_bench", ROOT / "scripts" / "bench.py")
    assert spec is not None and spec.loader is not None
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up while being built
        spec.loader.exec_module(module)
    return module


@pytest.fixture
def big_image(registry: Registry) -> tuple[Registry, Descriptor, bytes]:
    """``big/src:v1`` in ``registry``: one incompressible layer of LAYER_SIZE bytes."""
    digest, size = _load_bench().push_big_blob(registry, "big/src", LAYER_SIZE)
    layer = Descriptor(LAYER, Digest.parse(digest), size)
    return registry, layer, push_manifest_for(registry, "big/src", "v1", layer)


def _driver_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_AUTH", "DOCKER_CONFIG", "XDG_"))}
    (tmp_path / "home").mkdir(exist_ok=True)
    env.update(PYTHONPATH=str(ROOT), HOME=str(tmp_path / "home"), MIRROR_STATE=str(tmp_path / "state.sqlite"),
               MIRROR_CHUNK_SIZE="4MiB", MIRROR_CHUNK_THRESHOLD="8M")
    return env


class HeldRequest:
    """A proxy fault that holds the request it matches until released, then answers 503 (a link that
    died mid-request); ``held`` is set once a request is caught."""

    def __init__(self) -> None:
        self.held, self.release = threading.Event(), threading.Event()

    async def __call__(self, _request: web.Request, _info: RequestInfo) -> web.StreamResponse:
        self.held.set()
        await asyncio.to_thread(self.release.wait, 120)
        return web.Response(status=503)


def kill_while_held(argv: list[str], env: dict[str, str], hold: HeldRequest, what: str,
                    ready: Callable[[], bool] = lambda: True) -> None:
    """Run ``argv`` until ``hold`` has caught its request (and ``ready()`` holds), then SIGKILL it."""
    first = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: hold.held.is_set() or first.poll() is not None, 120, what)
        assert hold.held.is_set() and ready(), first.communicate(timeout=10)
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=30) == -signal.SIGKILL
    finally:
        hold.release.set()
        if first.poll() is None:
            first.kill()
        first.communicate(timeout=30)


def test_killed_copy_resumes_where_the_registry_stopped(
        big_image: tuple[Registry, Descriptor, bytes], registry2: Registry, tmp_path: Path) -> None:
    src, layer, manifest = big_image
    hold = HeldRequest()  # the 4th chunk has started: 3 are acknowledged and saved
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = _driver_env(tmp_path)
    with RegistryProxy(registry2, faults=[Fault(nth_patch(4), hold)]) as proxy:
        argv = [sys.executable, str(script), f"{src.host}/big/src:v1", f"{proxy.host}/big/dst:v1"]
        kill_while_held(argv, env, hold, "the 4th chunk", lambda: len(
            [r for r in uploads_of(proxy.requests, "PATCH") if r.status == 202]) >= 3)
        with StateStore.open(tmp_path / "state.sqlite", on_corrupt="error") as state:
            (saved,) = state.uploads()
        assert (saved.repo, saved.digest, saved.offset) == ("big/dst", str(layer.digest), 3 * CHUNK)
        assert_no_blob(registry2, "big/dst", layer.digest)

        mark = len(proxy.requests)
        second = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr
        requests = proxy.requests[mark:]

    remainder = LAYER_SIZE - saved.offset
    patched = sum(int(r.header("Content-Length") or 0) for r in uploads_of(requests, "PATCH"))
    assert patched <= remainder + CHUNK  # the acceptance bound ...
    assert patched == remainder  # ... and here exactly: nothing the registry had was sent again
    assert json.loads(second.stdout)["sent"] == remainder
    assert [r.status for r in uploads_of(requests, "GET")] == [204]
    assert not uploads_of(requests, "POST")  # same session; the config blob was already there
    assert content_ranges(requests) == expected_ranges(3 * CHUNK, LAYER_SIZE)
    with StateStore.open(tmp_path / "state.sqlite") as state:
        assert state.uploads() == []
        assert state.known_repos(proxy.host, str(layer.digest)) == ["big/dst"]
    body, _type, _digest = Client(registry2).get_manifest("big/dst", "v1")
    assert body == manifest
    digest = hashlib.sha256(Client(registry2).get_blob("big/dst", str(layer.digest))).hexdigest()
    assert digest == layer.digest.hex
    run_skopeo("copy", "--src-tls-verify=false", registry2.ref("big/dst", "v1"), f"dir:{tmp_path / 'out'}")


# -- the state file ----------------------------------------------------------------------------
def _record(i: int, repo: str = "a/b") -> UploadRecord:
    return UploadRecord("reg.example:5000", repo, f"sha256:{i:064x}", f"https://reg.example:5000/up/{i}?_state=x%3D",
                        i * 10, 7)


def test_state_persists_privately(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "state.sqlite"
    old = os.umask(0o022)
    try:
        ticks = itertools.count(100)
        with StateStore.open(path, clock=lambda: float(next(ticks))) as state:
            state.save_upload(_record(1))
            state.save_upload(_record(2))
            state.save_upload(UploadRecord("reg.example:5000", "a/b", f"sha256:{1:064x}", "https://x/new", 99, 7))
            state.drop_upload("reg.example:5000", "a/b", f"sha256:{2:064x}")
            for repo in ("x/one", "x/two", "x/three"):
                state.record_blob("reg.example:5000", repo, "sha256:" + "e" * 64)
            state.record_blob("reg.example:5000", "x/one", "sha256:" + "e" * 64)  # verified again: newest
            state.forget_blob("reg.example:5000", "x/two", "sha256:" + "e" * 64)
            wal = Path(f"{path}-wal")
            assert wal.exists() and stat.S_IMODE(wal.stat().st_mode) == 0o600
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with StateStore.open(path) as state:
        record = state.get_upload("reg.example:5000", "a/b", f"sha256:{1:064x}")
        assert record is not None and (record.location, record.offset, record.chunk_size) == ("https://x/new", 99, 7)
        assert state.get_upload("reg.example:5000", "a/b", f"sha256:{2:064x}") is None
        assert state.known_repos("reg.example:5000", "sha256:" + "e" * 64) == ["x/one", "x/three"]
        assert state.known_repos("other:1", "sha256:" + "e" * 64) == []


def test_state_loose_file_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    StateStore.open(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.anyio
async def test_state_many_tasks_and_threads(tmp_path: Path) -> None:
    """200 tasks on the loop thread and in worker threads, through two stores on one file."""
    path = tmp_path / "state.sqlite"
    with StateStore.open(path) as one, StateStore.open(path) as two:
        async def work(i: int) -> None:
            store = one if i % 2 else two
            if i % 3:
                await anyio.to_thread.run_sync(store.save_upload, _record(i))
            else:
                store.save_upload(_record(i))
            await anyio.lowlevel.checkpoint()
            await anyio.to_thread.run_sync(store.record_blob, "reg.example:5000", f"r/{i}", "sha256:" + "a" * 64)
            assert store.get_upload("reg.example:5000", "a/b", f"sha256:{i:064x}") == \
                await anyio.to_thread.run_sync(store.get_upload, "reg.example:5000", "a/b", f"sha256:{i:064x}")
            if i % 5 == 0:
                store.drop_upload("reg.example:5000", "a/b", f"sha256:{i:064x}")

        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(work, i)
        assert sorted(r.offset // 10 for r in one.uploads()) == [i for i in range(200) if i % 5]
        assert len(two.known_repos("reg.example:5000", "sha256:" + "a" * 64, limit=1000)) == 200


HAMMER = r'''
import sys
from mirror.state import StateStore, UploadRecord
with StateStore.open(sys.argv[1]) as state:
    for i in range(1, 10**9):
        state.save_upload(UploadRecord("reg", "repo", "sha256:" + "b" * 64, f"http://reg/up?n={i}", i, 4))
        state.record_blob("reg", f"repo/{i % 50}", "sha256:" + "c" * 64)
        print(i, flush=True)
'''


def test_state_survives_sigkill_mid_write(tmp_path: Path) -> None:
    """SIGKILL a process writing as fast as it can, at several points: the file always opens clean,
    and every write the process saw committed is there."""
    path = tmp_path / "state.sqlite"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for stop_after in (1, 37, 400, 1500):
        proc = subprocess.Popen([sys.executable, "-c", HAMMER, str(path)], stdout=subprocess.PIPE, text=True,
                                env=env, cwd=ROOT)
        assert proc.stdout is not None
        last = 0
        for line in proc.stdout:
            last = int(line)
            if last >= stop_after:
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=30)
        proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL and last >= stop_after
        with sqlite3.connect(path) as raw:
            assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        with StateStore.open(path, on_corrupt="error") as state:
            record = state.get_upload("reg", "repo", "sha256:" + "b" * 64)
            assert record is not None and record.offset >= last
            assert record.location == f"http://reg/up?n={record.offset}"


def test_state_corrupt_file_is_moved_aside_or_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    garbage = b"this is not a database" * 300
    path.write_bytes(garbage)
    with pytest.raises(ConfigError) as refused:
        StateStore.open(path, on_corrupt="error")
    assert str(path) in str(refused.value) and "\n" not in str(refused.value)
    assert path.read_bytes() == garbage

    with capture_logs() as logs, StateStore.open(path) as state:
        assert state.uploads() == []
        state.save_upload(_record(3))
    (event,) = [e for e in logs if e["event"] == "state_reset"]
    assert event["log_level"] == "warning"
    assert Path(event["moved_to"]).read_bytes() == garbage
    with StateStore.open(path, on_corrupt="error") as state:
        assert len(state.uploads()) == 1


def test_state_from_a_newer_mirror_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    StateStore.open(path).close()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(ConfigError, match="schema version 99"):
        StateStore.open(path)


def test_memory_state_has_the_same_api() -> None:
    with StateStore.memory() as state:
        state.save_upload(_record(5))
        state.record_blob("r", "a", "sha256:" + "d" * 64)
        assert state.get_upload("reg.example:5000", "a/b", f"sha256:{5:064x}") == \
            state.uploads()[0]
        assert state.known_repos("r", "sha256:" + "d" * 64) == ["a"]


def test_index_choices_outlive_the_run_in_a_file_only(tmp_path: Path) -> None:
    index, chosen = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    with StateStore.open(tmp_path / "state.sqlite") as state:
        assert state.index_choice(index, "instance linux/amd64//") is None
        state.remember_index_choice(index, "instance linux/amd64//", chosen)
    with StateStore.open(tmp_path / "state.sqlite") as state:
        assert state.index_choice(index, "instance linux/amd64//") == chosen
        assert state.index_choice(index, "instance linux/arm64/v8/") is None
    with StateStore.memory() as state:  # nothing to gain beyond the run: it keeps none
        state.remember_index_choice(index, "instance linux/amd64//", chosen)
        assert state.index_choice(index, "instance linux/amd64//") is None


def test_memory_state_keeps_a_bounded_number_of_locations(tmp_path: Path) -> None:
    clock = itertools.count()
    with StateStore.memory(clock=lambda: float(next(clock)), max_locations=64) as state:
        for i in range(1000):
            state.record_blob("r", f"repo{i % 7}", f"sha256:{i:064x}")
        assert 64 <= state.location_count() <= 64 + 64 // 8
        assert state.known_repos("r", f"sha256:{999:064x}") == [f"repo{999 % 7}"]  # the newest are kept
        assert state.known_repos("r", f"sha256:{0:064x}") == []
    with StateStore.open(tmp_path / "state.sqlite") as state:  # a file keeps every fact, on disk
        for i in range(300):
            state.record_blob("r", "repo", f"sha256:{i:064x}")
        assert state.location_count() == 300


@pytest.mark.parametrize(("env", "path"), [
    ({"HOME": "/home/u"}, "/home/u/.local/state/mirror/state.sqlite"),
    ({"HOME": "/home/u", "XDG_STATE_HOME": "/xdg"}, "/xdg/mirror/state.sqlite"),
    ({"HOME": "/home/u", "XDG_STATE_HOME": "relative/ignored"}, "/home/u/.local/state/mirror/state.sqlite"),
])
def test_default_state_path(env: dict[str, str], path: str) -> None:
    assert default_state_path(env) == Path(path)


def test_resume_settings_from_environment() -> None:
    default = resume_settings({"HOME": "/home/u"})
    assert default.uploads == UploadOptions() and default.state_path == Path(
        "/home/u/.local/state/mirror/state.sqlite")
    custom = resume_settings({"HOME": "/h", "MIRROR_CHUNK_SIZE": "5MiB", "MIRROR_CHUNK_THRESHOLD": "1048576",
                              "MIRROR_STATE": "/tmp/s.sqlite"})
    assert (custom.uploads.chunk_size, custom.uploads.threshold) == (5 * MiB, MiB)
    assert custom.state_path == Path("/tmp/s.sqlite")
    assert resume_settings({"HOME": "/h", "MIRROR_STATE": "none"}).state_path is None
    for bad in ("0", "-4", "4X", "lots"):
        with pytest.raises(ConfigError, match="MIRROR_CHUNK_SIZE"):
            resume_settings({"HOME": "/h", "MIRROR_CHUNK_SIZE": bad})
