"""``digest-tags``: the cosign-style tags (``sha256-<hex>``, ``sha256-<hex>.sig|.att|.sbom``) of the
digests a sync selects, so signatures and attestations follow the images they belong to."""

from __future__ import annotations

import re

import anyio

from mirror.config.filters import is_digest
from mirror.core.reference import Tag
from mirror.transports.base import ImageSource

HEADS_IN_FLIGHT = 16
DIGEST_TAG = re.compile(r"^(sha256|sha512)-([0-9a-f]{64}|[0-9a-f]{128})(?:\.[A-Za-z0-9_-]+)?$")


async def with_digest_tags(source: ImageSource, refs: list[str], available: list[str],
                           limit: anyio.CapacityLimiter) -> list[str]:
    """``refs`` plus the digest tags of their digests. Costs one source HEAD per selected tag, and
    nothing when the repository has no such tag."""
    by_digest: dict[str, list[str]] = {}
    for tag in available:
        if (match := DIGEST_TAG.match(tag)) is not None:
            by_digest.setdefault(f"{match[1]}:{match[2]}", []).append(tag)
    if not by_digest:
        return refs
    digests: dict[str, str] = {ref: ref for ref in refs if is_digest(ref)}
    pending = iter([ref for ref in refs if ref not in digests])

    async def heads() -> None:  # a few workers share one iterator: HEADs in parallel, tasks bounded
        for ref in pending:
            async with limit:
                desc = await source.head_manifest(Tag(ref))
            if desc is not None:
                digests[ref] = str(desc.digest)

    async with anyio.create_task_group() as tg:
        for _ in range(HEADS_IN_FLIGHT):
            tg.start_soon(heads)
    out = list(refs)
    for ref in refs:
        out.extend(t for t in by_digest.pop(digests.get(ref, ""), []) if t not in out)
    return out
