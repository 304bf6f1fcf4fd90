"""``./scripts/bench --floor [--reps N]``: how fast the loopback ``many`` sync could be on this machine.

On loopback both registries and the client share the machine's cores, so the registries' own CPU
sets a floor under any client's wall time. For each repetition this syncs ``many`` (40 x 5 tiny
images) into a fresh destination with skopeo and with mirror, first copy then no-op resync, and
reads the CPU seconds of the tool and of each registry process (``/proc/PID/stat``) around every
run. It prints, per tool and phase: wall time, the three CPU figures, requests the registries
logged and their CPU per request, and the floor ``(source CPU + destination CPU) / cores`` that
mirror's requests impose, with the skopeo/mirror ratio that floor would allow at most.

It then times the no-op's HTTP work alone: the same HEADs of every source and destination tag sent
by a bare aiohttp client on uvloop (16 in flight, connections warmed), as the client CPU floor per
request that mirror's HTTP stack (aiohttp, mandated) cannot go below.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench import BENCH_DIR, WORKLOADS, timed_cpu, tree_cpu

from tests.support.registry import Registry, start_registry

ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"


def requests_of(reg: Registry) -> int:
    return len(reg.access_log_requests())


async def bare_heads(src: Registry, dst: Registry, repos: int, tags: int) -> tuple[float, int]:
    """(client CPU seconds, requests) of HEADing every tag at both ends with a bare aiohttp client."""
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64, limit_per_host=32)) as session:
        gate = asyncio.Semaphore(16)

        async def head(url: str) -> None:
            async with gate, session.head(url, headers={"Accept": ACCEPT}) as resp:
                await resp.read()
                if resp.status != 200:
                    raise SystemExit(f"bare client: HEAD {url}: {resp.status}")

        urls = [f"http://{host}/v2/{path}{r:03d}/manifests/v{t}" for r in range(repos) for t in range(tags)
                for host, path in ((src.host, "small/repo"), (dst.host, "m/repo"))]
        await asyncio.gather(*(head(urls[0]) for _ in range(16)))  # connections open, as mirror's would be
        start = time.process_time()
        await asyncio.gather(*(head(url) for url in urls))
        return time.process_time() - start, len(urls)


def floor_main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.latency_ms or args.workers or args.baseline or args.startup:
        parser.error("--floor runs the loopback many workload on its own: no --latency-ms, --workers, --baseline "
                     "or --startup")
    import uvloop

    w, cores = WORKLOADS["many"], os.cpu_count() or 1
    rows: dict[tuple[str, str], list[tuple[float, float, float, float, int]]] = {}
    bare: list[float] = []
    with tempfile.TemporaryDirectory(prefix="mirror-bench-floor-", dir=BENCH_DIR) as tmpdir:
        tmp = Path(tmpdir)
        with start_registry(tmp / "src") as src:
            print(f"== {w.name}: seeding ...", flush=True)
            w.seed(src)
            for rep in range(args.reps or 3):
                for tool in ("skopeo", "mirror") if rep % 2 == 0 else ("mirror", "skopeo"):
                    with start_registry(tmp / f"{tool}-dst-{rep}") as dst:
                        cmd = (w.skopeo_cmd if tool == "skopeo" else w.mirror_cmd)(src, dst, tmp)
                        assert src.pid is not None and dst.pid is not None
                        src_pid, dst_pid = src.pid, dst.pid
                        for phase in ("first copy", "no-op resync"):
                            before = (tree_cpu(src_pid), tree_cpu(dst_pid), requests_of(src) + requests_of(dst))
                            wall, _rss, cpu = timed_cpu(cmd)
                            rows.setdefault((tool, phase), []).append(
                                (wall, cpu, tree_cpu(src_pid) - before[0], tree_cpu(dst_pid) - before[1],
                                 requests_of(src) + requests_of(dst) - before[2]))
                        if tool == "mirror":
                            seconds, sent = uvloop.run(bare_heads(src, dst, 40, 5))
                            bare.append(seconds / sent)
    print(f"\n== registries' CPU floor on loopback ({cores} cores; median of {args.reps or 3})")
    medians = {key: tuple(statistics.median(r[i] for r in runs) for i in range(5)) for key, runs in rows.items()}
    for phase in ("first copy", "no-op resync"):
        for tool in ("skopeo", "mirror"):
            wall, cpu, src_cpu, dst_cpu, reqs = medians[(tool, phase)]
            floor = (src_cpu + dst_cpu) / cores
            print(f"{phase:13s} {tool:7s} wall {wall:5.2f}s | cpu {tool} {cpu:5.2f}s, source registry {src_cpu:5.2f}s, "
                  f"destination registry {dst_cpu:5.2f}s | {reqs:5.0f} requests, "
                  f"{(src_cpu + dst_cpu) / max(1, reqs) * 1000:4.2f} ms registry CPU each | "
                  f"floor (registries / cores) {floor:5.2f}s")
        skopeo_wall, mirror_wall = medians[("skopeo", phase)][0], medians[("mirror", phase)][0]
        floor = (medians[("mirror", phase)][2] + medians[("mirror", phase)][3]) / cores
        print(f"{phase:13s} skopeo/mirror {skopeo_wall / mirror_wall:4.2f}x now; at most {skopeo_wall / floor:4.2f}x "
              "were mirror's own CPU zero")
    mirror_noop = rows[("mirror", "no-op resync")]
    per_request = statistics.median(r[1] / r[4] for r in mirror_noop)
    print(f"no-op client CPU per request: mirror {per_request * 1e6:4.0f} us (start-up included), bare aiohttp "
          f"{statistics.median(bare) * 1e6:4.0f} us (HEADs alone)")
    return 0
