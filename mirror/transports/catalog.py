"""The local transports by name: built explicitly, no registration by import side effect."""

from __future__ import annotations

from mirror.transports.base import LocalTransport


def local_transports() -> dict[str, LocalTransport]:
    """Every non-registry transport mirror supports, keyed by skopeo's transport name."""
    transports: list[LocalTransport] = []
    return {t.name: t for t in transports}
