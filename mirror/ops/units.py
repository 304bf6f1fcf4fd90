"""From plain-data work units to live transports, in this process.

``Resolver`` holds what a process has of its own and never queues: the command line's sides
(flags, auth files) and the YAML credentials that settings refer to by name. It turns a unit's
settings into the ``SideOptions`` its transports need, and opens units for the engine.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from msgspec import Struct
from msgspec.structs import replace

from mirror.aio import LRU
from mirror.config.filters import parse_platform
from mirror.config.schema import Credentials
from mirror.config.settings import RegistrySettings
from mirror.core.descriptor import Platform
from mirror.core.digest import Digest
from mirror.core.reference import Repo, Tag, split_transport
from mirror.errors import ConfigError, NotFound, UsageError
from mirror.http.credentials import Credential
from mirror.http.tls import TLSOptions
from mirror.ops.copy import ImageName, image_policy, open_ends
from mirror.plan.pairs import ImagePair, WorkUnit
from mirror.runtime import Runtime
from mirror.signing.policy import Policy
from mirror.transports.base import ImageSource, Location
from mirror.transports.local.layout import DirReader, LayoutSource
from mirror.transports.side import SideOptions

RESOLVED = 256


class _Resolved(Struct, frozen=True):
    """What one registry's settings mean in this process."""

    source: SideOptions
    destination: SideOptions
    platforms: tuple[Platform, ...]


class Resolver:
    """Settings → sides, and work units → open image pairs, for one run in one process."""

    def __init__(self, rt: Runtime, src_side: SideOptions, dst_side: SideOptions,
                 secrets: Mapping[str, Credentials] | None = None, policy: Policy | None = None) -> None:
        self.rt = rt
        self.src_side = src_side
        self.dst_side = dst_side
        self.secrets = dict(secrets or {})
        self.policy = policy
        # Resolved once per settings value (a run has as many as it has source registries).
        self._resolved: LRU[RegistrySettings, _Resolved] = LRU(RESOLVED)

    def _resolve(self, settings: RegistrySettings) -> _Resolved:
        found = self._resolved.get(settings)
        if found is None:
            found = _Resolved(self._source_side(settings), self._destination_side(settings),
                              tuple(parse_platform(p) for p in settings.platforms))
            self._resolved.put(settings, found)
        return found

    def source_side(self, settings: RegistrySettings) -> SideOptions:
        """The source side for a registry: its TLS settings and, by reference, its YAML credentials."""
        return self._resolve(settings).source

    def destination_side(self, settings: RegistrySettings) -> SideOptions:
        """The destination side for images of a registry: its ``chunk-size`` applies to their uploads."""
        return self._resolve(settings).destination

    def _source_side(self, settings: RegistrySettings) -> SideOptions:
        credential = None
        if settings.credentials is not None:
            found = self.secrets.get(settings.credentials)
            if found is None:
                raise ConfigError(f"{settings.name}: no credentials named {settings.credentials!r} in this "
                                  "process's configuration")
            credential = Credential(username=found.username, password=found.password,
                                    identity_token=found.identity_token)
        tls = TLSOptions(verify=settings.tls_verify, cert_dir=settings.cert_dir)
        return replace(self.src_side, tls=tls, credential=credential)

    def _destination_side(self, settings: RegistrySettings) -> SideOptions:
        if settings.chunk_size is None:
            return self.dst_side
        return replace(self.dst_side, chunk_size=settings.chunk_size)

    @asynccontextmanager
    async def open(self, unit: WorkUnit) -> AsyncIterator[ImagePair]:
        """Open ``unit``'s transports; a local destination is published when this exits cleanly."""
        # The transports parse (and refuse) the names as they open them: no second parse per unit.
        src, dst = ImageName(*split_transport(unit.src)), ImageName(*split_transport(unit.dst))
        resolved = self._resolve(unit.settings)
        async with open_ends(self.rt, src, dst, resolved.source, resolved.destination) \
                as (source, src_ref, destination, dst_ref):
            yield ImagePair(source=source, src_ref=src_ref, destination=destination, dst_ref=dst_ref,
                            fresh_repo=unit.fresh_repo, dst_has_tag=unit.dst_has_tag, src_name=unit.src_name,
                            dst_name=unit.dst_name, platforms=resolved.platforms,
                            policy=image_policy(self.policy, src), referrers=unit.settings.referrer_filter)


class SyncEndpoints:
    """``plan.Endpoints``: the listings the planner needs, through the run's registry transport."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.registry = resolver.rt.registry

    def source(self, registry: str, path: str, settings: RegistrySettings) -> ImageSource:
        return self.registry.repo_source(Repo(*_split(registry, path)), self.resolver.source_side(settings))

    async def repositories(self, registry: str, settings: RegistrySettings) -> AsyncIterator[str]:
        host, _ = _split(registry, "x")
        async for repo in self.registry.repositories(host, self.resolver.source_side(settings)):
            yield repo

    async def destination_tags(self, registry: str, path: str) -> list[str] | None:
        lister = self.registry.repo_source(Repo(registry, path), self.resolver.dst_side)
        try:
            return [tag async for tag in lister.list_tags()]
        except NotFound:
            return None

    async def destination_digest(self, registry: str, path: str, tag: str) -> Digest | None:
        lister = self.registry.repo_source(Repo(registry, path), self.resolver.dst_side)
        desc = await lister.head_manifest(Tag(tag))
        return None if desc is None else desc.digest

    async def image_directories(self, root: str) -> list[str]:
        return await anyio.to_thread.run_sync(_image_directories, root)

    async def layout_names(self, root: str) -> list[str]:
        if not await anyio.to_thread.run_sync(os.path.isdir, root):
            raise UsageError(f"--src oci: {root!r} is not a directory")
        source = await LayoutSource.open(DirReader(Path(root)), Location("oci", "", root))
        return [name async for name in source.list_tags()]


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
