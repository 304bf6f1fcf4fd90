"""The distributed mode end to end: ``mirror sync --queue`` on a real PostgreSQL cluster (initdb, per
session) with real ``mirror worker`` processes and real registries.

The destination sits behind the in-process proxy (``support.proxy``) only to count the bytes each
upload carried; what was committed, and how many requests were made, is read from the destination
registry's own access log.
"""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import sys
import urllib.parse
from pathlib import Path

from support.mirror_cli import ROOT, assert_one_line_error, run_mirror
from support.postgres import Postgres
from support.proxy import RegistryProxy
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
