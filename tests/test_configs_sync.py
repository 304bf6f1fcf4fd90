"""The sync YAML examples in configs/sync/ load with mirror's own loader as shipped, and run against
the test registries with their example hosts swapped for the test's: skopeo.yaml as skopeo 1.9 reads
it (skopeo syncs it for real, mirror's --dry-run plans exactly that and then finds it up to date),
extensions.yaml with every extension showing its effect, and airgap.sh out to an OCI layout that
skopeo reads, then in to a registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from support import run_skopeo
from support.configs import filled
from support.images import get_manifest, list_tags, push_image, push_index
from support.mirror_cli import ROOT, assert_one_line_error, run_mirror
from support.registry import Registry, start_registry

from mirror.config.load import load_sync_config

SYNC = ROOT / "configs" / "sync"
DEST_HOST = "registry.internal.example.com"
PLATFORMS = (("linux", "amd64", None), ("linux", "arm64", "v8"), ("linux", "s390x", None))


def _example(name: str, tmp_path: Path, replacements: dict[str, str]) -> Path:
    """The example as the test runs it: each key replaced by its value, in order."""
    return filled(SYNC / name, tmp_path, replacements)


def _records(path: Path) -> dict[str, dict[str, Any]]:
    """--report records by destination."""
    return {r["destination"]: r for r in map(json.loads, path.read_text().splitlines())}


def _dry_run(config: Path, dest: str, report: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return run_mirror("--insecure-policy", "sync", "--src", "yaml", "--dest", "docker", "--dry-run", "--report",
                      str(report), "--src-tls-verify=false", "--dest-tls-verify=false", *flags, str(config), dest)


def test_the_skopeo_example_syncs_alike_with_skopeo_and_mirror(registry: Registry, registry2: Registry,
                                                                 tmp_path: Path) -> None:
    """registry.example.com:5000 is a TLS registry with a password (its cert-dir and credentials from
    the file), quay.io a plain one. skopeo syncs the file into ``registry2``; mirror's dry run into an
    empty registry plans the same images, and into skopeo's result finds every one up to date."""
    assert load_sync_config(SYNC / "skopeo.yaml").registries  # as shipped
    with start_registry(tmp_path / "private", tls=True, htpasswd=("mirror-bot", "not-change-me-7")) as private, \
            start_registry(tmp_path / "empty") as empty:
        assert private.cert_dir is not None
        for i, tag in enumerate(("r1", "r2")):
            push_image(private, "platform/base", tag, seed=10 + i)
        for i, tag in enumerate(("stable", "2024.06", "edge")):
            push_image(private, "platform/builder", tag, seed=20 + i)
        push_image(private, "platform/app", "1.4.2", seed=30)
        pinned = push_image(private, "platform/app", None, seed=31)  # by digest only
        for i, tag in enumerate(("v1.8.2", "v1.7.0", "v1.9.0-rc.0", "latest")):
            push_image(registry, "prometheus/node-exporter", tag, seed=40 + i)
        for i, tag in enumerate(("v1.9.0", "v2.0.0")):
            push_image(registry, "prometheus/pushgateway", tag, seed=50 + i)
        config = _example("skopeo.yaml", tmp_path, {
            "/etc/containers/certs.d/registry.example.com:5000": str(private.cert_dir),
            # skopeo 1.9 ignores --src-tls-verify for a YAML registry: the plain one says so itself.
            "registry.example.com:5000": private.host, "quay.io:": f"{registry.host}:\n  tls-verify: false",
            "change-me": "not-change-me-7",
            "sha256:6b4c6bc4c2a4dd06d2b3f59d4d2d5a6b9d1a0ae0c9e8a6dd0f2e44b6a0b0c8f1": pinned.digest})
        expected_tags = {"base": ["r1", "r2"], "builder": ["2024.06", "stable"], "app": ["1.4.2"],
                         "node-exporter": ["v1.7.0", "v1.8.2"], "pushgateway": ["v1.9.0"]}
        synced = run_skopeo("sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false", str(config),
                            f"{registry2.host}/mirror")
        assert "level=error" not in synced.stderr, synced.stderr  # skopeo logs and skips a repository it cannot read
        assert {repo: sorted(list_tags(registry2, f"mirror/{repo}")) for repo in expected_tags} == expected_tags
        assert get_manifest(registry2, "mirror/app", pinned.digest)[2] == pinned.digest
        wanted = {f"mirror/{repo}:{tag}" for repo, tags in expected_tags.items() for tag in tags}
        wanted.add(f"mirror/app@{pinned.digest}")
        planned = _dry_run(config, f"{empty.host}/mirror", tmp_path / "plan.jsonl")
        records = _records(tmp_path / "plan.jsonl")
        assert set(records) == {f"{empty.host}/{name}" for name in wanted}, planned.stdout
        assert {r["outcome"] for r in records.values()} == {"would-copy"}
        assert {method for method, _uri, _status in empty.access_log_requests()} <= {"GET", "HEAD"}  # writes nothing
        _dry_run(config, f"{registry2.host}/mirror", tmp_path / "again.jsonl")
        again = _records(tmp_path / "again.jsonl")
        assert set(again) == {f"{registry2.host}/{name}" for name in wanted}
        assert {r["outcome"] for r in again.values()} == {"skipped"}, again


def test_the_extensions_example_applies_every_extension(registry: Registry, registry2: Registry,
                                                         tmp_path: Path) -> None:
    """``registry`` plays registry.example.com (a catalog), ``registry2`` quay.io; the destination
    holds one image already (assume-immutable-tags) and a tag its source lost (prune)."""
    config = load_sync_config(SYNC / "extensions.yaml")  # as shipped
    example = next(r for r in config.registries if r.name == "registry.example.com")
    assert example.rate_limit is not None and example.rate_limit.requests_per_second == 20
    assert example.chunk_size == 32 << 20
    base = push_index(registry, "platform/base", "v1.0.0", platforms=PLATFORMS, seed=1)
    push_image(registry, "platform/base", "nightly-2024", seed=2)         # images-exclude-tags
    push_image(registry, "platform/base", "v1.1.0-rc1", seed=3)           # exclude-tags
    api = push_image(registry, "platform/api", "v2.0.0", seed=4)
    signature = f"sha256-{api.digest.removeprefix('sha256:')}.sig"
    push_image(registry, "platform/api", signature, seed=5)               # digest-tags
    push_image(registry, "platform/api", "v2.1.0", seed=6)
    push_image(registry, "platform/api", "v2.1.0-debug", seed=7)          # exclude-tags
    push_image(registry, "platform/api", "latest", seed=6)                # not a catalog tag
    push_image(registry, "platform/sandbox", "v0.0.1", seed=8)            # catalog exclude
    push_image(registry, "data/etl", "v0.3.1", seed=9)
    push_image(registry, "data/scratch-1", "v1.0.0", seed=10)             # catalog exclude
    push_image(registry, "other/tool", "v1.0.0", seed=11)                 # not under a prefix
    for i, tag in enumerate(("v2.49.0", "v2.53.1", "v3.0.0", "v2.54.0-rc.0")):
        push_image(registry2, "prometheus/prometheus", tag, seed=20 + i)  # semver, exclude-tags
    for i, tag in enumerate(("v0.27.0", "v0.26.0", "v0.28.0-rc.0")):
        push_image(registry2, "prometheus/alertmanager", tag, seed=30 + i)
    with start_registry(tmp_path / "dest") as dest:
        push_image(dest, "mirror/api", "v2.0.0", seed=4)                  # the same image: up to date
        push_image(dest, "mirror/api", "v1.9.9", seed=12)                 # gone from the source: prune
        path = _example("extensions.yaml", tmp_path, {"registry.example.com": registry.host,
                                                      "quay.io": registry2.host})
        target = f"{dest.host}/mirror"
        before = len(dest.access_log_requests())
        dry = _dry_run(path, target, tmp_path / "plan.jsonl")
        records = _records(tmp_path / "plan.jsonl")
        outcomes = {d.removeprefix(target + "/"): r["outcome"] for d, r in records.items()}
        assert outcomes == {
            "base-images/base:v1.0.0": "would-copy", "api:v2.1.0": "would-copy", f"api:{signature}": "would-copy",
            "api:v2.0.0": "skipped", "etl:v0.3.1": "would-copy", "prometheus:v2.53.1": "would-copy",
            "alertmanager:v0.27.0": "would-copy"}, dry.stdout
        assert f"would prune {target}/api:v1.9.9" in dry.stdout
        # assume-immutable-tags: the tag the destination has cost no manifest request there.
        assert not [r for r in dest.access_log_requests()[before:] if "/mirror/api/manifests/v2.0.0" in r[1]]
        # The real run: platforms make a smaller index of the two platforms named; prune deletes.
        run_mirror("--insecure-policy", "sync", "--src", "yaml", "--dest", "docker", "--prune=delete",
                   "--src-tls-verify=false", "--dest-tls-verify=false", str(path), target)
        index = json.loads(get_manifest(dest, "mirror/base-images/base", "v1.0.0")[0])
        assert [m["digest"] for m in index["manifests"]] == [c.digest for c in base.children[:2]]
        assert sorted(list_tags(dest, "mirror/api")) == sorted(["v2.0.0", "v2.1.0", signature])


def test_the_air_gap_pair_goes_out_to_a_layout_and_in_to_a_registry(registry: Registry, registry2: Registry,
                                                                     tmp_path: Path) -> None:
    """``airgap.sh out`` writes what airgap.yaml names to an OCI layout (skopeo reads it), ``in``
    pushes the layout to a registry; digests arrive unchanged (the multi-arch image as the smaller
    index of linux/amd64 that the layout holds)."""
    assert load_sync_config(SYNC / "airgap.yaml").registries[0].platforms == ("linux/amd64",)
    prometheus = push_index(registry, "prometheus/prometheus", "v2.53.1", platforms=PLATFORMS, seed=1)
    alertmanager = push_image(registry, "prometheus/alertmanager", "v0.27.0", seed=2)
    exporter = push_image(registry, "prometheus/node-exporter", "v1.8.2", seed=3)
    push_image(registry, "prometheus/node-exporter", "v1.8.1", seed=4)  # not named: stays outside
    config = _example("airgap.yaml", tmp_path, {"quay.io": registry.host})
    layout = tmp_path / "usb" / "images"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "MIRROR_STATE": "none",
           "PYTHONPATH": str(ROOT)}

    def airgap(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["sh", str(SYNC / "airgap.sh"), *args, "--insecure-policy"], env=env,
                              capture_output=True, text=True, timeout=120)
        assert not check or proc.returncode == 0, proc.stderr
        return proc

    airgap("out", str(config), str(layout), "--src-tls-verify=false")
    names = {"prometheus:v2.53.1", "alertmanager:v0.27.0", "node-exporter:v1.8.2"}
    index = json.loads((layout / "index.json").read_text())
    assert {m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]} == names
    small = json.loads(run_skopeo("inspect", "--raw", f"oci:{layout}:prometheus:v2.53.1").stdout)
    assert [m["digest"] for m in small["manifests"]] == [prometheus.children[0].digest]
    for image, name in ((alertmanager, "alertmanager:v0.27.0"), (exporter, "node-exporter:v1.8.2")):
        assert run_skopeo("inspect", "--raw", f"oci:{layout}:{name}").stdout.encode() == image.manifest
    target = f"{registry2.host}/mirror"
    report = tmp_path / "in.jsonl"
    dry = airgap("in", str(layout), target, "--dest-tls-verify=false", "--dry-run", "--report", str(report))
    assert set(_records(report)) == {f"{target}/{name}" for name in names}, dry.stdout
    assert {method for method, _uri, _status in registry2.access_log_requests()} <= {"GET", "HEAD"}
    airgap("in", str(layout), target, "--dest-tls-verify=false")
    assert get_manifest(registry2, "mirror/alertmanager", "v0.27.0")[2] == alertmanager.digest
    assert get_manifest(registry2, "mirror/node-exporter", "v1.8.2")[2] == exporter.digest
    arrived = json.loads(get_manifest(registry2, "mirror/prometheus", "v2.53.1")[0])
    assert arrived == small
    assert_one_line_error(airgap("sideways", "a", "b", check=False), "usage")
