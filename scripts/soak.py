"""Soak: one ``mirror sync`` of many tiny tags, with mirror's memory sampled every second.

Run through ./scripts/soak [--repos 100] [--tags 100]. Seeds ``repos`` repositories with ``tags`` tags
each (every tag its own manifest: a per-tag config, the layers shared by all; ``--shared``: the tags
of a repository share one manifest), syncs them all with one ``mirror sync --src yaml --report``
into a fresh destination registry, and samples VmRSS of the mirror process (``/proc/<pid>/status``)
together with the number of images done (lines of the report) every second.

It prints the peak RSS (VmHWM at the last sample, and the largest sample), the RSS when 50 %, 75 % and 100 % of the
images were done, the least-squares slope over the second half (MiB per 1,000 images and per
minute) and a verdict: **flat** when RSS grew by at most ``--flat-mib`` from 50 % to 100 % and the
slope extrapolates to at most that much per further 5,000 images. It also checks that the report
has one record per image and that the summary's counts match it.

``SOAK_TRACEMALLOC=DEPTH`` (an environment switch; never part of a normal run) starts mirror under
tracemalloc with ``DEPTH`` frames, takes a snapshot at 50 % and at 99 % of the images and prints
the allocations that grew between them, grouped by traceback (tracemalloc slows mirror down, so
the RSS figures of such a run are not comparable).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
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

# Runs mirror with tracemalloc on; SIGUSR1 dumps a snapshot (SOAK_TRACEMALLOC only).
TRACE_WRAPPER = """
import os, runpy, signal, sys, tracemalloc
tracemalloc.start(int(os.environ["SOAK_TRACEMALLOC"]))
out, n = os.environ["SOAK_SNAPSHOTS"], [0]
def dump(*_):
    n[0] += 1
    tracemalloc.take_snapshot().dump(os.path.join(out, f"snap{n[0]}.tm"))
    open(os.path.join(out, f"snap{n[0]}.done"), "w").close()
signal.signal(signal.SIGUSR1, dump)
sys.argv = ["mirror", *sys.argv[1:]]
runpy.run_module("mirror", run_name="__main__")
"""


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


def memory_kib(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) of ``pid`` in KiB. VmHWM, the peak RSS since exec, is what the process itself
    reached; wait4's ru_maxrss also counts the fork before exec, so a large parent inflates it."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if line.startswith(("VmRSS:", "VmHWM:")))
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])
    except (OSError, ValueError, KeyError):
        return None


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y)."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


class LineCounter:
    """Counts the complete lines of a file that another process appends to."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.lines = path, 0, 0

    def poll(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return self.lines
        end = data.rfind(b"\n") + 1
        self.lines += data.count(b"\n", 0, end)
        self.offset += end
        return self.lines


Sample = tuple[float, int, float]  # (seconds, images done, RSS MiB)


def rss_at(samples: list[Sample], done: int) -> float:
    """RSS of the first sample with at least ``done`` images done (the last sample if none)."""
    return next((rss for _, d, rss in samples if d >= done), samples[-1][2] if samples else 0.0)


def check_report(path: Path, images: int, log: str) -> list[str]:
    """Problems with the report (one record per image) and the summary line (counts as in the report)."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    problems = []
    if len(records) != images or len({r["destination"] for r in records}) != images:
        problems.append(f"report has {len(records)} records for {images} images")
    outcomes = {o: sum(1 for r in records if r["outcome"] == o) for o in ("copied", "skipped", "failed")}
    m = re.search(r"synced (\d+) images in [\d.]+s: (\d+) copied, (\d+) up to date, (\d+) failed; .* blobs "
                  r"(\d+) uploaded, (\d+) mounted, (\d+) present", log)
    if m is None:
        return [*problems, "no summary line on stderr"]
    uploaded = sum(r["blobs"]["uploaded"] for r in records)
    mounted = sum(r["blobs"]["mounted"] for r in records)
    present = sum(r["blobs"]["skipped"] for r in records)
    want = (len(records), outcomes["copied"], outcomes["skipped"], outcomes["failed"], uploaded, mounted, present)
    got = tuple(int(g) for g in m.groups())
    if got != want:
        problems.append(f"summary counts {got} != report counts {want}")
    return problems


def trace_diff(snapshots: Path, top: int) -> list[str]:
    import tracemalloc

    files = [snapshots / "snap1.tm", snapshots / "snap2.tm"]
    if not all(f.exists() for f in files):
        return ["tracemalloc: snapshots missing"]
    first, second = (tracemalloc.Snapshot.load(str(f)) for f in files)
    stats = second.compare_to(first, "traceback")
    total = sum(s.size_diff for s in stats)
    out = [f"tracemalloc 50% -> 99%: {total / 1024:+.1f} KiB in total; largest growth by traceback:"]
    for s in stats[:top]:
        out.append(f"  {s.size_diff / 1024:+.1f} KiB ({s.count_diff:+d} blocks), now {s.size / 1024:.1f} KiB")
        frames = [f for f in s.traceback if "/mirror/" in f.filename or "/tests/" in f.filename] or list(s.traceback)
        for frame in frames[-6:]:
            out.append(f"      {frame.filename.rsplit('/', 2)[-2:]!s:45} line {frame.lineno}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repos", type=int, default=100)
    ap.add_argument("--tags", type=int, default=100)
    ap.add_argument("--shared", action="store_true", help="all tags of a repository share one manifest")
    ap.add_argument("--interval", type=float, default=1.0, help="RSS sampling interval in seconds")
    ap.add_argument("--flat-mib", type=float, default=1.0,
                    help="largest RSS growth from 50%% to 100%% of the images that counts as flat")
    args = ap.parse_args()
    pypath = os.environ.get("MIRROR_PYTHONPATH") or str(ROOT)
    trace = os.environ.get("SOAK_TRACEMALLOC")
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
            report = tmp / "report.jsonl"
            mirror = [sys.executable, "-c", TRACE_WRAPPER] if trace else [sys.executable, "-m", "mirror"]
            cmd = [*mirror, "sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false", "--state=none",
                   f"--report={report}", str(yaml_path), f"{dst.host}/m"]
            env = dict(os.environ, PYTHONPATH=pypath, SOAK_SNAPSHOTS=tmp_s)
            samples: list[Sample] = []
            hwm = 0
            marks = [images // 2, images * 99 // 100] if trace else []
            counter = LineCounter(report)
            with open(tmp / "soak.log", "wb") as log:
                start = time.perf_counter()
                proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, cwd=pypath, env=env)
                while True:
                    pid, status, _usage = os.wait4(proc.pid, os.WNOHANG)
                    if pid:
                        break
                    mem, done = memory_kib(proc.pid), counter.poll()
                    if mem is not None:
                        samples.append((time.perf_counter() - start, done, mem[0] / 1024))
                        hwm = max(hwm, mem[1])
                    if marks and done >= marks[0]:
                        marks.pop(0)
                        os.kill(proc.pid, signal.SIGUSR1)
                    time.sleep(args.interval)  # the sampling period, not synchronisation
                wall = time.perf_counter() - start
            rc = os.waitstatus_to_exitcode(status)
            proc.returncode = rc
            log_text = (tmp / "soak.log").read_text()
            if rc != 0:
                print(f"mirror sync failed ({rc}):\n{log_text[-2000:]}")
                return 1
            dst_requests = len(dst.access_log_requests())
            src_requests = len(src.access_log_requests()) - src_before
            tags_at_dst = sum(len(Client(dst).list_tags(f"m/repo{r:03d}")) for r in range(args.repos))
            problems = check_report(report, images, log_text)
            diff = trace_diff(tmp, 15) if trace else []
    samples.append((wall, images, samples[-1][2] if samples else 0.0))  # the end: every image done
    peak = max(rss for _, _, rss in samples)
    r50, r75, r100 = (rss_at(samples, images * p // 100) for p in (50, 75, 100))
    half = [(d, rss) for _, d, rss in samples if d >= images // 2]
    per_k = slope(half) * 1000
    per_min = slope([(t, rss) for t, d, rss in samples if d >= images // 2]) * 60
    flat = r100 - r50 <= args.flat_mib and per_k * 5 <= args.flat_mib
    print(f"synced {tags_at_dst}/{images} tags in {wall:.1f}s ({images / wall:.0f} images/s)"
          + (" under tracemalloc" if trace else ""))
    print(f"peak RSS {hwm / 1024:.1f} MiB (VmHWM; largest of {len(samples)} samples {peak:.1f} MiB)")
    print(f"RSS at 50% {r50:.1f} MiB, 75% {r75:.1f} MiB, 100% {r100:.1f} MiB of the images; "
          f"second half {r100 - r50:+.1f} MiB, slope {per_k:+.3f} MiB per 1,000 images ({per_min:+.2f} MiB/min)")
    print(f"memory in the second half: {'FLAT' if flat else 'NOT FLAT'} (tolerance {args.flat_mib:.1f} MiB)")
    print(f"requests per image: destination {dst_requests / images:.2f}, source {src_requests / images:.2f}")
    print(f"report and summary: {'consistent' if not problems else '; '.join(problems)}")
    step = max(1, len(samples) // 20)
    print("RSS series (images done: MiB): " + " ".join(f"{d}:{rss:.0f}" for _, d, rss in samples[::step]))
    for line in diff:
        print(line)
    return 0 if tags_at_dst == images and not problems and (flat or trace) else 1


if __name__ == "__main__":
    sys.exit(main())
