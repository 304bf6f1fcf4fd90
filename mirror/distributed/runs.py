"""A run's options and units in PostgreSQL: what the coordinator writes and workers claim.

A run row holds the options every worker must agree on (``RunOptions``: platform choice, copy
flags, destination TLS, the retry budget), never a secret. A unit row holds one ``WorkUnit`` as
JSON, its status (``queued`` → ``running`` → ``done``/``failed``) and, once finished, its report
record; the coordinator marks records ``reported`` as it streams them into its report.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from msgspec import Struct, field
from msgspec.structs import asdict
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from mirror.config.filters import parse_platform
from mirror.core.descriptor import Platform
from mirror.engine.image import CopyOptions, MultiArch
from mirror.engine.reformat import Reformat
from mirror.engine.sync import ImageRecord
from mirror.errors import ConfigError
from mirror.plan.pairs import WorkUnit


def _platform_text(p: Platform) -> str:
    return "/".join(x for x in (p.os, p.architecture, p.variant) if x)


class RunOptions(Struct, frozen=True):
    """What every worker of a run does the same way (stored with the run, as JSON)."""

    copy: CopyOptions = field(default_factory=CopyOptions)
    dest_tls_verify: bool = True
    dest_cert_dir: str | None = None
    max_attempts: int = 3   # tries of a unit, worker deaths included, before it is reported failed

    def to_dict(self) -> dict[str, Any]:
        return {"multi_arch": self.copy.multi_arch.value, "platform": _platform_text(self.copy.platform),
                "platforms": [_platform_text(p) for p in self.copy.platforms],
                "remove_signatures": self.copy.remove_signatures, "reformat": self.copy.reformat.to_dict(),
                "dest_tls_verify": self.dest_tls_verify,
                "dest_cert_dir": self.dest_cert_dir, "max_attempts": self.max_attempts}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunOptions:
        try:
            copy = CopyOptions(multi_arch=MultiArch(data["multi_arch"]), platform=parse_platform(data["platform"]),
                               platforms=tuple(parse_platform(p) for p in data["platforms"]),
                               remove_signatures=bool(data["remove_signatures"]),
                               reformat=Reformat.from_dict(data.get("reformat") or {}))
            return cls(copy, bool(data["dest_tls_verify"]), data.get("dest_cert_dir"), int(data["max_attempts"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"invalid run options in the queue: {exc}") from None


def record_dict(record: ImageRecord) -> dict[str, Any]:
    return asdict(record)


def record_from(data: dict[str, Any]) -> ImageRecord:
    return ImageRecord(**data)


class Claim(Struct, frozen=True):
    """A unit a worker took: the unit, its run's options, and the attempt it is on (0-based)."""

    unit: WorkUnit
    options: RunOptions
    attempt: int
    started: float  # the run's creation, epoch seconds (facts verified since then are this run's)


class RunBook:
    """The SQL of runs and units, over a connection pool."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    # -- coordinator ----------------------------------------------------------------------------
    async def create_run(self, run_id: str, options: RunOptions) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("INSERT INTO mirror_runs (id, options) VALUES (%s, %s)",
                               (run_id, Jsonb(options.to_dict())))

    async def add_units(self, run_id: str, units: Sequence[tuple[int, WorkUnit, ImageRecord | None]]) -> None:
        """Queue units; a unit with a record is finished already (decided by the plan)."""
        rows = [(run_id, seq, Jsonb(json.loads(unit.to_json())), unit.src_name, unit.dst_name,
                 "queued" if record is None else "done", None if record is None else record.outcome,
                 None if record is None else record.reason, None if record is None else Jsonb(record_dict(record)))
                for seq, unit, record in units]
        async with self.pool.connection() as conn, conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO mirror_units (run_id, seq, unit, source, destination, status, outcome, reason, record) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)

    async def set_planned(self, run_id: str, planned: int) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("UPDATE mirror_runs SET planned = %s, state = 'running' WHERE id = %s",
                               (planned, run_id))

    async def take_finished(self, run_id: str, limit: int = 500) -> list[ImageRecord]:
        """Finished units not yet reported, marked reported as they are returned."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE mirror_units SET reported = true WHERE (run_id, seq) IN (SELECT run_id, seq FROM mirror_units "
                "WHERE run_id = %s AND status IN ('done', 'failed') AND NOT reported ORDER BY updated_at LIMIT %s "
                "FOR UPDATE SKIP LOCKED) RETURNING record", (run_id, limit))
            rows = await cur.fetchall()
        return [record_from(row[0]) for row in rows]

    async def running(self, run_id: str) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM mirror_units WHERE run_id = %s AND status = 'running'",
                                     (run_id,))
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def finish_run(self, run_id: str, state: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("UPDATE mirror_runs SET state = %s, finished_at = now() WHERE id = %s",
                               (state, run_id))

    async def cancel_jobs(self, run_id: str, task: str) -> None:
        """Cancel the run's jobs no worker has taken (procrastinate's own cancel function)."""
        async with self.pool.connection() as conn:
            await conn.execute("SELECT procrastinate_cancel_job_v1(id, false, false) FROM procrastinate_jobs "
                               "WHERE status = 'todo' AND task_name = %s AND args ->> 'run' = %s", (task, run_id))

    # -- workers --------------------------------------------------------------------------------
    async def claim(self, run_id: str, seq: int, worker: str, attempt: int) -> Claim | None:
        """Mark a unit running on ``worker``; None if it is finished or its run was given up."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE mirror_units u SET status = 'running', worker = %s, attempts = %s, updated_at = now() "
                "FROM mirror_runs r WHERE u.run_id = %s AND u.seq = %s AND r.id = u.run_id "
                "AND u.status IN ('queued', 'running') AND r.state IN ('planning', 'running') "
                "RETURNING u.unit, r.options, extract(epoch FROM r.created_at)", (worker, attempt + 1, run_id, seq))
            row = await cur.fetchone()
        if row is None:
            return None
        return Claim(WorkUnit.from_json(json.dumps(row[0])), RunOptions.from_dict(row[1]), attempt, float(row[2]))

    async def complete(self, run_id: str, seq: int, record: ImageRecord) -> None:
        status = "failed" if record.outcome == "failed" else "done"
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE mirror_units SET status = %s, outcome = %s, reason = %s, digest = %s, record = %s, "
                "updated_at = now() WHERE run_id = %s AND seq = %s",
                (status, record.outcome, record.reason, record.digest, Jsonb(record_dict(record)), run_id, seq))

    async def requeue(self, run_id: str, seq: int, reason: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("UPDATE mirror_units SET status = 'queued', reason = %s, updated_at = now() "
                               "WHERE run_id = %s AND seq = %s", (reason, run_id, seq))
