"""A registry image's signatures: lookaside storage (simple signing) and, when registries.d turns
them on, sigstore attachments; as containers/image reads and writes them (``docker_image_src.go``,
``docker_image_dest.go``).

Read: the lookaside signatures, then the attachments. Write: sigstore signatures become attachments
(an error when ``use-sigstore-attachments`` is off, as in skopeo), the others go to the lookaside.
"""

from __future__ import annotations

from mirror.aio import SingleFlight
from mirror.core.digest import Digest
from mirror.core.sigblob import Sigstore, sigstore_signature
from mirror.errors import SignatureError, SignatureInvalid
from mirror.http.client import HttpClient
from mirror.transports.base import ImageDestination, ImageSource
from mirror.transports.registry import attachments, lookaside
from mirror.transports.registry.registriesd import SignatureStorage


class RegistrySignatures:
    """Signature storage of one registry image (its repository's lookaside and attachments)."""

    def __init__(self, http: HttpClient, storage: SignatureStorage,
                 dirs: lookaside.MissingDirs | None = None) -> None:
        self.http = http
        self.storage = storage
        self.dirs = dirs  # the run's missing lookaside directories
        # The policy check and the copy both ask: read once per manifest of the image.
        self._read: SingleFlight[list[bytes]] = SingleFlight(remember=16)

    async def read(self, src: ImageSource, digest: Digest) -> list[bytes]:
        async def fetch() -> list[bytes]:
            found = await lookaside.read(self.http, self.storage, digest, self.dirs)
            if self.storage.attachments:
                found += await attachments.read(src, digest)
            return found

        found, _ = await self._read.do(digest, fetch)
        return list(found)

    async def delete(self, digest: Digest) -> None:
        """Remove the lookaside signatures of a deleted manifest (a web lookaside is left alone)."""
        if self.storage.write.scheme == "file":
            await lookaside.delete(self.storage, digest)

    async def write(self, src: ImageSource, dst: ImageDestination, digest: Digest, blobs: list[bytes]) -> None:
        sigstore: list[Sigstore] = []
        others: list[bytes] = []
        for blob in blobs:
            try:
                sig = sigstore_signature(blob)
            except SignatureInvalid:  # not a format mirror knows: carried to the lookaside as it is
                sig = None
            if sig is None:
                others.append(blob)
            else:
                sigstore.append(sig)
        if sigstore:
            if not self.storage.attachments:
                raise SignatureError(f"Can not store sigstore signatures in {dst.location}: writing sigstore "
                                     "attachments is disabled by configuration (use-sigstore-attachments in "
                                     "registries.d)")
            await attachments.write(src, dst, digest, sigstore)
        await lookaside.write(self.storage, digest, others, self.dirs)
