"""Catalog sync through fault-injecting proxies, then a full verification of the destination.

Run through ./scripts/chaos [--rate 0.1] [--seed N] [--big-mib 128] [--repos 20 --tags 5]. It starts a
source registry (anonymous) and a destination registry (bearer tokens from a token server), seeds
the catalog (shared layers, a few indexes, one large blob), times a clean ``mirror sync`` (no faults)
into a fresh destination, then runs the same sync through a :class:`Chaos` proxy in front of BOTH
registries (token endpoint included) at ``--rate``, ``--keep-going`` off, again and again (at most
``--rounds``) until a run succeeds. Then every destination image is verified directly against the
destination registry (not through the proxy): manifest bytes equal to the source's, every blob and
child manifest re-hashed.

Prints faults injected by kind, retries (mirror's log events), bytes sent to the destination
(proxy upload byte counts) against the catalog's unique bytes, images verified / failed, corrupt
blobs or manifests at the destination, and wall time against the clean run. Exit status 1 when any
image fails verification or anything at the destination is corrupt.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import push_big_blob  # noqa: E402

from tests.support.images import Client, make_layer, push_image, push_index  # noqa: E402
from tests.support.proxy import CHAOS_KINDS, Chaos, RegistryProxy  # noqa: E402
from tests.support.registry import Registry, start_registry  # noqa: E402
from tests.support.tokenserver import TokenServer  # noqa: E402

MiB = 1 << 20
USER, PASSWORD = "chaos", "chaos-secret-1"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT = ",".join([OCI_MANIFEST, OCI_INDEX, DOCKER_LIST, "application/vnd.docker.distribution.manifest.v2+json"])
RETRY_EVENTS = ("http_retry", "blob_read_resume", "upload_resumed", "upload_restarted",
                "upload_session_expired", "rate_limited")
WORK_DIR = os.environ.get("CHAOS_DIR") or ("/dev/shm" if os.path.isdir("/dev/shm") else None)


# ------------------------------------------------------------------------------ catalog
@dataclass
class Catalog:
    images: list[tuple[str, str]]  # (repo, tag) at the source
    unique_bytes: int  # every distinct blob and manifest, once
    big_digest: str | None


def seed_catalog(reg: Registry, repos: int, tags: int, big_mib: int, *, prefix: str = "chaos",
                 layer_kib: int = 256) -> Catalog:
    """``repos`` x ``tags`` images: three base layers shared across repos, one app layer shared by the
    tags of a repo, a small own layer per tag; repo 0 tag 0 and every 5th repo's first tag are
    indexes (two platforms); one image holds a ``big_mib`` MiB layer (0: none)."""
    client = Client(reg)
    bases = [make_layer(50_000 + i, layer_kib * 1024 * (i + 1)) for i in range(3)]
    images: list[tuple[str, str]] = []
    for r in range(repos):
        repo = f"{prefix}/repo{r:02d}"
        app = make_layer(60_000 + r, layer_kib * 1024)
        for t in range(tags):
            tag = f"v{t}"
            seed = 70_000 + r * 100 + t
            if t == 0 and r % 5 == 0:
                push_index(reg, repo, tag, seed=seed, client=client)
            else:
                push_image(reg, repo, tag, layers=[bases[r % 3], app, make_layer(seed, 4096)], seed=seed,
                           client=client)
            images.append((repo, tag))
    big = None
    if big_mib > 0:
        repo = f"{prefix}/big"
        big, size = push_big_blob(reg, repo, big_mib * MiB)
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": [big]}, "config": {}}).encode()
        config_digest = client.push_blob(repo, config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                       "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": big, "size": size}],
        }).encode()
        client.put_manifest(repo, "v1", manifest, OCI_MANIFEST)
        images.append((repo, "v1"))
    unique: dict[str, int] = {}
    for repo, tag in images:
        for digest, size in walk(client, repo, tag, unique_only=unique):
            unique[digest] = size
    return Catalog(images, sum(unique.values()), big)


def _get(client: Client, path: str, accept: str | None = None) -> tuple[int, bytes, str]:
    headers = {"Accept": accept} if accept else {}
    resp = client.request("GET", path, headers, ok=(200, 404))
    return resp.status, resp.body, resp.headers.get("Content-Type", "")


def walk(client: Client, repo: str, ref: str, unique_only: dict[str, int] | None = None) -> Iterator[tuple[str, int]]:
    """(digest, size) of a manifest and everything it references (children, config, layers)."""
    status, body, _ctype = _get(client, f"/v2/{repo}/manifests/{ref}", ACCEPT)
    if status != 200:
        raise LookupError(f"{repo}:{ref} missing at the source")
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    yield digest, len(body)
    doc = json.loads(body)
    for child in doc.get("manifests") or []:
        if unique_only is None or child["digest"] not in unique_only:
            yield from walk(client, repo, child["digest"], unique_only)
    for d in [doc["config"], *doc.get("layers", [])] if "config" in doc else []:
        yield d["digest"], int(d["size"])


# ------------------------------------------------------------------------------ verification
@dataclass
class Verdict:
    verified: int = 0
    failed: list[str] = field(default_factory=list)
    corrupt_blobs: int = 0
    corrupt_manifests: int = 0
    missing: int = 0


def dest_repo(repo: str, dest_prefix: str = "m") -> str:
    """Where ``mirror sync --src yaml`` puts a source repository: the namespace plus its last component."""
    return f"{dest_prefix}/{repo.rsplit('/', 1)[-1]}"


def verify(src: Registry, dst: Registry, catalog: Catalog, dest_prefix: str = "m") -> Verdict:
    """Every image at the destination, straight from the destination registry: manifests byte-equal to
    the source's, every referenced blob and child manifest present and hashing to its digest."""
    sc, dc = Client(src), Client(dst)
    out = Verdict()
    blob_ok: dict[str, bool] = {}
    for repo, tag in catalog.images:
        problems = _verify_manifest(sc, dc, repo, dest_repo(repo, dest_prefix), tag, blob_ok, out)
        if problems:
            out.failed.append(f"{repo}:{tag}: {'; '.join(problems[:3])}")
        else:
            out.verified += 1
    return out


def _verify_manifest(sc: Client, dc: Client, src_repo: str, dst_repo: str, ref: str,
                     blob_ok: dict[str, bool], out: Verdict) -> list[str]:
    _s, src_body, _ = _get(sc, f"/v2/{src_repo}/manifests/{ref}", ACCEPT)
    status, body, _ = _get(dc, f"/v2/{dst_repo}/manifests/{ref}", ACCEPT)
    if status != 200:
        out.missing += 1
        return [f"manifest {ref} missing"]
    problems: list[str] = []
    if body != src_body:
        out.corrupt_manifests += 1
        return [f"manifest {ref} differs from the source"]
    doc = json.loads(body)
    for child in doc.get("manifests") or []:
        problems += _verify_manifest(sc, dc, src_repo, dst_repo, child["digest"], blob_ok, out)
    for d in [doc["config"], *doc.get("layers", [])] if "config" in doc else []:
        key = f"{dst_repo}@{d['digest']}"
        if key not in blob_ok:
            status, data, _ = _get(dc, f"/v2/{dst_repo}/blobs/{d['digest']}")
            if status != 200:
                out.missing += 1
                blob_ok[key] = False
            else:
                good = "sha256:" + hashlib.sha256(data).hexdigest() == d["digest"] and len(data) == d["size"]
                if not good:
                    out.corrupt_blobs += 1
                blob_ok[key] = good
        if not blob_ok[key]:
            problems.append(f"blob {d['digest'][:19]} missing or corrupt")
    return problems


# ------------------------------------------------------------------------------ running mirror
def sync_yaml(src_host: str, catalog: Catalog, path: Path) -> Path:
    import yaml

    repos: dict[str, list[str]] = collections.defaultdict(list)
    for repo, tag in catalog.images:
        repos[repo].append(tag)
    path.write_text(yaml.safe_dump({src_host: {"tls-verify": False, "images": dict(repos)}}))
    return path


def mirror_sync_cmd(yaml_path: Path, dest: str, state: Path | None, extra: list[str] | None = None) -> list[str]:
    return [sys.executable, "-m", "mirror", "--log-format", "json", "--debug", "sync", "--src", "yaml",
            "--all", "--dest", "docker", "--dest-tls-verify=false", f"--dest-creds={USER}:{PASSWORD}",
            f"--state={state if state is not None else 'none'}", *(extra or []), str(yaml_path), f"{dest}/m"]


def count_events(log_text: str) -> collections.Counter[str]:
    events: collections.Counter[str] = collections.Counter()
    for line in log_text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            ev = json.loads(line).get("event")
        except ValueError:
            continue
        if isinstance(ev, str):
            events[ev] += 1
    return events


@dataclass
class RunResult:
    rc: int
    wall: float
    log: str


def run_mirror(cmd: list[str], log_path: Path, timeout: float = 1800) -> RunResult:
    env = dict(os.environ, PYTHONPATH=os.environ.get("MIRROR_PYTHONPATH") or str(ROOT))
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=env["PYTHONPATH"],
                              timeout=timeout)
    return RunResult(proc.returncode, time.perf_counter() - start, log_path.read_text(errors="replace"))


def last_error(log: str) -> str:
    for line in reversed(log.splitlines()):
        if '"error"' in line or "error" in line.lower():
            return line[:300]
    return log.strip().splitlines()[-1][:300] if log.strip() else ""


@contextmanager
def testbed(tmp: Path, *, token: bool = True) -> Iterator[tuple[Registry, Registry, TokenServer | None]]:
    """A source registry and a destination registry (bearer-token auth when ``token``)."""
    with ExitStack() as stack:
        ts = stack.enter_context(TokenServer(tmp / "token", users={USER: PASSWORD})) if token else None
        src = stack.enter_context(start_registry(tmp / "src"))
        dst = stack.enter_context(start_registry(tmp / "dst", token=ts))
        yield src, dst, ts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=0.10, help="share of requests that get a fault (default 0.1)")
    ap.add_argument("--seed", type=int, default=1, help="fault RNG seed")
    ap.add_argument("--repos", type=int, default=20)
    ap.add_argument("--tags", type=int, default=5)
    ap.add_argument("--big-mib", type=int, default=128, help="size of the large blob in MiB (0: none)")
    ap.add_argument("--rounds", type=int, default=8, help="at most this many runs under faults")
    ap.add_argument("--kinds", default=",".join(CHAOS_KINDS), help="fault kinds (comma-separated)")
    ap.add_argument("--no-clean", action="store_true", help="skip the clean (no-fault) timing run")
    args = ap.parse_args()
    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)  # the proxy's own noise about dropped peers

    with tempfile.TemporaryDirectory(prefix="mirror-chaos-", dir=WORK_DIR) as tmp_s:
        tmp = Path(tmp_s)
        with testbed(tmp) as (src, dst, _ts):
            t0 = time.perf_counter()
            catalog = seed_catalog(src, args.repos, args.tags, args.big_mib)
            print(f"seeded {len(catalog.images)} images, {catalog.unique_bytes / MiB:.1f} MiB unique "
                  f"in {time.perf_counter() - t0:.1f}s", flush=True)
            clean_wall = None
            clean_bytes = None
            if not args.no_clean:
                with start_registry(tmp / "dst-clean", token=_ts) as clean_dst, \
                        RegistryProxy(clean_dst) as cproxy, RegistryProxy(src) as sproxy:
                    y = sync_yaml(sproxy.host, catalog, tmp / "clean.yaml")
                    res = run_mirror(mirror_sync_cmd(y, cproxy.host, None), tmp / "clean.log")
                    if res.rc != 0:
                        print(f"clean run failed ({res.rc}): {last_error(res.log)}")
                        return 1
                    clean_wall, clean_bytes = res.wall, cproxy.upload_bytes
                    v = verify(src, clean_dst, catalog)
                    print(f"clean run: {res.wall:.1f}s, {cproxy.upload_bytes / MiB:.1f} MiB sent, "
                          f"{v.verified}/{len(catalog.images)} verified", flush=True)

            kinds = [k for k in args.kinds.split(",") if k]
            with RegistryProxy(src) as sproxy, RegistryProxy(dst) as dproxy:
                schaos = Chaos(sproxy, args.rate, seed=args.seed, kinds=kinds)
                dchaos = Chaos(dproxy, args.rate, seed=args.seed + 1, kinds=kinds)
                sproxy.add_fault(schaos.fault())
                dproxy.add_fault(dchaos.fault())
                y = sync_yaml(sproxy.host, catalog, tmp / "chaos.yaml")
                state = tmp / "state.sqlite"
                events: collections.Counter[str] = collections.Counter()
                wall = 0.0
                rounds = 0
                ok = False
                for rounds in range(1, args.rounds + 1):
                    res = run_mirror(mirror_sync_cmd(y, dproxy.host, state), tmp / f"chaos-{rounds}.log")
                    wall += res.wall
                    events += count_events(res.log)
                    print(f"round {rounds}: exit {res.rc} after {res.wall:.1f}s"
                          + (f" — {last_error(res.log)}" if res.rc else ""), flush=True)
                    if res.rc == 0:
                        ok = True
                        break
                    if os.environ.get("CHAOS_LOGS"):
                        keep = Path(os.environ["CHAOS_LOGS"])
                        keep.mkdir(parents=True, exist_ok=True)
                        (keep / f"chaos-{rounds}.log").write_text(res.log)
                schaos.enabled = dchaos.enabled = False
                faults = schaos.counts + dchaos.counts
                requests = len(sproxy.requests) + len(dproxy.requests)
                sent = dproxy.upload_bytes

            v = verify(src, dst, catalog)
            print()
            print(f"fault rate {args.rate:.0%} (seed {args.seed}), {requests} requests through the proxies, "
                  f"{sum(faults.values())} faults injected:")
            for kind in CHAOS_KINDS:
                if faults[kind]:
                    print(f"  {kind:18} {faults[kind]}")
            print(f"rounds: {rounds} ({'succeeded' if ok else 'never succeeded'})")
            print("retries (mirror log events): " + ", ".join(f"{e}={events[e]}" for e in RETRY_EVENTS))
            print(f"bytes sent to the destination: {sent / MiB:.1f} MiB; catalog unique bytes "
                  f"{catalog.unique_bytes / MiB:.1f} MiB; re-sent {max(0, sent - catalog.unique_bytes) / MiB:.1f} MiB"
                  + (f"; clean run sent {clean_bytes / MiB:.1f} MiB" if clean_bytes is not None else ""))
            print(f"images verified complete: {v.verified}/{len(catalog.images)}; failed: {len(v.failed)}")
            for f in v.failed[:10]:
                print(f"  FAILED {f}")
            print(f"corrupt at the destination: {v.corrupt_blobs} blobs, {v.corrupt_manifests} manifests "
                  f"(missing: {v.missing})")
            print(f"wall time under faults: {wall:.1f}s over {rounds} round(s)"
                  + (f"; clean run {clean_wall:.1f}s ({wall / clean_wall:.2f}x)" if clean_wall else ""))
            good = ok and not v.failed and v.corrupt_blobs == 0 and v.corrupt_manifests == 0
            return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
