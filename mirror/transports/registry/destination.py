"""Writing images to a registry: blob existence, cross-repo mounts, uploads, manifests, deletion."""

from __future__ import annotations

from yarl import URL

from mirror.core.descriptor import Descriptor
from mirror.core.digest import Digest
from mirror.core.manifest import Manifest
from mirror.core.reference import ManifestRef, Repo
from mirror.core.referrers import entry
from mirror.errors import DigestMismatch, MirrorError, NotFound, SignatureError
from mirror.http.client import Reply
from mirror.log import get_logger
from mirror.state import StateBackend, StateError
from mirror.transports.base import BlobOpener, Location
from mirror.transports.registry import api
from mirror.transports.registry.endpoint import RegistryEndpoint
from mirror.transports.registry.hostfact import HostFact
from mirror.transports.registry.referrers import FallbackUpdate, list_referrers
from mirror.transports.registry.signed import RegistrySignatures
from mirror.transports.registry.source import RegistrySource
from mirror.transports.registry.upload import BlobUpload
from mirror.transports.registry.upload import location_of as _location
from mirror.transports.registry.uploadopts import UploadOptions

log = get_logger("mirror.registry")


class RegistryDestination:
    """``ImageDestination`` over the registry API for one repository.

    ``state`` (optional) keeps upload sessions across runs and records where blobs were verified
    present; ``uploads`` chooses between monolithic, streamed and chunked uploads (``upload.py``).
    """

    capabilities = api.CAPABILITIES

    def __init__(self, endpoint: RegistryEndpoint, repo: Repo, *, state: StateBackend | None = None,
                 uploads: UploadOptions | None = None, referrers: HostFact | None = None,
                 signed: RegistrySignatures | None = None, single: HostFact | None = None) -> None:
        self.endpoint = endpoint
        self.single = single  # which registries take single-POST uploads (the run's)
        self.repo = repo
        self.location = Location("docker", repo.registry, repo.path)
        self.state = state
        self.uploads = uploads or UploadOptions()
        self.referrers_support = referrers or HostFact()
        self._scopes = (api.push_scope(repo.path),)
        self._indexed: set[Digest] = set()  # manifests whose subject the registry said it indexed
        self._signed = signed
        if signed is not None:
            self.capabilities = api.SIGNED_CAPABILITIES

    async def put_signatures(self, signatures: list[bytes], instance: Digest | None, digest: Digest) -> None:
        """Sigstore signatures as attachments, the others in the lookaside (``registry.signed``)."""
        if self._signed is None:
            raise SignatureError(f"{self.location} was opened without signature storage")
        await self._signed.write(RegistrySource(self.endpoint, self.repo), self, digest, signatures)

    async def has_blob(self, desc: Descriptor) -> bool:
        try:
            reply = await self.endpoint.fetch("HEAD", api.blob_path(self.repo.path, desc.digest),
                                              scopes=self._scopes, what=f"checking blob {desc.digest}")
        except NotFound:
            self._remember(desc, present=False)
            return False
        length = reply.headers.get("Content-Length")
        # A present blob of another size is not the blob we want (should never happen).
        present = length is None or desc.size <= 0 or int(length) == desc.size
        self._remember(desc, present=present)
        return present

    async def mount_blob(self, desc: Descriptor, source: Location) -> bool:
        if source.transport != "docker" or source.host != self.repo.registry or source.path == self.repo.path:
            return False
        query = f"?mount={desc.digest}&from={source.path}"
        reply = await self.endpoint.fetch(
            "POST", api.uploads_path(self.repo.path) + query,
            scopes=(*self._scopes, api.pull_scope(source.path)), headers={"Content-Length": "0"},
            data=b"", ok=(201, 202), what=f"mounting blob {desc.digest}", repeatable=True)
        if reply.status == 201:
            self._remember(desc, present=True)
            return True
        await self._cancel(reply)
        return False

    async def put_blob(self, desc: Descriptor, open_source: BlobOpener) -> int:
        """Upload and verify every byte (``upload.py`` picks monolithic, streamed or chunked);
        returns the bytes sent, re-sent ones included.

        The PUT that publishes the blob is only sent when digest and size match, so corrupt
        source bytes never become a blob at the destination. A chunked upload interrupted by a
        crash resumes in a later run when a ``state`` is given.
        """
        return await BlobUpload(self.endpoint, self.repo, desc, open_source, options=self.uploads,
                                state=self.state, single=self.single).run()

    async def head_manifest(self, ref: ManifestRef) -> Descriptor | None:
        try:
            reply = await self.endpoint.fetch(
                "HEAD", api.manifest_path(self.repo.path, ref), scopes=self._scopes,
                headers={"Accept": api.ACCEPT_MANIFESTS}, what=f"checking manifest {ref} in {self.repo}")
        except NotFound:
            return None
        return api.descriptor_from_head(dict(reply.headers), ref)

    async def put_manifest(self, manifest: Manifest, ref: ManifestRef) -> None:
        reply = await self.endpoint.fetch(
            "PUT", api.manifest_path(self.repo.path, ref), scopes=self._scopes,
            headers={"Content-Type": manifest.media_type}, data=manifest.raw, ok=(200, 201, 202, 204),
            what=f"writing manifest {ref} to {self.repo}")
        got = reply.headers.get("Docker-Content-Digest")
        if got and got.startswith(manifest.digest.algorithm) and got.strip() != str(manifest.digest):
            raise DigestMismatch(f"registry stored manifest {ref} as {got}, expected {manifest.digest}")
        if manifest.subject is not None and reply.headers.get("OCI-Subject"):
            self._indexed.add(manifest.digest)  # a registry with the referrers API lists it already

    async def referrers(self, subject: Digest, artifact_types: tuple[str, ...] = ()) -> list[Descriptor]:
        return await list_referrers(self.endpoint, self.repo, subject, artifact_types, self.referrers_support,
                                    self._scopes)

    async def attach_referrers(self, subject: Digest, manifests: list[Manifest]) -> None:
        """Registries with the referrers API list what was pushed; elsewhere the fallback index is
        updated (``referrers.FallbackUpdate``: concurrent writers keep their entries)."""
        pending = [m for m in manifests if m.digest not in self._indexed]
        if not pending or self.referrers_support.get(self.repo.registry):
            return
        await FallbackUpdate(self.endpoint, self.repo, subject, self._scopes).add([entry(m) for m in pending])

    async def delete_manifest(self, digest: Digest) -> None:
        await self.endpoint.fetch("DELETE", api.manifest_path(self.repo.path, digest),
                                  scopes=(api.delete_scope(self.repo.path),), ok=(202,),
                                  what=f"deleting {self.repo}@{digest}")
        if self._signed is not None:  # as skopeo delete: the manifest's lookaside signatures go too
            await self._signed.delete(digest)

    async def _cancel(self, reply: Reply) -> None:
        if reply.headers.get("Location"):
            await self._cancel_url(_location(reply))

    def _remember(self, desc: Descriptor, *, present: bool) -> None:
        """Record (or retract) "this blob is in this repository" for later mounts; never fails."""
        if self.state is None:
            return
        try:
            if present:
                self.state.record_blob(self.repo.registry, self.repo.path, str(desc.digest))
            else:
                self.state.forget_blob(self.repo.registry, self.repo.path, str(desc.digest))
        except StateError as exc:
            log.warning("state_write_failed", error=str(exc), digest=str(desc.digest))

    async def _cancel_url(self, url: URL) -> None:
        """Best effort: registries may refuse (Quay never grants delete); ignore all failures."""
        try:
            await self.endpoint.fetch("DELETE", url, scopes=self._scopes, ok=(200, 202, 204),
                                      what="cancelling upload")
        except MirrorError:  # cancellation must never mask the real error
            log.debug("upload_cancel_failed", repo=str(self.repo))
