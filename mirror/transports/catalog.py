"""The local transports by name: built explicitly, no registration by import side effect."""

from __future__ import annotations

from mirror.transports.base import LocalTransport
from mirror.transports.local.archive import DockerArchiveTransport
from mirror.transports.local.daemon import DockerDaemonTransport
from mirror.transports.local.directory import DirTransport
from mirror.transports.local.oci import OciArchiveTransport, OciTransport
from mirror.transports.local.storage import StorageTransport


def local_transports() -> dict[str, LocalTransport]:
    """Every non-registry transport mirror supports, keyed by skopeo's transport name."""
    transports: list[LocalTransport] = [DirTransport(), OciTransport(), OciArchiveTransport(),
                                        DockerArchiveTransport(), DockerDaemonTransport(), StorageTransport()]
    return {t.name: t for t in transports}
