"""Output: skopeo-shaped JSON, raw bytes, copy progress lines, prompts."""

from __future__ import annotations

import getpass
import json
import sys
import time
from typing import Any

from mirror.core.descriptor import Descriptor
from mirror.engine.blobs import BlobOutcome
from mirror.engine.sync import ImageRecord, RunStats
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
    """skopeo-like copy progress lines on stdout (suppressed by ``--quiet``)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._started = False

    def _start(self) -> None:
        if not self._started:
            self._started = True
            print("Getting image source signatures", flush=True)

    def __call__(self, desc: Descriptor, outcome: BlobOutcome) -> None:
        if self.quiet:
            return
        self._start()
        state = {BlobOutcome.SKIPPED: "skipped: already exists", BlobOutcome.MOUNTED: "mounted",
                 BlobOutcome.FOREIGN: "skipped: foreign layer"}.get(outcome, "done")
        print(f"Copying blob {desc.digest} {state}", flush=True)

    def finish(self, record: ImageRecord) -> None:
        if self.quiet:
            return
        self._start()
        if record.outcome == "skipped":
            print(f"Image is up to date at the destination ({record.digest})", flush=True)
            return
        print("Writing manifest to image destination", flush=True)
        print("Storing signatures", flush=True)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class SyncDisplay:
    """A one-line live status on a terminal (stderr): images done/total, bytes and rate, active."""

    def __init__(self, stats: RunStats, enabled: bool) -> None:
        self.stats = stats
        self.enabled = enabled and sys.stderr.isatty()
        self._live: Any = None

    def __rich__(self) -> str:
        s = self.stats
        elapsed = max(1e-6, time.monotonic() - s.started)
        total = f"{s.planned}" if s.planning_done else "?"
        return (f"images {s.done}/{total}  copied {s.copied}  up-to-date {s.skipped}  failed {s.failed}  "
                f"{human_bytes(s.bytes_sent)} ({human_bytes(s.bytes_sent / elapsed)}/s)  active {s.active}")

    def __enter__(self) -> SyncDisplay:
        if self.enabled:
            from rich.console import Console  # imported only for a terminal display
            from rich.live import Live

            self._live = Live(self, console=Console(stderr=True), refresh_per_second=4, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
