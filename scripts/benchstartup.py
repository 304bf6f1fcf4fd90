"""``./scripts/bench --startup [--reps N] [--pairs N]``: the commands a shell script runs one at a time.

Times (median of ``--reps`` runs, default 10; wall clock of the whole process, output discarded)
mirror and skopeo side by side on local registries: ``--version``, ``--help``, ``inspect`` of an
image (``--tls-verify=false``), a ``copy`` of an image the destination already holds, and ``N``
copies (``--pairs``, default 10: the tags of one repository) as one ``mirror copy --pairs FILE``
against a shell loop of ``N`` ``skopeo copy`` (``sh -e``), both into a repository that is new for
every run (the destination registry holds the blobs elsewhere) and again once they are present.
mirror runs as its console script (``.venv/bin/mirror``; ``python -m mirror`` without one), from
this tree. Issue #12's targets are printed next to mirror's figures: ``--version``/``--help`` <= 60 ms,
``copy`` of a present image <= 200 ms, ``inspect`` <= 250 ms.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import BENCH_DIR, ROOT, SKOPEO

from tests.support.images import Client, make_layer, push_image
from tests.support.registry import Registry, start_registry

SCRIPT = Path(sys.executable).parent / "mirror"
MIRROR = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "mirror"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
# Bytecode as an installed mirror has it: with PYTHONDONTWRITEBYTECODE=1 (set in some shells) every run of
# this source tree would compile mirror's modules again, about half a second per command.
ENV.pop("PYTHONDONTWRITEBYTECODE", None)
TARGETS_MS = {"--version": 60.0, "--help": 60.0, "copy (present)": 200.0, "inspect": 250.0}
PLAIN = ["--src-tls-verify=false", "--dest-tls-verify=false"]

Command = Callable[[int], list[str]]  # run number → argv


def wall_ms(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV, cwd=ROOT)
    elapsed = (time.perf_counter() - start) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed ({proc.returncode}): {shlex.join(cmd)}\n"
                         f"{proc.stderr.decode(errors='replace')[-2000:]}")
    return elapsed


def cases(src: Registry, dst: Registry, n: int, tmp: Path) -> dict[str, tuple[Command, Command]]:
    """Row name → (mirror's command, skopeo's command) for run number ``r``."""
    image = f"{src.host}/start/app:v1"
    present = f"{dst.host}/start/app:v1"
    tags = [f"t{i}" for i in range(n)]

    def pairs_file(r: int, what: str) -> str:
        path = tmp / f"pairs-{what}-{r}.txt"
        path.write_text("".join(f"docker://{src.host}/start/pairs:{t} docker://{dst.host}/{what}/pairs:{t}\n"
                                for t in tags))
        return str(path)

    def loop(what: str) -> list[str]:
        script = "\n".join(shlex.join([*SKOPEO, "copy", "--quiet", *PLAIN, f"docker://{src.host}/start/pairs:{t}",
                                       f"docker://{dst.host}/{what}/pairs:{t}"]) for t in tags)
        return ["sh", "-ec", script]

    return {
        "--version": (lambda r: [*MIRROR, "--version"], lambda r: ["skopeo", "--version"]),
        "--help": (lambda r: [*MIRROR, "--help"], lambda r: ["skopeo", "--help"]),
        "inspect": (lambda r: [*MIRROR, "inspect", "--tls-verify=false", f"docker://{image}"],
                    lambda r: ["skopeo", "inspect", "--tls-verify=false", f"docker://{image}"]),
        "copy (present)": (lambda r: [*MIRROR, "copy", "--quiet", *PLAIN, f"docker://{image}", f"docker://{present}"],
                           lambda r: [*SKOPEO, "copy", "--quiet", *PLAIN, f"docker://{image}",
                                      f"docker://{present}"]),
        f"{n} copies (new repo)": (lambda r: [*MIRROR, "copy", "--quiet", *PLAIN, "--pairs", pairs_file(r, f"m{r}")],
                                   lambda r: loop(f"s{r}")),
        f"{n} copies (present)": (lambda r: [*MIRROR, "copy", "--quiet", *PLAIN, "--pairs", pairs_file(r, "m0")],
                                  lambda r: loop("s0")),
    }


def seed(src: Registry, n: int) -> None:
    client = Client(src)
    base = make_layer(40_000, 2048)
    push_image(src, "start/app", "v1", layers=[base, make_layer(40_001, 1024)], seed=40_000, client=client)
    for i in range(n):
        push_image(src, "start/pairs", f"t{i}", layers=[base, make_layer(40_100 + i, 1024)], seed=40_100 + i,
                   client=client)


def row(name: str, mirror: list[float], skopeo: list[float]) -> str:
    m, s = statistics.median(mirror), statistics.median(skopeo)
    target = TARGETS_MS.get(name)
    verdict = f" | target <= {target:g} ms {'PASS' if m <= target else 'MISS'}" if target is not None else ""
    return f"{name:22s} mirror {m:8.1f} ms | skopeo {s:8.1f} ms | skopeo/mirror {s / m:5.2f}x{verdict}"


def startup_main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.latency_ms or args.workers or args.baseline or args.workloads:
        parser.error("--startup runs on loopback with its own workload: no --latency-ms, --workers, --baseline "
                     "or --workloads")
    reps = args.reps or 10
    rows = []
    with tempfile.TemporaryDirectory(prefix="mirror-bench-startup-", dir=BENCH_DIR) as tmpdir:
        tmp = Path(tmpdir)
        with start_registry(tmp / "src") as src, start_registry(tmp / "dst") as dst:
            seed(src, args.pairs)
            table = cases(src, dst, args.pairs, tmp)
            wall_ms(table["copy (present)"][1](0))  # the image the "present" rows find at the destination
            for name, (mirror_cmd, skopeo_cmd) in table.items():
                if "(present)" in name and "copies" in name:  # fill m0/s0 first: run 0 then finds them
                    wall_ms(mirror_cmd(0))
                    wall_ms(skopeo_cmd(0))
                times: dict[str, list[float]] = {"mirror": [], "skopeo": []}
                for r in range(1, reps + 1):  # alternating which tool goes first
                    order = [("mirror", mirror_cmd), ("skopeo", skopeo_cmd)]
                    for tool, cmd in order if r % 2 else order[::-1]:
                        times[tool].append(wall_ms(cmd(r)))
                rows.append(row(name, times["mirror"], times["skopeo"]))
                print(rows[-1], flush=True)
    print(f"\n== start-up (median of {reps} runs, wall clock per process; skopeo/mirror above 1: mirror is faster; "
          f"mirror: {shlex.join(MIRROR)})")
    print("\n".join(rows))
    return 0
