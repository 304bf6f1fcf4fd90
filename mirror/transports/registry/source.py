"""Reading images from a registry: manifests, tags and blobs (with Range resume on broken reads)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mirror.core import manifest as manifest_mod
from mirror.core.descriptor import Descriptor
from mirror.core.digest import Digest
from mirror.core.manifest import MAX_MANIFEST_SIZE, Manifest
from mirror.core.reference import ManifestRef, Repo
from mirror.errors import ManifestError, NotFound, RegistryError, TransientError
from mirror.http.headers import parse_content_range, strip_media_type
from mirror.http.seam import Response
from mirror.log import get_logger
from mirror.transports.base import Location
from mirror.transports.registry import api
from mirror.transports.registry.endpoint import RegistryEndpoint
from mirror.transports.registry.hostfact import HostFact
from mirror.transports.registry.pages import json_pages
from mirror.transports.registry.referrers import list_referrers
from mirror.transports.registry.signed import RegistrySignatures

log = get_logger("mirror.registry")

MAX_RESUMES = 5
MAX_LISTED = 10_000_000  # tags of a repository, or repositories of a catalog


class RegistrySource:
    """``ImageSource`` over the registry API for one repository; with ``signed`` (an image opened by
    the transport) also a ``SignatureSource``."""

    capabilities = api.CAPABILITIES

    def __init__(self, endpoint: RegistryEndpoint, repo: Repo, referrers: HostFact | None = None,
                 signed: RegistrySignatures | None = None) -> None:
        self.endpoint = endpoint
        self.repo = repo
        self.referrers_support = referrers or HostFact()
        self.location = Location("docker", repo.registry, repo.path)
        self._scopes = (api.pull_scope(repo.path),)
        self._signed = signed
        if signed is not None:
            self.capabilities = api.SIGNED_CAPABILITIES

    async def signatures(self, instance: Digest | None, digest: Digest) -> list[bytes]:
        """Lookaside signatures, then sigstore attachments when registries.d turns them on."""
        return [] if self._signed is None else await self._signed.read(self, digest)

    async def get_manifest(self, ref: ManifestRef) -> Manifest:
        reply = await self.endpoint.fetch(
            "GET", api.manifest_path(self.repo.path, ref), scopes=self._scopes,
            headers={"Accept": api.ACCEPT_MANIFESTS}, limit=MAX_MANIFEST_SIZE,
            what=f"reading manifest {ref} in {self.repo}")
        expected = ref if isinstance(ref, Digest) else None
        manifest = manifest_mod.parse(reply.body, strip_media_type(reply.headers.get("Content-Type")), expected)
        header = reply.headers.get("Docker-Content-Digest")
        if expected is None and header and header.startswith("sha256:") and header.strip() != str(manifest.digest):
            raise ManifestError(f"manifest {self.repo}:{ref}: body digest {manifest.digest} "
                                f"does not match Docker-Content-Digest {header}")
        return manifest

    async def head_manifest(self, ref: ManifestRef) -> Descriptor | None:
        try:
            reply = await self.endpoint.fetch(
                "HEAD", api.manifest_path(self.repo.path, ref), scopes=self._scopes,
                headers={"Accept": api.ACCEPT_MANIFESTS}, what=f"checking manifest {ref} in {self.repo}")
        except NotFound:
            return None
        return api.descriptor_from_head(dict(reply.headers), ref)

    async def referrers(self, subject: Digest, artifact_types: tuple[str, ...] = ()) -> list[Descriptor]:
        return await list_referrers(self.endpoint, self.repo, subject, artifact_types, self.referrers_support,
                                    self._scopes)

    def list_tags(self) -> AsyncIterator[str]:
        return _names(self.endpoint, api.tags_path(self.repo.path), self._scopes,
                      f"listing tags of {self.repo}", "tags", ("tag list", "tags"))

    @asynccontextmanager
    async def open_blob(self, desc: Descriptor, offset: int = 0) -> AsyncIterator[AsyncIterator[bytes]]:
        yield self._read_blob(desc, offset)

    async def _read_blob(self, desc: Descriptor, offset: int) -> AsyncIterator[bytes]:
        """Stream a blob, reopening with ``Range`` from the current offset when a read breaks.

        Not a second retry layer: a request that fails before its body streams was already retried by
        the HTTP client (the one retry layer) and its error is final here; only a body that breaks
        after bytes were handed on, which no request retry can repeat, is resumed."""
        position = offset
        resumes = 0
        while True:
            headers = {"Range": f"bytes={position}-"} if position else {}
            streaming = False
            try:
                async with self.endpoint.stream(
                        "GET", api.blob_path(self.repo.path, desc.digest), scopes=self._scopes,
                        headers=headers, ok=(200, 206), what=f"reading blob {desc.digest} in {self.repo}",
                ) as resp:
                    skip = _bytes_to_skip(resp, position, desc)
                    streaming = True
                    async for chunk in resp.chunks():
                        if skip:
                            dropped = min(skip, len(chunk))
                            chunk, skip = chunk[dropped:], skip - dropped
                            if not chunk:
                                continue
                        position += len(chunk)
                        yield chunk
                    return
            except TransientError as exc:  # the sender reports a broken body as TransientError
                if not streaming:
                    raise
                resumes += 1
                if resumes > MAX_RESUMES:
                    raise TransientError(f"reading blob {desc.digest}: {type(exc).__name__} "
                                         f"after {MAX_RESUMES} resumes") from None
                log.info("blob_read_resume", digest=str(desc.digest), offset=position)


def _bytes_to_skip(resp: Response, position: int, desc: Descriptor) -> int:
    """How many leading bytes to drop: all of ``position`` when the server ignored Range (200)."""
    if position == 0:
        return 0
    if resp.status == 200:
        return position
    first, _last, _total = parse_content_range(resp.headers.get("Content-Range", ""))
    if first != position:
        raise RegistryError(f"blob {desc.digest}: Content-Range starts at {first}, wanted {position}")
    return 0


def list_repositories(endpoint: RegistryEndpoint, page_size: int = 1000) -> AsyncIterator[str]:
    """Every repository in ``/v2/_catalog``, following ``Link`` pages (not offered by Docker Hub)."""
    return _names(endpoint, f"/v2/_catalog?n={page_size}", ("registry:catalog:*",),
                  f"listing repositories of {endpoint.registry}", "repositories", ("catalog", "repositories"))


async def _names(endpoint: RegistryEndpoint, first: str, scopes: tuple[str, ...], what: str, key: str,
                 nouns: tuple[str, str]) -> AsyncIterator[str]:
    """The strings under ``key`` on every page of a listing (tags or repositories), capped at
    MAX_LISTED; a page whose ``key`` is not a list is malformed, non-string entries are skipped."""
    seen = 0
    async for data in json_pages(endpoint, first, scopes, what):
        names = data.get(key)
        if names is not None and not isinstance(names, list):
            raise RegistryError(f"{what}: malformed {nouns[0]}")
        for name in names or ():
            if isinstance(name, str):
                seen += 1
                yield name
        if seen > MAX_LISTED:
            raise RegistryError(f"{what}: more than {MAX_LISTED} {nouns[1]}")
