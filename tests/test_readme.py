"""README states the CLI as the argparse parser defines it, and its SQL reports a real queued run."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import signal
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg.rows import dict_row
from support.images import push_image
from support.mirror_cli import MirrorProcess
from support.registry import Registry, wait_until

from mirror.cli.main import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"
MANY = "Running on many machines"


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else len(text)]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _option_default(command: str, option: str) -> object:
    action = next(a for a in _subparsers()[command]._actions if option in a.option_strings)
    return action.default


@pytest.mark.parametrize(("command", "section", "option"), [
    ("sync", "sync", "--jobs"), ("sync", "sync", "--blob-jobs"),
    ("worker", MANY, "--jobs"), ("worker", MANY, "--blob-jobs"), ("worker", MANY, "--lease"),
])
def test_readme_states_the_defaults(command: str, section: str, option: str) -> None:
    default = _option_default(command, option)
    assert isinstance(default, int | float)
    stated = re.findall(rf"`{option} \w+`[^)]*?default (\d+)", _section(section))
    assert stated == [str(int(default))], f"README says {command} {option} defaults to {stated}, the CLI to {default}"


def test_readme_lists_every_command() -> None:
    rows = [line.split(" | ")[0] for line in _section("Commands").splitlines() if line.startswith("| `mirror ")]
    listed = {name for row in rows for name in re.findall(r"`mirror ([a-z-]+)", row)}
    assert listed == set(_subparsers())


# -- the SQL of "Running on many machines", run against a real queued run ----------------------------

def _sql() -> dict[str, list[str]]:
    """The section's ```sql blocks by statement: SELECT (reports), UPDATE, DELETE."""
    blocks: dict[str, list[str]] = {}
    for block in re.findall(r"```sql\n(.*?)```", _section(MANY), re.S):
        blocks.setdefault(block.split(None, 1)[0].upper(), []).append(block)
    return blocks


def _rows(url: str, sql: str) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        cur = conn.execute(sql.encode())
        return cur.fetchall() if cur.description else []


def _run_state(url: str, coordinator: MirrorProcess) -> str | None:
    if coordinator.proc.poll() is not None:
        raise AssertionError(f"the coordinator exited {coordinator.proc.returncode}:\n{coordinator.output()}")
    try:
        rows = _rows(url, "SELECT state FROM mirror_runs ORDER BY created_at DESC LIMIT 1")
    except psycopg.errors.UndefinedTable:  # the coordinator has not created the schema yet
        return None
    return str(rows[0]["state"]) if rows else None


@contextlib.contextmanager
def _coordinator(registry: Registry, registry2: Registry, url: str, tmp_path: Path,
                 images: dict[str, list[str]], *extra: str) -> Iterator[MirrorProcess]:
    """``mirror sync --queue`` of ``images`` from ``registry`` into ``registry2``/m, once it has
    planned the run (no worker has taken anything: none runs yet)."""
    tmp_path.mkdir(exist_ok=True)
    sync_yaml = tmp_path / "sync.yaml"
    sync_yaml.write_text(yaml.safe_dump({registry.host: {"tls-verify": False, "images": images}}))
    with MirrorProcess("sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false", "--queue", url,
                       *extra, str(sync_yaml), f"{registry2.host}/m", log=tmp_path / "coordinator.log") as coordinator:
        wait_until(lambda: _run_state(url, coordinator) == "running", 60, "the coordinator to plan the run",
                   interval=0.1)
        yield coordinator


def test_readme_sql_reports_a_real_queued_run(registry: Registry, registry2: Registry, queue_url: str,
                                              tmp_path: Path) -> None:
    """3 images and a tag that does not exist, planned into the queue, then copied by 2 workers: every
    SELECT of the README is run before the workers start and after the run, and its numbers are
    checked against the coordinator's report and the workers' logs; then the DELETE forgets the run."""
    sql = _sql()
    progress, failed, remaining, per_worker = sql["SELECT"]
    [forget] = sql["DELETE"]
    for i, repo in enumerate(["shop/a", "shop/b", "shop/c"]):
        push_image(registry, repo, "v1", seed=900 + i)
    images = {"shop/a": ["v1"], "shop/b": ["v1"], "shop/c": ["v1", "missing"]}
    sources = sorted(f"{registry.host}/{repo}:{tag}" for repo, tags in images.items() for tag in tags)
    report = tmp_path / "report.jsonl"
    with contextlib.ExitStack() as stack:
        coordinator = stack.enter_context(_coordinator(registry, registry2, queue_url, tmp_path, images,
                                                       "--keep-going", "--max-attempts", "2", "--report",
                                                       str(report)))
        # Planned, nothing taken yet.
        [run] = _rows(queue_url, progress)
        assert {k: run[k] for k in ("state", "planned", "done", "failed", "running", "queued", "bytes_sent")} == \
            {"state": "running", "planned": 4, "done": 0, "failed": 0, "running": 0, "queued": 4, "bytes_sent": 0}
        assert _rows(queue_url, failed) == []
        waiting = _rows(queue_url, remaining)
        assert sorted(r["source"] for r in waiting) == sources
        assert {(r["status"], r["worker"], r["attempts"], r["last_error"]) for r in waiting} == \
            {("queued", None, 0, None)}
        assert _rows(queue_url, per_worker) == []
        # Two workers do the run.
        workers = [stack.enter_context(MirrorProcess("worker", "--queue", queue_url, "--log-format", "json",
                                                     log=tmp_path / f"worker{i}.log")) for i in range(2)]
        assert coordinator.wait(90) == 3, coordinator.output()  # --keep-going, one image failed
        records = [json.loads(line) for line in report.read_text().splitlines()]
        [broken] = [r for r in records if r["outcome"] == "failed"]
        copied = [r for r in records if r["outcome"] == "copied"]
        assert len(copied) == 3 and broken["source"] == f"{registry.host}/shop/c:missing"
        sent = sum(r["bytes"] for r in records)

        [run] = _rows(queue_url, progress)
        assert {k: run[k] for k in ("state", "planned", "done", "failed", "running", "queued", "bytes_sent")} == \
            {"state": "failed", "planned": 4, "done": 3, "failed": 1, "running": 0, "queued": 0, "bytes_sent": sent}
        assert sent > 0 and run["elapsed"] > timedelta(0)
        names = {w.name for w in workers}
        [gave_up] = _rows(queue_url, failed)
        assert (gave_up["source"], gave_up["destination"], gave_up["attempts"], gave_up["reason"]) == \
            (broken["source"], broken["destination"], 2, broken["reason"])
        assert gave_up["worker"] in names and "manifest unknown" in gave_up["reason"]
        assert _rows(queue_url, remaining) == []
        by_worker = _rows(queue_url, per_worker)
        assert {r["worker"] for r in by_worker} <= names
        assert sum(r["copied"] for r in by_worker) == 3 and sum(r["failed"] for r in by_worker) == 1
        assert sum(r["up_to_date"] + r["running"] for r in by_worker) == 0
        assert sum(r["bytes_sent"] for r in by_worker) == sent
        logged = {w.name: Counter(e.get("outcome") for e in map(json.loads, w.output().splitlines())
                                  if e.get("event") == "image_synced")["copied"] for w in workers}
        assert {r["worker"]: r["copied"] for r in by_worker if r["copied"]} == {k: v for k, v in logged.items() if v}
        assert [w.stop() for w in workers] == [0, 0]
    # Housekeeping: a run finished just now stays; one finished 31 days ago goes, with its units.
    _rows(queue_url, forget)
    assert _rows(queue_url, "SELECT count(*) AS n FROM mirror_units") == [{"n": 4}]
    _rows(queue_url, "UPDATE mirror_runs SET finished_at = now() - interval '31 days'")
    _rows(queue_url, forget)
    assert _rows(queue_url, "SELECT id FROM mirror_runs") == []
    assert _rows(queue_url, "SELECT count(*) AS n FROM mirror_units") == [{"n": 0}]


def test_readme_sql_abandons_the_run_of_a_killed_coordinator(registry: Registry, registry2: Registry,
                                                              queue_url: str, tmp_path: Path) -> None:
    """A stopped coordinator ends its run itself; a killed one leaves it running, until the README's
    UPDATE marks it failed: a worker then skips its images."""
    [abandon] = _sql()["UPDATE"]
    assert "'RUN_ID'" in abandon
    push_image(registry, "shop/a", "v1", seed=950)
    images = {"shop/a": ["v1"]}
    with _coordinator(registry, registry2, queue_url, tmp_path / "stopped", images) as coordinator:
        assert coordinator.stop(signal.SIGTERM) == 1, coordinator.output()
    assert _rows(queue_url, "SELECT state FROM mirror_runs") == [{"state": "failed"}]
    assert _rows(queue_url, "SELECT status::text FROM procrastinate_jobs") == [{"status": "cancelled"}]
    with _coordinator(registry, registry2, queue_url, tmp_path / "killed", images) as coordinator:
        assert coordinator.stop(signal.SIGKILL) == -signal.SIGKILL
    [run] = _rows(queue_url, "SELECT id FROM mirror_runs WHERE state = 'running'")
    _rows(queue_url, abandon.replace("RUN_ID", run["id"]))
    waiting = "SELECT count(*) AS n FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
    assert _rows(queue_url, waiting) == [{"n": 1}]
    with MirrorProcess("worker", "--queue", queue_url, log=tmp_path / "worker.log") as worker:
        wait_until(lambda: _rows(queue_url, waiting) == [{"n": 0}], 30, "the worker to take the abandoned job",
                   interval=0.1)
        assert worker.stop() == 0
    assert _rows(queue_url, "SELECT status, worker FROM mirror_units") == [{"status": "queued", "worker": None}] * 2
    assert not [r for r in registry2.access_log_requests() if r[0] in ("POST", "PUT", "PATCH")]
