"""``copy`` (a one-image sync on the same engine) and ``delete`` for the docker transport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import anyio

from mirror.core.reference import Reference, parse_docker, split_transport
from mirror.engine.image import CopyOptions
from mirror.engine.sync import BlobSink, ImageRecord, Scheduler, SyncOptions
from mirror.errors import DigestMismatch, MirrorError, Unsupported, UsageError
from mirror.plan.pairs import ImagePair
from mirror.runtime import Runtime, SideOptions
from mirror.signing.policy import ImagePolicy, Policy
from mirror.transports.base import ImageDestination, ImageSource, LocalOptions
from mirror.transports.catalog import local_transports
from mirror.transports.local import oci
from mirror.transports.local.dockerarchive import ArchiveSource
from mirror.transports.local.recompress import gzip_layers


@dataclass(frozen=True, slots=True)
class ImageName:
    """A parsed CLI image name: ``docker://`` gives a Reference, other transports keep their text."""

    transport: str
    rest: str
    reference: Reference | None = None

    def __str__(self) -> str:
        return str(self.reference) if self.reference is not None else f"{self.transport}:{self.rest}"


def parse_name(text: str) -> ImageName:
    """Parse and validate ``TRANSPORT:REFERENCE`` before any I/O."""
    transport, rest = split_transport(text)
    if transport == "docker":
        return ImageName(transport, rest, parse_docker(rest))
    local = local_transports().get(transport)
    if local is None:
        raise UsageError(f"transport {transport!r} is not supported yet")
    local.validate(rest)
    return ImageName(transport, rest)


@asynccontextmanager
async def _source(rt: Runtime, name: ImageName, side: SideOptions, options: LocalOptions,
                  to_registry: bool = False) -> AsyncIterator[tuple[ImageSource, str]]:
    if name.reference is not None:
        yield rt.registry_source(name.reference.repo, side), name.reference.ref
        return
    async with local_transports()[name.transport].source(name.rest, options) as (source, ref):
        if to_registry and isinstance(source, ArchiveSource):
            # docker save's uncompressed layers are gzipped on the way to a registry, as skopeo does.
            async with gzip_layers(source, options.tmpdir) as compressed:
                yield compressed, str(compressed.manifest.digest)
            return
        yield source, ref


@asynccontextmanager
async def _destination(rt: Runtime, name: ImageName, side: SideOptions,
                       options: LocalOptions) -> AsyncIterator[tuple[ImageDestination, str | None]]:
    if name.reference is not None:
        yield rt.registry_destination(name.reference.repo, side), name.reference.tag
        return
    async with local_transports()[name.transport].destination(name.rest, options) as opened:
        yield opened


async def copy(rt: Runtime, src: ImageName, dst: ImageName, src_side: SideOptions, dst_side: SideOptions,
               options: CopyOptions, jobs: int = 6, on_blob: BlobSink | None = None,
               local: LocalOptions | None = None, dest_local: LocalOptions | None = None,
               policy: Policy | None = None) -> ImageRecord:
    """Copy one image between any two transports. A local destination is published only if the
    copy succeeds. An image already at a registry destination with the same digest costs two HEADs.
    ``dest_local`` (default: ``local``) holds the destination's options (--dest-daemon-host...)."""
    local = local or LocalOptions()
    dest_local = dest_local or local
    async with _source(rt, src, src_side, local, dst.reference is not None) as (source, src_ref), \
            _destination(rt, dst, dst_side, dest_local) as (destination, dst_ref):
        pair = ImagePair(source=source, src_ref=src_ref, destination=destination, dst_ref=dst_ref,
                         src_name=str(src), dst_name=str(dst), policy=image_policy(policy, src))
        record = await _copy_pair(rt, pair, dst, options, jobs, on_blob)
        if dst.reference is None and dst_ref is not None and record.digest is not None:
            # A local destination may have converted the manifest (Docker → OCI layout): report
            # the digest it stored, as skopeo does (--digestfile).
            stored = await destination.head_manifest(dst_ref)
            if stored is not None and str(stored.digest) != record.digest:
                record = replace(record, digest=str(stored.digest))
        return record


def image_policy(policy: Policy | None, name: ImageName) -> ImagePolicy | None:
    """The requirements for the source image ``name``, from its transport's scopes."""
    if policy is None:
        return None
    if name.reference is not None:
        return policy.for_docker(name.reference)
    if name.transport == "dir":
        return policy.for_path("dir", name.rest)
    if name.transport == "oci":
        path, ref = oci.split_reference("oci", name.rest)
        return policy.for_path("oci", str(path), ref)
    return policy.for_transport(name.transport)


async def _copy_pair(rt: Runtime, pair: ImagePair, dst: ImageName, options: CopyOptions, jobs: int,
                     on_blob: BlobSink | None) -> ImageRecord:
    """Whole-image retries (``--retry-times``) on top of per-request retries."""
    attempts = rt.options.retry_times + 1
    for attempt in range(1, attempts + 1):
        scheduler = Scheduler(SyncOptions(jobs=1, blob_jobs=jobs, copy=options), rt.known_locations(),
                              on_blob=on_blob)
        try:
            record = await scheduler.sync_one(pair)
        except MirrorError:
            if attempt >= attempts:
                raise
            await anyio.sleep(rt.options.retry_delay or min(2.0 ** attempt, 30.0))
            continue
        wanted = dst.reference.digest if dst.reference is not None else None
        if wanted is not None and record.digest != str(wanted):
            raise DigestMismatch(f"copied manifest is {record.digest}, destination asked for {wanted}")
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
