"""The long-running sync's HTTP endpoint (``--listen HOST:PORT``): ``/metrics`` and ``/healthz``.

Served by aiohttp's server on the process's event loop, bound only to the address given. Both
answers are read from a :class:`ServiceStatus` the scheduler updates between runs; a scrape never
waits for a run.

``/healthz`` answers 200 when the last run succeeded (no image failed) and ended less than twice
the schedule's period ago, 503 otherwise (no run finished yet, the last one failed, or it is
stale), with a JSON body saying which.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import anyio
from aiohttp import web
from anyio.abc import TaskStatus
from msgspec import Struct, field
from prometheus_client import CONTENT_TYPE_LATEST

from mirror.cli import metrics
from mirror.errors import MirrorError, UsageError


class LastRun(Struct, frozen=True):
    run_id: str
    outcome: str         # success | failed | stopped
    started_at: float    # Unix time
    figures: metrics.RunFigures
    period: float        # the schedule's period after this run's slot (seconds)
    error: str = ""

    @property
    def ended_at(self) -> float:
        return self.figures.ended_at


class ServiceStatus(Struct):
    """What the scheduler tells the endpoint (one writer: the scheduler's task)."""

    last: LastRun | None = None
    running: str | None = None  # the run id in progress
    next_run: float | None = None
    runs: Counter[str] = field(default_factory=Counter)

    def health(self, now: float | None = None) -> tuple[int, dict[str, Any]]:
        now = time.time() if now is None else now
        last = self.last
        body: dict[str, Any] = {"running": self.running, "next_run_at": _iso(self.next_run), "last_run": None}
        if last is None:
            body["status"] = "waiting"
            return 503, body
        age = max(0.0, now - last.ended_at)
        max_age = 2 * last.period
        figures = last.figures
        body["last_run"] = {
            "id": last.run_id, "outcome": last.outcome, "started_at": _iso(last.started_at),
            "ended_at": _iso(last.ended_at), "age_seconds": round(age, 3), "max_age_seconds": max_age,
            "duration_seconds": figures.duration, "error": last.error or None,
            "images": {"copied": figures.copied, "skipped": figures.skipped, "failed": figures.failed},
            "bytes_sent": figures.bytes_sent,
        }
        if last.outcome != "success":
            body["status"] = "failing"
        elif age >= max_age:
            body["status"] = "stale"
        else:
            body["status"] = "ok"
        return (200 if body["status"] == "ok" else 503), body

    def exposition(self) -> bytes:
        families = metrics.run_families(self.last.figures) if self.last is not None else []
        families += metrics.service_families(self.runs, self.running is not None, self.next_run)
        return metrics.exposition(families)


def _iso(when: float | None) -> str | None:
    return None if when is None else datetime.fromtimestamp(when, UTC).isoformat().replace("+00:00", "Z")


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6); a host is required: mirror binds only where asked."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"invalid --listen {text!r}, expected HOST:PORT (e.g. 127.0.0.1:9310)")
    return host, int(port)


async def serve_http(address: tuple[str, int], status: ServiceStatus,
                     *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled; ``task_status`` gets the bound port once the socket listens."""
    async def metrics_page(_request: web.Request) -> web.Response:
        response = web.Response(body=status.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def healthz(_request: web.Request) -> web.Response:
        code, body = status.health()
        return web.json_response(body, status=code)

    app = web.Application()
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, address[0], address[1])
        try:
            await site.start()
        except OSError as exc:
            raise MirrorError(f"--listen {address[0]}:{address[1]}: {exc.strerror or exc}") from None
        task_status.started(_bound_port(runner, address[1]))
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()


def _bound_port(runner: web.AppRunner, asked: int) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    return asked
