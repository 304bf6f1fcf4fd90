"""`mirror sync` killed with SIGKILL mid-upload resumes from the registry's offset on the next run.

distribution signs each upload URL with the offset it has acknowledged; bytes of a chunk that were
in flight when the process died make that URL (and the session) invalid. So the kill here lands
while the 4th chunk is held by the proxy in front of the destination — the registry has exactly
the acknowledged chunks, as after a link that dropped between chunks — and the second run must
send only the remainder.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from support.images import Client
from support.proxy import Fault, RegistryProxy
from support.registry import Registry
from test_resume import CHUNK, LAYER_SIZE, HeldRequest, big_image, kill_while_held, nth_patch, uploads_of  # noqa: F401 (fixture)

from mirror.core.descriptor import Descriptor
from mirror.state import StateStore

ROOT = Path(__file__).resolve().parents[1]


def test_killed_sync_resumes_the_big_upload(big_image: tuple[Registry, Descriptor, bytes],  # noqa: F811
                                            registry2: Registry, tmp_path: Path) -> None:
    src, layer, manifest = big_image
    hold = HeldRequest()

    state = tmp_path / "state.sqlite"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT), "MIRROR_CHUNK_THRESHOLD": "8M"}
    report = tmp_path / "report.jsonl"
    with RegistryProxy(registry2, faults=[Fault(nth_patch(4), hold)]) as proxy:
        argv = [sys.executable, "-m", "mirror", "sync", "--src", "docker", "--dest", "docker",
                "--src-tls-verify=false", "--dest-tls-verify=false", "--state", str(state), "--chunk-size", "4MiB",
                "--report", str(report), f"{src.host}/big/src:v1", f"{proxy.host}/mirror"]
        kill_while_held(argv, env, hold, "the 4th chunk")
        with StateStore.open(state, on_corrupt="error") as store:
            (saved,) = store.uploads()
        assert saved.offset == 3 * CHUNK
        mark = len(proxy.requests)
        second = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr
        requests = proxy.requests[mark:]
    remainder = LAYER_SIZE - saved.offset
    patched = sum(int(r.header("Content-Length") or 0) for r in uploads_of(requests, "PATCH"))
    assert patched <= remainder + CHUNK, (patched, remainder)
    (record,) = [json.loads(line) for line in report.read_text().splitlines()]
    assert record["outcome"] == "copied" and record["bytes"] <= remainder + CHUNK
    body, _type, _digest = Client(registry2).get_manifest("mirror/src", "v1")
    assert body == manifest
    assert hashlib.sha256(Client(registry2).get_blob("mirror/src", str(layer.digest))).hexdigest() == layer.digest.hex


def test_large_blob_committed_by_an_unrecorded_run_is_not_sent_again(
        big_image: tuple[Registry, Descriptor, bytes], registry2: Registry, tmp_path: Path) -> None:  # noqa: F811
    """A run killed after the registry committed a large blob but before anything recorded it leaves the
    blob in a repository without tags (and, here, no state at all): the next run finds it with a HEAD."""
    src, layer, manifest = big_image
    Client(registry2).push_blob("mirror/src", Client(src).get_blob("big/src", str(layer.digest)))
    report = tmp_path / "report.jsonl"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "mirror", "sync", "--src", "docker", "--dest", "docker", "--src-tls-verify=false",
            "--dest-tls-verify=false", "--state", "none", "--report", str(report), f"{src.host}/big/src:v1",
            f"{registry2.host}/mirror"]
    run = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    (record,) = [json.loads(line) for line in report.read_text().splitlines()]
    assert record["outcome"] == "copied" and record["blobs"]["skipped"] == 1 and record["bytes"] < 4096, record
    assert Client(registry2).get_manifest("mirror/src", "v1")[0] == manifest
