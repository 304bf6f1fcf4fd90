"""``copy`` and ``delete`` for the docker transport."""

from __future__ import annotations

import anyio

from mirror.core.reference import Reference
from mirror.engine.copy import Copier, CopyOptions, CopyResult, Progress, ProgressEvent
from mirror.errors import Unsupported
from mirror.runtime import Runtime, SideOptions


def _ignore(_: ProgressEvent) -> None:
    return None


async def copy(rt: Runtime, src: Reference, dst: Reference, src_side: SideOptions, dst_side: SideOptions,
               options: CopyOptions, progress: Progress = _ignore) -> CopyResult:
    """Copy one image; whole-image retries (``--retry-times``) on top of per-request retries."""
    source = rt.registry_source(src.repo, src_side)
    destination = rt.registry_destination(dst.repo, dst_side)
    dst_ref = dst.tag if dst.tag is not None else None
    attempts = rt.options.retry_times + 1
    for attempt in range(1, attempts + 1):
        try:
            copier = Copier(source, destination, options, progress)
            result = await copier.copy(src.ref, dst_ref)
        except Exception:
            if attempt >= attempts:
                raise
            await anyio.sleep(rt.options.retry_delay or min(2.0 ** attempt, 30.0))
            continue
        if dst.digest is not None and result.manifest.digest != dst.digest:
            from mirror.errors import DigestMismatch

            raise DigestMismatch(f"copied manifest is {result.manifest.digest}, destination asked for {dst.digest}")
        return result
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
