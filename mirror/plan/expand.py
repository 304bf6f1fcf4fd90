"""Expand a sync source (YAML file or one docker repository) into image pairs, streaming.

Repositories are listed concurrently (bounded); each destination repository's tags are listed
once, which tells the engine which tags are new (copy without HEADs) and which need a digest
comparison. Prune candidates (destination tags the source no longer has) are reported here.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from mirror.aio import SingleFlight
from mirror.config.filters import compile_regex, is_digest, parse_platform, select_tags
from mirror.config.schema import RegistryConfig, RepoSpec, SyncConfig
from mirror.core.reference import Reference, parse_docker
from mirror.errors import UsageError
from mirror.plan.naming import Naming, dir_image_suffix, docker_destination, layout_image_suffix, local_destination
from mirror.plan.pairs import DeferredPair, ImagePair, Work
from mirror.signing.policy import ImagePolicy, Policy
from mirror.transports.base import ImageDestination, ImageSource

LIST_CONCURRENCY = 16
REPOS_IN_FLIGHT = 16
_DIGEST_TAG = re.compile(r"^(sha256|sha512)-([0-9a-f]{64}|[0-9a-f]{128})(?:\.[A-Za-z0-9_-]+)?$")


class Endpoints(Protocol):
    """What the planner needs from the runtime: transports for repositories, and listings."""

    def source(self, registry: str, path: str, settings: RegistryConfig | None) -> ImageSource: ...

    def destination(self, registry: str, path: str) -> ImageDestination: ...

    def repositories(self, registry: str, settings: RegistryConfig | None) -> AsyncIterator[str]: ...

    async def destination_tags(self, registry: str, path: str) -> list[str] | None:
        """Tags of a destination repository; None when the repository does not exist."""
        ...

    def local_source(self, transport: str, rest: str) -> AbstractAsyncContextManager[tuple[ImageSource, str]]: ...

    def local_destination(self, transport: str, rest: str
                          ) -> AbstractAsyncContextManager[tuple[ImageDestination, str | None]]: ...

    async def image_directories(self, root: str) -> list[str]:
        """``--src dir``: every directory below ``root`` holding a dir-transport image, sorted."""
        ...

    async def layout_source(self, root: str) -> ImageSource:
        """``--src oci``: the OCI layout at ``root``; its ``list_tags`` are the index.json ref names."""
        ...


@dataclass(frozen=True, slots=True)
class PruneCandidate:
    destination: str      # host/repo
    tags: tuple[str, ...]  # present at the destination, gone from the source
    destination_repo: ImageDestination


@dataclass(frozen=True, slots=True)
class PlanOptions:
    naming: Naming
    prune: bool = False
    dest: str = "docker"  # docker | dir | oci
    policy: Policy | None = None  # the signature policy; None: --insecure-policy
    digest_tags: bool = False     # --digest-tags (YAML: per registry)


PruneSink = Callable[[PruneCandidate], None]


class Planner:
    def __init__(self, endpoints: Endpoints, options: PlanOptions, on_prune: PruneSink | None = None,
                 on_planned: Callable[[int], None] | None = None) -> None:
        self.endpoints = endpoints
        self.options = options
        self.on_prune = on_prune or (lambda _c: None)
        self.on_planned = on_planned or (lambda _n: None)
        # Destination tag sets are needed while their repositories are planned; a few spare ones
        # serve source repositories mapped to the same destination. Refetching one only costs a listing.
        self._dst_tags: SingleFlight[frozenset[str] | None] = SingleFlight(remember=4 * REPOS_IN_FLIGHT)
        self._limit = anyio.CapacityLimiter(LIST_CONCURRENCY)

    async def yaml(self, config: SyncConfig, send: MemoryObjectSendStream[Work]) -> None:
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
                               send: MemoryObjectSendStream[Work]) -> None:
        """Plan ``REPOS_IN_FLIGHT`` repositories at a time: what is held (tag lists, pairs waiting for a
        worker) depends on that bound, not on the size of the catalog."""
        queue_send, queue_receive = anyio.create_memory_object_stream[tuple[RegistryConfig, RepoSpec]](0)

        async def worker(receive: MemoryObjectReceiveStream[tuple[RegistryConfig, RepoSpec]]) -> None:
            async with receive:
                async for registry, spec in receive:
                    await self._repo(registry, spec, send)

        async with anyio.create_task_group() as tg:
            for _ in range(REPOS_IN_FLIGHT):
                tg.start_soon(worker, queue_receive.clone())
            queue_receive.close()
            async with queue_send:
                async for item in repositories:
                    await queue_send.send(item)

    async def docker(self, text: str, reference: Reference, explicit: bool,
                     send: MemoryObjectSendStream[Work]) -> None:
        """``--src docker``: one tag (or digest) when given, otherwise every tag of the repository."""
        repo = reference.repo
        spec = RepoSpec(path=repo.path, tags=(reference.ref,)) if explicit else RepoSpec(path=repo.path, all_tags=True)
        await self._repo(_bare_registry(repo.registry), spec, send)

    async def _catalog(self, registry: RegistryConfig, listed: set[str]) -> AsyncIterator[RepoSpec]:
        catalog = registry.catalog
        assert catalog is not None
        excludes = [compile_regex(p, f"{registry.name}.catalog.exclude") for p in catalog.exclude]
        async for path in self.endpoints.repositories(registry.name, registry):
            if path in listed or (catalog.prefixes and not path.startswith(tuple(catalog.prefixes))):
                continue
            if any(rx.search(path) for rx in excludes):
                continue
            yield RepoSpec(path=path, all_tags=catalog.tags is None, regex=catalog.tags, exclude=registry.exclude_tags)

    async def _repo(self, registry: RegistryConfig, spec: RepoSpec, send: MemoryObjectSendStream[Work]) -> None:
        source = self.endpoints.source(registry.name, spec.path, registry)
        digest_tags = self.options.digest_tags or registry.digest_tags
        needs_listing = spec.all_tags or spec.regex is not None or spec.semver is not None or self.options.prune \
            or digest_tags
        async with self._limit:
            available = [tag async for tag in source.list_tags()] if needs_listing else []
        refs = select_tags(available, spec)
        if digest_tags:
            refs = await self._with_digest_tags(source, refs, available)
        naming = self.options.naming
        platforms = tuple(parse_platform(p) for p in registry.platforms)
        dst_repos: dict[str, tuple[ImageDestination, frozenset[str] | None]] = {}
        if self.options.dest in ("dir", "oci"):
            await self._to_directories(registry, spec, source, refs, send)
            return
        for ref in refs:
            dst = docker_destination(registry.name, spec.path, ref, naming, spec.destination)
            key = str(dst.repo)
            if key not in dst_repos:
                tags = await self._destination_tags(dst.repo.registry, dst.repo.path)
                dst_repos[key] = (self.endpoints.destination(dst.repo.registry, dst.repo.path), tags)
            destination, existing = dst_repos[key]
            self.on_planned(1)  # pairs go out as they are made: nothing per tag is held here
            await send.send(ImagePair(
                source=source, src_ref=ref, destination=destination, dst_ref=dst.tag,
                fresh_repo=existing is None or not existing,
                dst_has_tag=None if dst.tag is None else (existing is not None and dst.tag in existing),
                src_name=f"{registry.name}/{spec.path}{'@' if dst.tag is None else ':'}{ref}",
                dst_name=str(dst), platforms=platforms, policy=self._docker_policy(registry.name, spec.path, ref)))
        if self.options.prune and needs_listing:
            await self._prune(registry, spec, set(available))

    async def _to_directories(self, registry: RegistryConfig, spec: RepoSpec, source: ImageSource,
                              refs: list[str], send: MemoryObjectSendStream[Work]) -> None:
        """``--dest dir``: one dir-transport directory per image, published when the image is done.
        ``--dest oci`` (extension): every image into one shared OCI layout, named ``repo:tag``, so
        each blob is stored once for the whole catalog."""
        platforms = tuple(parse_platform(p) for p in registry.platforms)
        transport = self.options.dest
        self.on_planned(len(refs))
        for ref in refs:
            path = local_destination(registry.name, spec.path, ref, self.options.naming, spec.destination)
            if transport == "oci":
                name = path[len(self.options.naming.destination):].lstrip("/")
                path = f"{self.options.naming.destination}:{name}"
            src_name = f"{registry.name}/{spec.path}{'@' if is_digest(ref) else ':'}{ref}"
            policy = self._docker_policy(registry.name, spec.path, ref)

            @asynccontextmanager
            async def opened(ref: str = ref, path: str = path, src_name: str = src_name,
                             policy: ImagePolicy | None = policy) -> AsyncIterator[ImagePair]:
                async with self.endpoints.local_destination(transport, path) as (destination, dst_ref):
                    yield ImagePair(source=source, src_ref=ref, destination=destination, dst_ref=dst_ref,
                                    fresh_repo=True, dst_has_tag=False, src_name=src_name,
                                    dst_name=f"{transport}:{path}", platforms=platforms, policy=policy)

            await send.send(DeferredPair(opened, src_name, f"{transport}:{path}"))

    async def directory(self, root: str, send: MemoryObjectSendStream[Work]) -> None:
        """``--src dir``: every image directory below ``root`` to ``DESTINATION/<name>`` (docker)."""
        naming = self.options.naming
        images = await self.endpoints.image_directories(root)
        self.on_planned(len(images))
        for image_dir in images:
            suffix = dir_image_suffix(root, image_dir, naming)
            dst = parse_docker(posixpath.join(naming.destination.rstrip("/"), suffix) + naming.append_suffix)
            existing = await self._destination_tags(dst.repo.registry, dst.repo.path)
            destination = self.endpoints.destination(dst.repo.registry, dst.repo.path)

            @asynccontextmanager
            async def opened(image_dir: str = image_dir, dst: Reference = dst, destination: ImageDestination
                             = destination, existing: frozenset[str] | None = existing) -> AsyncIterator[ImagePair]:
                async with self.endpoints.local_source("dir", image_dir) as (source, src_ref):
                    yield ImagePair(source=source, src_ref=src_ref, destination=destination, dst_ref=dst.tag,
                                    fresh_repo=not existing,
                                    dst_has_tag=None if dst.tag is None else bool(existing and dst.tag in existing),
                                    src_name=f"dir:{image_dir}", dst_name=str(dst),
                                    policy=self._path_policy("dir", image_dir))

            await send.send(DeferredPair(opened, f"dir:{image_dir}", str(dst)))

    async def layout(self, root: str, send: MemoryObjectSendStream[Work]) -> None:
        """``--src oci`` (extension): every named image of one OCI layout to ``DESTINATION/<repo>:<tag>``
        (the inverse of ``--dest oci``); entries without a ref name are not synced."""
        naming = self.options.naming
        source = await self.endpoints.layout_source(root)
        names = [name async for name in source.list_tags()]
        if not names:
            raise UsageError(f"--src oci: the layout {root!r} has no named images (org.opencontainers.image.ref.name)")
        self.on_planned(len(names))
        for name in names:
            suffix = layout_image_suffix(root, name, naming)
            dst = parse_docker(posixpath.join(naming.destination.rstrip("/"), suffix) + naming.append_suffix)
            existing = await self._destination_tags(dst.repo.registry, dst.repo.path)
            await send.send(ImagePair(
                source=source, src_ref=name, destination=self.endpoints.destination(dst.repo.registry, dst.repo.path),
                dst_ref=dst.tag, fresh_repo=not existing,
                dst_has_tag=None if dst.tag is None else bool(existing and dst.tag in existing),
                src_name=f"oci:{root}:{name}", dst_name=str(dst), policy=self._path_policy("oci", root, name)))

    async def _with_digest_tags(self, source: ImageSource, refs: list[str], available: list[str]) -> list[str]:
        """``refs`` plus the cosign-style tags (``sha256-<hex>``, ``sha256-<hex>.sig|.att|.sbom``) of their
        digests. Costs one source HEAD per selected tag, and nothing when the repository has no such tag."""
        by_digest: dict[str, list[str]] = {}
        for tag in available:
            if (match := _DIGEST_TAG.match(tag)) is not None:
                by_digest.setdefault(f"{match[1]}:{match[2]}", []).append(tag)
        if not by_digest:
            return refs
        digests: dict[str, str] = {ref: ref for ref in refs if is_digest(ref)}

        pending = iter([ref for ref in refs if ref not in digests])

        async def heads() -> None:  # a few workers share one iterator: HEADs in parallel, tasks bounded
            for ref in pending:
                async with self._limit:
                    desc = await source.head_manifest(ref)
                if desc is not None:
                    digests[ref] = str(desc.digest)

        async with anyio.create_task_group() as tg:
            for _ in range(LIST_CONCURRENCY):
                tg.start_soon(heads)
        out = list(refs)
        for ref in refs:
            out.extend(t for t in by_digest.pop(digests.get(ref, ""), []) if t not in out)
        return out

    def _docker_policy(self, registry: str, path: str, ref: str) -> ImagePolicy | None:
        policy = self.options.policy
        if policy is None:
            return None
        return policy.for_docker(parse_docker(f"{registry}/{path}{'@' if is_digest(ref) else ':'}{ref}"))

    def _path_policy(self, transport: str, path: str, ref: str = "") -> ImagePolicy | None:
        return None if self.options.policy is None else self.options.policy.for_path(transport, path, ref)

    async def _prune(self, registry: RegistryConfig, spec: RepoSpec, available: set[str]) -> None:
        naming = self.options.naming
        probe = docker_destination(registry.name, spec.path, "latest", naming, spec.destination)
        existing = await self._destination_tags(probe.repo.registry, probe.repo.path)
        suffix = naming.append_suffix
        gone = sorted(t for t in existing or () if not (t.endswith(suffix) and t[: len(t) - len(suffix)] in available))
        if gone:
            self.on_prune(PruneCandidate(str(probe.repo), tuple(gone),
                                         self.endpoints.destination(probe.repo.registry, probe.repo.path)))

    async def _destination_tags(self, registry: str, path: str) -> frozenset[str] | None:
        async def fetch() -> frozenset[str] | None:
            async with self._limit:
                tags = await self.endpoints.destination_tags(registry, path)
            return None if tags is None else frozenset(tags)

        result, _ = await self._dst_tags.do((registry, path), fetch)
        return result


def _unique(repos: tuple[RepoSpec, ...]) -> list[RepoSpec]:
    seen: set[str] = set()
    out = []
    for spec in repos:
        if spec.path not in seen:
            seen.add(spec.path)
            out.append(spec)
    return out


def _bare_registry(name: str) -> RegistryConfig:
    return RegistryConfig(name=name, repos=())
