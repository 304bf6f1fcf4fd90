"""The unit of work the planner hands to the engine, and the live pair the engine copies.

A ``WorkUnit`` is plain data: source and destination by skopeo image name (``docker://…``,
``dir:…``, ``oci:…``), the source registry's resolved settings, and what the planner learnt from
the destination's tag listing. It holds no transport object, closure or secret, so it can be
written to a queue and run by another process (``to_json``/``from_json``). The engine opens it
into an ``ImagePair`` (live source and destination) only while it works on it.
"""

from __future__ import annotations

import json
from typing import Any

from msgspec import Struct

from mirror.config.settings import RegistrySettings
from mirror.core.descriptor import Platform
from mirror.core.reference import ManifestRef, Tag
from mirror.errors import ConfigError
from mirror.signing.policy import ImagePolicy
from mirror.transports.base import ImageDestination, ImageSource

VERSION = 1


class WorkUnit(Struct, frozen=True):
    """One image to sync, as data."""

    src: str                         # skopeo image name of the source, e.g. docker://host/repo:tag
    dst: str                         # skopeo image name of the destination (docker://host/repo@digest: by digest)
    settings: RegistrySettings       # the source registry's settings (TLS, credentials reference, chunk size, ...)
    src_name: str = ""               # for reports (skopeo's style: host/repo:tag)
    dst_name: str = ""
    fresh_repo: bool = False         # the destination repository had no tags before the run
    dst_has_tag: bool | None = None  # from the destination tag listing; None = unknown
    writes_files: bool = False       # a local destination: opening it creates files (never in a dry run)
    assumed_present: bool = False    # the destination has the tag and its registry's tags are immutable:
                                     # skipped without opening anything (``assume-immutable-tags``)

    def to_json(self) -> str:
        data: dict[str, Any] = {"v": VERSION, "src": self.src, "dst": self.dst, "settings": self.settings.to_dict(),
                                "src_name": self.src_name, "dst_name": self.dst_name, "fresh_repo": self.fresh_repo,
                                "dst_has_tag": self.dst_has_tag, "writes_files": self.writes_files,
                                "assumed_present": self.assumed_present}
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> WorkUnit:
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.pop("v", None) != VERSION:
                raise ValueError(f"not a version {VERSION} work unit")
            data["settings"] = RegistrySettings.from_dict(data["settings"])
            return cls(**data)
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"invalid work unit: {exc}") from None


class ImagePair(Struct, frozen=True):
    """One image to sync, opened: live source and destination. ``dst_ref`` None: store by digest only."""

    source: ImageSource
    src_ref: ManifestRef
    destination: ImageDestination
    dst_ref: Tag | None
    fresh_repo: bool = False
    dst_has_tag: bool | None = None
    src_name: str = ""
    dst_name: str = ""
    platforms: tuple[Platform, ...] = ()  # copy only these platforms of an index (YAML `platforms`)
    policy: ImagePolicy | None = None     # the source's signature policy (None: --insecure-policy)
    referrers: tuple[str, ...] | None = None  # copy OCI referrers of these artifact types (empty: all); None: not
