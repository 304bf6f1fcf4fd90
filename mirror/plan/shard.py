"""Static sharding: ``sync --shard K/N`` plans only its deterministic share of the run.

A destination repository belongs to one shard, chosen by rendezvous (highest random weight)
hashing: every shard scores the repository, the highest score owns it. So all tags of a repository
stay together (blobs are mounted within the shard, prune sees the whole repository), every process
decides alone with no coordination, and going from N to N+1 shards moves only the repositories
the new shard wins (about 1/(N+1) of them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from msgspec import Struct

from mirror.errors import UsageError

MAX_SHARDS = 10_000


class Shard(Struct, frozen=True):
    """Shard ``index`` (0-based, as Kubernetes' JOB_COMPLETION_INDEX) of ``count``."""

    index: int
    count: int

    def owns(self, repository: str) -> bool:
        """Whether this shard plans ``repository`` (a destination repository, e.g. ``host/path``)."""
        return self.count == 1 or owner(repository, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def owner(repository: str, count: int) -> int:
    """The shard (0..count-1) that owns ``repository``."""
    def score(shard: int) -> bytes:
        return hashlib.sha256(f"{shard}\x00{repository}".encode()).digest()

    return max(range(count), key=score)


def parse_shard(text: str | None, count: int | None, env: Mapping[str, str]) -> Shard | None:
    """``--shard K/N``, or ``--shard-count N`` with K from ``JOB_COMPLETION_INDEX``; None: not sharded."""
    if text is not None and count is not None:
        raise UsageError("--shard and --shard-count are mutually exclusive")
    if text is not None:
        index_text, slash, count_text = text.partition("/")
        if not slash or not index_text.isdigit() or not count_text.isdigit():
            raise UsageError(f"invalid --shard {text!r}, expected K/N (K from 0 to N-1)")
        return _checked(int(index_text), int(count_text), f"--shard {text}")
    if count is None:
        return None
    index_text = env.get("JOB_COMPLETION_INDEX", "")
    if not index_text.isdigit():
        raise UsageError("--shard-count needs JOB_COMPLETION_INDEX (set by a Kubernetes Indexed Job), "
                         "or use --shard K/N")
    return _checked(int(index_text), count, f"--shard-count {count} with JOB_COMPLETION_INDEX={index_text}")


def _checked(index: int, count: int, what: str) -> Shard:
    if not 1 <= count <= MAX_SHARDS:
        raise UsageError(f"{what}: the shard count must be from 1 to {MAX_SHARDS}")
    if not 0 <= index < count:
        raise UsageError(f"{what}: the shard index must be from 0 to {count - 1}")
    return Shard(index, count)
