"""The seam every transport implements, and every engine uses.

Contract for destinations: blobs before the manifests that reference them, children before the
index, the tag last. ``put_blob`` verifies the digest and size of every byte it receives and
never publishes a blob that does not match.
Sources do not verify blob digests: the caller does (the copier hashes while streaming).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from mirror.core.descriptor import Descriptor
from mirror.core.digest import Digest
from mirror.core.manifest import Manifest

#: Opens the source blob at a byte offset, yielding its chunks from there.
BlobOpener = Callable[[int], AbstractAsyncContextManager[AsyncIterator[bytes]]]


@dataclass(frozen=True, slots=True)
class Capabilities:
    mount: bool = False
    delete: bool = False
    chunked: bool = False


@dataclass(frozen=True, slots=True)
class Location:
    """Where an image source or destination lives, for reports and mount decisions."""

    transport: str
    host: str
    path: str

    def __str__(self) -> str:
        return f"{self.transport}://{self.host}/{self.path}" if self.host else f"{self.transport}:{self.path}"


class ImageSource(Protocol):
    location: Location

    async def get_manifest(self, ref: str) -> Manifest:
        """The manifest for a tag or ``alg:hex`` digest, verified against that digest when given."""
        ...

    async def head_manifest(self, ref: str) -> Descriptor | None:
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

    async def head_manifest(self, ref: str) -> Descriptor | None: ...

    async def put_manifest(self, manifest: Manifest, ref: str) -> None:
        """Store the manifest's raw bytes under ``ref`` (a tag or its digest)."""
        ...


@runtime_checkable
class SignatureSource(Protocol):
    """A source that stores image signatures (skopeo's ``dir:`` ``signature-N`` files)."""

    async def signatures(self, instance: Digest | None) -> list[bytes]:
        """Signatures of the top-level manifest (None) or of one instance of an index, in order."""
        ...


@runtime_checkable
class SignatureDestination(Protocol):
    """A destination that stores image signatures; others make a signed copy fail unless they are removed."""

    async def put_signatures(self, signatures: list[bytes], instance: Digest | None) -> None: ...


@dataclass(frozen=True, slots=True)
class LocalOptions:
    """Settings local transports need from the command line."""

    tmpdir: str | None = None
    daemon_host: str | None = None       # docker-daemon: --src-daemon-host / --dest-daemon-host
    daemon_cert_dir: str | None = None   # docker-daemon on tcp://: ca.pem, cert.pem, key.pem (--src-cert-dir)
    daemon_tls_verify: bool = True       # docker-daemon on tcp://: --src-tls-verify / --dest-tls-verify
    additional_tags: tuple[str, ...] = ()  # docker-archive destination: --additional-tag
    all_images: bool = False             # dir: write per-instance manifests for --all copies


class LocalTransport(Protocol):
    """A non-registry transport (``dir:``, ``oci:``, archives, daemon, containers-storage).

    ``source(rest)`` yields (ImageSource, ref to pass to ``get_manifest``); ``destination(rest)``
    yields (ImageDestination, tag to store under or None). A destination publishes its result (rename
    into place, index update, archive close) only when its context exits without an exception.
    """

    name: str

    def validate(self, rest: str) -> None:
        """Raise InvalidReference for a malformed ``rest`` (checked before any I/O)."""
        ...

    def source(self, rest: str, options: LocalOptions) -> AbstractAsyncContextManager[tuple[ImageSource, str]]: ...

    def destination(self, rest: str, options: LocalOptions
                    ) -> AbstractAsyncContextManager[tuple[ImageDestination, str | None]]: ...
