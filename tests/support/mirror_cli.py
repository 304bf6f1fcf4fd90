"""Run the real ``mirror`` CLI as a subprocess (as a user would), and assert on its output."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_mirror(*args: str, env: Mapping[str, str] | None = None, input: str | None = None,
               timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``python -m mirror ARGS``; with ``check`` a non-zero exit fails with the full output."""
    full_env = dict(os.environ if env is None else env)
    full_env.setdefault("PYTHONPATH", str(ROOT))
    # Tests share no state file unless they ask for one (facts from one test's registries would
    # otherwise suggest mounts in another's).
    full_env.setdefault("MIRROR_STATE", "none")
    proc = subprocess.run([sys.executable, "-m", "mirror", *args], capture_output=True, text=True,
                          env=full_env, input=input, timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"mirror {' '.join(args)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """A failure must be one clear line on stderr, a non-zero exit, and no traceback."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]
    return lines[0]


class MirrorProcess:
    """A long-running ``python -m mirror ARGS`` (a ``mirror worker``, a coordinator), output to ``log``.

    ``name`` is what ``mirror worker`` calls itself in the queue (``HOSTNAME:PID``). Use it as a
    context manager: leaving kills the process if a test left it running.
    """

    def __init__(self, *args: str, log: Path, env: Mapping[str, str] | None = None) -> None:
        full_env = dict(os.environ if env is None else env)
        full_env.setdefault("PYTHONPATH", str(ROOT))
        full_env.setdefault("MIRROR_STATE", "none")
        self.log = log
        with open(log, "wb") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen([sys.executable, "-m", "mirror", *args], stdout=out,
                                         stderr=subprocess.STDOUT, env=full_env, cwd=ROOT)

    @property
    def name(self) -> str:
        return f"{socket.gethostname()}:{self.proc.pid}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        """The exit status; fails the test with the output if it does not exit within ``timeout``."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"mirror did not exit within {timeout}s:\n{self.output()[-4000:]}") from None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig`` (SIGTERM: a graceful stop) and return the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def __enter__(self) -> MirrorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
