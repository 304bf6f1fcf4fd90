"""``mirror sync --interval/--schedule``: the real CLI as a long-running subprocess against real registries.

Runs are followed through the process's own JSON log lines (its stderr is not a terminal, so JSON is
the default) and its HTTP endpoint; every wait polls a condition with a deadline. The destination
sits behind the in-process proxy (``support.proxy``) where a test needs an upload to be in flight at
a known point: the proxy holds one chunk until the test lets it through.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import itertools
import json
import os
import random
import signal
import sqlite3
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from support.images import Client, push_image
from support.mirror_cli import MirrorProcess, assert_one_line_error, run_mirror
from support.proxy import Fault, RegistryProxy, RequestInfo
from support.registry import Registry, free_port, wait_until

from mirror.cli.service import Schedule
from mirror.state import StateStore

TLS = ("--src-tls-verify=false", "--dest-tls-verify=false")
CHUNK = 512 * 1024  # a layer of 4 chunks and a bit: over the 1 MiB mirror sends in one request


def events(proc: MirrorProcess) -> list[dict[str, Any]]:
    """The JSON log events the process wrote so far (its output holds nothing else but complete lines)."""
    out = []
    for line in proc.output().splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:  # the line being written right now
                continue
    return out


def named(proc: MirrorProcess, name: str) -> list[dict[str, Any]]:
    return [e for e in events(proc) if e.get("event") == name]


class HoldThenForward:
    """A proxy fault: holds the request it matches until ``release`` is set, then forwards it."""

    def __init__(self) -> None:
        self.held, self.release = threading.Event(), threading.Event()

    async def __call__(self, _request: web.Request, _info: RequestInfo) -> None:
        self.held.set()
        await asyncio.to_thread(self.release.wait, 120)


def nth_patch(n: int) -> Callable[[RequestInfo], bool]:
    seen = itertools.count(1)
    return lambda info: info.kind == "upload" and info.method == "PATCH" and next(seen) == n


def test_interval_runs_never_overlap_and_sigterm_lets_the_chunk_in_flight_finish(
        registry: Registry, registry2: Registry, tmp_path: Path) -> None:
    push_image(registry, "app", "v1", seed=1, layer_count=1)
    hold = HoldThenForward()
    state = tmp_path / "state.sqlite"
    env_extra = {"MIRROR_CHUNK_THRESHOLD": "1M"}
    with RegistryProxy(registry2, faults=[Fault(nth_patch(2), hold)]) as proxy:
        argv = ("sync", "--src", "docker", "--dest", "docker", *TLS, "--state", str(state), "--chunk-size", "512KiB",
                f"{registry.host}/app", f"{proxy.host}/m")
        with MirrorProcess(*argv, "--interval", "1s", log=tmp_path / "service.log",
                           env={**_env(state), **env_extra}) as proc:
            wait_until(lambda: len(named(proc, "run_finished")) >= 2 or proc.proc.poll() is not None, 60,
                       "two finished runs")
            # A new image with a layer uploaded in 5 chunks: a later run holds at its second chunk.
            # (gzip'd, so it is sent as it is: a registry gets plain layers compressed on the way.)
            big = gzip.compress(random.Random(5).randbytes(4 * CHUNK + 100), mtime=0)
            push_image(registry, "app", "v2", layers=[big])
            wait_until(lambda: hold.held.is_set() or proc.proc.poll() is not None, 60, "the second chunk")
            assert hold.held.is_set(), proc.output()[-3000:]
            proc.proc.send_signal(signal.SIGTERM)
            wait_until(lambda: bool(named(proc, "service_stopping")), 30, "the SIGTERM to be taken")
            hold.release.set()  # the chunk in flight reaches the registry only now, after the SIGTERM
            assert proc.wait(60) == 0, proc.output()[-3000:]
        log = events(proc)
        _assert_runs_in_turn(log)
        assert [e["outcome"] for e in named(proc, "run_finished")][-1] == "stopped"
        assert named(proc, "service_stopped"), proc.output()[-2000:]
        # The state file is intact and holds the upload at the chunk that was in flight: it was let finish.
        with sqlite3.connect(state) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        with StateStore.open(state, on_corrupt="error") as store:
            (saved,) = store.uploads()
        assert (saved.repo, saved.offset) == ("m/app", 2 * CHUNK)
        # A one-shot run resumes there: only the rest of the layer is sent.
        mark = len(proxy.requests)
        run_mirror(*argv, env={**_env(state), **env_extra})
        patched = sum(int(r.header("Content-Length") or 0) for r in proxy.requests[mark:]
                      if r.kind == "upload" and r.method == "PATCH")
        assert patched == len(big) - 2 * CHUNK
    assert Client(registry2).get_blob("m/app", "sha256:" + hashlib.sha256(big).hexdigest()) == big


def _assert_runs_in_turn(log: list[dict[str, Any]]) -> None:
    """Runs start and finish in turn (never two at once), each with its own id on all its events."""
    runs = [e for e in log if e.get("event") in ("run_started", "run_finished")]
    assert len(runs) >= 6, runs  # two runs before the new image, the run holding it, maybe more between
    ids = [e["run"] for e in runs]
    assert [e["event"] for e in runs] == ["run_started", "run_finished"] * (len(runs) // 2)
    assert ids[0::2] == ids[1::2] and len(set(ids[0::2])) == len(runs) // 2  # fresh ids, start and end match
    for finished, started in zip(runs[1::2], runs[2::2], strict=False):
        assert _when(started) >= _when(finished)
    open_run = None
    for event in log:
        if event.get("event") == "run_started":
            open_run = event["run"]
        elif event.get("event") == "run_finished":
            open_run = None
        elif event.get("event") == "image_synced":
            assert event["run"] == open_run and event["src"] and event["dst"], event
    assert sum(1 for e in log if e.get("event") == "image_synced") >= 2


def _when(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))


def _env(state: Path) -> dict[str, str]:
    return {**os.environ, "MIRROR_STATE": str(state)}


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except urllib.error.URLError:  # not listening (yet)
        return 0, b""


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_and_healthz_over_http_and_sigterm_while_sleeping(
        registry: Registry, registry2: Registry, tmp_path: Path) -> None:
    images = [push_image(registry, "app", f"v{i}", seed=10 + i, layer_count=1) for i in range(3)]
    push_image(registry2, "m/app", "v0", seed=10, layer_count=1)  # already there: skipped
    port = free_port()
    report = tmp_path / "report.jsonl"
    argv = ("sync", "--src", "docker", "--dest", "docker", *TLS, "--interval", "1h", "--listen", f"127.0.0.1:{port}",
            "--report", str(report), f"{registry.host}/app", f"{registry2.host}/m")
    with MirrorProcess(*argv, log=tmp_path / "service.log") as proc:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: proc.proc.poll() is not None or _get(f"{base}/healthz")[0] == 200, 60, "a healthy run")
        status, body = _get(f"{base}/healthz")
        health = json.loads(body)
        assert status == 200 and health["status"] == "ok", (health, proc.output()[-2000:])
        records = [json.loads(line) for line in report.read_text().splitlines()]
        outcomes = sorted(r["outcome"] for r in records)
        assert outcomes == ["copied", "copied", "skipped"]
        last = health["last_run"]
        assert last["outcome"] == "success" and last["max_age_seconds"] == 7200
        assert last["images"] == {"copied": 2, "skipped": 1, "failed": 0}
        assert last["id"] == named(proc, "run_finished")[0]["run"]
        code, text = _get(f"{base}/metrics")
        samples = _samples(text.decode())
        assert code == 200
        assert samples[("mirror_sync_images", (("outcome", "copied"),))] == 2
        assert samples[("mirror_sync_images", (("outcome", "skipped"),))] == 1
        assert samples[("mirror_sync_sent_bytes", ())] == sum(r["bytes"] for r in records) == sum(
            len(i.config) + sum(len(d) for d in i.layer_data) for i in images[1:])
        assert samples[("mirror_sync_blobs", (("outcome", "uploaded"),))] == sum(
            r["blobs"]["uploaded"] for r in records)
        assert samples[("mirror_sync_success", ())] == 1
        assert samples[("mirror_sync_runs_total", (("outcome", "success"),))] == 1
        assert samples[("mirror_sync_running", ())] == 0
        started = _when(named(proc, "run_started")[0]).timestamp()
        assert abs(samples[("mirror_sync_next_run_timestamp_seconds", ())] - (started + 3600)) < 5
        assert _get(f"{base}/nothing")[0] == 404
        # SIGTERM while sleeping: out at once, no second run.
        assert proc.stop(signal.SIGTERM, timeout=10) == 0
        assert len(named(proc, "run_started")) == 1
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)


def test_a_failed_run_is_unhealthy_and_bad_flags_are_one_line_errors(registry: Registry, tmp_path: Path) -> None:
    port = free_port()
    argv = ("sync", "--src", "docker", "--dest", "docker", *TLS, f"{registry.host}/missing", f"{registry.host}/m")
    with MirrorProcess(*argv, "--schedule", "* * * * *", "--listen", f"127.0.0.1:{port}",
                       log=tmp_path / "service.log") as proc:
        wait_until(lambda: proc.proc.poll() is not None or _get(f"http://127.0.0.1:{port}/healthz")[0] == 503, 30,
                   "the endpoint")
        health = json.loads(_get(f"http://127.0.0.1:{port}/healthz")[1])
        assert health["status"] == "waiting" and health["next_run_at"]  # a cron schedule waits for its slot
        # Another process on the same port: a one-line error, nothing runs.
        clash = run_mirror(*argv, "--interval", "1h", "--listen", f"127.0.0.1:{port}", check=False)
        assert_one_line_error(clash, f"--listen 127.0.0.1:{port}:", "address already in use")
        assert proc.stop(signal.SIGTERM, timeout=10) == 0
    with MirrorProcess(*argv, "--interval", "1h", "--listen", f"127.0.0.1:{port}", log=tmp_path / "2.log") as proc:
        wait_until(lambda: proc.proc.poll() is not None or bool(named(proc, "run_finished")), 60, "a finished run")
        status, body = _get(f"http://127.0.0.1:{port}/healthz")
        health = json.loads(body)
        assert status == 503 and health["status"] == "failing", health
        assert health["last_run"]["outcome"] == "failed" and "missing" in health["last_run"]["error"]
        samples = _samples(_get(f"http://127.0.0.1:{port}/metrics")[1].decode())
        assert samples[("mirror_sync_success", ())] == 0
        assert samples[("mirror_sync_runs_total", (("outcome", "failed"),))] == 1
        assert named(proc, "run_failed")[0]["error"] == health["last_run"]["error"]
        assert proc.stop(signal.SIGTERM, timeout=10) == 0
    for flags, needle in [
        (("--interval", "1h", "--schedule", "0 3 * * *"), "--interval and --schedule are mutually exclusive"),
        (("--schedule", "0 3 * *"), "invalid --schedule '0 3 * *': expected a 5-field cron expression"),
        (("--schedule", "61 3 * * *"), "invalid --schedule"),
        (("--interval", "0s"), "argument --interval: invalid interval '0s'"),
        (("--listen", "127.0.0.1:9"), "--listen needs --interval or --schedule"),
        (("--interval", "1h", "--listen", "9310"), "invalid --listen '9310', expected HOST:PORT"),
    ]:
        assert_one_line_error(run_mirror(*argv, *flags, check=False), needle)


def test_schedule_slots() -> None:
    every = Schedule(interval=60.0)
    assert every.first(1000.0) == 1000.0
    assert every.after(1000.0, 1010.0) == (1060.0, 0)  # on time
    assert every.after(1000.0, 1185.0) == (1240.0, 3)  # a run that outlasted 3 slots: they are skipped
    assert every.period(1000.0) == 60.0
    quarter = Schedule(cron="*/15 * * * *")
    start = datetime(2025, 3, 1, 10, 7, tzinfo=UTC).timestamp()
    slot = quarter.first(start)
    assert slot - start == 8 * 60 and quarter.period(slot) == 15 * 60
    assert quarter.after(slot, slot + 60) == (slot + 15 * 60, 0)
    assert quarter.after(slot, slot + 50 * 60) == (slot + 60 * 60, 3)
