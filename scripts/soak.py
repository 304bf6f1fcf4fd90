"""Soak: one ``mirror sync`` of many tiny tags, with mirror's memory sampled every second.

Run through ./scripts/soak [--repos 100] [--tags 100]. Seeds ``repos`` repositories with ``tags`` tags
each (every tag its own manifest: a per-tag config, the layers shared by all), syncs them all with
one ``mirror sync --src yaml`` into a fresh destination registry, samples VmRSS of the mirror
process from ``/proc/<pid>/status`` every second, and prints the peak RSS (and wait4's ru_maxrss),
the RSS slope over the second half of the run (least squares, MiB per minute, and the change from
the middle to the end), wall time, images per second and requests per image at each registry.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.images import Client, make_layer  # noqa: E402
from tests.support.registry import Registry, start_registry  # noqa: E402

WORK_DIR = os.environ.get("SOAK_DIR") or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def seed(reg: Registry, repos: int, tags: int, workers: int = 8, shared: bool = False) -> int:
    """``repos`` x ``tags`` images; two layers shared by all, one config blob per tag (``shared``: one
    config, so one manifest, per repository, which all its tags point at)."""
    base, app = make_layer(1, 512), make_layer(2, 256)
    local = threading.local()

    def client() -> Client:
        if not hasattr(local, "c"):
            local.c = Client(reg)
        c: Client = local.c
        return c

    def one_repo(r: int) -> int:
        c = client()
        repo = f"soak/repo{r:03d}"
        layers = []
        for data in (base, app):
            layers.append({"mediaType": LAYER, "digest": c.push_blob(repo, data), "size": len(data)})
        digest = ""
        for t in range(tags):
            config = json.dumps({"architecture": "amd64", "os": "linux", "created": f"{r}-{0 if shared else t}",
                                 "rootfs": {"type": "layers", "diff_ids": []}, "config": {}}).encode()
            digest = c.push_blob(repo, config) if not shared or t == 0 else digest
            manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                   "config": {"mediaType": OCI_CONFIG, "digest": digest, "size": len(config)},
                                   "layers": layers}).encode()
            c.put_manifest(repo, f"t{t:04d}", manifest, OCI_MANIFEST)
        return tags

    with ThreadPoolExecutor(workers) as pool:
        return sum(pool.map(one_repo, range(repos)))


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, y)."""
    n = len(points)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (y - my) for t, y in points) / var if var else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repos", type=int, default=100)
    ap.add_argument("--tags", type=int, default=100)
    ap.add_argument("--shared", action="store_true", help="all tags of a repository share one manifest")
    ap.add_argument("--interval", type=float, default=1.0, help="RSS sampling interval in seconds")
    args = ap.parse_args()
    pypath = os.environ.get("MIRROR_PYTHONPATH") or str(ROOT)
    with tempfile.TemporaryDirectory(prefix="mirror-soak-", dir=WORK_DIR) as tmp_s:
        tmp = Path(tmp_s)
        with start_registry(tmp / "src") as src, start_registry(tmp / "dst") as dst:
            t0 = time.perf_counter()
            images = seed(src, args.repos, args.tags, shared=args.shared)
            print(f"seeded {images} tags in {args.repos} repositories in {time.perf_counter() - t0:.1f}s", flush=True)
            import yaml

            yaml_path = tmp / "soak.yaml"
            yaml_path.write_text(yaml.safe_dump({src.host: {"tls-verify": False, "images": {
                f"soak/repo{r:03d}": [] for r in range(args.repos)}}}))
            src_before = len(src.access_log_requests())
            cmd = [sys.executable, "-m", "mirror", "sync", "--src", "yaml", "--dest", "docker",
                   "--dest-tls-verify=false", "--state=none", str(yaml_path), f"{dst.host}/m"]
            samples: list[tuple[float, float]] = []
            with open(tmp / "soak.log", "wb") as log:
                start = time.perf_counter()
                proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, cwd=pypath,
                                        env=dict(os.environ, PYTHONPATH=pypath))
                while True:
                    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                    if pid:
                        break
                    kib = rss_kib(proc.pid)
                    if kib is not None:
                        samples.append((time.perf_counter() - start, kib / 1024))
                    time.sleep(args.interval)  # the sampling period, not synchronisation
                wall = time.perf_counter() - start
            rc = os.waitstatus_to_exitcode(status)
            proc.returncode = rc
            if rc != 0:
                print(f"mirror sync failed ({rc}):\n{(tmp / 'soak.log').read_text()[-2000:]}")
                return 1
            dst_requests = len(dst.access_log_requests())
            src_requests = len(src.access_log_requests()) - src_before
            tags_at_dst = sum(len(Client(dst).list_tags(f"m/repo{r:03d}")) for r in range(args.repos))
    half = [p for p in samples if p[0] >= wall / 2]
    peak = max((y for _, y in samples), default=0.0)
    mid = half[0][1] if half else 0.0
    end = half[-1][1] if half else 0.0
    print(f"synced {tags_at_dst}/{images} tags in {wall:.1f}s ({images / wall:.0f} images/s)")
    print(f"peak RSS {peak:.1f} MiB sampled ({usage.ru_maxrss / 1024:.1f} MiB ru_maxrss), {len(samples)} samples")
    print(f"second half: RSS {mid:.1f} -> {end:.1f} MiB ({end - mid:+.1f} MiB), slope "
          f"{slope(half) * 60:+.2f} MiB/min")
    print(f"requests per image: destination {dst_requests / images:.2f}, source {src_requests / images:.2f}")
    series = " ".join(f"{y:.0f}" for _, y in samples[:: max(1, len(samples) // 20)])
    print(f"RSS series (MiB): {series}")
    return 0 if tags_at_dst == images else 1


if __name__ == "__main__":
    sys.exit(main())
