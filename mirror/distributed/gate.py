"""One blob, one registry, one uploader: PostgreSQL advisory locks across every worker.

A session advisory lock per (registry, digest) is held on its own pooled connection while the
blob is uploaded. Other workers needing the same blob wait on the lock, then find it present or
mountable. A worker that dies loses its connection, and PostgreSQL releases its locks at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from psycopg_pool import AsyncConnectionPool

from mirror.core.digest import Digest


def lock_key(host: str, digest: Digest) -> int:
    """A signed 64-bit advisory lock key for (registry host, digest)."""
    raw = hashlib.sha256(f"mirror-blob\0{host.lower()}\0{digest}".encode()).digest()[:8]
    return int.from_bytes(raw, "big", signed=True)


class PgBlobGate:
    """``mirror.engine.blobs.BlobGate`` on PostgreSQL advisory locks."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def hold(self, host: str, digest: Digest) -> AsyncIterator[None]:
        key = lock_key(host, digest)
        async with self.pool.connection() as conn:
            try:
                await conn.execute("SELECT pg_advisory_lock(%s)", (key,))
                yield
            finally:
                # Also when cancelled while waiting: the lock may have been granted as the wait was
                # cancelled, and a pooled connection must not keep it. One lock per connection.
                with anyio.CancelScope(shield=True):
                    await conn.execute("SELECT pg_advisory_unlock_all()")


@asynccontextmanager
async def open_gate(url: str, size: int) -> AsyncIterator[PgBlobGate]:
    """A gate with up to ``size`` connections (one per blob being uploaded or waited for)."""
    async with AsyncConnectionPool(url, min_size=1, max_size=max(2, size), kwargs={"autocommit": True},
                                   open=False) as pool:
        yield PgBlobGate(pool)
