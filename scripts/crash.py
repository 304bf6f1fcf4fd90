"""SIGKILL ``mirror sync`` at random points, again and again, then let it finish; check after every kill.

Run through ./scripts/crash [--kills 10] [--seed N] [--big-mib 128] [--chunk-size 16M]. A source and a
destination registry sit behind observing proxies (no faults); the proxies pick the moment to kill,
from what they see (seeded RNG):

* ``planning``: at the n-th manifest or tag-list request to the source, before anything is uploaded;
* ``mid-blob``: when a chunk (PATCH with Content-Range) of the large blob arrives, before any of
  it is passed on (a kill between two acknowledged chunks: the session can be resumed);
* ``mid-chunk``: the same, but after a random short delay while the chunk streams on to the
  registry (distribution 2.8 then cancels the session on resume: the blob restarts from byte 0);
* ``blob-manifest``: when an image manifest arrives at the destination (its blobs are all there);
* ``mid-index``: when a child manifest of an index arrives (a PUT by digest), before the index.

Each run's point is drawn among those the run can still reach, read from the destination before it
starts (tags still missing, index children still missing, the large blob still absent), and its
countdown is capped by what is left; so every kill lands in the phase it names, instead of a run
finishing before its kill because that phase was already done. The engine works on many images at
once, so phases of different images overlap in time: a ``blob-manifest`` or ``mid-index`` kill
while the large blob streams is also a kill in the middle of one of its chunks.

After every kill: for every tag at the destination (read from the destination registry directly),
its manifest and every child, config and layer it references must exist (HEAD); the state file must
pass ``PRAGMA integrity_check``. Then a final run without kills must succeed, the destination must
verify completely (every blob and manifest re-hashed against the source), and the bytes sent to the
destination over all runs (the proxy's upload byte count) are compared with the catalog's unique
bytes. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from aiohttp import web  # noqa: E402
from chaos import ACCEPT, WORK_DIR, Catalog, seed_catalog, sync_yaml, verify  # noqa: E402

from mirror.transports.registry.uploadopts import UploadOptions, parse_size  # noqa: E402
from tests.support.images import Client  # noqa: E402
from tests.support.proxy import Fault, RegistryProxy, RequestInfo  # noqa: E402
from tests.support.registry import Registry, start_registry  # noqa: E402

MiB = 1 << 20
POINTS = ("planning", "mid-blob", "mid-chunk", "blob-manifest", "mid-index")
RESUMABLE_POINTS = ("planning", "mid-blob", "blob-manifest", "mid-index")


@dataclass
class Killer:
    """Arms one kill per run: a point and how many matching requests to let through first."""

    rng: random.Random
    big_digest: str | None
    proc: subprocess.Popen[bytes] | None = None
    point: str | None = None
    countdown: int = 0
    fired: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def arm(self, proc: subprocess.Popen[bytes], point: str, limit: int) -> None:
        """Kill at the n-th matching request, n drawn from 1..``limit`` (what the run can still reach)."""
        with self.lock:
            self.proc, self.point, self.fired = proc, point, False
            self.countdown = self.rng.randint(1, max(1, limit))

    def disarm(self) -> None:
        with self.lock:
            self.proc, self.point = None, None

    def _matches(self, side: str, info: RequestInfo) -> bool:
        p = self.point
        if p == "planning":
            return side == "src" and info.kind in ("manifest", "tags")
        if p in ("mid-blob", "mid-chunk"):
            return side == "dst" and info.kind == "upload" and info.method == "PATCH" \
                and "content-range" in info.headers
        if p == "blob-manifest":
            return side == "dst" and info.kind == "manifest" and info.method == "PUT" \
                and not (info.reference or "").startswith("sha256:")
        if p == "mid-index":
            return side == "dst" and info.kind == "manifest" and info.method == "PUT" \
                and (info.reference or "").startswith("sha256:")
        return False

    def fault(self, side: str, loop_delay: Callable[[float, Callable[[], None]], None]) -> Fault:
        def predicate(info: RequestInfo) -> bool:
            with self.lock:
                if self.proc is None or self.fired or not self._matches(side, info):
                    return False
                self.countdown -= 1
                if self.countdown > 0:
                    return False
                self.fired = True
                return True

        async def action(_req: object, _info: RequestInfo) -> web.StreamResponse | None:
            proc = self.proc
            if proc is None:
                return None
            if self.point == "mid-chunk":  # let some of the chunk through to the registry, then kill
                loop_delay(self.rng.uniform(0.05, 0.3), lambda: _kill(proc))
                return None
            _kill(proc)  # and nothing of this request reaches the registry
            return web.Response(status=503)

        return Fault(predicate, action, times=None)


#: The most matching requests a kill point lets through before it fires.
COUNTDOWN = {"planning": 8, "mid-blob": 4, "mid-chunk": 4, "blob-manifest": 15, "mid-index": 3}


def reachable(src: Registry, dst: Registry, catalog: Catalog, state: Path, chunk: int) -> dict[str, int]:
    """For each kill point, how many matching requests the next run will make at least (capped at
    :data:`COUNTDOWN`); 0: the point cannot be reached any more (its phase is done at the destination),
    so arming it would be a kill that never happens."""
    s, d = Client(src), Client(dst)
    missing_tags = missing_children = 0
    for repo, tag in catalog.images:
        target = f"m/{repo.rsplit('/', 1)[-1]}"
        if d.request("HEAD", f"/v2/{target}/manifests/{tag}", {"Accept": ACCEPT}, ok=(200, 404)).status == 200:
            continue
        missing_tags += 1
        doc = json.loads(s.request("GET", f"/v2/{repo}/manifests/{tag}", {"Accept": ACCEPT}).body)
        for child in doc.get("manifests") or []:
            if d.request("HEAD", f"/v2/{target}/manifests/{child['digest']}", {"Accept": ACCEPT},
                         ok=(200, 404)).status != 200:
                missing_children += 1
    chunks = 0
    big = catalog.big_digest
    if big is not None:
        size = int(s.request("HEAD", f"/v2/chaos/big/blobs/{big}").headers.get("Content-Length", "0"))
        if d.request("HEAD", f"/v2/m/big/blobs/{big}", ok=(200, 404)).status != 200:
            chunks = -(-(size - (saved_offset(state, big) or 0)) // chunk)  # at least, if the session lives
    counts = {"planning": COUNTDOWN["planning"], "mid-blob": chunks, "mid-chunk": chunks,
              "blob-manifest": missing_tags, "mid-index": missing_children}
    return {p: min(n, COUNTDOWN[p]) for p, n in counts.items()}


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)


def integrity(state: Path) -> str:
    if not state.exists():
        return "ok (no state file yet)"
    con = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        return str(con.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        con.close()


def dangling_tags(dst: Registry) -> tuple[int, list[str]]:
    """(tags checked, tags whose manifest, children or blobs are missing) at ``dst``, read directly."""
    c = Client(dst)
    repos = json.loads(c.request("GET", "/v2/_catalog?n=1000").body).get("repositories") or []
    checked, bad = 0, []
    for repo in repos:
        tags = json.loads(c.request("GET", f"/v2/{repo}/tags/list", ok=(200, 404)).body or b"{}").get("tags") or []
        for tag in tags:
            checked += 1
            missing = _missing(c, repo, tag)
            if missing:
                bad.append(f"{repo}:{tag} -> {missing}")
    return checked, bad


def _missing(c: Client, repo: str, ref: str) -> str | None:
    resp = c.request("GET", f"/v2/{repo}/manifests/{ref}", {"Accept": ACCEPT}, ok=(200, 404))
    if resp.status != 200:
        return f"manifest {ref}"
    doc = json.loads(resp.body)
    for child in doc.get("manifests") or []:
        m = _missing(c, repo, child["digest"])
        if m:
            return m
    for d in [doc["config"], *doc.get("layers", [])] if "config" in doc else []:
        if c.request("HEAD", f"/v2/{repo}/blobs/{d['digest']}", ok=(200, 404)).status != 200:
            return f"blob {d['digest'][:19]}"
    return None


@dataclass
class CrashReport:
    kills: list[str] = field(default_factory=list)
    finished_early: int = 0
    dangling: list[str] = field(default_factory=list)
    integrity_failures: list[str] = field(default_factory=list)
    tags_checked: int = 0
    final_rc: int = -1
    bytes_sent: int = 0
    abandoned: int = 0  # of which into upload sessions that never completed
    unique_bytes: int = 0
    verified: int = 0
    images: int = 0
    failed: list[str] = field(default_factory=list)
    corrupt: int = 0
    wall: float = 0.0
    runs: list[str] = field(default_factory=list)  # one line per run: kill point, bytes, the large blob's fate
    recommitted: list[str] = field(default_factory=list)  # blobs whose upload completed more than once
    recommitted_bytes: int = 0

    @property
    def ratio(self) -> float:
        return self.bytes_sent / self.unique_bytes if self.unique_bytes else 0.0

    @property
    def ratio_kept(self) -> float:
        return (self.bytes_sent - self.abandoned) / self.unique_bytes if self.unique_bytes else 0.0

    def ok(self, max_ratio: float) -> bool:
        return (self.final_rc == 0 and not self.dangling and not self.integrity_failures and not self.failed
                and self.corrupt == 0 and self.ratio <= max_ratio)

    def lines(self) -> list[str]:
        return [
            f"kills: {len(self.kills)} ({', '.join(self.kills)}); runs that finished before their kill: "
            f"{self.finished_early}",
            f"after every kill: {self.tags_checked} tag checks, dangling tags: {len(self.dangling)}, "
            f"state integrity failures: {len(self.integrity_failures)}",
            f"final run exit {self.final_rc}; images verified complete {self.verified}/{self.images}, "
            f"failed {len(self.failed)}, corrupt blobs+manifests {self.corrupt}",
            f"bytes sent over all runs: {self.bytes_sent / MiB:.1f} MiB vs catalog unique "
            f"{self.unique_bytes / MiB:.1f} MiB = {self.ratio:.2f}x; of which {self.abandoned / MiB:.1f} MiB into "
            f"upload sessions that never completed (without them {self.ratio_kept:.2f}x); wall {self.wall:.1f}s",
            f"blobs uploaded to completion more than once: {len(self.recommitted)} "
            f"({self.recommitted_bytes / MiB:.1f} MiB re-sent){': ' if self.recommitted else ''}"
            f"{', '.join(self.recommitted[:5])}",
        ]


def recommitted(proxy: RegistryProxy) -> tuple[list[str], int]:
    """Blobs whose upload session was completed (PUT 201) more than once, and the bytes of the extra ones."""
    sessions: dict[str, list[str]] = {}
    for r in proxy.requests:
        if r.kind == "upload" and r.method == "PUT" and r.status == 201:
            digest = urllib.parse.parse_qs(r.query).get("digest", ["?"])[0]
            sessions.setdefault(digest, []).append(r.path)
    extra = {d: paths[1:] for d, paths in sessions.items() if len(paths) > 1}
    sent = sum(proxy.upload_bytes_by_session[p] for paths in extra.values() for p in paths)
    return [f"{d[:19]} x{len(paths) + 1}" for d, paths in extra.items()], sent


def saved_offset(state: Path, digest: str | None) -> int | None:
    """The offset the state file holds for the large blob's upload session (None: no session)."""
    if digest is None or not state.exists():
        return None
    con = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT offset FROM uploads WHERE digest = ?", (digest,)).fetchone()
    finally:
        con.close()
    return int(row[0]) if row else None


def big_blob_events(log: Path, digest: str | None) -> str:
    """What a run's JSON log says about the large blob's upload session."""
    if digest is None:
        return ""
    seen = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("digest") == digest and str(event.get("event", "")).startswith(
                "upload_"):
            name = str(event["event"]).removeprefix("upload_")
            seen.append(f"{name}@{int(event['offset']) // MiB}MiB" if "offset" in event else name)
    return ",".join(seen)


def crash_run(tmp: Path, src: Registry, dst: Registry, catalog: Catalog, *, kills: int, seed: int,
              extra: list[str] | None = None, points: tuple[str, ...] = POINTS,
              env: dict[str, str] | None = None, timeout: float = 900, chunk: int = 16 * MiB) -> CrashReport:
    """``kills`` SIGKILLed runs of ``mirror sync`` (state file in ``tmp``), then a final one. Each run's
    kill point is drawn among those its run can still reach (``chunk``: mirror's chunk size)."""
    rng = random.Random(seed)
    killer = Killer(random.Random(seed + 1), catalog.big_digest)
    report = CrashReport(unique_bytes=catalog.unique_bytes, images=len(catalog.images))
    state = tmp / "crash-state.sqlite"
    run_env = dict(os.environ if env is None else env)
    pypath = run_env.get("MIRROR_PYTHONPATH") or str(ROOT)
    run_env["PYTHONPATH"] = pypath
    start = time.perf_counter()
    with RegistryProxy(src) as sproxy, RegistryProxy(dst) as dproxy:
        for side, proxy in (("src", sproxy), ("dst", dproxy)):
            loop = proxy._loop
            assert loop is not None
            proxy.add_fault(killer.fault(side, lambda d, f, loop=loop: loop.call_later(d, f)))  # type: ignore[misc]
        yaml_path = sync_yaml(sproxy.host, catalog, tmp / "crash.yaml")
        cmd = [sys.executable, "-m", "mirror", "--log-format", "json", "sync", "--all", "--src", "yaml",
               "--dest", "docker", "--dest-tls-verify=false", f"--state={state}", *(extra or []),
               str(yaml_path), f"{dproxy.host}/m"]
        for i in range(kills + 1):
            final = i == kills
            sent_before = dproxy.upload_bytes
            offset_before = saved_offset(state, catalog.big_digest)
            limits = reachable(src, dst, catalog, state, chunk) if not final else {}
            with open(tmp / f"crash-{i}.log", "wb") as log:
                proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=run_env, cwd=pypath)
                point = None
                if not final:
                    point = rng.choice([p for p in points if limits.get(p)] or ["planning"])
                    killer.arm(proc, point, limits.get(point, COUNTDOWN["planning"]))
                try:
                    rc = proc.wait(timeout=timeout)
                finally:
                    killer.disarm()
                    if proc.poll() is None:
                        _kill(proc)
                        proc.wait()
            offset_after = saved_offset(state, catalog.big_digest)
            sent = (dproxy.upload_bytes - sent_before) / MiB
            report.runs.append(
                f"run {i + 1:2d} {'final' if final else point:13s} sent {sent:6.1f} MiB; large blob: saved session "
                f"{'-' if offset_before is None else f'{offset_before // MiB}MiB'} -> "
                f"{'-' if offset_after is None else f'{offset_after // MiB}MiB'}; "
                f"{big_blob_events(tmp / f'crash-{i}.log', catalog.big_digest) or 'no session events'}")
            if final:
                report.final_rc = rc
                if rc != 0:
                    report.failed.append(f"final run exit {rc}: {(tmp / f'crash-{i}.log').read_text()[-800:]}")
                break
            if rc == -signal.SIGKILL:
                report.kills.append(str(point))
            else:
                report.finished_early += 1
                report.kills.append(f"{point}(missed, exit {rc})")
            checked, bad = dangling_tags(dst)
            report.tags_checked += checked
            report.dangling += [f"after kill {i + 1} ({point}): {b}" for b in bad]
            verdict = integrity(state)
            if not verdict.startswith("ok"):
                report.integrity_failures.append(f"after kill {i + 1}: {verdict}")
        report.bytes_sent = dproxy.upload_bytes
        report.abandoned = dproxy.abandoned_upload_bytes()
        report.recommitted, report.recommitted_bytes = recommitted(dproxy)
    report.wall = time.perf_counter() - start
    v = verify(src, dst, catalog)
    report.verified, report.corrupt = v.verified, v.corrupt_blobs + v.corrupt_manifests
    report.failed += v.failed
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repos", type=int, default=20)
    ap.add_argument("--tags", type=int, default=5)
    ap.add_argument("--big-mib", type=int, default=128)
    ap.add_argument("--chunk-size", default=None, help="mirror --chunk-size (default: mirror's)")
    ap.add_argument("--max-ratio", type=float, default=1.5)
    ap.add_argument("--points", default=",".join(POINTS), help="kill points to choose from (comma-separated)")
    args = ap.parse_args()
    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)  # the proxy's noise about killed peers
    extra = [f"--chunk-size={args.chunk_size}"] if args.chunk_size else []
    chunk = parse_size(args.chunk_size, "--chunk-size") if args.chunk_size else UploadOptions().chunk_size
    with tempfile.TemporaryDirectory(prefix="mirror-crash-", dir=WORK_DIR) as tmp_s:
        tmp = Path(tmp_s)
        with start_registry(tmp / "src") as src, start_registry(tmp / "dst") as dst:
            catalog = seed_catalog(src, args.repos, args.tags, args.big_mib)
            print(f"seeded {len(catalog.images)} images, {catalog.unique_bytes / MiB:.1f} MiB unique", flush=True)
            report = crash_run(tmp, src, dst, catalog, kills=args.kills, seed=args.seed, extra=extra,
                               points=tuple(p for p in args.points.split(",") if p), chunk=chunk)
    for line in report.runs:
        print(line)
    for line in report.lines():
        print(line)
    for d in report.dangling[:10]:
        print(f"  DANGLING {d}")
    for f in report.integrity_failures[:10]:
        print(f"  STATE {f}")
    for f in report.failed[:10]:
        print(f"  FAILED {f}")
    return 0 if report.ok(args.max_ratio) else 1


if __name__ == "__main__":
    sys.exit(main())
