"""Descriptors and platforms: the values that point at content."""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from msgspec import Struct

from mirror.core.digest import Digest
from mirror.errors import ManifestError, MirrorError

EMPTY: Mapping[str, str] = MappingProxyType({})

#: Largest blob size we accept in a descriptor (1 TiB); larger is treated as hostile.
MAX_BLOB_SIZE = 1 << 40


class Platform(Struct, frozen=True):
    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text

    @classmethod
    def from_json(cls, data: Any) -> Platform:
        if not isinstance(data, dict):
            raise ManifestError("platform is not an object")
        os_, arch = data.get("os"), data.get("architecture")
        if not isinstance(os_, str) or not isinstance(arch, str):
            raise ManifestError("platform lacks os or architecture")
        variant = data.get("variant")
        osv = data.get("os.version")
        return cls(os_, arch, variant if isinstance(variant, str) and variant else None,
                   osv if isinstance(osv, str) else None)


_ARCH_ALIASES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm", "i686": "386"}


def host_platform(os_: str | None = None, arch: str | None = None, variant: str | None = None) -> Platform:
    """The platform to pick from an index: the host's, overridden by ``--override-os/-arch/-variant``."""
    machine = os.uname().machine.lower()  # platform.machine()'s source, without importing platform
    host_arch = _ARCH_ALIASES.get(machine, machine)
    host_variant = {"armv7l": "v7", "armv6l": "v6"}.get(machine)
    chosen_arch = arch or host_arch
    if variant is None and arch is None:
        variant = host_variant
    return Platform(os_ or "linux", chosen_arch, variant)


def matches(candidate: Platform, wanted: Platform) -> bool:
    """True when ``candidate`` satisfies ``wanted`` (variant compared only when wanted has one;
    arm64 treats a missing variant as v8, as containerd does)."""
    if candidate.os != wanted.os or candidate.architecture != wanted.architecture:
        return False
    if wanted.variant is None:
        return True
    got = candidate.variant
    if got is None and candidate.architecture == "arm64":
        got = "v8"
    return got == wanted.variant


class Descriptor(Struct, frozen=True):
    media_type: str
    digest: Digest
    size: int
    urls: tuple[str, ...] = ()
    annotations: Mapping[str, str] = EMPTY
    platform: Platform | None = None
    artifact_type: str | None = None

    def _key(self) -> tuple[object, ...]:  # what equality and hashing look at: not the annotations
        return self.media_type, self.digest, self.size, self.urls, self.platform, self.artifact_type

    def __eq__(self, other: object) -> bool:
        return self._key() == other._key() if type(other) is Descriptor else NotImplemented

    def __ne__(self, other: object) -> bool:  # a Struct's own != would compare the annotations too
        return self._key() != other._key() if type(other) is Descriptor else NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    @classmethod
    def from_json(cls, data: Any, where: str = "descriptor") -> Descriptor:
        if not isinstance(data, dict):
            raise ManifestError(f"{where} is not an object")
        media_type = data.get("mediaType", "")
        digest_text = data.get("digest")
        size = data.get("size")
        if not isinstance(media_type, str):
            raise ManifestError(f"{where} has a non-string mediaType")
        if not isinstance(digest_text, str):
            raise ManifestError(f"{where} has no digest")
        try:
            digest = Digest.parse(digest_text)
        except MirrorError as exc:
            raise ManifestError(f"{where}: {exc}") from None
        if isinstance(size, bool) or not isinstance(size, int) or size < 0 or size > MAX_BLOB_SIZE:
            raise ManifestError(f"{where} {digest_text} has an invalid size {size!r}")
        urls = data.get("urls") or ()
        if not isinstance(urls, list | tuple) or not all(isinstance(u, str) for u in urls):
            raise ManifestError(f"{where} {digest_text} has invalid urls")
        annotations = data.get("annotations") or {}
        if not isinstance(annotations, dict):
            raise ManifestError(f"{where} {digest_text} has invalid annotations")
        plat = data.get("platform")
        artifact = data.get("artifactType")
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            urls=tuple(urls),
            annotations=MappingProxyType({str(k): str(v) for k, v in annotations.items()}),
            platform=Platform.from_json(plat) if plat is not None else None,
            artifact_type=artifact if isinstance(artifact, str) else None,
        )
