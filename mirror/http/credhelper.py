"""Docker's credential-helper protocol: ``docker-credential-<name> get`` with the server on stdin.

The helper is a child process awaited with :func:`anyio.run_process`, never a blocking call: a
helper may take seconds (a keychain prompt, a cloud token exchange) and must not stall the event
loop meanwhile. It is bounded by ``helper_timeout`` and killed when it runs over or the caller is cancelled.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping

import anyio

from mirror.errors import ConfigError, CredentialError

DEFAULT_HELPER_TIMEOUT = 30.0
TOKEN_USER = "<token>"
_NOT_FOUND = "credentials not found"

#: A helper's answer: (Username, Secret), or None for "credentials not found".
HelperAnswer = tuple[str, str] | None


async def run_helper(helper: str, server: str, env: Mapping[str, str],
                     helper_timeout: float = DEFAULT_HELPER_TIMEOUT) -> HelperAnswer:
    """Run ``docker-credential-<helper> get`` (found on ``env["PATH"]``) for ``server``.

    A "credentials not found" answer is None; anything else unexpected is a :class:`CredentialError`
    whose message never holds the helper's output on success.
    """
    if not helper or "/" in helper or helper in (".", ".."):
        raise ConfigError(f"invalid credential helper name {helper!r}")
    program = f"docker-credential-{helper}"
    executable = shutil.which(program, path=env.get("PATH", os.defpath))
    if executable is None:
        raise CredentialError(f"credential helper {program} not found in PATH")
    try:
        with anyio.fail_after(helper_timeout):
            proc = await anyio.run_process([executable, "get"], input=server.encode(), check=False, env=dict(env))
    except TimeoutError:
        raise CredentialError(f"credential helper {program} timed out after {helper_timeout:g}s") from None
    except OSError as exc:
        raise CredentialError(f"cannot run credential helper {program}: {exc.strerror or exc}") from None
    return _answer(program, server, proc)


def _answer(program: str, server: str, proc: subprocess.CompletedProcess[bytes]) -> HelperAnswer:
    out = proc.stdout.decode("utf-8", "replace").strip()
    err = proc.stderr.decode("utf-8", "replace").strip()
    if _NOT_FOUND in out.lower() or (proc.returncode != 0 and _NOT_FOUND in err.lower()):
        return None
    if proc.returncode != 0:
        # Failure output is the helper's error text (c/image shows it too); never its stdout on success.
        detail = (out or err or "no output").splitlines()[0][:200]
        raise CredentialError(f"credential helper {program} failed for {server} (exit {proc.returncode}): {detail}")
    try:
        payload = json.loads(out)
    except (ValueError, RecursionError):
        raise CredentialError(f"credential helper {program} returned invalid JSON for {server}") from None
    username = payload.get("Username", "") if isinstance(payload, dict) else None
    secret = payload.get("Secret", "") if isinstance(payload, dict) else None
    if not isinstance(username, str) or not isinstance(secret, str):
        raise CredentialError(f"credential helper {program} returned a malformed answer for {server}")
    return username, secret
