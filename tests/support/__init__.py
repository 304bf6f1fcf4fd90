"""The mirror test bed: real registries, a token server, an image pusher, a fault proxy and skopeo.

Nothing here imports the ``mirror`` package: the test bed stands alone.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

SKOPEO_BIN = "/usr/bin/skopeo"
SKOPEO_TIMEOUT = 120.0

# An auth file that does not exist: skopeo must not pick up credentials from the machine.
_NO_AUTH_FILE = str(Path(tempfile.gettempdir()) / "mirror-testbed-no-auth" / "auth.json")


class SkopeoError(subprocess.CalledProcessError):
    """A failed skopeo run; ``str()`` includes the command and stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr:\n{self.stderr}"


def skopeo_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_AUTH", "DOCKER_CONFIG"))}
    env["REGISTRY_AUTH_FILE"] = _NO_AUTH_FILE
    return env


def run_skopeo(
    *args: str, check: bool = True, timeout: float = SKOPEO_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run ``skopeo --insecure-policy ARGS...`` with captured text output.

    With ``check`` (the default) a non-zero exit raises :class:`SkopeoError` carrying stderr."""
    cmd = [SKOPEO_BIN, "--insecure-policy", *args]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=skopeo_env(), stdin=subprocess.DEVNULL
    )
    if check and proc.returncode != 0:
        raise SkopeoError(proc.returncode, cmd, proc.stdout, proc.stderr)
    return proc


def skopeo_inspect_raw(ref: str, *flags: str) -> bytes:
    """``skopeo inspect --raw`` as bytes (byte-exact manifest as served)."""
    cmd = [SKOPEO_BIN, "--insecure-policy", "inspect", "--raw", *flags, ref]
    proc = subprocess.run(
        cmd, capture_output=True, timeout=SKOPEO_TIMEOUT, env=skopeo_env(), stdin=subprocess.DEVNULL
    )
    if proc.returncode != 0:
        raise SkopeoError(proc.returncode, cmd, proc.stdout, proc.stderr.decode(errors="replace"))
    return proc.stdout


__all__ = ["SKOPEO_BIN", "SkopeoError", "run_skopeo", "skopeo_env", "skopeo_inspect_raw"]
