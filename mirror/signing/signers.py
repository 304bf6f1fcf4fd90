"""Signing while copying (``--sign-by``, ``--sign-by-sigstore-private-key``, ``--sign-by-sigstore``):
each signer adds one signature of the copied top-level manifest, as containers/image's copy does.

The signed identity is ``--sign-identity`` or the destination's docker reference (``host/repo:tag``,
or ``host/repo@digest`` for a copy by digest); a destination that has no docker reference (``dir:``,
``oci:``) needs ``--sign-identity``, and one that stores no signatures is refused, both before any
blob moves. Signers run in worker threads (GnuPG is a subprocess, sigstore a few milliseconds of
public-key work); a sigstore key is decrypted once, when its signer is made.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import anyio
from msgspec import Struct

from mirror import __version__
from mirror.core.manifest import Manifest
from mirror.core.reference import ManifestRef, Tag
from mirror.core.sigblob import sigstore_blob
from mirror.errors import SignatureError
from mirror.signing.simple import make_payload, manifest_digest
from mirror.transports.base import ImageDestination

if TYPE_CHECKING:  # imported by the signers' methods: a copy that does not sign loads no cryptography
    from mirror.signing import sigstore


class Signer(Protocol):
    """Makes one signature, in containers/image's stored form (``core.sigblob``)."""

    def sign(self, manifest: bytes, identity: str) -> bytes: ...


class GpgSigner(Struct, frozen=True):
    """Simple signing with a GnuPG key of the user's keyring (``--sign-by``)."""

    fingerprint: str
    passphrase_file: str | None = None

    def sign(self, manifest: bytes, identity: str) -> bytes:
        from mirror.signing import gpg

        payload = make_payload(identity, manifest_digest(manifest), f"mirror {__version__}", int(time.time()))
        return gpg.sign(payload, self.fingerprint, self.passphrase_file)


class SigstoreSigner(Struct, frozen=True):
    """A sigstore signature with a private key (``--sign-by-sigstore-private-key``, or a key-based
    ``--sign-by-sigstore`` parameter file)."""

    key: sigstore.PrivateKey

    def sign(self, manifest: bytes, identity: str) -> bytes:
        from mirror.signing import sigstore

        return sigstore_blob(sigstore.sign(self.key, manifest, identity))

    def __repr__(self) -> str:
        return "SigstoreSigner()"


class SigningStep:
    """The signatures one copy adds; made before the copy starts, so refusals come first."""

    def __init__(self, signers: Sequence[Signer], identity: str | None, dst: ImageDestination,
                 dst_ref: ManifestRef | None) -> None:
        self.signers = tuple(signers)
        self.identity = identity
        self.location = dst.location
        self.tag = dst_ref.name if isinstance(dst_ref, Tag) else None
        if not self.signers:
            return
        if not dst.capabilities.signatures:
            raise SignatureError(f"Cannot sign the image: {dst.location} does not store signatures")
        if identity is None and dst.location.transport != "docker":
            raise SignatureError(f"Cannot determine canonical Docker reference for destination {dst.location} "
                                 "(use --sign-identity)")

    async def sign(self, top: Manifest) -> list[bytes]:
        if not self.signers:
            return []
        identity = self.identity
        if identity is None:
            name = f"{self.location.host}/{self.location.path}"
            identity = f"{name}:{self.tag}" if self.tag else f"{name}@{top.digest}"
        return [await anyio.to_thread.run_sync(signer.sign, top.raw, identity) for signer in self.signers]
