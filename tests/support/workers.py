"""``mirror worker`` processes for the distributed-mode tests: started, registered, stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from .mirror_cli import ROOT
from .postgres import Postgres
from .registry import wait_until


@dataclass
class WorkerProcs:
    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]

    def log_text(self, i: int) -> str:
        return self.logs[i].read_text(errors="replace")

    def all_logs(self) -> str:
        return "\n".join(self.log_text(i) for i in range(len(self.procs)))


def database(url: str) -> str:
    return url.rsplit("/", 1)[1]


def scalar(pg: Postgres, url: str, sql: str) -> str:
    return pg.psql(database(url), sql).strip()


def registered_workers(pg: Postgres, url: str) -> int:
    """Workers with a live procrastinate registration (0 while the schema does not exist yet)."""
    try:
        return int(scalar(pg, url, "SELECT count(*) FROM procrastinate_workers") or 0)
    except RuntimeError:
        return 0


def mirror_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), MIRROR_STATE="none")
    env.update(extra or {})
    return env


@contextmanager
def run_workers(pg: Postgres, url: str, n: int, logdir: Path, *args: str,
                env: Mapping[str, str] | None = None) -> Iterator[WorkerProcs]:
    """``n`` workers on ``url``, yielded once all are registered; SIGTERM (then SIGKILL) at the end."""
    logdir.mkdir(parents=True, exist_ok=True)
    out = WorkerProcs([], [])
    with ExitStack() as stack:
        for i in range(n):
            path = logdir / f"worker{i}.log"
            log = stack.enter_context(open(path, "wb"))
            out.logs.append(path)
            out.procs.append(subprocess.Popen(
                [sys.executable, "-m", "mirror", "--log-format", "json", "worker", "--queue", url, *args],
                stdout=log, stderr=subprocess.STDOUT, env=mirror_env(env), cwd=ROOT))
        try:
            wait_until(lambda: registered_workers(pg, url) >= n or any(p.poll() is not None for p in out.procs),
                       60, f"{n} workers registered", interval=0.1)
            dead = [i for i, p in enumerate(out.procs) if p.poll() is not None]
            assert not dead, f"worker {dead[0]} exited: {out.log_text(dead[0])[-2000:]}"
            yield out
        finally:
            for p in out.procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in out.procs:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
