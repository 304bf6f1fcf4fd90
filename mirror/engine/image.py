"""Copy one image or index: blobs before manifests, children before the index, the tag last.

Raw manifest bytes are copied unchanged, so digests are preserved — except when a platform
subset of an index is requested, which necessarily writes a new, smaller index, and when the
manifest format or layer compression changes on the way (``reformat.py``: ``--format``,
``--dest-compress*``, or what the destination takes).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import Enum

import anyio
from msgspec import Struct, field

from mirror.aio import SingleFlight
from mirror.core import manifest as manifest_mod
from mirror.core.descriptor import Descriptor, Platform, matches
from mirror.core.digest import Digest
from mirror.core.manifest import Manifest
from mirror.core.reference import Tag
from mirror.engine.blobs import BlobCounters, BlobMover
from mirror.engine.reformat import Reformat, Reformatter
from mirror.engine.spool import SpoolSource
from mirror.errors import ManifestError, SignatureError
from mirror.signing.policy import ImagePolicy
from mirror.signing.signers import Signer, SigningStep
from mirror.signing.trust import Trust
from mirror.transports.base import ImageDestination, ImageSource, source_signatures, store_signatures


class MultiArch(Enum):
    SYSTEM = "system"
    ALL = "all"
    INDEX_ONLY = "index-only"


class CopyOptions(Struct, frozen=True):
    multi_arch: MultiArch = MultiArch.SYSTEM
    platform: Platform = Platform("linux", "amd64")
    platforms: tuple[Platform, ...] = ()  # a subset of an index to copy (YAML `platforms`)
    remove_signatures: bool = False
    signers: tuple[Signer, ...] = ()  # --sign-by*: each adds a signature of the copied top-level manifest
    sign_identity: str | None = None  # --sign-identity (default: the destination's docker reference)
    reformat: Reformat = field(default_factory=Reformat)  # manifest format and layer compression changes


class ImageWork(Struct):
    """What copying one image did (for the report)."""

    counters: BlobCounters = field(default_factory=BlobCounters)
    manifests_written: int = 0


class ManifestWriter:
    """Writes manifests at most once per (destination repository, digest) per run."""

    def __init__(self, dry_run: bool) -> None:
        self.dry_run = dry_run
        self._flight: SingleFlight[bool] = SingleFlight()

    async def by_digest(self, dst: ImageDestination, manifest: Manifest) -> bool:
        key = (dst.location.host, dst.location.path, manifest.digest)

        async def put() -> bool:
            if not self.dry_run:
                await dst.put_manifest(manifest, manifest.digest)
            return True

        _, shared = await self._flight.do(key, put)
        return not shared

    def known(self, dst: ImageDestination, digest: object) -> bool:
        return self._flight.done((dst.location.host, dst.location.path, digest))


class ImageCopier:
    """Copies images for a whole run, sharing blob and manifest de-duplication."""

    def __init__(self, blobs: BlobMover, manifests: ManifestWriter, options: CopyOptions) -> None:
        self.blobs = blobs
        self.manifests = manifests
        self.options = options
        self.trust = Trust()
        # One per Reformat in use: the run's, and a referrer's (copied as it is).
        self._reformatters: dict[Reformat, Reformatter] = {options.reformat: Reformatter(options.reformat)}

    async def copy(self, src: ImageSource, top: Manifest, dst: ImageDestination, dst_ref: Tag | None,
                   fresh_repo: bool, work: ImageWork, options: CopyOptions | None = None,
                   policy: ImagePolicy | None = None, where: str = "") -> Manifest:
        """Copy ``top`` (already fetched) and store it under ``dst_ref`` (None: by digest only).
        ``fresh_repo``: the destination repository held no tags before the run, so no HEADs.
        ``options`` overrides the run's copy options for this image (per-registry platforms).
        ``policy``: the source's signature policy, checked for the top manifest and every instance
        copied, before any of their blobs move (None: --insecure-policy)."""
        options = options or self.options
        checked = _Checked(self.trust, policy, src, where or str(src.location))
        await checked(top, None)
        signing = SigningStep(options.signers, options.sign_identity, dst, dst_ref)  # refuses before any blob moves
        if top.is_index:
            top, signatures = await self._copy_index(src, top, dst, fresh_repo, work, options, checked)
        else:
            signatures = await self._signatures(src, None, top.digest, dst, options)
            top = await self._copy_image(src, top, dst, fresh_repo, work, signatures, options)
        if dst_ref is None:
            if await self.manifests.by_digest(dst, top):
                work.manifests_written += 1
        elif not self.manifests.dry_run:
            await dst.put_manifest(top, dst_ref)
            work.manifests_written += 1
        if not self.manifests.dry_run:
            signatures = signatures + await signing.sign(top)
        await self._put_signatures(dst, signatures, None, top.digest)
        return top

    async def _copy_index(self, src: ImageSource, index: Manifest, dst: ImageDestination, fresh_repo: bool,
                          work: ImageWork, options: CopyOptions, checked: _Checked) -> tuple[Manifest, list[bytes]]:
        """The manifest to store at the top, and the signatures that go with it."""
        mode = options.multi_arch
        if mode is MultiArch.SYSTEM and not options.platforms:
            child = await src.get_manifest(index.select(options.platform).digest)
            if child.is_index:
                raise ManifestError(f"index {index.digest} nests another index for {options.platform}")
            await checked(child, child.digest)
            # As containers/image: the chosen instance's signatures become the copy's own.
            signatures = await self._signatures(src, child.digest, child.digest, dst, options)
            return await self._copy_image(src, child, dst, fresh_repo, work, signatures, options), signatures
        signatures = await self._signatures(src, None, index.digest, dst, options)
        frozen = _frozen(signatures)
        reformatter = self._reformatter(options)
        reformatter.check_list(index, dst.capabilities, frozen)
        if mode is MultiArch.INDEX_ONLY:
            return reformatter.index(index, {}, dst.capabilities, frozen, options.platform), signatures
        children = index.manifests
        if options.platforms:
            subset, children = subset_index(index, options.platforms)
            if signatures and subset.digest != index.digest:
                raise SignatureError(f"Can not copy signatures of {index.digest}: a platform subset changes the "
                                     "index they sign (use --remove-signatures)")
            index = subset
        written: dict[Digest, Descriptor] = {}  # each child copied -> what was written for it
        async with anyio.create_task_group() as tg:
            for desc in children:
                tg.start_soon(self._copy_child, src, desc, dst, fresh_repo, work, options, checked, written)
        return reformatter.index(index, written, dst.capabilities, frozen, options.platform), signatures

    async def _copy_child(self, src: ImageSource, desc: Descriptor, dst: ImageDestination, fresh_repo: bool,
                          work: ImageWork, options: CopyOptions, checked: _Checked,
                          written: dict[Digest, Descriptor]) -> None:
        reformatter = self._reformatter(options)
        if not reformatter.converts(desc.media_type, dst.capabilities):
            # Written as it is (unless its layers need compressing): a copy already there will do.
            if self.manifests.known(dst, desc.digest):
                return
            if not fresh_repo and await dst.head_manifest(desc.digest) is not None:
                return
        child = await src.get_manifest(desc.digest)
        if child.is_index:
            raise ManifestError(f"nested index {desc.digest} is not supported")
        await checked(child, child.digest)
        signatures = await self._signatures(src, child.digest, child.digest, dst, options)
        plan = reformatter.plan(child, dst.capabilities, _frozen(signatures))
        async with reformatter.image(src, child, plan) as (result, spool):
            written[desc.digest] = result.descriptor
            if result is not child and (self.manifests.known(dst, result.digest) or (
                    not fresh_repo and await dst.head_manifest(result.digest) is not None)):
                return
            await self._copy_blobs(src, result, dst, fresh_repo, work, spool)
        if await self.manifests.by_digest(dst, result):
            work.manifests_written += 1
        await self._put_signatures(dst, signatures, child.digest, child.digest)

    async def _copy_image(self, src: ImageSource, image: Manifest, dst: ImageDestination, fresh_repo: bool,
                          work: ImageWork, signatures: list[bytes], options: CopyOptions) -> Manifest:
        """Copy one image's blobs, converted as the run asks; returns the manifest to write."""
        reformatter = self._reformatter(options)
        plan = reformatter.plan(image, dst.capabilities, _frozen(signatures))
        async with reformatter.image(src, image, plan) as (result, spool):
            await self._copy_blobs(src, result, dst, fresh_repo, work, spool)
        return result

    def _reformatter(self, options: CopyOptions) -> Reformatter:
        found = self._reformatters.get(options.reformat)
        if found is None:
            found = self._reformatters[options.reformat] = Reformatter(options.reformat)
        return found

    async def refresh_signatures(self, src: ImageSource, dst: ImageDestination, digest: Digest,
                                 instance: Digest | None, options: CopyOptions) -> None:
        """An image found up to date still receives the source's signatures of its top-level manifest,
        as skopeo (which copies every time) stores them: costs only reading the source's signature
        storage (a lookaside file lookup by default), and writes nothing when there are none."""
        if self.manifests.dry_run:
            return
        signatures = await self._signatures(src, instance, digest, dst, options)
        await self._put_signatures(dst, signatures, None, digest)

    @staticmethod
    async def _signatures(src: ImageSource, instance: Digest | None, digest: Digest, dst: ImageDestination,
                          options: CopyOptions) -> list[bytes]:
        """The source's signatures to carry, checked before any blob moves (as containers/image)."""
        if options.remove_signatures:
            return []
        signatures = await source_signatures(src, instance, digest)
        if signatures and not dst.capabilities.signatures:
            raise SignatureError(f"Can not copy signatures to {dst.location}: it does not store signatures "
                                 "(use --remove-signatures)")
        return signatures

    async def _put_signatures(self, dst: ImageDestination, signatures: list[bytes], instance: Digest | None,
                              digest: Digest) -> None:
        if signatures and not self.manifests.dry_run and dst.capabilities.signatures:
            await store_signatures(dst, signatures, instance, digest)

    async def _copy_blobs(self, src: ImageSource, image: Manifest, dst: ImageDestination,
                          fresh_repo: bool, work: ImageWork, spool: SpoolSource | None = None) -> None:
        async def one(desc: Descriptor) -> None:
            origin: ImageSource = spool if spool is not None and spool.holds(desc.digest) else src
            outcome, sent = await self.blobs.ensure(origin, dst, desc, may_exist=not fresh_repo)
            work.counters.add(outcome, sent)

        async with anyio.create_task_group() as tg:
            for desc in image.blobs():
                tg.start_soon(one, desc)


def _frozen(signatures: list[bytes]) -> str:
    """Why a signed manifest may not change (containers/image's words)."""
    return "Would invalidate signatures" if signatures else ""


class _Checked(Struct, frozen=True):
    """The policy check for one image's manifests (nothing to do without a policy)."""

    trust: Trust
    policy: ImagePolicy | None
    src: ImageSource
    where: str

    async def __call__(self, manifest: Manifest, instance: Digest | None) -> None:
        if self.policy is not None:
            await self.trust.check(self.policy, self.src, manifest, instance, self.where)


def subset_index(index: Manifest, wanted: Sequence[Platform]) -> tuple[Manifest, tuple[Descriptor, ...]]:
    """The index restricted to ``wanted`` platforms. Unchanged (same bytes) when nothing is dropped;
    otherwise a new index whose digest necessarily differs from the source's."""
    keep = [i for i, d in enumerate(index.manifests)
            if d.platform is not None and any(matches(d.platform, w) for w in wanted)]
    if not keep:
        available = ", ".join(str(d.platform) for d in index.manifests if d.platform) or "none"
        raise ManifestError(f"index {index.digest} has none of the requested platforms (available: {available})")
    if len(keep) == len(index.manifests):
        return index, index.manifests
    data = json.loads(index.raw)
    data["manifests"] = [data["manifests"][i] for i in keep]
    raw = json.dumps(data, separators=(",", ":")).encode()
    subset = manifest_mod.parse(raw, index.media_type)
    return subset, subset.manifests
