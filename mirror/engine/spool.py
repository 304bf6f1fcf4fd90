"""Converted blobs on their way to a destination: layers (de/re)compressed into temp files, configs
in memory, served to the blob mover as an ``ImageSource``.

A changed layer's digest must be known before its manifest exists and before its upload can be
closed (the registry's final ``PUT ?digest=``), so each is streamed once from the source through a
:class:`~mirror.core.compression.Transcoder` into a file under ``--tmpdir``: the source bytes are
verified against their digest on the way, the output is hashed as it is written, and memory stays at
a few MiB whatever the layer's size. A layer whose result is already known (``Reformatter``'s memory
of earlier conversions in this run) is spooled again only if its bytes are actually needed; the
output is deterministic and every upload verifies it against the digest announced.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import BinaryIO

import anyio

from mirror.aio import temp_dir
from mirror.core.compression import Transcoder
from mirror.core.descriptor import Descriptor
from mirror.core.digest import Digest, Hasher
from mirror.core.manifest import Manifest
from mirror.core.reference import ManifestRef
from mirror.errors import DigestMismatch, MirrorError
from mirror.transports.base import Capabilities, ImageSource, Location
from mirror.transports.streams import hashed_stream

CHUNK = 1 << 20
MAX_CONFIG = 4 << 20


class _Sink:
    """Transcodes blocks into a file, hashing what is written (called from a worker thread)."""

    def __init__(self, path: Path, target: str | None, level: int | None) -> None:
        self.file: BinaryIO = open(path, "wb")
        self.codec = Transcoder(target, level)
        self.hasher = Hasher("sha256")

    def _out(self, data: bytes) -> None:
        if data:
            self.hasher.update(data)
            self.file.write(data)

    def write(self, block: bytes) -> None:
        self._out(self.codec.feed(block))

    def close(self) -> None:
        try:
            self._out(self.codec.finish())
        finally:
            self.file.close()


async def spool_layer(src: ImageSource, desc: Descriptor, target: str | None, level: int | None,
                      path: Path) -> tuple[Digest, int]:
    """Stream ``desc`` from ``src`` into ``path`` as ``target`` (an algorithm, None: uncompressed);
    returns the digest and size written. The source bytes must match ``desc``."""
    sink = await anyio.to_thread.run_sync(_Sink, path, target, level)
    source_hash = desc.digest.hasher()
    try:
        async with hashed_stream(lambda offset: src.open_blob(desc, offset), source_hash) as blocks:
            async for block in blocks:
                await anyio.to_thread.run_sync(sink.write, block)
        source_hash.check(desc.digest, desc.size, "layer")
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(sink.close)
    return sink.hasher.digest(), sink.hasher.size


async def read_small(src: ImageSource, desc: Descriptor, limit: int = MAX_CONFIG) -> bytes:
    """A small blob (a config) read whole and verified."""
    if desc.size > limit:
        raise MirrorError(f"config {desc.digest} is {desc.size} bytes, over the {limit} byte limit")
    parts: list[bytes] = []
    size = 0
    async with src.open_blob(desc, 0) as chunks:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise MirrorError(f"config {desc.digest} is over the {limit} byte limit")
            parts.append(chunk)
    data = b"".join(parts)
    desc.digest.verify(data, f"config {desc.digest}")
    return data


Respool = Callable[[Path], Awaitable[tuple[Digest, int]]]


class SpoolSource:
    """``ImageSource`` of one image's converted blobs (the blob mover reads only ``open_blob``).

    Its location names no registry, so no mount is ever tried *from* it."""

    capabilities = Capabilities()

    def __init__(self, work: Path) -> None:
        self.work = work
        self.location = Location("spool", "", str(work))
        self._files: dict[Digest, Path] = {}
        self._data: dict[Digest, bytes] = {}
        self._later: dict[Digest, Respool] = {}
        self._lock = anyio.Lock()

    def holds(self, digest: Digest) -> bool:
        return digest in self._files or digest in self._data or digest in self._later

    def add_file(self, digest: Digest, path: Path) -> None:
        self._files[digest] = path

    def add_data(self, data: bytes) -> Descriptor:
        digest = Digest.of(data)
        self._data[digest] = data
        return Descriptor("application/octet-stream", digest, len(data))

    def add_later(self, digest: Digest, respool: Respool) -> None:
        """A blob known from an earlier conversion, spooled again only if it is read."""
        self._later[digest] = respool

    async def get_manifest(self, ref: ManifestRef) -> Manifest:
        raise MirrorError("a spool holds blobs only")

    async def head_manifest(self, ref: ManifestRef) -> Descriptor | None:
        return None

    async def list_tags(self) -> AsyncIterator[str]:
        return
        yield  # pragma: no cover

    def open_blob(self, desc: Descriptor, offset: int = 0) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        return self._open(desc.digest, offset)

    @asynccontextmanager
    async def _open(self, digest: Digest, offset: int) -> AsyncIterator[AsyncIterator[bytes]]:
        data = self._data.get(digest)
        if data is not None:
            yield _one(data[offset:])
            return
        path = await self._file(digest)
        async with await anyio.open_file(path, "rb") as f:
            await f.seek(offset)
            yield _chunks(f)

    async def _file(self, digest: Digest) -> Path:
        async with self._lock:
            path = self._files.get(digest)
            if path is None:
                respool = self._later.get(digest)
                if respool is None:
                    raise MirrorError(f"no converted blob {digest} in this spool")
                path = self.work / f"again-{digest.hex}"
                got, _size = await respool(path)
                if got != digest:
                    raise DigestMismatch(f"converting a layer again gave {got}, not {digest}")
                self._files[digest] = path
            return path


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _chunks(f: anyio.AsyncFile[bytes]) -> AsyncIterator[bytes]:
    while chunk := await f.read(CHUNK):
        yield chunk


def spool_dir(parent: str | None) -> AbstractAsyncContextManager[Path]:
    """A private temp directory under ``parent`` (``--tmpdir``), removed on exit."""
    return temp_dir(parent, ".mirror-spool-")
