"""``docker://``: registries as one ``Transport`` among the others.

Endpoints (one per registry, credential and TLS setting) come from the run's HttpClient; a side's
credentials are resolved once per (registry, repository, flags) and kept for the run. An explicit
credential (sync YAML ``credentials``) beats the side's flags and auth files.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import anyio
from msgspec.structs import replace

from mirror.aio import LRU, SingleFlight
from mirror.core.reference import ManifestRef, Reference, Repo, Tag, parse_docker
from mirror.errors import UsageError
from mirror.http.client import Endpoint, HttpClient
from mirror.http.credentials import Credential, CredentialOptions, resolve_credential
from mirror.http.tls import TLSOptions
from mirror.state import StateBackend
from mirror.transports.registry import api, lookaside, registriesd
from mirror.transports.registry.destination import RegistryDestination
from mirror.transports.registry.endpoint import DeferredEndpoint, RegistryEndpoint
from mirror.transports.registry.hostfact import HostFact
from mirror.transports.registry.registriesd import RegistriesD, SignatureStorage
from mirror.transports.registry.signed import RegistrySignatures
from mirror.transports.registry.source import RegistrySource, list_repositories
from mirror.transports.registry.uploadopts import UploadOptions
from mirror.transports.side import SideOptions

ENDPOINTS = 512


class RegistryTransport:
    """``Transport`` over the registry API (``docker://host/path:tag``)."""

    name = "docker"
    capabilities = api.SIGNED_CAPABILITIES  # the images it opens read and store signatures

    def __init__(self, http: HttpClient, state: StateBackend, uploads: UploadOptions, env: Mapping[str, str],
                 registries_d: str | None = None) -> None:
        self.http = http
        self.state = state
        self.uploads = uploads
        self.env = env
        self.registries_d = registries_d  # --registries.d (None: the user's, else the system's)
        self._signature_config: SingleFlight[RegistriesD] = SingleFlight(remember=1)
        self._credentials: dict[tuple[str, str, CredentialOptions], Credential] = {}
        self._lookups: SingleFlight[Credential] = SingleFlight(remember=0)
        # Reused while a repository is planned and synced (a deferred one looks its credential up once);
        # bounded, so a catalog of any size keeps a fixed number (an evicted one is simply made again).
        self._endpoints: LRU[tuple[str, str, CredentialOptions, TLSOptions], RegistryEndpoint] = LRU(ENDPOINTS)
        self._referrers = HostFact()  # which registries have the referrers API, learnt once per run
        self._storages: LRU[Repo, SignatureStorage] = LRU(ENDPOINTS)  # per repository, when registries.d allows
        self._missing_dirs = lookaside.MissingDirs()
        self._single = HostFact()  # which registries take a blob in one POST, learnt once per run

    def validate(self, rest: str) -> None:
        parse_docker(rest)

    def endpoint(self, repo: Repo, side: SideOptions) -> RegistryEndpoint:
        """The endpoint for ``repo``. A side's credential not looked up yet is looked up on the
        endpoint's first request: auth files and credential helpers are awaited there, off the loop."""
        if side.credential is not None:
            return self.http.endpoint(repo.api_host, side.credential, side.tls)
        key = (repo.registry, repo.path, side.creds, side.tls)
        found = self._endpoints.get(key)
        if found is None:
            credential = self._credentials.get((repo.registry, repo.path, side.creds))
            found = DeferredEndpoint(repo.api_host, lambda: self._connect(repo, side)) if credential is None \
                else self.http.endpoint(repo.api_host, credential, side.tls)
            self._endpoints.put(key, found)
        return found

    async def _connect(self, repo: Repo, side: SideOptions) -> Endpoint:
        key = (repo.registry, repo.path, side.creds)
        credential = self._credentials.get(key)
        if credential is None:
            credential, _ = await self._lookups.do(
                key, lambda: resolve_credential(repo.registry, repo.path, side.creds, self.env))
            self._credentials[key] = credential
        return self.http.endpoint(repo.api_host, credential, side.tls)

    def repo_source(self, repo: Repo, side: SideOptions, signed: RegistrySignatures | None = None) -> RegistrySource:
        return RegistrySource(self.endpoint(repo, side), repo, self._referrers, signed)

    def repo_destination(self, repo: Repo, side: SideOptions,
                         signed: RegistrySignatures | None = None) -> RegistryDestination:
        uploads = self.uploads if side.chunk_size is None else replace(self.uploads, chunk_size=side.chunk_size)
        return RegistryDestination(self.endpoint(repo, side), repo, state=self.state, uploads=uploads,
                                   referrers=self._referrers, signed=signed, single=self._single)

    async def signatures(self, ref: Reference) -> RegistrySignatures:
        """Where ``ref``'s signatures live (registries.d is read once per run, when first needed)."""
        config, _ = await self._signature_config.do(
            "config", lambda: anyio.to_thread.run_sync(registriesd.load, self.registries_d, self.env))
        if config.per_image:
            storage = config.storage(ref)
        else:
            found = self._storages.get(ref.repo)
            if found is None:
                found = config.storage(ref)
                self._storages.put(ref.repo, found)
            storage = found
        return RegistrySignatures(self.http, storage, self._missing_dirs)

    @asynccontextmanager
    async def source(self, rest: str, side: SideOptions) -> AsyncIterator[tuple[RegistrySource, ManifestRef]]:
        ref = parse_docker(rest)
        yield self.repo_source(ref.repo, side, await self.signatures(ref)), ref.ref

    @asynccontextmanager
    async def destination(self, rest: str, side: SideOptions) -> AsyncIterator[tuple[RegistryDestination, Tag | None]]:
        ref = parse_docker(rest)
        signed = await self.signatures(ref)
        yield self.repo_destination(ref.repo, side, signed), None if ref.tag is None else Tag(ref.tag)

    async def list_tags(self, rest: str, side: SideOptions) -> list[str]:
        if "@" in rest or ":" in rest.rsplit("/", 1)[-1]:
            raise UsageError(f"tag or digest are not supported in list-tags: 'docker://{rest}'")
        ref = parse_docker(rest)
        return [tag async for tag in self.repo_source(ref.repo, side).list_tags()]

    def repositories(self, registry: str, side: SideOptions) -> AsyncIterator[str]:
        """Every repository the registry's catalog lists (``/v2/_catalog``)."""
        return list_repositories(self.endpoint(Repo(registry, "x"), side))
