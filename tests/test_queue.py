"""The distributed mode end to end: ``mirror sync --queue`` on a real PostgreSQL cluster (initdb, per
session) with real ``mirror worker`` processes and real registries.

The destination sits behind the in-process proxy (``support.proxy``) only to count the bytes each
upload carried; what was committed, and how many requests were made, is read from the destination
registry's own access log.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import yaml
from aiohttp import web
from support.images import Client, list_tags, push_image
from support.mirror_cli import ROOT, assert_one_line_error, run_mirror
from support.postgres import Postgres
from support.proxy import Fault, RegistryProxy
from support.registry import Registry, start_registry, wait_until
from support.workers import mirror_env, run_workers, scalar

sys.path.insert(0, str(ROOT / "scripts"))

from chaos import Catalog, seed_catalog, sync_yaml, verify

MiB = 1 << 20
WORKER_ARGS = ("--dest-tls-verify=false", "--lease", "3s", "--jobs", "4")


def _sync_cmd(yaml_path: Path, dest: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mirror", "--log-format", "json", "sync", "--all", "--src", "yaml", "--dest",
            "docker", "--dest-tls-verify=false", *extra, str(yaml_path), f"{dest}/m"]


def _commits(reg: Registry) -> collections.Counter[str]:
    """Blob uploads the registry committed (closing PUT answered 201), by digest."""
    out: collections.Counter[str] = collections.Counter()
    for method, uri, status in reg.access_log_requests():
        if method == "PUT" and "/blobs/uploads/" in uri and status == 201:
            out[urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query).get("digest", ["?"])[0]] += 1
        elif method == "POST" and "/blobs/uploads/" in uri and status == 201 and "digest=" in uri:
            out[urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)["digest"][0]] += 1
    return out


def _verify_all(src: Registry, dst: Registry, catalog: Catalog) -> None:
    verdict = verify(src, dst, catalog)
    assert verdict.verified == len(catalog.images), verdict.failed[:5]
    assert verdict.corrupt_blobs == 0 and verdict.corrupt_manifests == 0


def test_three_workers_share_a_catalog_and_move_each_blob_once(
        tmp_path: Path, postgres: Postgres, queue_url: str) -> None:
    with start_registry(tmp_path / "src") as src, start_registry(tmp_path / "dst") as dst, \
            start_registry(tmp_path / "single") as single, RegistryProxy(dst) as proxy:
        catalog = seed_catalog(src, 5, 3, 128, layer_kib=64)
        yaml_path = sync_yaml(src.host, catalog, tmp_path / "sync.yaml")

        # The reference: one process, no queue.
        subprocess.run(_sync_cmd(yaml_path, single.host), check=True, capture_output=True, env=mirror_env(),
                       cwd=ROOT, timeout=300)
        single_requests = len(single.access_log_requests())

        with run_workers(postgres, queue_url, 3, tmp_path / "workers", *WORKER_ARGS) as workers:
            report = tmp_path / "report.jsonl"
            proc = subprocess.run(_sync_cmd(yaml_path, proxy.host, "--queue", queue_url, "--report", str(report)),
                                  capture_output=True, text=True, env=mirror_env(), cwd=ROOT, timeout=300)
            assert proc.returncode == 0, proc.stderr[-3000:] + workers.all_logs()[-3000:]
        assert [p.returncode for p in workers.procs] == [0, 0, 0]  # SIGTERM: a clean stop
        queue_requests = len(dst.access_log_requests())
        commits = _commits(dst)
        _verify_all(src, dst, catalog)

    records = [json.loads(line) for line in report.read_text().splitlines()]
    assert len(records) == len(catalog.images)
    assert {r["outcome"] for r in records} == {"copied"}
    # Every blob committed once in the destination registry, and its bytes sent once.
    assert commits and max(commits.values()) == 1, commits.most_common(3)
    assert proxy.upload_bytes <= catalog.unique_bytes
    assert proxy.abandoned_upload_bytes() == 0
    # The work was shared, and sharing it cost few extra requests.
    per_worker = scalar(postgres, queue_url, "SELECT count(DISTINCT worker) FROM mirror_units")
    assert int(per_worker) >= 2, per_worker
    print(f"destination requests: queue {queue_requests}, single process {single_requests}; "
          f"uploaded {proxy.upload_bytes} of {catalog.unique_bytes} unique bytes")
    assert queue_requests <= single_requests * 1.10, (queue_requests, single_requests)
    progress = scalar(postgres, queue_url, "SELECT state, planned, done, failed, queued, running FROM mirror_progress")
    assert progress == f"done|{len(catalog.images)}|{len(catalog.images)}|0|0|0"


def test_a_worker_killed_mid_upload_is_taken_over_and_its_upload_resumed(
        tmp_path: Path, postgres: Postgres, queue_url: str) -> None:
    """SIGKILL the worker uploading the 128 MiB blob between two chunks: after the lease another
    worker takes the image over and resumes the chunked upload from the session in PostgreSQL."""
    with start_registry(tmp_path / "src") as src, start_registry(tmp_path / "dst") as dst, RegistryProxy(dst) as proxy:
        catalog = seed_catalog(src, 2, 2, 128, layer_kib=64)
        big = catalog.big_digest
        assert big is not None
        yaml_path = sync_yaml(src.host, catalog, tmp_path / "sync.yaml")

        held, released = threading.Event(), threading.Event()
        patches = 0

        async def hold_fourth_chunk(_request: web.Request, _info: object) -> web.StreamResponse | None:
            """The 4th chunk's PATCH is held before it reaches the registry (three chunks acknowledged and
            saved): the worker is killed between chunks. A dead client's request is never forwarded."""
            nonlocal patches
            patches += 1
            if patches != 4:
                return None
            held.set()
            for _ in range(1200):  # until the test has killed the worker (a minute at most)
                if released.is_set():
                    break
                await asyncio.sleep(0.05)
            return web.Response(status=503)

        proxy.add_fault(Fault(Fault.match(kind="upload", method="PATCH", path="/m/big/"), hold_fourth_chunk,
                              times=None))
        env = {"MIRROR_CHUNK_SIZE": "8M"}
        with run_workers(postgres, queue_url, 3, tmp_path / "workers", *WORKER_ARGS, env=env) as workers:
            coordinator = subprocess.Popen(_sync_cmd(yaml_path, proxy.host, "--queue", queue_url),
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=mirror_env(), cwd=ROOT)
            try:
                wait_until(held.is_set, 120, "the 4th chunk of the large blob", interval=0.05)
                saved = scalar(postgres, queue_url, f"SELECT \"offset\" FROM mirror_uploads WHERE digest = '{big}'")
                assert int(saved) == 24 * MiB, saved
                owner = scalar(postgres, queue_url, "SELECT worker FROM mirror_units WHERE destination LIKE '%/big:%'")
                pid = int(owner.rsplit(":", 1)[1])
                killed = next(i for i, p in enumerate(workers.procs) if p.pid == pid)
                os.kill(pid, signal.SIGKILL)
                workers.procs[killed].wait(timeout=30)
                released.set()
                _out, err = coordinator.communicate(timeout=180)
            finally:
                released.set()
                if coordinator.poll() is None:
                    coordinator.kill()
            assert coordinator.returncode == 0, err[-3000:]
            taken_over = scalar(postgres, queue_url,
                                "SELECT attempts, worker FROM mirror_units WHERE destination LIKE '%/big:%'")
        commits = _commits(dst)
        _verify_all(src, dst, catalog)

    attempts, worker = taken_over.split("|")
    assert attempts == "2" and worker != owner, taken_over
    others = "\n".join(workers.log_text(i) for i in range(3) if i != killed)
    resumed = [json.loads(line) for line in others.splitlines() if '"upload_resumed"' in line]
    assert resumed and resumed[0]["offset"] >= 24 * MiB, resumed
    assert commits[big] == 1
    ratio = proxy.upload_bytes / catalog.unique_bytes
    print(f"bytes sent {proxy.upload_bytes} for {catalog.unique_bytes} unique ({ratio:.3f}x)")
    assert proxy.upload_bytes <= 1.5 * catalog.unique_bytes


def _yaml(path: Path, host: str, images: dict[str, list[str]], **extra: object) -> Path:
    path.write_text(yaml.safe_dump({host: {"tls-verify": False, "images": images, **extra}}))
    return path


def test_a_poison_image_fails_with_its_reason_after_the_retry_budget_and_the_rest_syncs(
        tmp_path: Path, postgres: Postgres, queue_url: str, registry: Registry, registry2: Registry) -> None:
    for tag in ("a", "b"):
        push_image(registry, "lib/app", tag, seed=ord(tag))
    sync_file = _yaml(tmp_path / "sync.yaml", registry.host, {"lib/app": ["a", "gone", "b"]})
    report = tmp_path / "report.jsonl"
    with run_workers(postgres, queue_url, 2, tmp_path / "workers", *WORKER_ARGS):
        proc = subprocess.run(
            [sys.executable, "-m", "mirror", "sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false",
             "--keep-going", "--max-attempts", "3", "--queue", queue_url, "--report", str(report), str(sync_file),
             registry2.host], capture_output=True, text=True, env=mirror_env(), cwd=ROOT, timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    records = {r["source"].rsplit(":", 1)[1]: r for r in map(json.loads, report.read_text().splitlines())}
    assert {t: r["outcome"] for t, r in records.items()} == {"a": "copied", "gone": "failed", "b": "copied"}
    assert "manifest unknown" in records["gone"]["reason"]
    assert sorted(list_tags(registry2, "app")) == ["a", "b"]
    row = scalar(postgres, queue_url, "SELECT status, attempts FROM mirror_units WHERE destination LIKE '%:gone'")
    assert row == "failed|3"


def test_without_keep_going_the_first_failure_ends_the_run_with_one_line(
        tmp_path: Path, postgres: Postgres, queue_url: str, registry: Registry, registry2: Registry) -> None:
    sync_file = _yaml(tmp_path / "sync.yaml", registry.host, {"lib/app": ["gone"]})
    with run_workers(postgres, queue_url, 1, tmp_path / "workers", *WORKER_ARGS):
        proc = run_mirror("sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false", "--max-attempts",
                          "1", "--queue", queue_url, str(sync_file), registry2.host, check=False)
    assert_one_line_error(proc, "gone", "manifest unknown")
    assert proc.returncode == 1
    assert scalar(postgres, queue_url, "SELECT state FROM mirror_runs") == "failed"


def test_secrets_stay_out_of_the_queue(tmp_path: Path, postgres: Postgres, queue_url: str,
                                       htpasswd_registry: Registry, token_registry: Registry) -> None:
    """Source credentials come from the YAML (by registry name), destination credentials from flags:
    the coordinator and every worker hold their own; the database holds neither."""
    src, dst = htpasswd_registry, token_registry
    assert src.username and src.password and dst.username and dst.password
    push_image(src, "lib/app", "v1", seed=7)
    creds = {"credentials": {"username": src.username, "password": src.password}}
    sync_file = _yaml(tmp_path / "sync.yaml", src.host, {"lib/app": ["v1"]}, **creds)
    dest_creds = f"--dest-creds={dst.username}:{dst.password}"
    with run_workers(postgres, queue_url, 2, tmp_path / "workers", *WORKER_ARGS, dest_creds,
                     "--credentials-from", str(sync_file)):
        run_mirror("sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false", dest_creds,
                   "--queue", queue_url, str(sync_file), dst.host)
    assert Client(dst).list_tags("app") == ["v1"]
    dump = postgres.dump(queue_url)
    assert "lib/app" in dump and src.host in dump  # the dump is the real thing
    for secret in (src.password, dst.password):
        assert secret not in dump
    args = scalar(postgres, queue_url, "SELECT DISTINCT jsonb_object_keys(args) FROM procrastinate_jobs ORDER BY 1")
    assert args.split() in ([], ["run", "seq"])  # finished jobs are deleted; any left carry only ids
