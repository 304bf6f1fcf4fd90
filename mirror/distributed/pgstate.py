"""Run state shared by every worker, in PostgreSQL: the ``StateBackend`` transports write to.

- ``mirror_blob_locations``: "this blob was verified present in this repository", written by
  whichever worker verified it, read by all (skip, HEAD or cross-repository mount).
- ``mirror_uploads``: open chunked-upload sessions after every acknowledged chunk, so when a worker
  dies mid-upload the worker that takes its job over resumes at the registry's offset.
- ``mirror_index_choices``: which manifest a multi-arch index resolves to for one platform selection
  (content-addressed, so never stale): a no-op resync needs no GET of the index.
- ``mirror_cooldowns``: a registry's 429 cooldown, published by the worker that was answered 429
  and applied by every other (``share_cooldowns``).

Calls are short single statements on one autocommit connection; like the SQLite store they are
synchronous (a loopback round trip is ~0.1 ms) and serialised by a lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

import anyio
import psycopg

from mirror.distributed.schema import queue_error
from mirror.http.ratelimit import HostLimiter
from mirror.log import get_logger
from mirror.state import StateError, UploadRecord

log = get_logger("mirror.pgstate")

#: How often a process publishes its own 429 cooldowns and applies the others' (seconds).
COOLDOWN_POLL = 1.0


class PgState:
    """``mirror.state.StateBackend`` on PostgreSQL."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    @classmethod
    def connect(cls, url: str) -> PgState:
        try:
            return cls(psycopg.Connection.connect(url, autocommit=True))
        except psycopg.Error as exc:
            raise queue_error(url, exc) from None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _cursor(self) -> Iterator[psycopg.Cursor[Any]]:
        with self._lock:
            try:
                with self._conn.cursor() as cur:
                    yield cur
            except psycopg.Error as exc:
                raise StateError(f"shared state: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}") \
                    from None

    # -- upload sessions ------------------------------------------------------------------------
    def get_upload(self, registry: str, repo: str, digest: str) -> UploadRecord | None:
        with self._cursor() as cur:
            row = cur.execute(
                'SELECT location, "offset", chunk_size, extract(epoch FROM updated_at) FROM mirror_uploads '
                "WHERE registry = %s AND repo = %s AND digest = %s", (registry, repo, digest)).fetchone()
        if row is None:
            return None
        return UploadRecord(registry, repo, digest, str(row[0]), int(row[1]), int(row[2]), float(row[3]))

    def save_upload(self, record: UploadRecord) -> None:
        with self._cursor() as cur:
            cur.execute(
                'INSERT INTO mirror_uploads (registry, repo, digest, location, "offset", chunk_size, updated_at) '
                "VALUES (%s, %s, %s, %s, %s, %s, now()) ON CONFLICT (registry, repo, digest) DO UPDATE SET "
                'location = excluded.location, "offset" = excluded."offset", chunk_size = excluded.chunk_size, '
                "updated_at = now()",
                (record.registry, record.repo, record.digest, record.location, record.offset, record.chunk_size))

    def drop_upload(self, registry: str, repo: str, digest: str) -> None:
        with self._cursor() as cur:
            cur.execute("DELETE FROM mirror_uploads WHERE registry = %s AND repo = %s AND digest = %s",
                        (registry, repo, digest))

    def uploads(self) -> list[UploadRecord]:
        with self._cursor() as cur:
            rows = cur.execute('SELECT registry, repo, digest, location, "offset", chunk_size, '
                               "extract(epoch FROM updated_at) FROM mirror_uploads ORDER BY updated_at").fetchall()
        return [UploadRecord(str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), int(r[5]), float(r[6]))
                for r in rows]

    # -- blob locations -------------------------------------------------------------------------
    def record_blob(self, registry: str, repo: str, digest: str) -> None:
        with self._cursor() as cur:
            cur.execute("INSERT INTO mirror_blob_locations (registry, digest, repo) VALUES (%s, %s, %s) "
                        "ON CONFLICT (registry, digest, repo) DO UPDATE SET verified_at = now()",
                        (registry, digest, repo))

    def known_repos(self, registry: str, digest: str, limit: int = 20) -> list[str]:
        with self._cursor() as cur:
            rows = cur.execute("SELECT repo FROM mirror_blob_locations WHERE registry = %s AND digest = %s "
                               "ORDER BY verified_at DESC, repo LIMIT %s", (registry, digest, limit)).fetchall()
        return [str(r[0]) for r in rows]

    def verified_since(self, registry: str, repo: str, digest: str, since: float) -> bool:
        """Whether a worker verified ``digest`` in ``repo`` at or after ``since`` (epoch seconds)."""
        with self._cursor() as cur:
            row = cur.execute("SELECT 1 FROM mirror_blob_locations WHERE registry = %s AND digest = %s AND repo = %s "
                              "AND verified_at >= to_timestamp(%s)", (registry, digest, repo, since)).fetchone()
        return row is not None

    def forget_blob(self, registry: str, repo: str, digest: str) -> None:
        with self._cursor() as cur:
            cur.execute("DELETE FROM mirror_blob_locations WHERE registry = %s AND digest = %s AND repo = %s",
                        (registry, digest, repo))

    # -- index choices ---------------------------------------------------------------------------
    def index_choice(self, digest: str, selector: str) -> str | None:
        with self._cursor() as cur:
            row = cur.execute("SELECT chosen FROM mirror_index_choices WHERE digest = %s AND selector = %s",
                              (digest, selector)).fetchone()
        return None if row is None else str(row[0])

    def remember_index_choice(self, digest: str, selector: str, chosen: str) -> None:
        with self._cursor() as cur:
            cur.execute("INSERT INTO mirror_index_choices (digest, selector, chosen) VALUES (%s, %s, %s) "
                        "ON CONFLICT (digest, selector) DO UPDATE SET chosen = excluded.chosen",
                        (digest, selector, chosen))

    def location_count(self) -> int:
        with self._cursor() as cur:
            row = cur.execute("SELECT count(*) FROM mirror_blob_locations").fetchone()
        return int(row[0]) if row else 0

    # -- 429 cooldowns ----------------------------------------------------------------------------
    def publish_cooldown(self, host: str, seconds: float) -> None:
        with self._cursor() as cur:
            cur.execute("INSERT INTO mirror_cooldowns (host, until) VALUES (%s, now() + make_interval(secs => %s)) "
                        "ON CONFLICT (host) DO UPDATE SET until = greatest(mirror_cooldowns.until, excluded.until)",
                        (host, seconds))

    def cooldowns(self) -> dict[str, float]:
        """Hosts in a cooldown now, and the seconds it has left."""
        with self._cursor() as cur:
            rows = cur.execute("SELECT host, extract(epoch FROM until - now()) FROM mirror_cooldowns "
                               "WHERE until > now()").fetchall()
        return {str(r[0]): float(r[1]) for r in rows}


class Limiters(Protocol):
    """The per-host limiters of a process (``HttpClient``)."""

    @property
    def limiters(self) -> Mapping[str, HostLimiter]: ...

    def limiter(self, host: str) -> HostLimiter: ...


def exchange_cooldowns(state: PgState, http: Limiters, published: dict[str, float]) -> None:
    """Publish this process's 429 cooldowns not yet published; hold every host in someone's cooldown.
    ``published``: host → monotonic end of the cooldown last published or applied."""
    now = time.monotonic()
    for host, limiter in http.limiters.items():
        remaining = limiter.cooldown_remaining()
        if remaining > 0 and published.get(host, 0.0) < now + remaining - 0.5:
            state.publish_cooldown(host, remaining)
            published[host] = now + remaining
    for host, remaining in state.cooldowns().items():
        http.limiter(host).hold_for(remaining)
        published[host] = max(published.get(host, 0.0), now + remaining)


async def share_cooldowns(state: PgState, http: Limiters, interval: float = COOLDOWN_POLL) -> None:
    """Forever, every ``interval``: :func:`exchange_cooldowns`. Runs beside the work."""
    published: dict[str, float] = {}
    while True:
        try:
            exchange_cooldowns(state, http, published)
        except StateError as exc:
            log.warning("cooldown_share_failed", error=str(exc))
        await anyio.sleep(interval)
