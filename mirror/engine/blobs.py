"""Getting a blob into a destination repository: skip, mount or upload, each at most once per run.

Decisions, in order, for (destination repository, digest):
1. Already made present in this run → nothing to do.
2. The repository may hold it (it existed before the run, the state file says so, or the blob is
   large enough that an interrupted earlier run may have committed it unrecorded) → HEAD.
3. Another repository on the same destination registry holds it (this run, or the state file) →
   cross-repo mount; the source repository too when source and destination share a registry.
4. Otherwise upload it, streaming from the source. Concurrent needs for the same digest on the
   same registry wait for the first upload and then mount, so the source is read once; with a
   ``gate`` (many workers on one queue) that holds across processes too. Bytes
   that do not match the digest (damaged on the way) are never published: the upload is tried
   again from the source, at most ``DIGEST_ATTEMPTS`` times in all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from enum import Enum
from typing import Protocol

import anyio
from msgspec import Struct, field

from mirror.aio import LRU, REMEMBER, SingleFlight
from mirror.core.descriptor import Descriptor
from mirror.core.digest import Digest
from mirror.errors import DigestMismatch
from mirror.log import get_logger
from mirror.transports.base import ImageDestination, ImageSource, Location

log = get_logger("mirror.blobs")

#: Tries of an upload whose bytes do not match the digest (damaged in transit: the source is read again).
#: Not an HTTP retry: each try's requests are retried by the HTTP client (``http.retry``, the one retry
#: layer for failed requests); this loop only answers a digest mismatch, which no request retry can see.
DIGEST_ATTEMPTS = 3

#: Blobs this large are looked for (HEAD) even in a repository that had no tags before the run: an
#: earlier, interrupted run may have committed them, and one HEAD is nothing next to re-sending them.
LARGE_BLOB = 16 << 20

#: Mount sources remembered per digest (the most recent): a mount tries at most three.
MAX_SOURCES = 8

FOREIGN = frozenset({
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
})


class BlobOutcome(Enum):
    SKIPPED = "skipped"
    MOUNTED = "mounted"
    UPLOADED = "uploaded"
    FOREIGN = "foreign"


class BlobCounters(Struct):
    """Per-image (or per-run) blob accounting."""

    uploaded: int = 0
    mounted: int = 0
    skipped: int = 0
    bytes_sent: int = 0

    def add(self, outcome: BlobOutcome, sent: int = 0) -> None:
        if outcome is BlobOutcome.UPLOADED:
            self.uploaded += 1
        elif outcome is BlobOutcome.MOUNTED:
            self.mounted += 1
        else:
            self.skipped += 1
        self.bytes_sent += sent

    def merge(self, other: BlobCounters) -> None:
        self.uploaded += other.uploaded
        self.mounted += other.mounted
        self.skipped += other.skipped
        self.bytes_sent += other.bytes_sent


class KnownLocations:
    """Where blobs are known to be present. Backed by the run's memory plus an optional lookup
    (the state file) for facts learned in earlier runs.

    The memory is bounded: at most ``remember`` (repository, digest) facts and as many digests'
    lists of mount sources (``MAX_SOURCES`` repositories each), least recently used forgotten
    first; a lookup refreshes. A forgotten fact costs a HEAD or a mount later, never a wrong answer."""

    def __init__(self, lookup: Callable[[str, Digest], Iterable[str]] | None = None,
                 remember: int = REMEMBER, shared: Callable[[str, str, Digest], bool] | None = None) -> None:
        self._present: LRU[tuple[str, str, Digest], bool] = LRU(remember)
        self._sources: LRU[tuple[str, Digest], list[str]] = LRU(remember)
        self._lookup = lookup
        # Facts other processes of the same run verified (many workers): as good as this run's own.
        self._shared = shared

    def add(self, location: Location, digest: Digest) -> None:
        self._present.put((location.host, location.path, digest), True)
        key = (location.host, digest)
        repos = self._sources.get(key)
        if repos is None:
            self._sources.put(key, [location.path])
            return
        if location.path in repos:
            repos.remove(location.path)
        repos.append(location.path)  # most recent last
        del repos[:-MAX_SOURCES]

    def present(self, location: Location, digest: Digest) -> bool:
        key = (location.host, location.path, digest)
        if self._present.get(key) is not None:
            return True
        if self._shared is not None and self._shared(location.host, location.path, digest):
            self._present.put(key, True)
            return True
        return False

    def candidates(self, location: Location, digest: Digest) -> list[str]:
        repos = [r for r in reversed(self._sources.get((location.host, digest)) or ()) if r != location.path]
        if self._lookup is not None:
            repos += [r for r in self._lookup(location.host, digest) if r != location.path and r not in repos]
        return repos

    def remembered(self, location: Location, digest: Digest) -> bool:
        return self._lookup is not None and location.path in self._lookup(location.host, digest)

    def facts(self) -> int:
        """(repository, digest) facts held in memory (not ``__len__``: an empty one must stay truthy)."""
        return len(self._present)


class BlobGate(Protocol):
    """Lets one process at a time upload a blob to a registry (many workers sharing one queue).
    Whoever waited finds the blob present (or mountable) afterwards, through ``KnownLocations``."""

    def hold(self, host: str, digest: Digest) -> AbstractAsyncContextManager[None]: ...


class BlobMover(Struct):
    """Shared by every image of a run; enforces at-most-once work per (repository, digest)."""

    limit: anyio.CapacityLimiter
    locations: KnownLocations = field(default_factory=KnownLocations)
    dry_run: bool = False
    on_blob: Callable[[Descriptor, BlobOutcome], None] | None = None
    gate: BlobGate | None = None  # cross-process single flight (None: this process is the only writer)
    # In flight only: what is done is remembered in ``locations`` (one bounded memory, not three).
    _per_repo: SingleFlight[tuple[BlobOutcome, int]] = field(default_factory=lambda: SingleFlight(remember=0))
    _per_registry: SingleFlight[tuple[BlobOutcome, int]] = field(default_factory=lambda: SingleFlight(remember=0))

    async def ensure(self, src: ImageSource, dst: ImageDestination, desc: Descriptor,
                     may_exist: bool) -> tuple[BlobOutcome, int]:
        """Make ``desc`` present in ``dst``; returns (outcome, bytes sent) for the caller that did
        the work, and (SKIPPED, 0) for callers that found it done by someone else this run."""
        if desc.media_type in FOREIGN and desc.urls:
            return BlobOutcome.FOREIGN, 0
        key = (dst.location.host, dst.location.path, desc.digest)
        if self.locations.present(dst.location, desc.digest):
            return BlobOutcome.SKIPPED, 0
        result, shared = await self._per_repo.do(key, lambda: self._ensure(src, dst, desc, may_exist))
        return (BlobOutcome.SKIPPED, 0) if shared else result

    async def _ensure(self, src: ImageSource, dst: ImageDestination, desc: Descriptor,
                      may_exist: bool) -> tuple[BlobOutcome, int]:
        async with self.limit:
            if (may_exist or desc.size >= LARGE_BLOB or self.locations.remembered(dst.location, desc.digest)) \
                    and await dst.has_blob(desc):
                return self._done(dst, desc, BlobOutcome.SKIPPED, 0)
            if await self._mount_any(src, dst, desc):
                return self._done(dst, desc, BlobOutcome.MOUNTED, 0)
        # The first repository of this registry to need the blob uploads it; the others mount.
        reg_key = (dst.location.host, desc.digest)
        (outcome, sent), shared = await self._per_registry.do(reg_key, lambda: self._upload_once(src, dst, desc))
        if not shared:
            return outcome, sent
        async with self.limit:
            if await self._mount_any(src, dst, desc):
                return self._done(dst, desc, BlobOutcome.MOUNTED, 0)
        return await self._upload(src, dst, desc)

    async def _mount_any(self, src: ImageSource, dst: ImageDestination, desc: Descriptor) -> bool:
        if not dst.capabilities.mount or self.dry_run:
            return False
        candidates = [Location(dst.location.transport, dst.location.host, repo)
                      for repo in self.locations.candidates(dst.location, desc.digest)]
        if src.location.transport == dst.location.transport and src.location.host == dst.location.host \
                and src.location.path != dst.location.path:
            candidates.insert(0, src.location)
        for origin in candidates[:3]:
            if await dst.mount_blob(desc, origin):
                return True
        return False

    async def _upload_once(self, src: ImageSource, dst: ImageDestination,
                           desc: Descriptor) -> tuple[BlobOutcome, int]:
        """Upload, unless another process did it (or is doing it: then wait, and skip or mount)."""
        if self.gate is None or self.dry_run:
            return await self._upload(src, dst, desc)
        async with self.gate.hold(dst.location.host, desc.digest):
            if self.locations.present(dst.location, desc.digest):  # the worker we waited for put it here
                return BlobOutcome.SKIPPED, 0
            async with self.limit:
                if self.locations.remembered(dst.location, desc.digest) and await dst.has_blob(desc):
                    return self._done(dst, desc, BlobOutcome.SKIPPED, 0)
                if await self._mount_any(src, dst, desc):
                    return self._done(dst, desc, BlobOutcome.MOUNTED, 0)
            return await self._upload(src, dst, desc)

    async def _upload(self, src: ImageSource, dst: ImageDestination, desc: Descriptor) -> tuple[BlobOutcome, int]:
        if self.dry_run:
            return self._done(dst, desc, BlobOutcome.UPLOADED, 0)
        sent = 0
        async with self.limit:
            for attempt in range(1, DIGEST_ATTEMPTS + 1):
                try:
                    sent += await dst.put_blob(desc, lambda offset: src.open_blob(desc, offset))
                    break
                except DigestMismatch as exc:  # bytes damaged on the way: read the source again
                    if attempt == DIGEST_ATTEMPTS:
                        raise
                    log.info("blob_digest_retry", digest=str(desc.digest), attempt=attempt, error=str(exc))
        log.debug("blob_uploaded", digest=str(desc.digest), dst=str(dst.location), bytes=sent)
        return self._done(dst, desc, BlobOutcome.UPLOADED, sent)

    def _done(self, dst: ImageDestination, desc: Descriptor, outcome: BlobOutcome,
              sent: int) -> tuple[BlobOutcome, int]:
        self.locations.add(dst.location, desc.digest)
        if self.on_blob is not None:
            self.on_blob(desc, outcome)
        return outcome, sent
