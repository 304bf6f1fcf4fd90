"""The unit of work the planner hands to the engine."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from mirror.core.descriptor import Platform
from mirror.signing.policy import ImagePolicy
from mirror.transports.base import ImageDestination, ImageSource


@dataclass(frozen=True, slots=True)
class ImagePair:
    """One image to sync. ``dst_ref`` None means: store by digest only."""

    source: ImageSource
    src_ref: str
    destination: ImageDestination
    dst_ref: str | None
    fresh_repo: bool = False         # the destination repository had no tags before the run
    dst_has_tag: bool | None = None  # from the destination tag listing; None = unknown
    src_name: str = ""
    dst_name: str = ""
    platforms: tuple[Platform, ...] = ()  # copy only these platforms of an index (YAML `platforms`)
    policy: ImagePolicy | None = None     # the source's signature policy (None: --insecure-policy)


@dataclass(frozen=True, slots=True)
class DeferredPair:
    """A pair whose local transports are opened only while the engine works on it (``dir:``
    images are opened per image, and a ``dir:`` destination is published when its context exits
    cleanly)."""

    open: Callable[[], AbstractAsyncContextManager[ImagePair]]
    src_name: str
    dst_name: str


Work = ImagePair | DeferredPair
