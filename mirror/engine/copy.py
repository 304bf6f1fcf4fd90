"""Copy one image (or index) from an ImageSource to an ImageDestination.

Order is the destination contract: every blob is verified present (skipped, mounted or uploaded
and digest-checked) before the manifest that references it is written; children before the index;
the tag last. Raw manifest bytes are copied as they are, so digests are always preserved.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import anyio
import structlog

from mirror.aio import SingleFlight
from mirror.core import mediatype as mt
from mirror.core.descriptor import Descriptor, Platform
from mirror.core.manifest import Manifest
from mirror.errors import ManifestError, MirrorError
from mirror.transports.base import ImageDestination, ImageSource

log = structlog.get_logger("mirror.copy")

FOREIGN = frozenset({
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
})


class MultiArch(Enum):
    SYSTEM = "system"
    ALL = "all"
    INDEX_ONLY = "index-only"


class BlobOutcome(Enum):
    SKIPPED = "skipped"
    MOUNTED = "mounted"
    UPLOADED = "uploaded"
    FOREIGN = "foreign"


@dataclass(frozen=True, slots=True)
class CopyOptions:
    multi_arch: MultiArch = MultiArch.SYSTEM
    platform: Platform = field(default_factory=lambda: Platform("linux", "amd64"))
    jobs: int = 6


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    kind: str  # "blob_start" | "blob_done" | "manifest" | "bytes"
    desc: Descriptor | None = None
    outcome: BlobOutcome | None = None
    nbytes: int = 0
    is_config: bool = False


Progress = Callable[[ProgressEvent], None]


def _quiet(_: ProgressEvent) -> None:
    return None


@dataclass(slots=True)
class CopyStats:
    blobs: dict[BlobOutcome, int] = field(default_factory=lambda: dict.fromkeys(BlobOutcome, 0))
    bytes_sent: int = 0
    manifests: int = 0


@dataclass(frozen=True, slots=True)
class CopyResult:
    manifest: Manifest
    stats: CopyStats


class Copier:
    """Copies images between one source and one destination; reusable for many refs."""

    def __init__(self, src: ImageSource, dst: ImageDestination, options: CopyOptions,
                 progress: Progress = _quiet) -> None:
        self.src = src
        self.dst = dst
        self.options = options
        self.progress = progress
        self.stats = CopyStats()
        self._blobs: SingleFlight[BlobOutcome] = SingleFlight()
        self._limit = anyio.CapacityLimiter(max(1, options.jobs))

    async def copy(self, src_ref: str, dst_ref: str | None) -> CopyResult:
        """Copy ``src_ref``; store it under ``dst_ref`` (a tag), or by digest when ``dst_ref`` is None."""
        top = await self.src.get_manifest(src_ref)
        if top.is_index:
            top = await self._copy_index(top, dst_ref)
        else:
            await self._copy_image(top)
            await self._put_manifest(top, dst_ref or str(top.digest))
        return CopyResult(top, self.stats)

    async def _copy_index(self, index: Manifest, dst_ref: str | None) -> Manifest:
        mode = self.options.multi_arch
        if mode is MultiArch.SYSTEM:
            child = await self.src.get_manifest(str(index.select(self.options.platform).digest))
            if child.is_index:
                raise ManifestError(f"index {index.digest} nests another index for the chosen platform")
            await self._copy_image(child)
            await self._put_manifest(child, dst_ref or str(child.digest))
            return child
        if mode is MultiArch.ALL:
            async with anyio.create_task_group() as tg:
                for desc in index.manifests:
                    tg.start_soon(self._copy_child, desc)
        await self._put_manifest(index, dst_ref or str(index.digest))
        return index

    async def _copy_child(self, desc: Descriptor) -> None:
        if not mt.is_image(desc.media_type) and desc.media_type not in mt.SCHEMA1 and desc.media_type:
            if mt.is_index(desc.media_type):
                raise ManifestError(f"nested index {desc.digest} is not supported")
        existing = await self.dst.head_manifest(str(desc.digest))
        if existing is not None:
            return
        child = await self.src.get_manifest(str(desc.digest))
        if child.is_index:
            raise ManifestError(f"nested index {desc.digest} is not supported")
        await self._copy_image(child)
        await self._put_manifest(child, str(child.digest))

    async def _copy_image(self, image: Manifest) -> None:
        async with anyio.create_task_group() as tg:
            for desc in image.blobs():
                tg.start_soon(self._copy_blob, desc, desc is image.config)

    async def _copy_blob(self, desc: Descriptor, is_config: bool) -> None:
        async def run() -> BlobOutcome:
            async with self._limit:
                return await self._transfer(desc, is_config)

        outcome, shared = await self._blobs.do(desc.digest, run)
        if not shared:
            self.stats.blobs[outcome] += 1

    async def _transfer(self, desc: Descriptor, is_config: bool) -> BlobOutcome:
        if desc.media_type in FOREIGN and desc.urls:
            return BlobOutcome.FOREIGN
        self.progress(ProgressEvent("blob_start", desc, is_config=is_config))
        if await self.dst.has_blob(desc):
            outcome = BlobOutcome.SKIPPED
        elif self.dst.capabilities.mount and await self.dst.mount_blob(desc, self.src.location):
            outcome = BlobOutcome.MOUNTED
        else:
            def opener(offset: int):  # type: ignore[no-untyped-def]
                return self.src.open_blob(desc, offset)

            sent = await self.dst.put_blob(desc, opener)
            self.stats.bytes_sent += sent
            outcome = BlobOutcome.UPLOADED
        self.progress(ProgressEvent("blob_done", desc, outcome, is_config=is_config))
        log.debug("blob_copied", digest=str(desc.digest), outcome=outcome.value, size=desc.size)
        return outcome

    async def _put_manifest(self, manifest: Manifest, ref: str) -> None:
        self.progress(ProgressEvent("manifest", manifest.descriptor))
        try:
            await self.dst.put_manifest(manifest, ref)
        except MirrorError:
            raise
        self.stats.manifests += 1
