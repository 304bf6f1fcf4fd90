"""Every transport by name: built explicitly by the runtime, no registration by import side effect."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from mirror.core.reference import parse_docker, split_transport
from mirror.errors import UsageError
from mirror.http.client import HttpClient
from mirror.state import StateBackend
from mirror.transports.base import Transport
from mirror.transports.registry.transport import RegistryTransport
from mirror.transports.registry.uploadopts import UploadOptions

# The local transports' modules (tar, compression, the daemon's client...) are imported when one of
# them is first used: a registry-to-registry copy imports none.


def _dir() -> Transport:
    from mirror.transports.local.directory import DirTransport

    return DirTransport()


def _oci() -> Transport:
    from mirror.transports.local.oci import OciTransport

    return OciTransport()


def _oci_archive() -> Transport:
    from mirror.transports.local.oci import OciArchiveTransport

    return OciArchiveTransport()


def _docker_archive() -> Transport:
    from mirror.transports.local.archive import DockerArchiveTransport

    return DockerArchiveTransport()


def _docker_daemon() -> Transport:
    from mirror.transports.local.daemon import DockerDaemonTransport

    return DockerDaemonTransport()


def _storage() -> Transport:
    from mirror.transports.local.storage import StorageTransport

    return StorageTransport()


#: The transports that need no network client, by name (each class's ``name``; a test checks they agree).
LOCAL: Mapping[str, Callable[[], Transport]] = {
    "dir": _dir, "oci": _oci, "oci-archive": _oci_archive, "docker-archive": _docker_archive,
    "docker-daemon": _docker_daemon, "containers-storage": _storage,
}


class Transports(Mapping[str, Transport]):
    """Transports by skopeo's name, each made (and its module imported) on first use."""

    def __init__(self, made: Mapping[str, Transport], makers: Mapping[str, Callable[[], Transport]]) -> None:
        self._made = dict(made)
        self._makers = makers

    def __getitem__(self, name: str) -> Transport:
        if name not in self._made:
            self._made[name] = self._makers[name]()
        return self._made[name]

    def __iter__(self) -> Iterator[str]:
        return iter({**self._made, **self._makers})

    def __len__(self) -> int:
        return len({**self._made, **self._makers})


def local_transports() -> Transports:
    """The transports that need no network client (``dir``, ``oci``, archives, daemon, storage)."""
    return Transports({}, LOCAL)


def build_transports(http: HttpClient, state: StateBackend, uploads: UploadOptions, env: Mapping[str, str],
                     registries_d: str | None = None) -> tuple[RegistryTransport, Transports]:
    """Every transport mirror supports, keyed by skopeo's transport name; the registry one also apart
    (sync lists catalogs and destination tags through it). ``registries_d``: ``--registries.d``."""
    registry = RegistryTransport(http, state, uploads, env, registries_d)
    return registry, Transports({registry.name: registry}, LOCAL)


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
