"""Run a real Prometheus Pushgateway (Debian's ``prometheus-pushgateway``) on 127.0.0.1, for the
deployment examples that push ``mirror sync --metrics`` files to one."""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .registry import free_port, stop_process, wait_until

PUSHGATEWAY_BIN = "/usr/bin/prometheus-pushgateway"


@dataclass(frozen=True)
class Pushgateway:
    url: str  # http://127.0.0.1:PORT
    log_path: Path

    def metrics(self) -> str:
        """What Prometheus would scrape from it: every pushed group, in the text format."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:
            return str(response.read().decode())


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def start_pushgateway(workdir: Path) -> Iterator[Pushgateway]:
    """A Pushgateway that keeps pushes in memory only, gone when the block ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "pushgateway.log"
    url = f"http://127.0.0.1:{free_port()}"
    with open(log_path, "ab") as log:
        # Debian's build persists to /var/lib/prometheus/pushgateway.data by default: other runs' pushes.
        proc = subprocess.Popen([PUSHGATEWAY_BIN, f"--web.listen-address={url.removeprefix('http://')}",
                                 "--persistence.file="],
                                stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=workdir)
    try:
        wait_until(lambda: proc.poll() is not None or _answers(url), 10, f"pushgateway {url}")
        if proc.poll() is not None:
            raise RuntimeError(f"pushgateway exited during start-up; log:\n{log_path.read_text(errors='replace')}")
        yield Pushgateway(url, log_path)
    finally:
        stop_process(proc)
