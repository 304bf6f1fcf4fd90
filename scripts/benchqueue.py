"""``./scripts/bench --workers 1,2,4``: the distributed mode on one machine, against a single process.

For each workload (syncs only; default ``mixed``) it starts a source registry and a throw-away
PostgreSQL cluster, seeds the catalog once, then per repetition (interleaved, the order alternating
as the tool comparison's is) syncs it into a fresh destination registry with ``mirror sync`` (no
queue) and with ``mirror sync --queue`` for each worker count: a fresh database, that many ``mirror
worker`` processes started and registered before the clock starts, wall time from the start of
``mirror sync --queue`` to its exit, workers stopped (SIGTERM) afterwards.

Rows: wall time (median, and every run), destination requests per image (its access log), bytes the
destination registry read per image (its ``/proc/PID/io`` rchar: request bodies and headers; the
access log has no request sizes), with the bytes of the blobs it stores (each once) as the floor,
and the CPU seconds spent during the sync (``/proc``, median) by mirror (the sync plus every
worker), by the two registries and by PostgreSQL (every backend): on a shared or small machine CPU
says more about a mode's cost than wall time does. ``--worker-jobs N`` passes ``--jobs N`` to the
workers.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import BENCH_DIR, WORKLOADS, Workload, timed, tree_cpu
from distributed import Postgres, WorkerProcs, exit_codes, run_workers, start_postgres

from tests.support.registry import Registry, start_registry

QUEUE_WORKLOADS = ("small", "mixed")  # the syncs: large is a copy, and only sync has --queue


@dataclass
class QueuedRun:
    wall: float
    requests: int        # destination requests (access log)
    received: int        # bytes the destination registry read
    stored: int          # bytes of the blobs the destination stores
    mirror_cpu: float    # the sync and the workers
    registry_cpu: float  # source and destination registries
    pg_cpu: float        # PostgreSQL, every backend


def received(reg: Registry) -> int:
    """Bytes the registry process has read so far, from sockets and files (``/proc/PID/io`` rchar)."""
    with open(f"/proc/{reg.pid}/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def stored(reg: Registry) -> int:
    """Bytes of the blobs the registry stores (each digest once)."""
    return sum(p.stat().st_size for p in (reg.storage / "docker/registry/v2/blobs").rglob("data"))


def children_cpu() -> float:
    """CPU seconds of this process's exited children (the sync, once ``timed`` has reaped it)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_sync(cmd: list[str], pids: list[int]) -> tuple[float, float, list[float]]:
    """(wall, its CPU, the CPU each of ``pids``' process trees used meanwhile) of one sync."""
    before, others = children_cpu(), [tree_cpu(p) for p in pids]
    wall, _rss = timed(cmd)
    return wall, children_cpu() - before, [tree_cpu(p) - b for p, b in zip(pids, others, strict=True)]


def measure_queued(w: Workload, src: Registry, tmp: Path, pg: Postgres, workers: int, rep: int,
                   worker_args: list[str]) -> QueuedRun:
    """One first sync into a fresh destination: ``mirror sync`` alone (``workers`` 0) or ``mirror sync
    --queue`` on a fresh database with ``workers`` workers already registered."""
    with start_registry(tmp / f"q{workers}-dst-{rep}") as dst:
        cmd = w.mirror_cmd(src, dst, tmp)
        before = received(dst)
        registries = [src.pid or 0, dst.pid or 0]
        if workers == 0:
            wall, sync_cpu, cpus = timed_sync(cmd, registries)
            reg_cpu, worker_cpu, pg_cpu = sum(cpus), 0.0, 0.0
        else:
            url = pg.new_database()
            with run_workers(pg, url, workers, tmp / f"q{workers}-logs-{rep}", *worker_args) as procs:
                pids = [p.pid for p in procs.procs]
                wall, sync_cpu, cpus = timed_sync([*cmd, "--queue", url], [*registries, pg.process.pid, *pids])
                reg_cpu, pg_cpu, worker_cpu = cpus[0] + cpus[1], cpus[2], sum(cpus[3:])
            check_exits(procs)
        return QueuedRun(wall, len(dst.access_log_requests()), received(dst) - before, stored(dst),
                         sync_cpu + worker_cpu, reg_cpu, pg_cpu)


def check_exits(procs: WorkerProcs) -> None:
    codes = exit_codes(procs)
    if any(codes):
        bad = next(i for i, code in enumerate(codes) if code)
        raise SystemExit(f"worker {bad + 1} exited {codes[bad]}:\n{procs.log_text(bad)[-2000:]}")


def workers_row(key: str, label: str, runs: list[QueuedRun], images: int, local_wall: float) -> str:
    def med(values: list[float]) -> float:
        return float(statistics.median(values))

    wall = med([r.wall for r in runs])
    req = med([r.requests for r in runs]) / images
    kib = med([r.received for r in runs]) / images / 1024
    cpu = "/".join(f"{med(v):.1f}" for v in ([r.mirror_cpu for r in runs], [r.registry_cpu for r in runs],
                                              [r.pg_cpu for r in runs]))
    walls = " ".join(f"{r.wall:.2f}" for r in runs)
    return (f"{key:6s} {label:24s} {wall:7.2f}s {local_wall / wall:5.2f}x {req:6.2f} req/img {kib:8.1f} KiB/img  "
            f"cpu {cpu:14s} (runs: {walls})")


def run_workers_workload(key: str, counts: list[int], reps: int, worker_args: list[str]) -> list[str]:
    w = WORKLOADS[key]
    configs = [0, *counts]
    results: dict[int, list[QueuedRun]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory(prefix=f"mirror-bench-{key}-", dir=BENCH_DIR) as tmpdir:
        tmp = Path(tmpdir)
        with start_registry(tmp / "src") as src, start_postgres() as pg:
            print(f"== {w.name}: seeding ...", flush=True)
            w.seed(src)
            for rep in range(reps):  # interleaved, alternating the order, as the tool comparison is
                for c in (configs if rep % 2 == 0 else configs[::-1]):
                    run = measure_queued(w, src, tmp, pg, c, rep, worker_args)
                    results[c].append(run)
                    print(f"   rep {rep + 1}: {f'{c} worker(s)' if c else 'no queue'}: {run.wall:.2f}s "
                          f"(load average {os.getloadavg()[0]:.1f})", flush=True)
    local = statistics.median(r.wall for r in results[0])
    rows = [workers_row(key, "mirror sync (no queue)", results[0], w.images, local)]
    rows += [workers_row(key, f"--queue, {c} worker{'s' if c > 1 else ''}", results[c], w.images, local)
             for c in counts]
    floor = max(r.stored for runs in results.values() for r in runs) / w.images / 1024
    rows.append(f"{key:6s} {'(blobs stored)':24s} {'':31s}{floor:8.1f} KiB/img  "
                "each blob once: the least the destination can read")
    print("\n".join(rows), flush=True)
    return rows


def worker_counts(text: str) -> list[int]:
    """``1,2,4`` → ``[1, 2, 4]``; ValueError unless every item is a count of at least 1."""
    counts = [int(n) for n in text.split(",") if n.strip().isdigit() and int(n) > 0]
    if len(counts) != len(text.split(",")):
        raise ValueError(f"expected worker counts (at least 1) separated by commas: {text!r}")
    return counts


def workers_main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.tools or args.baseline:
        parser.error("--workers measures mirror alone: no --tools or --baseline")
    try:
        counts = worker_counts(args.workers)
    except ValueError as exc:
        parser.error(f"--workers: {exc}")
    keys = (args.workloads or "mixed").split(",")
    if not set(keys) <= set(QUEUE_WORKLOADS):
        parser.error(f"--workers: workloads among {','.join(QUEUE_WORKLOADS)} (syncs)")
    worker_args = ["--jobs", str(args.worker_jobs)] if args.worker_jobs else []
    rows: list[str] = []
    for key in keys:
        rows += run_workers_workload(key, counts, args.reps, worker_args)
    print(f"\n== summary (median of {args.reps}; mirror worker --jobs {args.worker_jobs or 'default (4)'}; "
          "x: speed-up against mirror sync without a queue; KiB/img: bytes the destination registry read; "
          "cpu: seconds used during the sync by mirror (sync + workers) / both registries / PostgreSQL)")
    print("\n".join(rows))
    return 0
