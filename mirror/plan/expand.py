"""Expand a sync source (YAML file, one docker repository, a directory tree or an OCI layout) into
work units, streaming.

Repositories are listed concurrently (bounded); each destination repository's tags are listed
once, which tells the engine which tags are new (copy without HEADs) and which need a digest
comparison. Prune candidates (destination tags the source no longer has) are reported here, for
the registries whose settings ask for it. Units are plain data (``plan.pairs.WorkUnit``): each
carries its source registry's settings and names both ends by skopeo image name.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from msgspec import Struct

from mirror.aio import SingleFlight
from mirror.config.filters import compile_regex, select_tags
from mirror.config.schema import RegistryConfig, RepoSpec, SyncConfig
from mirror.config.settings import RegistrySettings
from mirror.core.digest import Digest
from mirror.core.reference import ManifestRef, Reference, Tag, manifest_ref, parse_docker
from mirror.errors import UsageError
from mirror.plan.digesttags import with_digest_tags
from mirror.plan.naming import Naming, dir_image_suffix, docker_destination, layout_image_suffix, local_destination
from mirror.plan.pairs import WorkUnit
from mirror.plan.pruning import prune_candidates
from mirror.plan.retention import CreatedDates, created_dates, retain
from mirror.plan.shard import Shard
from mirror.transports.base import ImageSource

LIST_CONCURRENCY = 16
REPOS_IN_FLIGHT = 16


class Endpoints(Protocol):
    """What the planner needs from the runtime: listings (never the transports that copy)."""

    def source(self, registry: str, path: str, settings: RegistrySettings) -> ImageSource:
        """A registry repository to list tags of and HEAD manifests in."""
        ...

    def repositories(self, registry: str, settings: RegistrySettings) -> AsyncIterator[str]: ...

    async def destination_tags(self, registry: str, path: str) -> list[str] | None:
        """Tags of a destination repository; None when the repository does not exist."""
        ...

    async def destination_digest(self, registry: str, path: str, tag: str) -> Digest | None:
        """What a destination tag points at (a HEAD); None when it is gone."""
        ...

    async def image_directories(self, root: str) -> list[str]:
        """``--src dir``: every directory below ``root`` holding a dir-transport image, sorted."""
        ...

    async def layout_names(self, root: str) -> list[str]:
        """``--src oci``: the index.json ref names of the OCI layout at ``root``."""
        ...


class PruneCandidate(Struct, frozen=True):
    destination: str      # host/repo
    tags: tuple[str, ...]  # present at the destination, gone from the source


class PlanOptions(Struct, frozen=True):
    naming: Naming
    dest: str = "docker"  # docker | dir | oci
    shard: Shard | None = None  # plan only the destination repositories this shard owns (--shard K/N)


PruneSink = Callable[[PruneCandidate], None]
Send = MemoryObjectSendStream[WorkUnit]


class Planner:
    def __init__(self, endpoints: Endpoints, options: PlanOptions, settings: Mapping[str, RegistrySettings],
                 on_prune: PruneSink | None = None, on_planned: Callable[[int], None] | None = None,
                 created: CreatedDates | None = None, clock: Callable[[], float] = time.time) -> None:
        self.endpoints = endpoints
        self.options = options
        self.settings = settings
        self.on_prune = on_prune or (lambda _c: None)
        self.on_planned = on_planned or (lambda _n: None)
        # Destination tag sets are needed while their repositories are planned; a few spare ones
        # serve source repositories mapped to the same destination. Refetching one only costs a listing.
        self._dst_tags: SingleFlight[frozenset[str] | None] = SingleFlight(remember=4 * REPOS_IN_FLIGHT)
        self._limit = anyio.CapacityLimiter(LIST_CONCURRENCY)
        self._created = created if created is not None else created_dates()  # images' dates, by digest
        self._now = clock()  # retention ages are measured from the start of planning

    def _settings(self, name: str) -> RegistrySettings:
        return self.settings.get(name) or RegistrySettings(name=name)

    async def yaml(self, config: SyncConfig, send: Send) -> None:
        async def repositories() -> AsyncIterator[tuple[RegistryConfig, RepoSpec]]:
            for registry in config.registries:
                for spec in _unique(registry.repos):
                    yield registry, spec
            for registry in config.registries:
                if registry.catalog is not None:
                    async for spec in self._catalog(registry, {s.path for s in registry.repos}):
                        yield registry, spec

        await self._each_repository(repositories(), send)

    async def _each_repository(self, repositories: AsyncIterator[tuple[RegistryConfig, RepoSpec]],
                               send: Send) -> None:
        """Plan ``REPOS_IN_FLIGHT`` repositories at a time: what is held (tag lists, units waiting for a
        worker) depends on that bound, not on the size of the catalog."""
        queue_send, queue_receive = anyio.create_memory_object_stream[tuple[RegistryConfig, RepoSpec]](0)

        async def worker(receive: MemoryObjectReceiveStream[tuple[RegistryConfig, RepoSpec]]) -> None:
            async with receive:
                async for registry, spec in receive:
                    await self._repo(registry.name, spec, send)

        async with anyio.create_task_group() as tg:
            for _ in range(REPOS_IN_FLIGHT):
                tg.start_soon(worker, queue_receive.clone())
            queue_receive.close()
            async with queue_send:
                async for item in repositories:
                    await queue_send.send(item)

    async def docker(self, reference: Reference, explicit: bool, send: Send) -> None:
        """``--src docker``: one tag (or digest) when given, otherwise every tag of the repository
        (those matching ``--include-tag-regex`` if any, less those matching ``--exclude-tag-regex``)."""
        repo = reference.repo
        if explicit:
            spec = RepoSpec(path=repo.path, tags=(str(reference.ref),))
        else:
            settings = self._settings(repo.registry)
            include = settings.include_regex
            spec = RepoSpec(path=repo.path, all_tags=not include, exclude=settings.exclude_regex,
                            regex="|".join(f"(?:{p})" for p in include) if include else None)
        await self._repo(repo.registry, spec, send)

    async def _catalog(self, registry: RegistryConfig, listed: set[str]) -> AsyncIterator[RepoSpec]:
        catalog = registry.catalog
        assert catalog is not None
        excludes = [compile_regex(p, f"{registry.name}.catalog.exclude") for p in catalog.exclude]
        async for path in self.endpoints.repositories(registry.name, self._settings(registry.name)):
            if path in listed or (catalog.prefixes and not path.startswith(tuple(catalog.prefixes))):
                continue
            if any(rx.search(path) for rx in excludes):
                continue
            yield RepoSpec(path=path, all_tags=catalog.tags is None, regex=catalog.tags, exclude=registry.exclude_tags)

    def _owns(self, registry: str, spec: RepoSpec) -> bool:
        """Whether this shard plans ``spec``: sharding is by destination repository."""
        shard = self.options.shard
        if shard is None:
            return True
        naming, probe = self.options.naming, manifest_ref("latest")
        if self.options.dest == "docker":
            key = str(docker_destination(registry, spec.path, probe, naming, spec.destination).repo)
        else:
            key = local_destination(registry, spec.path, probe, naming, spec.destination).rsplit(":", 1)[0]
        return shard.owns(key)

    async def _repo(self, registry: str, spec: RepoSpec, send: Send) -> None:
        if not self._owns(registry, spec):
            return
        settings = self._settings(registry)
        source = self.endpoints.source(registry, spec.path, settings)
        prune = settings.prune and self.options.dest == "docker"
        needs_listing = spec.all_tags or spec.regex is not None or spec.semver is not None or prune \
            or settings.digest_tags
        async with self._limit:
            available = [tag async for tag in source.list_tags()] if needs_listing else []
        retained = await retain(source, select_tags(available, spec), spec.tags,
                                settings.retention.refined(spec.retention), self._limit, self._created, self._now)
        texts = retained.refs
        if settings.digest_tags:
            texts = await with_digest_tags(source, texts, available, self._limit)
        refs = [manifest_ref(text) for text in texts]
        if self.options.dest in ("dir", "oci"):
            await self._to_directories(registry, spec, settings, refs, send)
            return
        for ref in refs:
            await self._to_registry(registry, spec, settings, ref, send)
        if prune and needs_listing:
            await self._prune(registry, spec, set(available), retained.dropped)

    async def _to_registry(self, registry: str, spec: RepoSpec, settings: RegistrySettings, ref: ManifestRef,
                           send: Send) -> None:
        dst = docker_destination(registry, spec.path, ref, self.options.naming, spec.destination)
        src = _source_name(registry, spec.path, ref)
        unit = await self._registry_unit(f"docker://{src}", src, dst, settings, by_tag=isinstance(ref, Tag))
        self.on_planned(1)  # units go out as they are made: nothing per tag is held here
        await send.send(unit)

    async def _registry_unit(self, src: str, src_name: str, dst: Reference, settings: RegistrySettings, *,
                             by_tag: bool) -> WorkUnit:
        """A unit into a registry, with what the destination's tag listing says about it. ``by_tag``: the
        source names its image by tag (a digest is always compared, never assumed present)."""
        existing = await self._destination_tags(dst.repo.registry, dst.repo.path)
        has_tag = None if dst.tag is None else bool(existing and dst.tag in existing)
        return WorkUnit(src=src, dst=f"docker://{dst}", settings=settings, src_name=src_name, dst_name=str(dst),
                        fresh_repo=not existing, dst_has_tag=has_tag,
                        assumed_present=bool(has_tag and by_tag and settings.assume_immutable))

    async def _to_directories(self, registry: str, spec: RepoSpec, settings: RegistrySettings,
                              refs: list[ManifestRef], send: Send) -> None:
        """``--dest dir``: one dir-transport directory per image, published when the image is done.
        ``--dest oci`` (extension): every image into one shared OCI layout, named ``repo:tag``, so
        each blob is stored once for the whole catalog."""
        naming = self.options.naming
        transport = self.options.dest
        self.on_planned(len(refs))
        for ref in refs:
            path = local_destination(registry, spec.path, ref, naming, spec.destination)
            if transport == "oci":
                path = f"{naming.destination}:{path[len(naming.destination):].lstrip('/')}"
            src = _source_name(registry, spec.path, ref)
            await send.send(WorkUnit(src=f"docker://{src}", dst=f"{transport}:{path}", settings=settings,
                                     src_name=src, dst_name=f"{transport}:{path}", fresh_repo=True,
                                     dst_has_tag=False, writes_files=True))

    async def directory(self, root: str, send: Send) -> None:
        """``--src dir``: every image directory below ``root`` to ``DESTINATION/<name>`` (docker)."""
        images = [(f"dir:{image_dir}", self._local_destination(dir_image_suffix(root, image_dir, self.options.naming)))
                  for image_dir in await self.endpoints.image_directories(root)]
        await self._local_to_registry(images, send)

    async def layout(self, root: str, send: Send) -> None:
        """``--src oci`` (extension): every named image of one OCI layout to ``DESTINATION/<repo>:<tag>``
        (the inverse of ``--dest oci``); entries without a ref name are not synced."""
        names = await self.endpoints.layout_names(root)
        if not names:
            raise UsageError(f"--src oci: the layout {root!r} has no named images (org.opencontainers.image.ref.name)")
        images = [(f"oci:{root}:{name}", self._local_destination(layout_image_suffix(root, name, self.options.naming)))
                  for name in names]
        await self._local_to_registry(images, send)

    def _local_destination(self, suffix: str) -> Reference:
        naming = self.options.naming
        return parse_docker(posixpath.join(naming.destination.rstrip("/"), suffix) + naming.append_suffix)

    async def _local_to_registry(self, images: list[tuple[str, Reference]], send: Send) -> None:
        """Local images (``--src dir`` / ``--src oci``) to their destination references."""
        shard = self.options.shard
        mine = [(src, dst) for src, dst in images if shard is None or shard.owns(str(dst.repo))]
        self.on_planned(len(mine))
        settings = self._settings("")
        for src, dst in mine:
            await send.send(await self._registry_unit(src, src, dst, settings, by_tag=True))

    async def _prune(self, registry: str, spec: RepoSpec, available: set[str], dropped: frozenset[str]) -> None:
        naming = self.options.naming
        probe = docker_destination(registry, spec.path, manifest_ref("latest"), naming, spec.destination)
        host, path = probe.repo.registry, probe.repo.path
        existing = await self._destination_tags(host, path)

        async def head(tag: str) -> Digest | None:
            async with self._limit:
                return await self.endpoints.destination_digest(host, path, tag)

        gone = await prune_candidates(existing or (), available, dropped, naming.append_suffix,
                                      [ref for ref in spec.tags if ":" in ref], head)
        if gone:
            self.on_prune(PruneCandidate(str(probe.repo), tuple(gone)))

    async def _destination_tags(self, registry: str, path: str) -> frozenset[str] | None:
        async def fetch() -> frozenset[str] | None:
            async with self._limit:
                tags = await self.endpoints.destination_tags(registry, path)
            return None if tags is None else frozenset(tags)

        result, _ = await self._dst_tags.do((registry, path), fetch)
        return result


def _source_name(registry: str, path: str, ref: ManifestRef) -> str:
    return f"{registry}/{path}{'@' if isinstance(ref, Digest) else ':'}{ref}"


def _unique(repos: tuple[RepoSpec, ...]) -> list[RepoSpec]:
    seen: set[str] = set()
    out = []
    for spec in repos:
        if spec.path not in seen:
            seen.add(spec.path)
            out.append(spec)
    return out
