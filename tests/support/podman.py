"""podman for the docker-daemon: and containers-storage: tests: a Docker-compatible API service on a
private store (``--root``/``--runroot``, vfs driver), and a tiny client for that API."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

PODMAN = shutil.which("podman")


@dataclass(frozen=True)
class Podman:
    """A podman API service on a private store (``--root``/``--runroot``, vfs driver)."""

    socket: str        # unix:///.../podman.sock
    flags: tuple[str, ...]
    spec: str          # containers-storage:[vfs@ROOT+RUNROOT]

    def run(self, *args: str) -> str:
        assert PODMAN is not None
        proc = subprocess.run([PODMAN, *self.flags, *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def inspect(self, name: str, template: str) -> str | None:
        """``podman image inspect --format TEMPLATE NAME``, or None when the store has no such image."""
        assert PODMAN is not None
        proc = subprocess.run([PODMAN, *self.flags, "image", "inspect", "--format", template, name],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            assert "image not known" in proc.stderr or "no such image" in proc.stderr.lower(), proc.stderr
            return None
        return proc.stdout.strip()

    def stored_digest(self, name: str) -> str | None:
        """The manifest digest the store records for ``name`` (``podman images --digests``), or None."""
        return self.inspect(name, "{{.Digest}}")

    def daemon_image_id(self, name: str) -> str | None:
        """The ID of ``name`` as the Docker-compatible API reports it (``GET /images/{name}/json``)."""
        status, body = api(self.socket, f"/images/{quote(name, safe='')}/json")
        if status == 404:
            return None
        assert status == 200, body
        return str(json.loads(body)["Id"])


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.path)


def api(socket_url: str, path: str) -> tuple[int, bytes]:
    """``GET path`` on the API socket ``unix:///...``: (status, body)."""
    conn = _UnixConnection(socket_url.removeprefix("unix://"))
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _ping(socket_url: str) -> bool:
    try:
        return api(socket_url, "/_ping")[0] == 200
    except (OSError, http.client.HTTPException):
        return False


@contextmanager
def start_podman(base: Path) -> Iterator[Podman]:
    """``podman system service`` on a private store under ``base``; stopped (by its PID) on exit."""
    assert PODMAN is not None, "podman is not installed"
    root, runroot, sock = base / "root", base / "runroot", base / "podman.sock"
    flags = ("--root", str(root), "--runroot", str(runroot), "--storage-driver", "vfs")
    log = open(base / "service.log", "wb")
    proc = subprocess.Popen([PODMAN, *flags, "system", "service", "--time=0", f"unix://{sock}"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not _ping(f"unix://{sock}"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"podman service did not start: {(base / 'service.log').read_text()[-2000:]}")
            time.sleep(0.1)  # polling interval of a start-up condition with a deadline, not synchronisation
        yield Podman(f"unix://{sock}", flags, f"containers-storage:[vfs@{root}+{runroot}]")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
