"""Writing images to a registry: blob existence, cross-repo mounts, uploads, manifests, deletion."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import anyio
import structlog
from yarl import URL

from mirror.core.descriptor import Descriptor
from mirror.core.digest import Digest
from mirror.core.manifest import Manifest
from mirror.core.reference import Repo
from mirror.errors import DigestMismatch, MirrorError, NotFound, RegistryError
from mirror.http.client import Endpoint, Reply
from mirror.transports.base import BlobOpener, Capabilities, Location
from mirror.transports.registry import api
from mirror.transports.streams import hashed_stream

log = structlog.get_logger("mirror.registry")


class RegistryDestination:
    """``ImageDestination`` over the registry API for one repository."""

    capabilities = Capabilities(mount=True, delete=True, chunked=False)

    def __init__(self, endpoint: Endpoint, repo: Repo) -> None:
        self.endpoint = endpoint
        self.repo = repo
        self.location = Location("docker", repo.registry, repo.path)
        self._scopes = (api.push_scope(repo.path),)

    async def has_blob(self, desc: Descriptor) -> bool:
        try:
            reply = await self.endpoint.fetch("HEAD", api.blob_path(self.repo.path, desc.digest),
                                              scopes=self._scopes, what=f"checking blob {desc.digest}")
        except NotFound:
            return False
        length = reply.headers.get("Content-Length")
        # A present blob of another size is not the blob we want (should never happen).
        return length is None or desc.size <= 0 or int(length) == desc.size

    async def mount_blob(self, desc: Descriptor, source: Location) -> bool:
        if source.transport != "docker" or source.host != self.repo.registry or source.path == self.repo.path:
            return False
        query = f"?mount={desc.digest}&from={source.path}"
        reply = await self.endpoint.fetch(
            "POST", api.uploads_path(self.repo.path) + query,
            scopes=(*self._scopes, api.pull_scope(source.path)), headers={"Content-Length": "0"},
            data=b"", ok=(201, 202), what=f"mounting blob {desc.digest}")
        if reply.status == 201:
            return True
        await self._cancel(reply)
        return False

    async def put_blob(self, desc: Descriptor, open_source: BlobOpener) -> int:
        """POST, one streamed PATCH that hashes every byte, then the closing PUT ?digest=.

        The PUT that publishes the blob is only sent when digest and size match, so corrupt
        source bytes never become a blob at the destination.
        """
        start = await self.endpoint.fetch("POST", api.uploads_path(self.repo.path), scopes=self._scopes,
                                          headers={"Content-Length": "0"}, data=b"", ok=(202,),
                                          what=f"starting upload of {desc.digest}")
        location = _location(start)
        hasher = desc.digest.hasher()
        headers = {"Content-Type": "application/octet-stream"}
        if desc.size > 0:
            headers["Content-Length"] = str(desc.size)
        try:
            async with hashed_stream(open_source, hasher) as blocks:
                patched = await self.endpoint.fetch("PATCH", location, scopes=self._scopes, headers=headers,
                                                    data=_payload(blocks), ok=(202, 201, 204),
                                                    what=f"uploading blob {desc.digest}")
            hasher.check(desc.digest, desc.size if desc.size > 0 else None)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._cancel_url(location)
            raise
        location = _location(patched) if "Location" in patched.headers else location
        final = _with_digest(location, desc.digest)
        await self.endpoint.fetch("PUT", final, scopes=self._scopes, headers={"Content-Length": "0"},
                                  data=b"", ok=(201, 204), what=f"completing upload of {desc.digest}")
        return hasher.size

    async def head_manifest(self, ref: str) -> Descriptor | None:
        try:
            reply = await self.endpoint.fetch(
                "HEAD", api.manifest_path(self.repo.path, ref), scopes=self._scopes,
                headers={"Accept": api.ACCEPT_MANIFESTS}, what=f"checking manifest {ref} in {self.repo}")
        except NotFound:
            return None
        return api.descriptor_from_head(dict(reply.headers), ref)

    async def put_manifest(self, manifest: Manifest, ref: str) -> None:
        reply = await self.endpoint.fetch(
            "PUT", api.manifest_path(self.repo.path, ref), scopes=self._scopes,
            headers={"Content-Type": manifest.media_type}, data=manifest.raw, ok=(200, 201, 202, 204),
            what=f"writing manifest {ref} to {self.repo}")
        got = reply.headers.get("Docker-Content-Digest")
        if got and got.startswith(manifest.digest.algorithm) and got.strip() != str(manifest.digest):
            raise DigestMismatch(f"registry stored manifest {ref} as {got}, expected {manifest.digest}")

    async def delete_manifest(self, digest: Digest) -> None:
        await self.endpoint.fetch("DELETE", api.manifest_path(self.repo.path, str(digest)),
                                  scopes=(api.delete_scope(self.repo.path),), ok=(202,),
                                  what=f"deleting {self.repo}@{digest}")

    async def _cancel(self, reply: Reply) -> None:
        if reply.headers.get("Location"):
            await self._cancel_url(_location(reply))

    async def _cancel_url(self, url: URL) -> None:
        """Best effort: registries may refuse (Quay never grants delete); ignore all failures."""
        try:
            await self.endpoint.fetch("DELETE", url, scopes=self._scopes, ok=(200, 202, 204),
                                      what="cancelling upload")
        except MirrorError:  # cancellation must never mask the real error
            log.debug("upload_cancel_failed", repo=str(self.repo))


def _location(reply: Reply) -> URL:
    location = reply.headers.get("Location")
    if not location:
        raise RegistryError("upload response has no Location header")
    return reply.url.join(URL(location, encoded=True))


def _with_digest(location: URL, digest: Digest) -> URL:
    """Append ``digest=`` to an opaque upload URL without re-encoding what is already there."""
    raw = str(location)
    sep = "&" if "?" in raw else "?"
    return URL(f"{raw}{sep}digest={digest.algorithm}%3A{digest.hex}", encoded=True)


def _payload(gen: AsyncIterator[bytes]) -> aiohttp.AsyncIterablePayload:
    return aiohttp.AsyncIterablePayload(gen)
