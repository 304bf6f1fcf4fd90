"""mirror's distributed mode on one machine, for scripts/demo and scripts/bench.

The PostgreSQL cluster and the ``mirror worker`` processes come from the test suite's own helpers
(``tests/support/postgres.py``: a throw-away initdb cluster; ``tests/support/workers.py``: workers
started, awaited until registered, stopped with SIGTERM), which import nothing from mirror. This
module adds what a script shows about a run: the SQL over ``mirror_units`` and ``mirror_progress``
that says which worker did what, and the workers' exit statuses.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.postgres import Postgres, start_postgres  # noqa: E402
from tests.support.workers import WorkerProcs, database, run_workers  # noqa: E402

__all__ = ["Postgres", "WorkerProcs", "breakdown", "exit_codes", "label", "progress", "run_workers", "runs",
           "start_postgres"]


def query(pg: Postgres, url: str, sql: str) -> list[list[str]]:
    """Rows of ``sql`` on the database of ``url``, as text fields."""
    return [line.split("|") for line in pg.psql(database(url), sql).splitlines() if line]


def runs(pg: Postgres, url: str) -> list[str]:
    """Run ids on this queue, oldest first."""
    return [row[0] for row in query(pg, url, "SELECT id FROM mirror_runs ORDER BY created_at")]


BREAKDOWN_SQL = """
SELECT worker, status, coalesce(outcome, ''), count(*), coalesce(sum((record ->> 'bytes')::bigint), 0)
  FROM mirror_units WHERE run_id = '{run}'
 GROUP BY 1, 2, 3 ORDER BY 1 NULLS FIRST, 2, 3
"""


def breakdown(pg: Postgres, url: str, run: str) -> list[tuple[str | None, str, str, int, int]]:
    """(worker, status, outcome, images, bytes) of one run: a row per worker and status/outcome.

    ``worker`` is what the worker records (``host:pid``); None for units the plan decided itself.
    """
    if not run.isalnum():
        raise ValueError(f"not a run id: {run!r}")
    return [(row[0] or None, row[1], row[2], int(row[3]), int(row[4]))
            for row in query(pg, url, BREAKDOWN_SQL.format(run=run))]


def progress(pg: Postgres, url: str) -> str:
    """The ``mirror_progress`` view, a run a line (oldest first), as an aligned table."""
    rows = query(pg, url, "SELECT left(run_id, 8), state, planned, done, failed, running, queued, bytes_sent, "
                          "to_char(finished_at - created_at, 'FMSS.MS\"s\"') FROM mirror_progress ORDER BY created_at")
    head = ["run", "state", "planned", "done", "failed", "running", "queued", "bytes_sent", "took"]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(head)]
    lines = [head, *rows]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def label(workers: WorkerProcs, name: str | None) -> str:
    """``worker 2 (pid 1234)`` for the name a worker records in ``mirror_units`` (``host:pid``)."""
    if not name:
        return "(plan: nothing to copy)"
    host, _, pid = name.rpartition(":")
    for i, proc in enumerate(workers.procs, 1):
        if str(proc.pid) == pid and host == socket.gethostname():
            return f"worker {i} (pid {pid})"
    return name


def exit_codes(workers: WorkerProcs) -> list[int | None]:
    """The workers' exit statuses (None while one runs: read them once ``run_workers`` has stopped them)."""
    return [proc.returncode for proc in workers.procs]
