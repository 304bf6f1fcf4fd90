"""``copy`` (a one-image sync on the same engine) and ``delete``: one path for every transport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import cast

from msgspec import Struct
from msgspec.structs import replace

from mirror.core.reference import ManifestRef, Tag, parse_docker
from mirror.engine.image import CopyOptions
from mirror.engine.sync import BlobSink, ImageRecord, Scheduler, SyncOptions
from mirror.errors import DigestMismatch, Unsupported, UsageError
from mirror.plan.pairs import ImagePair
from mirror.runtime import Runtime
from mirror.signing.policy import ImagePolicy, Policy
from mirror.transports.base import Deleter, ImageDestination, ImageSource
from mirror.transports.catalog import validate_name
from mirror.transports.side import SideOptions


class ImageName(Struct, frozen=True):
    """A validated CLI image name: ``TRANSPORT:REST`` (``rest`` after ``docker://`` for registries)."""

    transport: str
    rest: str

    def __str__(self) -> str:
        return str(parse_docker(self.rest)) if self.transport == "docker" else f"{self.transport}:{self.rest}"


def parse_name(text: str) -> ImageName:
    """Parse and validate ``TRANSPORT:REFERENCE`` before any I/O."""
    return ImageName(*validate_name(text))


@asynccontextmanager
async def open_ends(rt: Runtime, src: ImageName, dst: ImageName, src_side: SideOptions, dst_side: SideOptions
                    ) -> AsyncIterator[tuple[ImageSource, ManifestRef, ImageDestination, Tag | None]]:
    """Source and destination of one image, by name, for ``copy`` and for sync's work units alike.
    A local destination is published when this exits without an exception."""
    source_transport, dest_transport = rt.transport(src.transport), rt.transport(dst.transport)
    async with source_transport.source(src.rest, src_side) as (source, src_ref), \
            dest_transport.destination(dst.rest, dst_side) as (destination, dst_ref):
        yield source, src_ref, destination, dst_ref


async def copy(rt: Runtime, src: ImageName, dst: ImageName, src_side: SideOptions, dst_side: SideOptions,
               options: CopyOptions, jobs: int = 6, on_blob: BlobSink | None = None,
               policy: Policy | None = None, referrers: tuple[str, ...] | None = None,
               scheduler: Callable[[CopyOptions], Scheduler] | None = None) -> ImageRecord:
    """Copy one image between any two transports. A local destination is published only if the
    copy succeeds. An image already at a registry destination with the same digest costs two HEADs.
    Retries happen per request, in the HTTP client (``--retry-times``), and nowhere else.
    ``referrers``: also copy the image's OCI referrers of these artifact types (empty: all).
    ``scheduler``: the engine for these options (``copy --pairs`` shares one between images; then
    ``jobs`` and ``on_blob`` are the caller's business); default: a new one for this image."""
    if referrers is not None:
        refuse_referrers(rt, src, dst)
    wanted = parse_docker(dst.rest).digest if dst.transport == "docker" else None
    if wanted is not None and not options.reformat.frozen:  # containers/image: nothing may change then
        options = replace(options, reformat=replace(options.reformat, frozen="Destination specifies a digest"))
    async with open_ends(rt, src, dst, src_side, dst_side) as (source, src_ref, destination, dst_ref):
        pair = ImagePair(source=source, src_ref=src_ref, destination=destination, dst_ref=dst_ref,
                         src_name=str(src), dst_name=str(dst), policy=image_policy(policy, src), referrers=referrers)
        engine = scheduler(options) if scheduler is not None else Scheduler(
            SyncOptions(jobs=1, blob_jobs=jobs, copy=options), rt.known_locations(), on_blob=on_blob,
            choices=rt.state)
        record = await engine.sync_pair(pair)
        if wanted is not None and record.digest != str(wanted):
            raise DigestMismatch(f"copied manifest is {record.digest}, destination asked for {wanted}")
        if destination.capabilities.converts_manifests and dst_ref is not None and record.digest is not None:
            # The destination stored another manifest (a docker save archive): report the digest it
            # stored, as skopeo does (--digestfile).
            stored = await destination.head_manifest(dst_ref)
            if stored is not None and str(stored.digest) != record.digest:
                record = replace(record, digest=str(stored.digest))
        return record


def refuse_referrers(rt: Runtime, *names: ImageName) -> None:
    """``--referrers`` needs transports that list and store referrers; refused before any I/O."""
    for name in names:
        if not rt.transport(name.transport).capabilities.referrers:
            raise UsageError(f"--referrers is not supported for transport {name.transport!r}: only docker:// "
                             "registries list and store OCI referrers")


def image_policy(policy: Policy | None, name: ImageName) -> ImagePolicy | None:
    """The requirements for the source image ``name``, from its transport's scopes."""
    if policy is None:
        return None
    if name.transport == "docker":
        return policy.for_docker(parse_docker(name.rest))
    if name.transport == "dir":
        return policy.for_path("dir", name.rest)
    if name.transport == "oci":
        from mirror.transports.local import oci  # only for oci: sources (the catalog imports it lazily too)

        path, ref = oci.split_reference("oci", name.rest)
        return policy.for_path("oci", str(path), ref)
    return policy.for_transport(name.transport)


async def delete(rt: Runtime, name: ImageName, side: SideOptions) -> str:
    """Delete the manifest ``name`` points at, by digest, as skopeo does; returns the digest."""
    transport = rt.transport(name.transport)
    if not transport.capabilities.delete:
        raise Unsupported(f"delete is not supported for transport {name.transport!r}")
    async with transport.source(name.rest, side) as (source, ref):
        manifest = await source.get_manifest(ref)
    async with transport.destination(name.rest, side) as (destination, _tag):
        try:
            await cast(Deleter, destination).delete_manifest(manifest.digest)
        except Unsupported as exc:
            raise Unsupported(f"deleting {name}: the registry does not allow deletion "
                              f"(distribution needs storage.delete.enabled) [{exc}]") from None
    return str(manifest.digest)
