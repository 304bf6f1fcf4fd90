"""Which destination tags ``prune`` removes from one repository.

A destination tag is a candidate when the source no longer has its tag, or when the source has it
but a retention rule (``keep-latest``, ``newer-than``) left it out. Tags the other keys never
selected (regexes, explicit lists, excludes) stay, as before retention rules existed.

Signature and attestation tags (``sha256-<hex>.sig|.att|.sbom``, and the OCI referrers fallback tag
``sha256-<hex>``) follow their subject: never removed while a kept tag of the repository points at
their subject digest (or the sync copies that digest by name), removed with the image they belong
to. Deciding that costs one destination HEAD per image tag, and only in repositories that hold
such tags.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import anyio

from mirror.core.digest import Digest
from mirror.plan.retention import digest_tag_subject

HEADS_IN_FLIGHT = 16
#: A destination HEAD: the digest a tag points at, None when it is gone.
Head = Callable[[str], Awaitable[Digest | None]]


async def prune_candidates(existing: Iterable[str], available: set[str], dropped: frozenset[str], suffix: str,
                           kept_refs: Iterable[str], head: Head) -> tuple[str, ...]:
    """Destination tags to prune, sorted. ``existing``: the destination's tags; ``available``: the
    source's; ``dropped``: source tags a retention rule left out; ``suffix``: ``--append-suffix``;
    ``kept_refs``: digests the sync copies by name (their signatures stay)."""
    def source_tag(tag: str) -> str | None:
        return tag[: len(tag) - len(suffix)] if tag.endswith(suffix) else None

    tags = set(existing)
    gone = {t for t in tags if (s := source_tag(t)) is None or s not in available or s in dropped}
    subjects = {t: subject for t in tags if (s := source_tag(t)) is not None
                and (subject := digest_tag_subject(s)) is not None}
    if not subjects:
        return tuple(sorted(gone))
    images = tags - subjects.keys()
    digests = await _heads(sorted(images), head)
    kept = {d for t, d in digests.items() if t not in gone} | {str(ref) for ref in kept_refs}
    pruned = {d for t, d in digests.items() if t in gone} - kept
    out = {t for t in gone if t not in subjects or str(subjects[t]) not in kept}
    out |= {t for t, subject in subjects.items() if str(subject) in pruned}  # signatures go with their image
    return tuple(sorted(out))


async def _heads(tags: list[str], head: Head) -> dict[str, str]:
    out: dict[str, str] = {}
    pending = iter(tags)

    async def worker() -> None:
        for tag in pending:
            digest = await head(tag)
            if digest is not None:
                out[tag] = str(digest)

    async with anyio.create_task_group() as tg:
        for _ in range(min(HEADS_IN_FLIGHT, len(tags))):
            tg.start_soon(worker)
    return out
