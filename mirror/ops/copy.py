"""``copy`` (a one-image sync on the same engine) and ``delete`` for the docker transport."""

from __future__ import annotations

import anyio

from mirror.core.reference import Reference
from mirror.engine.image import CopyOptions
from mirror.engine.sync import BlobSink, ImageRecord, Scheduler, SyncOptions
from mirror.errors import DigestMismatch, MirrorError, Unsupported
from mirror.plan.pairs import ImagePair
from mirror.runtime import Runtime, SideOptions


async def copy(rt: Runtime, src: Reference, dst: Reference, src_side: SideOptions, dst_side: SideOptions,
               options: CopyOptions, jobs: int = 6, on_blob: BlobSink | None = None) -> ImageRecord:
    """Copy one image; whole-image retries (``--retry-times``) on top of per-request retries.
    An image already at the destination with the same digest costs two HEADs."""
    pair = ImagePair(
        source=rt.registry_source(src.repo, src_side), src_ref=src.ref,
        destination=rt.registry_destination(dst.repo, dst_side), dst_ref=dst.tag,
        src_name=str(src), dst_name=str(dst))
    attempts = rt.options.retry_times + 1
    for attempt in range(1, attempts + 1):
        scheduler = Scheduler(SyncOptions(jobs=1, blob_jobs=jobs, copy=options), on_blob=on_blob)
        try:
            record = await scheduler.sync_one(pair)
        except MirrorError:
            if attempt >= attempts:
                raise
            await anyio.sleep(rt.options.retry_delay or min(2.0 ** attempt, 30.0))
            continue
        if dst.digest is not None and record.digest != str(dst.digest):
            raise DigestMismatch(f"copied manifest is {record.digest}, destination asked for {dst.digest}")
        return record
    raise AssertionError("unreachable")


async def delete(rt: Runtime, ref: Reference, side: SideOptions) -> str:
    """Delete the manifest ``ref`` points at, by digest, as skopeo does; returns the digest."""
    source = rt.registry_source(ref.repo, side)
    manifest = await source.get_manifest(ref.ref)
    dest = rt.registry_destination(ref.repo, side)
    try:
        await dest.delete_manifest(manifest.digest)
    except Unsupported as exc:
        raise Unsupported(f"deleting {ref}: the registry does not allow deletion "
                          f"(distribution needs storage.delete.enabled) [{exc}]") from None
    return str(manifest.digest)
