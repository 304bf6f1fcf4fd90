"""Demo driver (run through ./scripts/demo): seeds a source registry, mirrors it, shows the result.

``--workers N`` shows the distributed mode as well: a throw-away PostgreSQL cluster, N ``mirror
worker`` processes, and both syncs run through ``mirror sync --queue``; afterwards which worker
synced what (``mirror_units``), the ``mirror_progress`` view, and the workers and the cluster
stopped (SIGTERM). Without ``--workers`` nothing of that starts and the demo is as it always was.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from distributed import (  # noqa: E402
    Postgres,
    WorkerProcs,
    breakdown,
    exit_codes,
    label,
    progress,
    run_workers,
    runs,
    start_postgres,
)

from tests.support.images import make_layer, push_image, push_index  # noqa: E402
from tests.support.registry import Registry, start_registry  # noqa: E402

MIRROR = [sys.executable, "-m", "mirror"]
SYSTEM_POLICY = Path("/etc/containers/policy.json")
USER_POLICY = Path.home() / ".config" / "containers" / "policy.json"
FLEET = [f"fleet/svc{r}" for r in range(4)]  # with --workers: 4 x 3 more images, so there is work to share


@dataclass
class Queue:
    pg: Postgres
    url: str
    workers: WorkerProcs


def mirror(*args: str) -> str:
    print("$ mirror " + " ".join(args), flush=True)
    proc = subprocess.run([*MIRROR, *args], text=True, capture_output=True, cwd=ROOT)
    out = proc.stdout + proc.stderr
    print(out, end="" if out.endswith("\n") else "\n", flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"mirror {args[0]} failed with exit status {proc.returncode}")
    return out


def seed(src: Registry, workers: int) -> None:
    base = make_layer(100, 64 * 1024)  # shared by the app images: copied once per repository
    push_image(src, "library/alpine", "3.19", seed=1)
    push_image(src, "apps/web", "1.0", fmt="docker", layers=[base, make_layer(2)],
               labels={"org.opencontainers.image.title": "web"})
    push_image(src, "apps/web", "1.1", fmt="docker", layers=[base, make_layer(3)])
    push_image(src, "apps/api", "2.0", layers=[base, make_layer(4)])
    push_index(src, "tools/multi", "latest", seed=5)
    if workers:
        for r, repo in enumerate(FLEET):
            for t in range(3):
                push_image(src, repo, f"1.{t}", layers=[base, make_layer(200 + r, 32 * 1024),
                                                        make_layer(300 + 10 * r + t)], seed=400 + 10 * r + t)


def write_sync_yaml(path: Path, src: Registry, workers: int) -> Path:
    fleet = "".join(f"    {repo}: []\n" for repo in FLEET) if workers else ""
    path.write_text(
        f"{src.host}:\n"
        "  tls-verify: false\n"
        "  images:\n"
        "    apps/web: []          # every tag\n"
        "    library/alpine: ['3.19']\n"
        f"{fleet}"
        "  images-by-tag-regex:\n"
        "    apps/api: '^2\\.'\n"
    )
    return path


def show_destination(dst: Registry) -> None:
    print("==> what arrived at the destination\n")
    for repo in ("mirrored/library/alpine", "mirrored/tools/multi", "synced/web", "synced/api"):
        mirror("list-tags", "--tls-verify=false", f"docker://{dst.host}/{repo}")
    mirror("inspect", "--tls-verify=false", "--format",
           "{{.Name}} {{.Digest}} {{.Architecture}} tags={{range .RepoTags}}{{.}} {{end}}",
           f"docker://{dst.host}/mirrored/apps/web:1.0")
    mirror("inspect", "--tls-verify=false", "--raw", f"docker://{dst.host}/mirrored/tools/multi:latest")


def show_queue(queue: Queue) -> None:
    """Which worker synced what, run by run (SQL over mirror_units), then the mirror_progress view."""
    pg, url, workers = queue.pg, queue.url, queue.workers
    print("\n==> who did what: SELECT worker, status, outcome, count(*), sum(bytes) FROM mirror_units "
          "GROUP BY 1, 2, 3\n")
    for n, (run, title) in enumerate(zip(runs(pg, url), ("first sync", "same sync again"), strict=False), 1):
        print(f"run {n} ({title}, {run[:8]}):")
        for worker, status, outcome, units, sent in breakdown(pg, url, run):
            print(f"  {label(workers, worker):26s} {status:7s} {outcome:8s} {units:3d} image(s) "
                  f"{sent / 1024:8.1f} KiB sent")
    print("\n==> the mirror_progress view (run ids shortened; took = finished_at - created_at)\n")
    print(progress(pg, url))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=0, metavar="N",
                        help="also show the distributed mode: PostgreSQL, N mirror workers, sync --queue")
    args = parser.parse_args()
    if args.workers < 0:
        parser.error("--workers must be 0 or more")
    with tempfile.TemporaryDirectory(prefix="mirror-demo-") as tmp:
        if not SYSTEM_POLICY.exists() and not USER_POLICY.exists():
            # copy and sync enforce policy.json as skopeo does; this machine has none (Debian's
            # containers-common ships one), so the demo brings an accept-anything policy of its own.
            policy = Path(tmp) / "policy.json"
            policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}\n')
            MIRROR.extend(["--policy", str(policy)])
            print(f"(no policy.json on this machine: using {policy}, which accepts every image)\n")
        with start_registry(Path(tmp) / "src") as src, start_registry(Path(tmp) / "dst") as dst:
            print(f"source registry      http://{src.host}\ndestination registry http://{dst.host}\n")
            demo(Path(tmp), src, dst, args.workers)
            print("\ndemo finished: images copied and synced; "
                  f"{'workers, PostgreSQL and ' if args.workers else ''}registries stopped")
    return 0


def demo(tmp: Path, src: Registry, dst: Registry, n_workers: int) -> None:
    seed(src, n_workers)
    images = [("library/alpine", "3.19", []), ("apps/web", "1.0", []), ("apps/web", "1.1", []),
              ("apps/api", "2.0", []), ("tools/multi", "latest", ["--all"])]
    for repo, tag, extra in images:
        mirror("copy", "--src-tls-verify=false", "--dest-tls-verify=false", *extra,
               f"docker://{src.host}/{repo}:{tag}", f"docker://{dst.host}/mirrored/{repo}:{tag}")
    sync_yaml = write_sync_yaml(tmp / "sync.yaml", src, n_workers)
    print(f"==> sync.yaml (skopeo format)\n{sync_yaml.read_text()}")
    sync = ["sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false", "--all",
            str(sync_yaml), f"{dst.host}/synced"]
    with ExitStack() as stack:
        queue = stack.enter_context(distributed(tmp, n_workers)) if n_workers else None
        if queue:
            sync += ["--queue", queue.url]
        mirror(*sync)
        print("==> the same sync again: unchanged tags cost one HEAD on each side")
        mirror(*sync)
        show_destination(dst)
        if queue:
            show_queue(queue)


@contextmanager
def distributed(tmp: Path, n: int) -> Iterator[Queue]:
    """A throw-away cluster and ``n`` registered workers; afterwards the workers, then the cluster, stopped."""
    print("==> distributed mode: a throw-away PostgreSQL cluster (initdb) as the queue")
    with start_postgres() as pg:
        url = pg.new_database()
        print(f"queue {url}\n")
        print(f"==> starting {n} workers: mirror worker --queue {url}")
        with run_workers(pg, url, n, tmp / "workers", *MIRROR[3:]) as workers:
            print(f"{n} workers registered with the queue (pids {', '.join(str(p.pid) for p in workers.procs)})\n")
            yield Queue(pg, url, workers)
            print(f"\n==> stopping the {n} workers (SIGTERM: each finishes its running units, then exits)")
        codes = exit_codes(workers)
        print("exit statuses: " + " ".join(str(c) for c in codes))
        if any(codes):
            bad = next(i for i, c in enumerate(codes) if c)
            raise SystemExit(f"worker {bad + 1} exited with status {codes[bad]}:\n{workers.log_text(bad)[-2000:]}")
    print("PostgreSQL stopped (its temporary cluster removed)")

if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
