"""``sync`` (and ``copy``, a one-image sync): wire config, planner, engine and registry transports."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from mirror.aio import LRU
from mirror.config.policy import Policy
from mirror.config.schema import RegistryConfig, SyncConfig
from mirror.core.reference import Reference, Repo
from mirror.engine.sync import ImageRecord, RunStats, Scheduler, SyncOptions
from mirror.errors import MirrorError, NotFound, UsageError
from mirror.http.credentials import Credential
from mirror.http.ratelimit import HostPolicy
from mirror.http.tls import TLSOptions
from mirror.plan.expand import Planner, PlanOptions, PruneCandidate
from mirror.plan.naming import Naming
from mirror.runtime import Runtime, SideOptions
from mirror.transports.base import ImageDestination, ImageSource, LocalOptions, Location
from mirror.transports.catalog import local_transports
from mirror.transports.local.layout import DirReader, LayoutSource
from mirror.transports.registry.source import RegistrySource, list_repositories

TRANSPORT_CACHE = 256


class RegistryEndpoints:
    """``plan.Endpoints`` over registries: one transport object per repository, YAML overrides applied."""

    def __init__(self, rt: Runtime, src_side: SideOptions, dst_side: SideOptions) -> None:
        self.rt = rt
        self.src_side = src_side
        self.dst_side = dst_side
        self.local = LocalOptions(tmpdir=rt.options.tmpdir)
        # One set for the run: destinations into one OCI layout share its Docker config conversions.
        self._local = local_transports()
        # Reused per repository while it is planned and synced; bounded so a catalog of any size
        # keeps a fixed number (an evicted one is simply made again).
        self._sources: LRU[tuple[str, str], ImageSource] = LRU(TRANSPORT_CACHE)
        self._destinations: LRU[tuple[str, str], ImageDestination] = LRU(TRANSPORT_CACHE)

    def _side(self, settings: RegistryConfig | None) -> tuple[SideOptions, Credential | None]:
        side = self.src_side
        if settings is None:
            return side, None
        tls = side.tls
        if settings.tls_verify is not None or settings.cert_dir:
            tls = TLSOptions(verify=side.tls.verify if settings.tls_verify is None else settings.tls_verify,
                             cert_dir=settings.cert_dir or side.tls.cert_dir)
        cred = None
        if settings.credentials is not None:
            c = settings.credentials
            cred = Credential(username=c.username, password=c.password, identity_token=c.identity_token)
        return SideOptions(side.creds, tls), cred

    def source(self, registry: str, path: str, settings: RegistryConfig | None) -> ImageSource:
        key = (registry, path)
        source = self._sources.get(key)
        if source is None:
            side, cred = self._side(settings)
            source = self.rt.registry_source(Repo(*_split(registry, path)), side, cred)
            self._sources.put(key, source)
        return source

    def destination(self, registry: str, path: str) -> ImageDestination:
        key = (registry, path)
        destination = self._destinations.get(key)
        if destination is None:
            destination = self.rt.registry_destination(Repo(registry, path), self.dst_side)
            self._destinations.put(key, destination)
        return destination

    async def repositories(self, registry: str, settings: RegistryConfig | None) -> AsyncIterator[str]:
        side, cred = self._side(settings)
        endpoint = self.rt.endpoint(Repo(*_split(registry, "x")), side, cred)
        async for repo in list_repositories(endpoint):
            yield repo

    def local_source(self, transport: str, rest: str) -> AbstractAsyncContextManager[tuple[ImageSource, str]]:
        return self._local[transport].source(rest, self.local)

    def local_destination(self, transport: str, rest: str
                          ) -> AbstractAsyncContextManager[tuple[ImageDestination, str | None]]:
        return self._local[transport].destination(rest, self.local)

    async def image_directories(self, root: str) -> list[str]:
        return await anyio.to_thread.run_sync(_image_directories, root)

    async def layout_source(self, root: str) -> ImageSource:
        if not await anyio.to_thread.run_sync(os.path.isdir, root):
            raise UsageError(f"--src oci: {root!r} is not a directory")
        return await LayoutSource.open(DirReader(Path(root)), Location("oci", "", root))

    async def destination_tags(self, registry: str, path: str) -> list[str] | None:
        repo = Repo(registry, path)
        lister = RegistrySource(self.rt.endpoint(repo, self.dst_side), repo)
        try:
            return [tag async for tag in lister.list_tags()]
        except NotFound:
            return None


def _image_directories(root: str) -> list[str]:
    """Directories below ``root`` holding a dir-transport image (a ``manifest.json``), as skopeo finds
    them; symlinked directories are not followed."""
    if not os.path.isdir(root):
        raise UsageError(f"--src dir: {root!r} is not a directory")
    found = [dirpath for dirpath, _dirs, files in os.walk(root) if "manifest.json" in files]
    if not found:
        raise UsageError(f"--src dir: no images (directories with a manifest.json) below {root!r}")
    return sorted(found)


def _split(registry: str, path: str) -> tuple[str, str]:
    """A YAML registry key may carry a namespace (``host/ns``): move it into the path."""
    host, _, namespace = registry.partition("/")
    return host, f"{namespace}/{path}" if namespace else path


def policies(config: SyncConfig) -> dict[str, HostPolicy]:
    """Per-registry request limits from the YAML ``rate-limit`` keys."""
    out = {}
    for registry in config.registries:
        limit = registry.rate_limit
        if limit is not None:
            host = registry.name.split("/", 1)[0]
            out[host] = HostPolicy(requests_per_second=limit.requests_per_second, burst=limit.burst,
                                   max_connections=limit.max_connections)
    return out


@dataclass
class SyncResult:
    stats: RunStats
    prune: list[PruneCandidate] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    registries: dict[str, dict[str, object]] = field(default_factory=dict)  # per-host limiter counters


def _limiter_report(rt: Runtime, result: SyncResult) -> None:
    """Throttling seen per registry, and Docker Hub's ``ratelimit-remaining`` when it was sent."""
    for host, limiter in rt.http.limiters.items():
        stats = limiter.stats()
        if stats.get("rate_limited_responses") or stats.get("throttled_waits") or stats.get("hub_remaining") \
                is not None:
            result.registries[host] = stats


@dataclass(frozen=True, slots=True)
class SyncRequest:
    naming: Naming
    src_side: SideOptions
    dst_side: SideOptions
    options: SyncOptions
    prune: str = "off"  # off | report | delete
    dest: str = "docker"  # docker | dir
    policy: Policy | None = None  # the signature policy (None: --insecure-policy)
    digest_tags: bool = False     # --digest-tags


async def sync_yaml(rt: Runtime, config: SyncConfig, request: SyncRequest,
                    on_record: Callable[[ImageRecord], None], stats: RunStats) -> SyncResult:
    prune = request.prune != "off" or any(r.prune for r in config.registries)
    planner, result, scheduler = _prepare(rt, request, on_record, stats, prune)
    await scheduler.run(lambda send: planner.yaml(config, send))
    await _finish_prune(rt, request, result)
    _limiter_report(rt, result)
    return result


async def sync_docker(rt: Runtime, text: str, reference: Reference, explicit: bool, request: SyncRequest,
                      on_record: Callable[[ImageRecord], None], stats: RunStats) -> SyncResult:
    planner, result, scheduler = _prepare(rt, request, on_record, stats, request.prune != "off")
    await scheduler.run(lambda send: planner.docker(text, reference, explicit, send))
    await _finish_prune(rt, request, result)
    _limiter_report(rt, result)
    return result


async def sync_dir(rt: Runtime, root: str, request: SyncRequest, on_record: Callable[[ImageRecord], None],
                   stats: RunStats, layout: bool = False) -> SyncResult:
    """``--src dir``: every dir-transport image below ``root`` to the destination registry;
    with ``layout`` (``--src oci``), every named image of the OCI layout at ``root``."""
    planner, result, scheduler = _prepare(rt, request, on_record, stats, False)
    await scheduler.run(lambda send: planner.layout(root, send) if layout else planner.directory(root, send))
    _limiter_report(rt, result)
    return result


def _prepare(rt: Runtime, request: SyncRequest, on_record: Callable[[ImageRecord], None], stats: RunStats,
             prune: bool) -> tuple[Planner, SyncResult, Scheduler]:
    endpoints = RegistryEndpoints(rt, request.src_side, request.dst_side)
    result = SyncResult(stats)
    def planned(n: int) -> None:
        stats.planned += n

    options = PlanOptions(request.naming, prune=prune and request.dest == "docker", dest=request.dest,
                          policy=request.policy, digest_tags=request.digest_tags)
    planner = Planner(endpoints, options, result.prune.append, planned)
    scheduler = Scheduler(request.options, rt.known_locations(), on_record, stats)
    return planner, result, scheduler


async def _finish_prune(rt: Runtime, request: SyncRequest, result: SyncResult) -> None:
    """Delete pruned tags only when asked to (``--prune=delete``) and never in a dry run.
    A tag whose manifest another kept tag also uses is reported, not deleted (deleting by digest
    would remove the kept tag too)."""
    if request.prune != "delete" or request.options.dry_run:
        return
    for candidate in result.prune:
        await _prune_repo(rt, request, candidate, result)


async def _prune_repo(rt: Runtime, request: SyncRequest, candidate: PruneCandidate, result: SyncResult) -> None:
    host, _, path = candidate.destination.partition("/")
    repo = Repo(host, path)
    lister = RegistrySource(rt.endpoint(repo, request.dst_side), repo)
    all_tags = [t async for t in lister.list_tags()]
    kept = [t for t in all_tags if t not in candidate.tags]
    kept_digests = set()
    for tag in kept:
        desc = await lister.head_manifest(tag)
        if desc is not None:
            kept_digests.add(desc.digest)
    destination = rt.registry_destination(repo, request.dst_side)
    for tag in candidate.tags:
        desc = await lister.head_manifest(tag)
        if desc is None or desc.digest in kept_digests:
            continue
        try:
            await destination.delete_manifest(desc.digest)
        except MirrorError as exc:
            raise MirrorError(f"pruning {candidate.destination}:{tag}: {exc}") from None
        result.pruned.append(f"{candidate.destination}:{tag}")
