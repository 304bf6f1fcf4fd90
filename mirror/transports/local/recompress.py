"""gzip the uncompressed layers of a docker-archive image before it goes to a registry, as skopeo does.

``docker save`` archives (and so ``docker-daemon:`` and ``containers-storage:`` sources, which mirror
reads as archives) hold uncompressed layers. skopeo 1.9 copying such an image to a registry gzips
each layer on the way (the registry transport asks for compressed layers), so the registry gets
``application/vnd.docker.image.rootfs.diff.tar.gzip`` layers and a new manifest; the config blob,
hence the image ID, is unchanged. mirror does the same, but ahead of the copy, because the manifest
(with the compressed digests) must exist before any blob is sent: each uncompressed layer is
compressed once into a temp directory (``--tmpdir``), read by seeking into the archive, in a worker
thread. gzip output differs between implementations, so the layer and manifest digests differ from
skopeo's (they also differ between two skopeo runs with different pgzip versions); the layer
*contents* (the config's diff_ids) and the image ID are identical.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, BinaryIO

import anyio

from mirror.core import manifest as manifest_mod
from mirror.core import mediatype as mt
from mirror.core.descriptor import Descriptor
from mirror.core.digest import Digest
from mirror.core.manifest import Manifest
from mirror.core.reference import ManifestRef, Tag
from mirror.transports.base import Capabilities, ImageSource, Location
from mirror.transports.local import files
from mirror.transports.local.convert import _dumps
from mirror.transports.local.dockerarchive import LAYER_GZIP, LAYER_TAR, ArchiveSource
from mirror.transports.local.files import work_dir
from mirror.transports.side import LocalOptions

LEVEL = 6  # zlib's default, as Go's compress/gzip and pgzip


class _HashingWriter:
    """The file gzip writes to, hashing the compressed bytes on their way (no second read)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.hasher = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


def _gzip_member(archive: Path, start: int, size: int, target: Path) -> tuple[Digest, int]:
    with open(archive, "rb") as src, open(target, "wb") as raw:
        sink = _HashingWriter(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0, compresslevel=LEVEL) as out:
            for data in files.member_chunks(src, start, size, archive):
                out.write(data)
    return Digest("sha256", sink.hasher.hexdigest()), sink.size


class GzipLayersSource:
    """An ``ImageSource`` serving ``inner``'s image with its uncompressed layers gzip-compressed."""

    capabilities = Capabilities()

    def __init__(self, inner: ArchiveSource, manifest: Manifest, compressed: dict[Digest, Path]) -> None:
        self.inner = inner
        self.manifest = manifest
        self.compressed = compressed
        self.location: Location = inner.location

    async def get_manifest(self, ref: ManifestRef) -> Manifest:
        if ref in (Tag(""), self.manifest.digest):
            return self.manifest
        return await self.inner.get_manifest(ref)

    async def head_manifest(self, ref: ManifestRef) -> Descriptor | None:
        if ref in (Tag(""), self.manifest.digest):
            return self.manifest.descriptor
        return await self.inner.head_manifest(ref)

    def list_tags(self) -> AsyncIterator[str]:
        return self.inner.list_tags()

    def open_blob(self, desc: Descriptor, offset: int = 0) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        path = self.compressed.get(desc.digest)
        if path is None:
            return self.inner.open_blob(desc, offset)
        return files.open_chunks(path, offset, None, f"{self.location}: compressed layer {desc.digest}")


@asynccontextmanager
async def gzip_layers(src: ArchiveSource, tmpdir: str | None) -> AsyncIterator[GzipLayersSource]:
    """``src`` with every uncompressed layer gzip-compressed into a temp directory (removed on exit)."""
    async with work_dir(tmpdir) as work:
        data: dict[str, Any] = src.manifest.json()
        compressed: dict[Digest, Path] = {}
        done: dict[Digest, dict[str, Any]] = {}
        layers: list[dict[str, Any]] = []
        for i, layer in enumerate(src.manifest.layers):
            if layer.media_type != LAYER_TAR:
                layers.append(data["layers"][i])
                continue
            if layer.digest not in done:
                start, size = src.reader.members[src.blobs[layer.digest]]
                digest, length = await anyio.to_thread.run_sync(
                    _gzip_member, src.reader.path, start, size, work / f"layer-{i}.gz")
                compressed[digest] = work / f"layer-{i}.gz"
                done[layer.digest] = {"mediaType": LAYER_GZIP, "size": length, "digest": str(digest)}
            layers.append(done[layer.digest])
        data["layers"] = layers
        manifest = manifest_mod.parse(_dumps(data), mt.DOCKER_MANIFEST)
        yield GzipLayersSource(src, manifest, compressed)


@asynccontextmanager
async def served(src: ArchiveSource, local: LocalOptions) -> AsyncIterator[tuple[ImageSource, ManifestRef]]:
    """An archive-backed source as its transport yields it: its plain-tar layers gzipped when the
    destination wants compressed layers (a registry: ``local.compress_layers``), as skopeo does."""
    if not local.compress_layers:
        yield src, src.manifest.digest
        return
    async with gzip_layers(src, local.tmpdir) as compressed:
        yield compressed, compressed.manifest.digest
