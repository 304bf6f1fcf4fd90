"""The deployment examples in configs/ are real: they parse, have what a cluster requires, and the
command they run is mirror's own CLI, run here against the test registries."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from support.images import push_image
from support.mirror_cli import ROOT, run_mirror
from support.registry import Registry

from mirror.cli.main import build_parser

JOB = ROOT / "configs" / "kubernetes" / "sync-indexed-job.yaml"


def _load(path: Path) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert len(docs) == 1, path
    doc = docs[0]
    assert isinstance(doc, dict)
    return doc


def test_every_kubernetes_example_has_what_a_cluster_requires() -> None:
    files = sorted((ROOT / "configs" / "kubernetes").glob("*.yaml"))
    assert JOB in files
    for path in files:
        doc = _load(path)
        assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name"), path
        pod = doc["spec"]["template"]["spec"]
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            assert container["command"] == ["mirror"], path
            args = build_parser().parse_args(container["args"])  # mirror's real CLI accepts them
            assert args.func is not None
            assert {m["name"] for m in container.get("volumeMounts", [])} <= volumes, path


def test_the_indexed_job_shards_as_many_ways_as_it_has_completions() -> None:
    job = _load(JOB)
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["template"]["spec"]["restartPolicy"] == "Never"
    container = spec["template"]["spec"]["containers"][0]
    args = build_parser().parse_args(container["args"])
    assert args.shard_count == spec["completions"] == spec["parallelism"]
    env = {e["name"]: e["value"] for e in container["env"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    secret_volumes = {v["name"] for v in spec["template"]["spec"]["volumes"] if "secret" in v}
    assert mounts[str(Path(env["REGISTRY_AUTH_FILE"]).parent)] in secret_volumes  # credentials from a Secret


def test_the_indexed_job_command_syncs_the_catalog_once_over_its_pods(registry: Registry, registry2: Registry,
                                                                        tmp_path: Path) -> None:
    """Each completion index runs the Job's own arguments (paths and hosts swapped for the test's)."""
    repos = [f"team/svc{i}" for i in range(8)]
    for i, repo in enumerate(repos):
        push_image(registry, repo, "v1", seed=700 + i)
    sync_yaml = tmp_path / "sync.yaml"
    sync_yaml.write_text(yaml.safe_dump({registry.host: {"tls-verify": False, "images": {r: [] for r in repos}}}))
    job = _load(JOB)
    container = job["spec"]["template"]["spec"]["containers"][0]
    count = job["spec"]["completions"]
    copied: list[str] = []
    for index in range(count):
        work = tmp_path / f"pod{index}"
        work.mkdir()
        args = [a.replace("/config/sync.yaml", str(sync_yaml)).replace("/work", str(work))
                .replace("registry.internal.example.com", registry2.host) for a in container["args"]]
        env = {**os.environ, "JOB_COMPLETION_INDEX": str(index), "MIRROR_STATE": "none"}
        run_mirror(*args, "--dest-tls-verify=false", env=env)
        records = [json.loads(line) for line in (work / "report.jsonl").read_text().splitlines()]
        assert all(r["outcome"] == "copied" for r in records), records
        assert "mirror_sync_success 1" in (work / "mirror.prom").read_text()
        copied += [r["destination"] for r in records]
    assert sorted(copied) == sorted(f"{registry2.host}/mirror/{r.split('/')[1]}:v1" for r in repos)
