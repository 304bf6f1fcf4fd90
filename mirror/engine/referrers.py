"""Copy an image's OCI referrers: the signatures, SBOMs and attestations attached to it by ``subject``.

For each subject (the image's manifest, and each instance of an index that was copied) the source's
referrers are listed, those the destination does not list yet are copied like any manifest (blobs
first, byte for byte whatever their media types, then the manifest by digest), and the destination
is asked to list them under the subject (``ReferrerDestination.attach_referrers``: nothing to do on
a registry with the referrers API, a fallback-index update elsewhere). Referrers of referrers (a
signature of an SBOM) follow, level by level, at most ``MAX_DEPTH`` levels below the image.

Costs on a no-op run: one source listing per subject, and one destination listing per subject that
has referrers. The artifact-type filter applies at every level.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import anyio

from mirror.aio import SingleFlight
from mirror.core.descriptor import Descriptor
from mirror.core.digest import Digest
from mirror.core.manifest import Manifest
from mirror.engine.image import CopyOptions, ImageCopier, ImageWork, MultiArch
from mirror.engine.reformat import Reformat
from mirror.errors import UsageError
from mirror.log import get_logger
from mirror.transports.base import ImageDestination, ImageSource, ReferrerDestination, ReferrerSource

log = get_logger("mirror.referrers")

MAX_DEPTH = 4
#: A referrer is copied whole (an index with every instance), without signatures of its own, and as it is:
#: no format conversion or layer compression (its digest is what its own referrers name).
REFERRER_COPY = CopyOptions(multi_arch=MultiArch.ALL, remove_signatures=True,
                            reformat=Reformat(frozen="Referrers are copied as they are"))


def check_supported(src: ImageSource, dst: ImageDestination) -> None:
    """Refuse ``--referrers`` for a source or destination that cannot list or store referrers."""
    for end, role in ((src, "source"), (dst, "destination")):
        if not end.capabilities.referrers:
            raise UsageError(f"--referrers: the {role} {end.location} cannot hold OCI referrers "
                             "(only docker:// registries can)")


class ReferrerCopier:
    """Copies referrers for a whole run; a subject's referrers are synced once per destination
    repository and artifact-type filter, however many images share the subject."""

    def __init__(self, copier: ImageCopier, max_depth: int = MAX_DEPTH) -> None:
        self.copier = copier
        self.max_depth = max_depth
        self._flight: SingleFlight[tuple[int, tuple[Digest, ...]]] = SingleFlight()

    async def copy(self, src: ImageSource, dst: ImageDestination, subjects: Sequence[Digest],
                   artifact_types: tuple[str, ...], work: ImageWork) -> int:
        """Copy the referrers of ``subjects`` that ``dst`` lacks, recursively; returns how many
        referrer manifests were written."""
        check_supported(src, dst)
        written = 0
        seen = set(subjects)
        level = list(dict.fromkeys(subjects))
        for _depth in range(self.max_depth):
            results = await self._level(src, dst, level, artifact_types, work)
            written += sum(count for count, _ in results)
            level = [d for _, found in results for d in found if d not in seen]
            seen.update(level)
            if not level:
                break
        return written

    async def _level(self, src: ImageSource, dst: ImageDestination, subjects: list[Digest],
                     artifact_types: tuple[str, ...], work: ImageWork) -> list[tuple[int, tuple[Digest, ...]]]:
        """Every subject of one level at once (requests are bounded per host by the HTTP client)."""
        results: list[tuple[int, tuple[Digest, ...]]] = []

        async def one(subject: Digest) -> None:
            results.append(await self._subject(src, dst, subject, artifact_types, work))

        async with anyio.create_task_group() as tg:
            for subject in subjects:
                tg.start_soon(one, subject)
        return results

    async def _subject(self, src: ImageSource, dst: ImageDestination, subject: Digest,
                       artifact_types: tuple[str, ...], work: ImageWork) -> tuple[int, tuple[Digest, ...]]:
        key = (dst.location.host, dst.location.path, subject, artifact_types)
        result, shared = await self._flight.do(
            key, lambda: self._sync_subject(src, dst, subject, artifact_types, work))
        return (0 if shared else result[0]), result[1]

    async def _sync_subject(self, src: ImageSource, dst: ImageDestination, subject: Digest,
                            artifact_types: tuple[str, ...], work: ImageWork) -> tuple[int, tuple[Digest, ...]]:
        """(referrers written, the subject's wanted referrers): what to look at one level down."""
        wanted = await cast(ReferrerSource, src).referrers(subject, artifact_types)
        if not wanted:
            return 0, ()
        destination = cast(ReferrerDestination, dst)
        present = {desc.digest for desc in await destination.referrers(subject)}
        copied: list[Manifest] = []
        refused: set[Digest] = set()

        async def fetch_and_copy(desc: Descriptor) -> None:
            manifest = await src.get_manifest(desc.digest)  # verified against the digest
            if manifest.subject is None or manifest.subject.digest != subject:
                # A listing that names a manifest attached elsewhere (a stale or forged fallback index).
                log.warning("referrer_subject_mismatch", subject=str(subject), referrer=str(desc.digest))
                refused.add(desc.digest)
                return
            await self.copier.copy(src, manifest, dst, None, False, work, REFERRER_COPY)
            copied.append(manifest)

        async with anyio.create_task_group() as tg:
            for desc in wanted:
                if desc.digest not in present:
                    tg.start_soon(fetch_and_copy, desc)
        if copied:
            order = {desc.digest: i for i, desc in enumerate(wanted)}
            copied.sort(key=lambda m: order[m.digest])  # the source's order, whatever finished first
            await destination.attach_referrers(subject, copied)
            log.info("referrers_copied", subject=str(subject), count=len(copied))
        return len(copied), tuple(d.digest for d in wanted if d.digest not in refused)
