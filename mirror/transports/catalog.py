"""Every transport by name: built explicitly by the runtime, no registration by import side effect."""

from __future__ import annotations

from collections.abc import Mapping

from mirror.core.reference import parse_docker, split_transport
from mirror.errors import UsageError
from mirror.http.client import HttpClient
from mirror.state import StateBackend
from mirror.transports.base import Transport
from mirror.transports.local.archive import DockerArchiveTransport
from mirror.transports.local.daemon import DockerDaemonTransport
from mirror.transports.local.directory import DirTransport
from mirror.transports.local.oci import OciArchiveTransport, OciTransport
from mirror.transports.local.storage import StorageTransport
from mirror.transports.registry.transport import RegistryTransport
from mirror.transports.registry.uploadopts import UploadOptions


def local_transports() -> dict[str, Transport]:
    """The transports that need no network client (``dir``, ``oci``, archives, daemon, storage)."""
    transports: list[Transport] = [DirTransport(), OciTransport(), OciArchiveTransport(),
                                   DockerArchiveTransport(), DockerDaemonTransport(), StorageTransport()]
    return {t.name: t for t in transports}


def build_transports(http: HttpClient, state: StateBackend, uploads: UploadOptions, env: Mapping[str, str],
                     registries_d: str | None = None) -> tuple[RegistryTransport, dict[str, Transport]]:
    """Every transport mirror supports, keyed by skopeo's transport name; the registry one also apart
    (sync lists catalogs and destination tags through it). ``registries_d``: ``--registries.d``."""
    registry = RegistryTransport(http, state, uploads, env, registries_d)
    return registry, {registry.name: registry, **local_transports()}


def validate_name(text: str) -> tuple[str, str]:
    """Parse and validate skopeo's ``TRANSPORT:REFERENCE`` before any I/O; returns (transport, rest)."""
    transport, rest = split_transport(text)
    if transport == "docker":
        parse_docker(rest)
        return transport, rest
    local = local_transports().get(transport)
    if local is None:
        raise UsageError(f"transport {transport!r} is not supported yet")
    local.validate(rest)
    return transport, rest
