"""``mirror sync … --interval 6h`` / ``--schedule "0 3 * * *"``: a sync that keeps running.

One run at a time, in this process: run, sleep until the next slot, run again. Runs never overlap:
a run that outlasts its slot makes the scheduler skip the slots it missed (``slots_skipped``) and
start at the first slot still ahead — as cron does, never a burst of catch-up runs. ``--interval``
runs at once, then every interval after the first start; ``--schedule`` waits for its first slot
(local time, standard 5-field cron, read by croniter).

Every run reads the sync YAML again (an edited ConfigMap applies from the next run), opens its own
runtime and state file, gets a fresh run id bound to every log event it emits (``run``), and
rewrites ``--report``, ``--digestfile`` and ``--metrics``. A run that fails is logged and recorded
(``/healthz`` says so); the service goes on to the next slot.

SIGTERM during a run cancels it as a one-shot sync's SIGTERM does (uploads in flight finish their
chunk within the upload's stop grace and save their offset; the state file is closed cleanly), then
exits 0; SIGTERM while sleeping exits 0 at once.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
import uuid
from datetime import datetime

import anyio
from anyio.abc import TaskStatus
from croniter import croniter
from msgspec import Struct

from mirror.aio import leaf_errors
from mirror.cli import metrics, render, synccmd
from mirror.cli.commands import global_options
from mirror.cli.flags import get
from mirror.cli.logsetup import configure_logging
from mirror.cli.serve import LastRun, ServiceStatus, parse_listen, serve_http
from mirror.cli.start import run_loop
from mirror.engine.sync import RunStats
from mirror.errors import MirrorError, UsageError
from mirror.log import bound, get_logger
from mirror.ops import sync as sync_ops
from mirror.plan.retention import CreatedDates, created_dates
from mirror.runtime import open_runtime

log = get_logger("mirror.service")

MAX_SKIPPED = 100_000  # slots counted when a run overran (a bound, not a limit anyone meets)


class Schedule(Struct, frozen=True):
    """``--interval SECONDS`` or ``--schedule CRON``."""

    interval: float | None = None
    cron: str | None = None

    def first(self, now: float) -> float:
        return now if self.interval is not None else self._cron_next(now)

    def after(self, slot: float, now: float) -> tuple[float, int]:
        """The first slot after ``now`` following ``slot``, and how many slots in between were missed."""
        if self.interval is not None:
            steps = max(1, math.floor((now - slot) / self.interval) + 1)
            return slot + steps * self.interval, steps - 1
        nxt, skipped = self._cron_next(slot), 0
        while nxt <= now and skipped < MAX_SKIPPED:
            nxt, skipped = self._cron_next(nxt), skipped + 1
        return (nxt, skipped) if nxt > now else (self._cron_next(now), skipped)

    def period(self, slot: float) -> float:
        """The time from ``slot`` to the slot after it."""
        return self.interval if self.interval is not None else self._cron_next(slot) - slot

    def _cron_next(self, after: float) -> float:
        assert self.cron is not None
        return float(croniter(self.cron, datetime.fromtimestamp(after).astimezone()).get_next(float))


def parse_schedule(args: argparse.Namespace) -> Schedule:
    if args.schedule is None:
        return Schedule(interval=float(args.interval))
    text = " ".join(str(args.schedule).split())
    if len(text.split()) != 5 or not croniter.is_valid(text):
        raise UsageError(f"invalid --schedule {args.schedule!r}: expected a 5-field cron expression "
                         '(minute hour day-of-month month day-of-week), e.g. "0 3 * * *"')
    return Schedule(cron=text)


def serve(args: argparse.Namespace) -> int:
    """Run syncs on the schedule until SIGTERM; exit 0 then."""
    schedule = parse_schedule(args)
    address = parse_listen(args.listen) if args.listen else None
    synccmd.prepare(args)  # bad flags or a bad YAML stop here, before anything listens
    fmt = get(args, "log_format") or ("console" if sys.stderr.isatty() else "json")
    configure_logging(bool(get(args, "debug", False)), fmt)
    service = _Service(args, schedule, ServiceStatus(), created_dates())

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(_stop_on_sigterm, tg.cancel_scope, service.status)
            if address is not None:
                port = await tg.start(serve_http, address, service.status)
                log.info("listening", address=f"{address[0]}:{port}")
            await service.loop()

    run_loop(main)
    log.info("service_stopped", runs=dict(service.status.runs))
    return 0


async def _stop_on_sigterm(scope: anyio.CancelScope, status: ServiceStatus,
                           *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        task_status.started()
        async for _ in signals:
            log.info("service_stopping", running=status.running)
            scope.cancel()
            return


class _Service:
    def __init__(self, args: argparse.Namespace, schedule: Schedule, status: ServiceStatus,
                 created: CreatedDates) -> None:
        self.args = args
        self.schedule = schedule
        self.status = status
        self.created = created  # images' dates, by digest: learnt once, reused by every run

    async def loop(self) -> None:
        slot = self.schedule.first(time.time())
        while True:
            self.status.next_run = slot
            await anyio.sleep(max(0.0, slot - time.time()))
            self.status.next_run = None
            await self.run_once(slot)
            slot, skipped = self.schedule.after(slot, time.time())
            if skipped:
                log.warning("slots_skipped", count=skipped, reason="the run outlasted its slot")

    async def run_once(self, slot: float) -> None:
        run_id = uuid.uuid4().hex[:16]
        started = time.time()
        stats = RunStats()
        self.status.running = run_id
        outcome, error, figures = "failed", "", None
        with bound(run=run_id):
            log.info("run_started", slot=datetime.fromtimestamp(slot).astimezone().isoformat())
            try:
                outputs = await self._run(stats)
                figures = outputs.figures()
                outcome = "success" if figures.success else "failed"
            except Exception as exc:  # a failed run is recorded; the service goes on to the next slot
                error = _message(exc)
                log.error("run_failed", error=error)
            finally:
                self.status.running = None
                if figures is None:  # failed or stopped: the figures as far as the run got
                    figures = metrics.RunFigures.of(stats, {}, bool(self.args.dry_run), success=False)
                    outcome = "failed" if error else "stopped"
                self.status.last = LastRun(run_id, outcome, started, figures, self.schedule.period(slot), error)
                if outcome != "stopped":
                    self.status.runs[outcome] += 1
                log.info("run_finished", outcome=outcome, copied=figures.copied, skipped=figures.skipped,
                         failed=figures.failed, bytes=figures.bytes_sent, duration=figures.duration)

    async def _run(self, stats: RunStats) -> synccmd.RunOutputs:
        args = self.args
        prepared = synccmd.prepare(args)  # the YAML again: edits apply from this run on
        options = global_options(args)
        with synccmd.RunOutputs(args, prepared.dry_run, stats, quiet=True) as outputs, \
                render.SyncDisplay(stats, enabled=not args.quiet):
            body = synccmd.body(args, prepared, outputs.sink, stats, self.created)
            async with open_runtime(options, policies=sync_ops.policies(prepared.request.settings)) as rt:
                with anyio.fail_after(options.command_timeout):
                    outputs.result = await body(rt)
            for line in synccmd.prune_lines(args, outputs.result):
                verb, _, name = line.rpartition(" ")
                log.info(verb.replace(" ", "_"), image=name)
        return outputs


def _message(exc: BaseException) -> str:
    """One line for a run's error: the first MirrorError of a task group, else the error itself."""
    leaves = leaf_errors(exc)
    first = next((e for e in leaves if isinstance(e, MirrorError)), leaves[0] if leaves else exc)
    if isinstance(first, TimeoutError):
        return "run timed out (--command-timeout)"
    text = " ".join(str(first).splitlines())
    return text if isinstance(first, MirrorError) else f"internal error: {type(first).__name__}: {text}"
