"""The sync scheduler: a bounded pool of image workers fed by the planner, for the whole run.

One run shares one BlobMover (blob de-duplication, mounts, the blob concurrency limit) and one
ManifestWriter, so a blob or manifest needed by many images moves at most once per destination
repository. The planner streams pairs in through a bounded channel, so memory does not grow with
the size of the catalog.

No-op fast path: a tag the destination listing shows present costs one source HEAD and one
destination HEAD (digests equal → skipped); a tag the plan marks ``assumed_present`` (its registry
assumes immutable tags) costs nothing at all: its unit is not even opened. An index copied as one
platform (or a platform subset) needs what that selection resolves to: remembered per index digest
and selection in ``choices`` (the state file), so only the first run GETs the index.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import NoReturn, Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from msgspec import Struct, field
from msgspec.structs import replace

from mirror.aio import LRU, REMEMBER, image_error
from mirror.core import mediatype as mt
from mirror.core.descriptor import Descriptor, Platform
from mirror.core.digest import Digest
from mirror.core.manifest import Manifest
from mirror.engine.blobs import BlobGate, BlobMover, BlobOutcome, KnownLocations
from mirror.engine.image import CopyOptions, ImageCopier, ImageWork, ManifestWriter, MultiArch, subset_index
from mirror.engine.referrers import ReferrerCopier, check_supported
from mirror.errors import ImageNotFound, ManifestError, MirrorError
from mirror.log import bound, get_logger
from mirror.plan.pairs import ImagePair, WorkUnit

log = get_logger("mirror.sync")

ASSUMED = "tag present at destination (assume immutable tags)"


class SyncOptions(Struct, frozen=True):
    jobs: int = 16
    blob_jobs: int = 8
    keep_going: bool = False
    dry_run: bool = False
    copy: CopyOptions = field(default_factory=CopyOptions)


class ImageRecord(Struct, frozen=True):
    source: str
    destination: str
    digest: str | None
    outcome: str  # copied | skipped | failed | would-copy
    reason: str
    bytes: int
    blobs_uploaded: int
    blobs_mounted: int
    blobs_skipped: int
    duration: float


class RunStats(Struct):
    """Live counters, read by progress displays; written only by the scheduler."""

    planned: int = 0
    planning_done: bool = False
    done: int = 0
    copied: int = 0
    skipped: int = 0
    failed: int = 0
    active: int = 0
    bytes_sent: int = 0
    blobs_uploaded: int = 0
    blobs_mounted: int = 0
    blobs_skipped: int = 0
    started: float = field(default_factory=time.monotonic)

    def add(self, record: ImageRecord) -> None:
        self.done += 1
        if record.outcome == "failed":
            self.failed += 1
        elif record.outcome in ("skipped",):
            self.skipped += 1
        else:
            self.copied += 1
        self.bytes_sent += record.bytes
        self.blobs_uploaded += record.blobs_uploaded
        self.blobs_mounted += record.blobs_mounted
        self.blobs_skipped += record.blobs_skipped


class IndexChoices(Protocol):
    """What an index resolves to for one platform selection (``state.StateBackend`` has these)."""

    def index_choice(self, digest: str, selector: str) -> str | None: ...
    def remember_index_choice(self, digest: str, selector: str, chosen: str) -> None: ...


Producer = Callable[[MemoryObjectSendStream[WorkUnit]], Awaitable[None]]
#: Opens a work unit into live transports for as long as the engine works on it.
Opener = Callable[[WorkUnit], AbstractAsyncContextManager[ImagePair]]
RecordSink = Callable[[ImageRecord], None]
BlobSink = Callable[[Descriptor, BlobOutcome], None]


class Scheduler:
    def __init__(self, options: SyncOptions, locations: KnownLocations | None = None,
                 on_record: RecordSink | None = None, stats: RunStats | None = None,
                 on_blob: BlobSink | None = None, opener: Opener | None = None, gate: BlobGate | None = None,
                 choices: IndexChoices | None = None) -> None:
        self.options = options
        self.choices = choices
        self._known_choices: LRU[tuple[Digest, str], bool] = LRU(REMEMBER)  # stored or read this run
        self.opener = opener
        self.stats = stats or RunStats()
        self.on_record = on_record or (lambda _r: None)
        self.blobs = BlobMover(anyio.CapacityLimiter(max(1, options.blob_jobs)),
                               locations if locations is not None else KnownLocations(), dry_run=options.dry_run,
                               on_blob=on_blob, gate=gate)
        self.manifests = ManifestWriter(options.dry_run)
        self.copier = ImageCopier(self.blobs, self.manifests, options.copy)
        self.referrers = ReferrerCopier(self.copier)

    async def run(self, produce: Producer) -> RunStats:
        """Run every pair ``produce`` sends; fail fast unless ``keep_going``."""
        send, receive = anyio.create_memory_object_stream[WorkUnit](max(4, self.options.jobs * 2))
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._plan, produce, send)
            for _ in range(max(1, self.options.jobs)):
                tg.start_soon(self._worker, receive.clone())
            receive.close()
        return self.stats

    async def _plan(self, produce: Producer, send: MemoryObjectSendStream[WorkUnit]) -> None:
        async with send:
            await produce(send)
        self.stats.planning_done = True

    async def _worker(self, receive: MemoryObjectReceiveStream[WorkUnit]) -> None:
        async with receive:
            async for unit in receive:
                self.stats.active += 1
                try:
                    record = await self.sync_one(unit)
                finally:
                    self.stats.active -= 1
                self.stats.add(record)
                self.on_record(record)

    async def sync_one(self, unit: WorkUnit) -> ImageRecord:
        """Open ``unit`` (a local destination is published when this exits without error) and sync it."""
        if self.opener is None:
            raise AssertionError("Scheduler.sync_one needs an opener")
        opener = self.opener

        async def run(work: ImageWork) -> tuple[str | None, str, str]:
            if unit.assumed_present and not unit.settings.referrers:  # decided by the plan: nothing to open
                return None, "skipped", ASSUMED
            if self.options.dry_run and unit.writes_files:  # opening would create (and publish) local files
                return None, "would-copy", "local transport (not compared)"
            async with opener(unit) as pair:
                return await self._sync(pair, work)

        return await self._record(unit.src_name, unit.dst_name, run)

    async def sync_pair(self, pair: ImagePair) -> ImageRecord:
        """Sync an already opened pair (``copy``)."""
        return await self._record(pair.src_name, pair.dst_name, lambda work: self._sync(pair, work))

    async def _record(self, src_name: str, dst_name: str,
                      run: Callable[[ImageWork], Awaitable[tuple[str | None, str, str]]]) -> ImageRecord:
        start = time.monotonic()
        work = ImageWork()
        digest: str | None = None
        with bound(src=src_name, dst=dst_name):
            try:
                digest, outcome, reason = await run(work)
            except (MirrorError, BaseExceptionGroup) as exc:
                # A blob or child that failed inside the copier's task groups arrives as a group.
                error = image_error(exc)
                if error is None or not (self.options.keep_going or self.options.dry_run):
                    raise
                outcome, reason = "failed", str(error)
                log.warning("image_failed", error=reason)
        counters = work.counters
        record = ImageRecord(src_name, dst_name, digest, outcome, reason, counters.bytes_sent,
                             counters.uploaded, counters.mounted, counters.skipped,
                             round(time.monotonic() - start, 4))
        log.info("image_synced", src=src_name, dst=dst_name, outcome=outcome, digest=digest,
                 bytes=counters.bytes_sent, duration=record.duration)
        return record

    async def _sync(self, pair: ImagePair, work: ImageWork) -> tuple[str | None, str, str]:
        """The image, then (``pair.referrers``) its referrers: also when the image was up to date,
        since signatures and SBOMs get attached to images long after they were pushed."""
        if pair.referrers is not None:
            check_supported(pair.source, pair.destination)
        digest, outcome, reason, stored = await self._sync_image(pair, work)
        if pair.referrers is None or self.options.dry_run or digest is None:
            return digest, outcome, reason
        subjects = await self._subjects(pair, Digest.parse(digest), stored)
        count = await self.referrers.copy(pair.source, pair.destination, subjects, pair.referrers, work)
        if count and outcome == "skipped":
            return digest, "copied", f"up to date; {count} referrers copied"
        return digest, outcome, reason

    async def _subjects(self, pair: ImagePair, digest: Digest, stored: Manifest | Descriptor | None) -> list[Digest]:
        """Whose referrers to copy: the manifest stored at the top and, for an index copied with its
        instances, each instance."""
        options = self._copy_options(pair)
        if options.multi_arch is MultiArch.INDEX_ONLY:
            return [digest]
        if isinstance(stored, Descriptor):  # up to date, known by HEAD only (the source's, maybe an index)
            if not mt.is_index(stored.media_type):
                return [digest]
            stored = await pair.source.get_manifest(stored.digest)
        if stored is None or not stored.is_index:
            return [digest]
        if stored.digest != digest:  # the source's index, of which one instance or a subset was stored
            if not options.platforms:
                return [digest]
            stored = subset_index(stored, options.platforms)[0]
        return [digest, *(child.digest for child in stored.manifests)]

    async def _sync_image(self, pair: ImagePair, work: ImageWork
                          ) -> tuple[str | None, str, str, Manifest | Descriptor | None]:
        src_is_digest = isinstance(pair.src_ref, Digest)
        src_desc: Descriptor | None = None
        top: Manifest | None = None
        if (pair.dst_has_tag is not False or src_is_digest) and not self.options.copy.signers:
            # The destination may already hold it: compare digests with HEADs only (never when
            # signing: the copy must run to add the new signature, as skopeo's does).
            src_desc = await pair.source.head_manifest(pair.src_ref) or await _missing(pair)
            wanted, top = await self._wanted_digest(pair, src_desc)
            dst_desc = await pair.destination.head_manifest(pair.dst_ref or wanted)
            if dst_desc is not None and dst_desc.digest == wanted:
                instance = None if wanted == src_desc.digest else wanted  # one platform of an index
                await self.copier.refresh_signatures(pair.source, pair.destination, wanted, instance,
                                                     self._copy_options(pair))
                return str(wanted), "skipped", "up to date", top or src_desc
        if self.options.dry_run:
            if src_desc is None:
                src_desc = await pair.source.head_manifest(pair.src_ref) or await _missing(pair)
            return str(src_desc.digest), "would-copy", "differs or missing at destination", None
        if top is None:
            top = await pair.source.get_manifest(pair.src_ref)
            if src_desc is not None and top.digest != src_desc.digest:
                raise ManifestError(f"{pair.src_name}: source changed during the sync")
        options = self._copy_options(pair)
        result = await self.copier.copy(pair.source, top, pair.destination, pair.dst_ref, pair.fresh_repo, work,
                                         options, pair.policy, pair.src_name)
        if top.is_index and _selects(options):  # so that the next run's comparison needs no GET
            self._resolved(top, options)
        return str(result.digest), "copied", "", result

    def _copy_options(self, pair: ImagePair) -> CopyOptions:
        if not pair.platforms:
            return self.options.copy
        return replace(self.options.copy, platforms=pair.platforms)

    async def _wanted_digest(self, pair: ImagePair, src_desc: Descriptor) -> tuple[Digest, Manifest | None]:
        """The digest the destination should end up with. For an index copied as one platform (or a
        platform subset) that needs the index itself: one extra source GET, indexes only."""
        options = self._copy_options(pair)
        if not mt.is_index(src_desc.media_type) or not _selects(options):
            return src_desc.digest, None
        selector = _selector(options)
        known = self._recall(src_desc.digest, selector)
        if known is not None:
            return known, None
        index = await pair.source.get_manifest(src_desc.digest)
        if not index.is_index:
            raise ManifestError(f"{pair.src_name}: HEAD announced an index but the manifest is "
                                f"{index.media_type}")
        return self._resolved(index, options), index

    def _resolved(self, index: Manifest, options: CopyOptions) -> Digest:
        """What ``index`` resolves to with ``options``' platform selection (remembered)."""
        if options.platforms:
            wanted = subset_index(index, options.platforms)[0].digest
        else:
            wanted = index.select(options.platform).digest
        self._remember(index.digest, _selector(options), wanted)
        return wanted

    def _recall(self, index: Digest, selector: str) -> Digest | None:
        if self.choices is None:
            return None
        try:
            found = self.choices.index_choice(str(index), selector)
            if found is not None:
                self._known_choices.put((index, selector), True)
            return None if found is None else Digest.parse(found)
        except MirrorError as exc:  # the state is a cache (a bad entry too): ask the registry instead
            log.warning("state_unavailable", error=str(exc))
            return None

    def _remember(self, index: Digest, selector: str, chosen: Digest) -> None:
        if self.choices is None or self.options.dry_run or (index, selector) in self._known_choices:
            return
        self._known_choices.put((index, selector), True)
        try:
            self.choices.remember_index_choice(str(index), selector, str(chosen))
        except MirrorError as exc:
            log.warning("state_write_failed", error=str(exc), digest=str(index))


def _selects(options: CopyOptions) -> bool:
    """Whether an index is copied as one instance or a platform subset (stored as another manifest)."""
    if options.multi_arch is MultiArch.INDEX_ONLY:
        return False
    return options.multi_arch is not MultiArch.ALL or bool(options.platforms)


def _selector(options: CopyOptions) -> str:
    """The platform selection an index is resolved with, as a key: what it resolves to depends on
    nothing else (the index is content-addressed)."""
    if options.platforms:
        return "subset " + " ".join(_platform_key(p) for p in options.platforms)
    return "instance " + _platform_key(options.platform)


def _platform_key(platform: Platform) -> str:
    return "/".join((platform.os, platform.architecture, platform.variant or "", platform.os_version or ""))


async def _missing(pair: ImagePair) -> NoReturn:
    """The source's HEAD found no manifest: its GET says why, in the source's own words (a registry's
    "manifest unknown", exit 2 as skopeo)."""
    await pair.source.get_manifest(pair.src_ref)
    raise ImageNotFound(f"{pair.src_name}: manifest unknown at the source")
