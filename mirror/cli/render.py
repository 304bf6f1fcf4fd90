"""Output: skopeo-shaped JSON, raw bytes, copy progress lines, prompts."""

from __future__ import annotations

import getpass
import json
import sys
from typing import Any

from mirror.engine.copy import BlobOutcome, ProgressEvent
from mirror.errors import UsageError


def json_out(data: Any) -> None:
    """JSON as Go's json.MarshalIndent(v, "", "    ") prints it (HTML characters escaped)."""
    text = json.dumps(data, indent=4, ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    sys.stdout.write(text + "\n")


def raw(data: bytes) -> None:
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def note(text: str) -> None:
    print(f"mirror: note: {text}", file=sys.stderr)


def prompt_credentials(username: str | None, password: str | None) -> tuple[str, str]:
    if not sys.stdin.isatty():
        raise UsageError("username and password are required (use -u/-p or --password-stdin)")
    if not username:
        username = input("Username: ").strip()
    if not password:
        password = getpass.getpass("Password: ")
    if not username or not password:
        raise UsageError("username and password are required")
    return username, password


class CopyProgress:
    """skopeo's copy progress lines on stdout (with ``done``/``skipped`` on a terminal)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stdout.isatty()
        self._started = False

    def __call__(self, event: ProgressEvent) -> None:
        if self.quiet or event.desc is None:
            return
        if not self._started:
            self._started = True
            print("Getting image source signatures", flush=True)
        what = "config" if event.is_config else "blob"
        if event.kind == "blob_start" and not self.tty:
            print(f"Copying {what} {event.desc.digest}", flush=True)
        elif event.kind == "blob_done" and self.tty:
            state = "skipped: already exists" if event.outcome is BlobOutcome.SKIPPED else (
                "mounted" if event.outcome is BlobOutcome.MOUNTED else "done")
            print(f"Copying {what} {event.desc.digest.hex[:12]} {state}", flush=True)
        elif event.kind == "manifest":
            print("Writing manifest to image destination", flush=True)

    def finish(self) -> None:
        if not self.quiet and self._started:
            print("Storing signatures", flush=True)
