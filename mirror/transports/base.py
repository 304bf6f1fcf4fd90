"""The seam every transport implements, and every engine uses.

Contract for destinations: blobs before the manifests that reference them, children before the
index, the tag last. ``put_blob`` verifies the digest and size of every byte it receives and
never publishes a blob that does not match.
Sources do not verify blob digests: the caller does (the copier hashes while streaming).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Protocol, cast

from msgspec import Struct

from mirror.core.descriptor import Descriptor
from mirror.core.digest import Digest
from mirror.core.manifest import Manifest
from mirror.core.reference import ManifestRef, Tag
from mirror.errors import Unsupported

if TYPE_CHECKING:  # the sides carry http settings; the engine, which imports this module, never sees them
    from mirror.transports.side import SideOptions

#: Opens the source blob at a byte offset, yielding its chunks from there.
BlobOpener = Callable[[int], AbstractAsyncContextManager[AsyncIterator[bytes]]]


class Capabilities(Struct, frozen=True):
    """What a transport (or one of its sources or destinations) can do; the engine reads these fields
    instead of checking types.

    ``signatures``: a source with it implements ``SignatureSource``, a destination ``SignatureDestination``.
    ``compressed_layers``: the destination wants compressed layers (containers/image's
    ``DesiredLayerCompression`` = Compress: a registry, an OCI layout), so the copy compresses
    uncompressed ones on the way (``engine/reformat.py``), as skopeo does.
    ``manifest_types``: the manifest types the destination takes (empty: any); the copy converts
    others (an OCI layout takes OCI only). ``converts_manifests``: a destination that stores another
    manifest than the one put (a docker save archive regenerates one), so the digest stored can
    differ from the one copied. ``named``: images have a registry name and tags (``inspect`` shows
    ``Name`` and ``RepoTags``). ``referrers``: OCI referrers can be listed (a
    source implements ``ReferrerSource``) and attached (a destination implements ``ReferrerDestination``).
    """

    mount: bool = False
    delete: bool = False
    chunked: bool = False
    signatures: bool = False
    list_tags: bool = False
    compressed_layers: bool = False
    converts_manifests: bool = False
    named: bool = False
    referrers: bool = False
    manifest_types: frozenset[str] = frozenset()


class Location(Struct, frozen=True):
    """Where an image source or destination lives, for reports and mount decisions."""

    transport: str
    host: str
    path: str

    def __str__(self) -> str:
        return f"{self.transport}://{self.host}/{self.path}" if self.host else f"{self.transport}:{self.path}"


class ImageSource(Protocol):
    location: Location
    capabilities: Capabilities

    async def get_manifest(self, ref: ManifestRef) -> Manifest:
        """The manifest for a tag or digest, verified against that digest when given."""
        ...

    async def head_manifest(self, ref: ManifestRef) -> Descriptor | None:
        """Digest, size and type of a manifest, or None when it does not exist."""
        ...

    def list_tags(self) -> AsyncIterator[str]: ...

    def open_blob(self, desc: Descriptor, offset: int = 0) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """The blob's bytes from ``offset``; unverified."""
        ...


class ImageDestination(Protocol):
    location: Location
    capabilities: Capabilities

    async def has_blob(self, desc: Descriptor) -> bool: ...

    async def mount_blob(self, desc: Descriptor, source: Location) -> bool:
        """Try a cross-repository mount; False means the caller must upload."""
        ...

    async def put_blob(self, desc: Descriptor, open_source: BlobOpener) -> int:
        """Upload a blob from ``open_source``, verifying digest and size; returns bytes sent."""
        ...

    async def head_manifest(self, ref: ManifestRef) -> Descriptor | None: ...

    async def put_manifest(self, manifest: Manifest, ref: ManifestRef) -> None:
        """Store the manifest's raw bytes under ``ref`` (a tag or its digest)."""
        ...


class SignatureSource(Protocol):
    """A source that stores image signatures (``dir:``'s ``signature-N`` files, a registry's lookaside
    storage and sigstore attachments); its ``capabilities.signatures`` is True. Signatures are in
    containers/image's stored form (``core.sigblob``)."""

    async def signatures(self, instance: Digest | None, digest: Digest) -> list[bytes]:
        """Signatures of the top-level manifest (``instance`` None) or of one instance of an index, in
        order; ``digest`` is the digest of the manifest they sign."""
        ...


class SignatureDestination(Protocol):
    """A destination that stores image signatures (``capabilities.signatures``); others make a signed
    copy fail unless signatures are removed. Called after the manifest they sign was stored."""

    async def put_signatures(self, signatures: list[bytes], instance: Digest | None, digest: Digest) -> None: ...


async def source_signatures(src: ImageSource, instance: Digest | None, digest: Digest) -> list[bytes]:
    """The signatures ``src`` stores for ``instance`` (none unless ``capabilities.signatures``)."""
    return await cast(SignatureSource, src).signatures(instance, digest) if src.capabilities.signatures else []


async def store_signatures(dst: ImageDestination, signatures: list[bytes], instance: Digest | None,
                           digest: Digest) -> None:
    """Store signatures at a destination with ``capabilities.signatures``."""
    await cast(SignatureDestination, dst).put_signatures(signatures, instance, digest)


class ReferrerSource(Protocol):
    """A source that lists OCI referrers (``capabilities.referrers``)."""

    async def referrers(self, subject: Digest, artifact_types: tuple[str, ...] = ()) -> list[Descriptor]:
        """Descriptors of the manifests whose ``subject`` is ``subject``, with their ``artifact_type``;
        only those of ``artifact_types`` when given. Unverified: the caller fetches each by digest."""
        ...


class ReferrerDestination(ReferrerSource, Protocol):
    """A destination that stores OCI referrers (``capabilities.referrers``): it lists what it holds,
    and makes referrers it was given (with ``put_manifest``, by digest) listed under their subject."""

    async def attach_referrers(self, subject: Digest, manifests: list[Manifest]) -> None:
        """List ``manifests`` (already stored) among ``subject``'s referrers: nothing to do where the
        registry indexes ``subject`` itself, else an update of the fallback index that keeps
        entries other writers add concurrently."""
        ...


class Deleter(Protocol):
    """A destination with ``capabilities.delete``."""

    async def delete_manifest(self, digest: Digest) -> None: ...


class Transport(Protocol):
    """One of skopeo's transports (``docker``, ``dir``, ``oci``, archives, daemon, containers-storage).

    ``rest`` is the image name after ``TRANSPORT:`` (after ``docker://`` for registries).
    ``source`` yields (ImageSource, the manifest to read); ``destination`` yields (ImageDestination,
    the tag to store under, or None: by digest only). A destination publishes its result (rename into
    place, index update, archive close) only when its context exits without an exception.
    """

    name: str
    capabilities: Capabilities

    def validate(self, rest: str) -> None:
        """Raise InvalidReference for a malformed ``rest`` (checked before any I/O)."""
        ...

    def source(self, rest: str, side: SideOptions) -> AbstractAsyncContextManager[tuple[ImageSource, ManifestRef]]: ...

    def destination(self, rest: str, side: SideOptions
                    ) -> AbstractAsyncContextManager[tuple[ImageDestination, Tag | None]]: ...

    async def list_tags(self, rest: str, side: SideOptions) -> list[str]:
        """Every tag (``capabilities.list_tags``); others raise Unsupported."""
        ...


class Untagged:
    """For transports whose images have no tag list (``capabilities.list_tags`` False): ``list-tags``
    is refused, as skopeo refuses it."""

    name: str

    async def list_tags(self, rest: str, side: SideOptions) -> list[str]:
        raise Unsupported(f"list-tags is not supported for transport {self.name!r} (supported: docker, docker-archive)")
