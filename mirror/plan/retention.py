"""Applying ``keep-latest`` / ``newer-than`` (``mirror.config.retention``) to a repository's selected tags.

Runs in the planner, before any unit is made, so a local run, a sharded one and a queued one select
the same tags. Images' ``created`` is read only when the rule needs it, only for the candidate tags
(those the other keys selected), and once per digest: a HEAD per candidate tag, then for a digest not
seen before its manifest and config (an index: its first platform image's), digest-verified. The
``CreatedDates`` cache outlives a run in ``sync --interval``, so a resync costs the HEADs only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime

import anyio
from msgspec import Struct

from mirror.aio import SingleFlight
from mirror.config.filters import is_digest
from mirror.config.retention import Retention
from mirror.config.semver import Version, parse_version
from mirror.core import mediatype as mt
from mirror.core.descriptor import Descriptor
from mirror.core.digest import Digest
from mirror.core.reference import Tag
from mirror.log import get_logger
from mirror.plan.digesttags import DIGEST_TAG
from mirror.transports.base import ImageSource

log = get_logger("mirror.plan")

#: Digests whose ``created`` a cache remembers (a few dozen bytes each).
REMEMBER = 65536
#: A config larger than this is not read for its date (the date counts as unknown).
MAX_CONFIG = 4 << 20
FETCHES_IN_FLIGHT = 16
_FRACTION = re.compile(r"(\.\d{6})\d+")

#: ``created`` (Unix seconds, None: unknown) by manifest digest.
CreatedDates = SingleFlight[float | None]


def created_dates() -> CreatedDates:
    return SingleFlight(remember=REMEMBER)


class Retained(Struct, frozen=True):
    refs: list[str]           # what to copy, in the order given
    dropped: frozenset[str]   # tags the rule left out: prune candidates when the registry prunes


async def retain(source: ImageSource, refs: list[str], explicit: Iterable[str], rule: Retention,
                 limit: anyio.CapacityLimiter, cache: CreatedDates, now: float) -> Retained:
    """``refs`` narrowed by ``rule``. Digests and ``explicit`` tags stay; digest tags (``sha256-…``) are
    not ranked and leave the selection (``digest-tags`` brings back those of the images kept)."""
    if not rule.active:
        return Retained(refs, frozenset())
    fixed = {ref for ref in refs if is_digest(ref)} | set(explicit)
    candidates = [ref for ref in refs if ref not in fixed and not DIGEST_TAG.match(ref)]
    created = await _created(source, candidates, limit, cache) if rule.needs_created and candidates else {}
    if rule.newer_than is not None:
        cutoff = now - rule.newer_than
        candidates = [t for t in candidates if (c := created.get(t)) is None or c > cutoff]  # unknown age: kept
    if rule.keep_latest is not None:
        candidates = _latest(candidates, rule, created)[: rule.keep_latest]
    kept = set(candidates)
    dropped = frozenset(ref for ref in refs if ref not in fixed and ref not in kept and not DIGEST_TAG.match(ref))
    return Retained([ref for ref in refs if ref in fixed or ref in kept], dropped)


def _latest(tags: list[str], rule: Retention, created: dict[str, float | None]) -> list[str]:
    """Newest first: by version (tags that are not versions left out) or by ``created`` (unknown
    dates last); ties by tag name, highest first."""
    by_name = sorted(tags, reverse=True)
    if rule.order == "created":
        return sorted(by_name, key=lambda t: _or_oldest(created.get(t)), reverse=True)
    versions: list[tuple[Version, str]] = [(v, t) for t in by_name if (v := parse_version(t)) is not None]
    versions.sort(key=lambda pair: pair[0], reverse=True)  # stable: equal versions keep the name order
    return [t for _, t in versions]


def _or_oldest(value: float | None) -> float:
    return float("-inf") if value is None else value


async def _created(source: ImageSource, tags: list[str], limit: anyio.CapacityLimiter,
                   cache: CreatedDates) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    pending = iter(tags)

    async def fetch() -> None:  # a few workers share one iterator: requests in parallel, tasks bounded
        for tag in pending:
            async with limit:
                desc = await source.head_manifest(Tag(tag))
            # A tag deleted since the listing has no date: its unit fails like any vanished image.
            out[tag] = None if desc is None else await _cached(source, desc, limit, cache)

    async with anyio.create_task_group() as tg:
        for _ in range(min(FETCHES_IN_FLIGHT, len(tags))):
            tg.start_soon(fetch)
    return out


async def _cached(source: ImageSource, desc: Descriptor, limit: anyio.CapacityLimiter,
                  cache: CreatedDates) -> float | None:
    async def fetch() -> float | None:
        return await _image_created(source, desc, limit)

    created, _shared = await cache.do(str(desc.digest), fetch)
    return created


async def _image_created(source: ImageSource, desc: Descriptor, limit: anyio.CapacityLimiter) -> float | None:
    """The config ``created`` of the image ``desc`` names (of an index: its first platform image)."""
    async with limit:
        manifest = await source.get_manifest(desc.digest)
        if manifest.is_index:
            child = _first_image(manifest.manifests)
            if child is None:
                return None
            manifest = await source.get_manifest(child.digest)
        config = manifest.config
        if config is None or config.size > MAX_CONFIG or manifest.is_index:
            return None
        data = await _read_config(source, config)
    return parse_created(data)


def _first_image(children: tuple[Descriptor, ...]) -> Descriptor | None:
    """The first platform image of an index (attestation manifests, platform unknown/unknown, skipped)."""
    for child in children:
        platform = child.platform
        if mt.is_index(child.media_type) or (platform is not None and platform.os == "unknown"):
            continue
        return child
    return None


async def _read_config(source: ImageSource, config: Descriptor) -> bytes:
    hasher = config.digest.hasher()
    parts: list[bytes] = []
    async with source.open_blob(config) as chunks:
        async for chunk in chunks:
            hasher.update(chunk)
            parts.append(chunk)
            if hasher.size > config.size:
                break
    hasher.check(config.digest, config.size, "config")  # every byte verified before it is believed
    return b"".join(parts)


def parse_created(data: bytes) -> float | None:
    """The ``created`` of an image config as Unix seconds; None when absent or not a date."""
    try:
        value = json.loads(data).get("created")
    except (ValueError, AttributeError):
        return None
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(_FRACTION.sub(r"\1", value.strip()).replace("z", "Z"))
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def digest_tag_subject(tag: str) -> Digest | None:
    """``sha256-<hex>[.sig|.att|.sbom]`` → ``sha256:<hex>``; None for other tags."""
    match = DIGEST_TAG.match(tag)
    return None if match is None else Digest(match[1], match[2])

