"""scripts/latencyproxy.py, the stand-in for a remote registry that ``scripts/bench --latency-ms`` puts
in front of the source: it really delays (lower bounds only, no speed target), it streams (a big
body passes through a proxy process whose peak RSS stays small), and mirror works through it."""

from __future__ import annotations

import http.client
import json
import random
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from support.images import SeededImages
from support.mirror_cli import ROOT, run_mirror
from support.registry import Registry

sys.path.insert(0, str(ROOT / "scripts"))

from latencyproxy import start_proxy

DELAY = 0.05
MiB = 1 << 20


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes, float]:
    start = time.monotonic()
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    return resp.status, body, time.monotonic() - start


def test_round_trips_cost_twice_the_delay_and_connects_one_more(registry: Registry) -> None:
    with start_proxy("127.0.0.1", registry.port, DELAY) as proxy:
        conn = http.client.HTTPConnection(proxy.host, timeout=10)
        try:
            status, _, first = _get(conn, "/v2/")  # a new connection: the handshake's round trip, then the request's
            assert status == 200
            assert first >= 4 * DELAY, first
            later = [_get(conn, "/v2/") for _ in range(3)]  # the same (kept-alive) connection: one round trip each
            assert all(status == 200 for status, _, _ in later)
            assert all(elapsed >= 2 * DELAY for _, _, elapsed in later), later
        finally:
            conn.close()
        assert proxy.stats.connections == 1
        assert proxy.stats.errors == []


def _pattern(n_mib: int) -> Iterator[bytes]:
    """``n_mib`` MiB of incompressible chunks, each starting with its own index (a reordering shows)."""
    noise = random.Random(5).randbytes(MiB - 8)
    for i in range(n_mib):
        yield i.to_bytes(8, "big") + noise


@contextmanager
def _source(n_mib: int) -> Iterator[int]:
    """A TCP server on 127.0.0.1 that sends ``_pattern(n_mib)`` to its first client and closes."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            for chunk in _pattern(n_mib):
                conn.sendall(chunk)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        server.close()
        thread.join(30)


def _peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def test_a_big_body_streams_through_with_bounded_memory() -> None:
    n_mib = 512
    expected = 0
    for chunk in _pattern(n_mib):
        expected = zlib.crc32(chunk, expected)
    with _source(n_mib) as port:
        proc = subprocess.Popen([sys.executable, str(ROOT / "scripts/latencyproxy.py"), "--upstream",
                                 f"127.0.0.1:{port}", "--delay-ms", "10"], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # "listening on 127.0.0.1:PORT, ..."
            host, _, listen = line.split()[2].rstrip(",").partition(":")
            received, crc = 0, 0
            buf = bytearray(256 * 1024)
            with socket.create_connection((host, int(listen)), timeout=30) as client:
                while n := client.recv_into(buf):
                    crc = zlib.crc32(memoryview(buf)[:n], crc)
                    received += n
            peak = _peak_rss_mib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)
    assert received == n_mib * MiB
    assert crc == expected  # every byte, in order
    # The process (an interpreter with asyncio: ~20 MiB) plus at most 8 MiB queued each way.
    assert peak < 64, f"proxy peak RSS {peak:.0f} MiB for a {n_mib} MiB body"


def test_mirror_inspects_and_copies_through_the_proxy(seeded_images: SeededImages, registry2: Registry) -> None:
    src = seeded_images.registry
    image = seeded_images.alpine
    with start_proxy("127.0.0.1", src.port, 0.02) as proxy:
        out = run_mirror("inspect", "--tls-verify=false", f"docker://{proxy.host}/{image.repo}:{image.tag}")
        assert json.loads(out.stdout)["Digest"] == image.digest
        run_mirror("copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
                   f"docker://{proxy.host}/{image.repo}:{image.tag}", registry2.ref("through/proxy", "v1"))
        assert proxy.stats.connections >= 1 and proxy.stats.bytes_down > sum(b.size for b in image.layers)
        assert proxy.stats.errors == []
    # skopeo, the oracle, reads back exactly the source's manifest.
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", registry2.ref("through/proxy", "v1")],
                         capture_output=True, check=True).stdout
    assert raw == image.manifest
