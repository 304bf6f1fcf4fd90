"""mirror vs skopeo on the same deterministic workloads, same run, same machine.

Run through ./scripts/bench [--workloads small,mixed,large] [--reps N]. For each workload it starts a
source registry, seeds it, then per repetition starts a fresh destination registry and times:
the first copy (mirror sync vs skopeo sync; the large one: mirror copy vs skopeo copy) and an
immediate no-op resync. It prints wall time and CPU seconds (medians), peak RSS, requests per image from the
destination registry's access log, and the mirror/skopeo ratio.

``--baseline REV`` also times mirror as of git revision REV (checked out into a temporary worktree,
run with this venv) in the same run, so a change is measured before/after on the same registries:
rows then show ``base`` (REV) next to ``mirror`` (the working tree) and their ratio.
``--tools`` picks which tools run (default ``skopeo,mirror``, plus ``base`` with ``--baseline``).

``--latency-ms D`` puts a TCP proxy adding D ms each way (scripts/latencyproxy.py: every chunk, and
one round trip per new connection) in front of the source registry for both tools, as a remote
registry would be. The ``--assume-immutable-tags`` resync row compares mirror's resync with that flag
against skopeo's ordinary resync: skopeo has no such flag, so that is what a skopeo user runs.
Rows of ``many`` print issue #12's targets next to the ratio (PASS/MISS): on loopback (no
``--latency-ms``) first copy >= 5x (mirror <= 0.2x skopeo's time) and no-op >= 2.5x (<= 0.4x); at
``--latency-ms 25`` first copy >= 15x, no-op >= 30x, immutable-tags resync >= 100x.

``--startup`` times start-up-bound commands instead (scripts/benchstartup.py): ``--version``,
``--help``, ``inspect``, a ``copy`` of an image already present, and ``copy --pairs`` against a
shell loop of ``skopeo copy``.

``--floor`` measures what bounds the loopback ``many`` rows instead (scripts/benchfloor.py): the CPU
each registry spends on each tool's sync, the wall time those alone impose on this machine's cores,
and a bare aiohttp client's CPU per request for the no-op's HEADs.

``--workers 1,2,4`` times the distributed mode instead (``mirror sync --queue`` with that many
``mirror worker`` processes, next to ``mirror sync`` without a queue): see scripts/benchqueue.py.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from latencyproxy import start_proxy  # noqa: E402

from tests.support.images import make_layer, push_image, push_index  # noqa: E402
from tests.support.registry import Registry, start_registry  # noqa: E402

MIRROR = [sys.executable, "-m", "mirror"]
SKOPEO = ["skopeo", "--insecure-policy"]
GiB = 1 << 30
# Registry storage on tmpfs when available, so the disk does not hide what the tools themselves cost.
BENCH_DIR = os.environ.get("BENCH_DIR") or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
TOOL_ORDER = tuple(os.environ.get("BENCH_ORDER", "skopeo,mirror").split(","))
# mirror as an installed copy runs, with its bytecode cached: PYTHONDONTWRITEBYTECODE=1 (set in some
# shells) would make every run of this source tree recompile mirror's modules (about half a second).
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


@dataclass
class Run:
    wall: float
    rss_mib: float
    requests: int
    cpu: float = 0.0  # user + system seconds of the tool's process tree (less noisy than wall on a shared machine)


@dataclass
class Workload:
    name: str
    images: int
    seed: Callable[[Registry], None]
    mirror_cmd: Callable[[Registry, Registry, Path], list[str]]
    skopeo_cmd: Callable[[Registry, Registry, Path], list[str]]
    resync_extra: list[list[str]] = field(default_factory=list)


def timed(cmd: list[str], cwd: Path = ROOT) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one command."""
    wall, rss, _cpu = timed_cpu(cmd, cwd)
    return wall, rss


def timed_cpu(cmd: list[str], cwd: Path = ROOT) -> tuple[float, float, float]:
    """(wall seconds, peak RSS MiB, CPU seconds) of one command. The peak comes from GNU time's %M for
    the command itself (wait4's ru_maxrss would include this process's memory at fork time)."""
    with tempfile.TemporaryFile() as errfile, tempfile.NamedTemporaryFile("r") as rssfile:
        start = time.perf_counter()
        proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rssfile.name, *cmd],
                                stdout=subprocess.DEVNULL, stderr=errfile, cwd=cwd, env=CHILD_ENV)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        errfile.seek(0)
        err = errfile.read().decode(errors="replace")
        rss_kib = int(rssfile.read().strip().splitlines()[-1] or 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}\n{err[-2000:]}")
    if os.environ.get("BENCH_VERBOSE"):
        print(f"   {wall:.2f}s wall, {usage.ru_utime + usage.ru_stime:.2f}s cpu: {' '.join(cmd[:4])}", flush=True)
    return wall, rss_kib / 1024, usage.ru_utime + usage.ru_stime


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its descendants, living or exited (utime, stime, cutime, cstime)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = " ".join(p.read_text() for p in Path(f"/proc/{pid}/task").glob("*/children")).split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK") + sum(tree_cpu(int(c)) for c in children)


def push_big_blob(reg: Registry, repo: str, size: int) -> tuple[str, int]:
    """Stream ``size`` pseudo-random bytes into ``repo`` as one blob without holding them in memory."""
    rng = random.Random(1)  # incompressible, like a real gzip'd layer (and deterministic)
    h = hashlib.sha256()

    def chunks() -> Iterator[bytes]:
        sent = 0
        n = 0
        while sent < size:
            piece = rng.randbytes(min(1 << 20, size - sent))
            h.update(piece)
            sent += len(piece)
            n += 1
            yield piece

    conn = http.client.HTTPConnection(reg.host, timeout=600)
    conn.request("POST", f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"})
    resp = conn.getresponse()
    resp.read()
    location = resp.getheader("Location") or ""
    path = location.split(reg.host, 1)[-1]
    conn.request("PATCH", path, body=chunks(), encode_chunked=True,
                 headers={"Content-Type": "application/octet-stream"})
    resp = conn.getresponse()
    resp.read()
    path = (resp.getheader("Location") or "").split(reg.host, 1)[-1]
    digest = "sha256:" + h.hexdigest()
    sep = "&" if "?" in path else "?"
    conn.request("PUT", f"{path}{sep}digest={digest}", headers={"Content-Length": "0"})
    resp = conn.getresponse()
    resp.read()
    if resp.status != 201:
        raise SystemExit(f"seeding big blob failed: {resp.status}")
    return digest, size


def seed_large(reg: Registry) -> None:
    digest, size = push_big_blob(reg, "big/layer", GiB)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [digest]},
                         "config": {}}).encode()
    from tests.support.images import Client

    client = Client(reg)
    config_digest = client.push_blob("big/layer", config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size}],
    }).encode()
    client.put_manifest("big/layer", "v1", manifest, "application/vnd.oci.image.manifest.v1+json")


def seed_small(reg: Registry, repos: int = 200, tags: int = 10) -> None:
    """Two tiny layers per image: a base shared by every image and an app layer shared by the tags of
    one repository; every tag has its own config (so its own manifest digest)."""
    from tests.support.images import Client

    client = Client(reg)
    base = make_layer(10_000, 512)
    for r in range(repos):
        app = make_layer(r, 256)
        for t in range(tags):
            push_image(reg, f"small/repo{r:03d}", f"v{t}", layers=[base, app], seed=r * 100 + t, client=client)


def seed_mixed(reg: Registry, repos: int = 20, tags: int = 5) -> None:
    bases = [make_layer(20_000 + i, (1 + i) * (1 << 20)) for i in range(3)]
    for r in range(repos):
        for t in range(tags):
            seed = 30_000 + r * 10 + t
            if r % 5 == 0 and t == 0:
                push_index(reg, f"mixed/repo{r:02d}", f"v{t}", seed=seed)
                continue
            own = make_layer(seed, (1 + (seed % 8)) * (1 << 20))
            push_image(reg, f"mixed/repo{r:02d}", f"v{t}", layers=[bases[r % 3], own], seed=seed)


def sync_yaml(src: Registry, prefix: str, path: Path) -> Path:
    import yaml

    repos = sorted({p.parent.name + "/" + p.name
                    for p in (src.storage / "docker/registry/v2/repositories").glob(f"{prefix}/*")})
    path.write_text(yaml.safe_dump({src.host: {"tls-verify": False, "images": {r: [] for r in repos}}}))
    return path


def mirror_sync(prefix: str) -> Callable[[Registry, Registry, Path], list[str]]:
    return lambda src, dst, tmp: [*MIRROR, "sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false",
                                  str(sync_yaml(src, prefix, tmp / "sync.yaml")), f"{dst.host}/m"]


def skopeo_sync(prefix: str) -> Callable[[Registry, Registry, Path], list[str]]:
    return lambda src, dst, tmp: [*SKOPEO, "sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false",
                                  str(sync_yaml(src, prefix, tmp / "sync.yaml")), f"{dst.host}/m"]


WORKLOADS = {
    "many": Workload("many tiny images (40 repos x 5 tags)", 200, lambda reg: seed_small(reg, repos=40, tags=5),
                     mirror_sync("small"), skopeo_sync("small"), resync_extra=[["--assume-immutable-tags"]]),
    "small": Workload("many small images (200 repos x 10 tags)", 2000, seed_small, mirror_sync("small"),
                      skopeo_sync("small"), resync_extra=[["--assume-immutable-tags"]]),
    "mixed": Workload("mixed (20 repos x 5 tags, 1-8 MiB layers, indexes)", 100, seed_mixed, mirror_sync("mixed"),
                      skopeo_sync("mixed")),
    "large": Workload("one image with a 1 GiB layer", 1, seed_large,
                      lambda s, d, _t: [*MIRROR, "copy", "--quiet", "--src-tls-verify=false",
                                        "--dest-tls-verify=false", f"docker://{s.host}/big/layer:v1",
                                        f"docker://{d.host}/m/big/layer:v1"],
                      lambda s, d, _t: [*SKOPEO, "copy", "--quiet", "--src-tls-verify=false",
                                        "--dest-tls-verify=false", f"docker://{s.host}/big/layer:v1",
                                        f"docker://{d.host}/m/big/layer:v1"]),
}


def measure(w: Workload, src: Registry, tmp: Path, reps: range, tool: str,
            extra_resync: list[str] | None = None, cwd: Path = ROOT) -> tuple[list[Run], list[Run]]:
    """``tool``: skopeo, or mirror run from ``cwd`` (``python -m mirror`` imports the tree it runs in)."""
    first: list[Run] = []
    resync: list[Run] = []
    for rep in reps:
        with start_registry(tmp / f"{tool}-dst-{rep}-{len(extra_resync or [])}") as dst:
            build = w.skopeo_cmd if tool == "skopeo" else w.mirror_cmd
            cmd = build(src, dst, tmp)
            wall, rss, cpu = timed_cpu(cmd, cwd)
            first.append(Run(wall, rss, len(dst.access_log_requests()), cpu))
            before = len(dst.access_log_requests())
            again = cmd + (extra_resync or []) if extra_resync else cmd
            if extra_resync:
                again = cmd[:cmd.index("sync") + 1] + extra_resync + cmd[cmd.index("sync") + 1:]
            wall, rss, cpu = timed_cpu(again, cwd)
            resync.append(Run(wall, rss, len(dst.access_log_requests()) - before, cpu))
    return first, resync


def summary(runs: list[Run], images: int) -> str:
    wall = statistics.median(r.wall for r in runs)
    rss = max(r.rss_mib for r in runs)
    req = statistics.median(r.requests for r in runs) / max(1, images)
    cpu = statistics.median(r.cpu for r in runs)
    return f"{wall:8.2f}s  cpu {cpu:6.2f}s  {rss:7.1f} MiB  {req:6.2f} req/img"


@contextmanager
def baseline_tree(rev: str | None) -> Iterator[Path | None]:
    """A temporary git worktree of ``rev`` (removed afterwards), or None."""
    if rev is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="mirror-bench-base-") as tmpdir:
        tree = Path(tmpdir) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), rev], cwd=ROOT, check=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)


#: Issue #12's targets on ``many`` (40 x 5), as skopeo/mirror wall-time ratios, by one-way latency (ms).
TARGETS: dict[float, dict[str, float]] = {
    0: {"first copy": 5.0, "no-op resync": 2.5},  # mirror <= 0.2x and <= 0.4x skopeo's time
    25: {"first copy": 15.0, "no-op resync": 30.0, "resync --assume-immutable-tags": 100.0},
}


def target_for(key: str, latency_ms: float, label: str) -> float | None:
    return TARGETS.get(latency_ms, {}).get(label) if key == "many" else None


def ratio_row(key: str, label: str, results: dict[str, tuple[list[Run], list[Run]]], i: int, images: int,
              target: float | None = None) -> str:
    tools = list(results)
    parts = " | ".join(f"{t} {summary(results[t][i], images)}" for t in tools)
    walls = {t: statistics.median(r.wall for r in results[t][i]) for t in tools}
    ratios = []
    if "skopeo" in walls and "mirror" in walls:
        ratio = walls["skopeo"] / walls["mirror"]
        ratios.append(f"skopeo/mirror {ratio:5.2f}x")
        if target is not None:
            ratios.append(f"target >= {target:g}x {'PASS' if ratio >= target else 'MISS'}")
    if "base" in walls and "mirror" in walls:
        ratios.append(f"base/mirror {walls['base'] / walls['mirror']:5.2f}x")
    return f"{key:6s} {label:13s} {parts} | {', '.join(ratios)}"


@contextmanager
def source_view(src: Registry, latency_ms: float) -> Iterator[Registry]:
    """The source registry as the tools see it: itself, or (``latency_ms``) behind a latency proxy."""
    if not latency_ms:
        yield src
        return
    with start_proxy("127.0.0.1", src.port, latency_ms / 1000) as proxy:
        yield replace(src, host=proxy.host, url=f"http://{proxy.host}")
        if proxy.stats.errors:
            print(f"   latency proxy errors: {proxy.stats.errors[:3]}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", help="comma-separated (default many,small,mixed,large; with --workers: mixed)")
    parser.add_argument("--reps", type=int, help="repetitions (default 3; --startup: 10)")
    parser.add_argument("--baseline", metavar="REV", help="also time mirror at this git revision (same run)")
    parser.add_argument("--tools", help="comma-separated: skopeo, mirror, base (default: all that apply)")
    parser.add_argument("--workers", metavar="LIST",
                        help="worker counts (1,2,4): time mirror sync --queue with that many mirror workers")
    parser.add_argument("--worker-jobs", type=int, metavar="N", help="with --workers: mirror worker --jobs N")
    parser.add_argument("--latency-ms", type=float, default=0.0, metavar="D",
                        help="a TCP proxy adding D ms each way in front of the source registry (both tools)")
    parser.add_argument("--startup", action="store_true", help="time start-up-bound commands (benchstartup.py)")
    parser.add_argument("--pairs", type=int, default=10, metavar="N", help="with --startup: pairs for copy --pairs")
    parser.add_argument("--floor", action="store_true",
                        help="the registries' CPU floor under a loopback sync of many (benchfloor.py)")
    args = parser.parse_args()
    if args.floor:
        from benchfloor import floor_main

        return floor_main(parser, args)
    if args.startup:
        from benchstartup import startup_main

        return startup_main(parser, args)
    args.reps = args.reps or 3
    if args.workers:
        from benchqueue import workers_main  # the distributed mode's measurements (PostgreSQL, workers)

        return workers_main(parser, args)
    tools = args.tools.split(",") if args.tools else [*TOOL_ORDER, *(["base"] if args.baseline else [])]
    if "base" in tools and not args.baseline:
        parser.error("--tools base needs --baseline REV")
    rows: list[str] = []
    with baseline_tree(args.baseline) as base:
        for key in (args.workloads or "many,small,mixed,large").split(","):
            rows += run_workload(key, tools, base, args.reps, args.latency_ms)
    where = f"source behind {args.latency_ms:g} ms each way" if args.latency_ms else "loopback"
    print(f"\n== summary ({where}; median of {args.reps}; ratios are wall-time ratios: above 1 means mirror is "
          "faster; the --assume-immutable-tags row's skopeo column is skopeo's ordinary resync: it has no such flag)")
    print("\n".join(rows))
    return 0


def run_workload(key: str, tools: list[str], base: Path | None, reps: int, latency_ms: float = 0.0) -> list[str]:
    w = WORKLOADS[key]
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix=f"mirror-bench-{key}-", dir=BENCH_DIR) as tmpdir:
        tmp = Path(tmpdir)
        with start_registry(tmp / "src") as registry:
            print(f"== {w.name}: seeding ...", flush=True)
            w.seed(registry)
            with source_view(registry, latency_ms) as src:
                results, extra = measure_all(w, src, tmp, tools, base, reps)
    for phase, i in (("first copy", 0), ("no-op resync", 1)):
        rows.append(ratio_row(key, phase, results, i, w.images, target_for(key, latency_ms, phase)))
    for flags, runs in extra.items():
        # skopeo has no such flag: its column is its ordinary resync, what a skopeo user would run.
        resync = {t: ([], r) for t, r in runs.items()}
        if "skopeo" in results:
            resync = {"skopeo": ([], results["skopeo"][1]), **resync}
        label = "resync " + " ".join(flags)
        rows.append(ratio_row(key, label, resync, 1, w.images, target_for(key, latency_ms, label)))
    print("\n".join(rows), flush=True)
    return rows


Results = dict[str, tuple[list[Run], list[Run]]]


def measure_all(w: Workload, src: Registry, tmp: Path, tools: list[str], base: Path | None, reps: int
                ) -> tuple[Results, dict[tuple[str, ...], dict[str, list[Run]]]]:
    """First copy and resync for every tool (and the extra resyncs for mirror), ``reps`` times."""
    results: Results = {tool: ([], []) for tool in tools}
    extra: dict[tuple[str, ...], dict[str, list[Run]]] = {
        tuple(e): {tool: [] for tool in tools if tool != "skopeo"} for e in w.resync_extra}
    # Repetition-major, alternating which tool goes first, so no tool always runs on a
    # warmer (or fuller) machine than another.
    for rep in range(reps):
        for tool in (tools if rep % 2 == 0 else tools[::-1]):
            cwd = base if tool == "base" and base else ROOT
            first, resync = measure(w, src, tmp, range(rep, rep + 1), tool, cwd=cwd)
            results[tool][0].extend(first)
            results[tool][1].extend(resync)
            for flags in extra:
                if tool in extra[flags]:
                    extra[flags][tool] += measure(w, src, tmp, range(rep, rep + 1), tool, list(flags), cwd)[1]
    return results, extra


if __name__ == "__main__":
    raise SystemExit(main())
