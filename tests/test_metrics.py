"""``sync --metrics``: Prometheus text format, read back by prometheus_client's own parser."""

from __future__ import annotations

import json
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from support.images import push_image
from support.mirror_cli import run_mirror
from support.registry import Registry


def _samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_file_reports_the_run(registry: Registry, registry2: Registry, tmp_path: Path) -> None:
    images = [push_image(registry, "metrics/app", f"v{i}", seed=90 + i) for i in range(3)]
    config = tmp_path / "sync.yaml"
    config.write_text(json.dumps({registry.host: {"tls-verify": False, "images": {
        "metrics/app": ["v0", "v1", "v2", "missing"]}}}))
    metrics = tmp_path / "mirror.prom"
    args = ("sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false", "--metrics", str(metrics),
            str(config), f"{registry2.host}/m")
    digestfile = tmp_path / "digests"
    partial = run_mirror(*args, "--keep-going", "--digestfile", str(digestfile), check=False)
    assert partial.returncode == 3
    # --digestfile: one "DIGEST DESTINATION" line per image synced (the failed one has none).
    assert sorted(digestfile.read_text().splitlines()) == sorted(
        f"{image.digest} {registry2.host}/m/app:v{i}" for i, image in enumerate(images))
    first = _samples(metrics)
    assert first[("mirror_sync_images", (("outcome", "copied"),))] == 3
    assert first[("mirror_sync_images", (("outcome", "failed"),))] == 1
    assert first[("mirror_sync_success", ())] == 0
    assert first[("mirror_sync_sent_bytes", ())] == sum(
        len(i.config) + sum(len(d) for d in i.layer_data) for i in images)
    # Without the broken tag: everything up to date, success.
    config.write_text(json.dumps({registry.host: {"tls-verify": False, "images": {"metrics/app": ["v0", "v1", "v2"]}}}))
    started = time.time()
    run_mirror(*args)
    second = _samples(metrics)
    assert second[("mirror_sync_images", (("outcome", "skipped"),))] == 3
    assert second[("mirror_sync_success", ())] == 1
    stamp = ("mirror_sync_last_run_timestamp_seconds", ())
    assert second[stamp] >= first[stamp]
    assert started - 1 <= second[stamp] <= time.time() + 1  # to the second: alerts compute ages from it
    # A run that stops on an error (no --keep-going) still leaves a file saying so.
    config.write_text(json.dumps({registry.host: {"tls-verify": False, "images": {"metrics/app": ["missing"]}}}))
    assert run_mirror(*args, check=False).returncode == 2  # the image does not exist
    assert _samples(metrics)[("mirror_sync_success", ())] == 0
    assert not [p for p in tmp_path.iterdir() if ".mirror-tmp" in p.name]
