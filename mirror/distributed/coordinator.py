"""``mirror sync --queue``: plan the run into PostgreSQL, then follow it until every unit is done.

Workers (``mirror worker``) do the copying; this process streams their records into the same
progress, report, digest file and exit code a local run has, and prunes at the end as a local run
does. Units the plan already decided (``assumed_present``) are recorded at once, without a job.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream
from procrastinate.types import JSONDict

from mirror.distributed.app import QUEUE, TASK, open_queue
from mirror.distributed.runs import RunBook, RunOptions
from mirror.engine.sync import ASSUMED, ImageRecord, RunStats
from mirror.errors import MirrorError, UsageError
from mirror.log import get_logger
from mirror.ops import sync as sync_ops
from mirror.ops.units import Resolver, SyncEndpoints
from mirror.plan.expand import Planner, PlanOptions
from mirror.plan.pairs import WorkUnit
from mirror.runtime import Runtime

log = get_logger("mirror.queue")

#: How often the coordinator collects finished units (seconds).
POLL = 0.25
BATCH = 200


async def queue_sync(rt: Runtime, request: sync_ops.SyncRequest, plan: sync_ops.Plan,
                     on_record: Callable[[ImageRecord], None], stats: RunStats, url: str,
                     max_attempts: int) -> sync_ops.SyncResult:
    if request.options.dry_run:
        raise UsageError("--dry-run does not use --queue: run it without --queue (it copies nothing)")
    if request.dest != "docker":
        raise UsageError(f"--queue needs --dest docker: workers on other machines cannot write --dest {request.dest}")
    options = RunOptions(request.options.copy, request.dst_side.tls.verify, request.dst_side.tls.cert_dir,
                         max(1, max_attempts))
    resolver = Resolver(rt, request.src_side, request.dst_side, request.secrets, request.policy)
    result = sync_ops.SyncResult(stats)
    planner = Planner(SyncEndpoints(resolver), PlanOptions(request.naming, dest=request.dest, shard=request.shard),
                      request.settings, result.prune.append)
    run_id = uuid.uuid4().hex
    async with open_queue(url) as (app, pool):
        book = RunBook(pool)
        await book.create_run(run_id, options)
        log.info("run_queued", run=run_id)
        deferrer = app.configure_task(TASK, queue=QUEUE)
        send, receive = anyio.create_memory_object_stream[WorkUnit](BATCH * 2)
        failure: list[ImageRecord] = []

        async def enqueue() -> None:
            seq = 0
            async with receive:
                while batch := await _batch(receive):
                    rows = [(seq + i, unit, _assumed(unit) if unit.assumed_present else None)
                            for i, unit in enumerate(batch)]
                    seq += len(batch)
                    await book.add_units(run_id, rows)
                    jobs: list[JSONDict] = [{"run": run_id, "seq": n} for n, _unit, record in rows if record is None]
                    if jobs:
                        await deferrer.batch_defer_async(*jobs)
                    stats.planned = seq
            await book.set_planned(run_id, seq)
            stats.planning_done = True

        async def produce() -> None:
            async with send:
                await plan(planner)(send)

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(produce)
                tg.start_soon(enqueue)
                await _follow(book, run_id, stats, on_record, failure, request.options.keep_going)
                if failure:  # stop planning too
                    tg.cancel_scope.cancel()
        except BaseException:  # planning failed, or this process was interrupted: the run is over
            with anyio.CancelScope(shield=True):
                await _give_up(book, run_id)
            raise
        if failure:
            await _give_up(book, run_id)
            raise MirrorError(f"{failure[0].source}: {failure[0].reason}")
        await book.finish_run(run_id, "done" if stats.failed == 0 else "failed")
    if request.delete_pruned:
        for candidate in result.prune:
            await sync_ops.prune_repo(rt, request.dst_side, candidate, result)
    return result


async def _batch(receive: MemoryObjectReceiveStream[WorkUnit]) -> list[WorkUnit]:
    """The next units: wait for one, then take what is ready (up to ``BATCH``); [] at the end."""
    try:
        batch = [await receive.receive()]
    except anyio.EndOfStream:
        return []
    while len(batch) < BATCH:
        try:
            batch.append(receive.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            break
    return batch


def _assumed(unit: WorkUnit) -> ImageRecord:
    return ImageRecord(unit.src_name, unit.dst_name, None, "skipped", ASSUMED, 0, 0, 0, 0, 0.0)


async def _follow(book: RunBook, run_id: str, stats: RunStats, on_record: Callable[[ImageRecord], None],
                  failure: list[ImageRecord], keep_going: bool) -> None:
    """Report finished units as workers finish them, until all are (or one failed without --keep-going)."""
    while True:
        for record in await book.take_finished(run_id):
            if record.outcome == "failed" and not keep_going:  # the run's error, as in a local run
                failure.append(record)
                return
            stats.add(record)
            on_record(record)
        stats.active = await book.running(run_id)
        if stats.planning_done and stats.done >= stats.planned:
            return
        await anyio.sleep(POLL)  # the product's polling interval, not a test's synchronisation


async def _give_up(book: RunBook, run_id: str) -> None:
    """The run ends as failed: workers skip its units, and its queued jobs are cancelled."""
    await book.finish_run(run_id, "failed")
    await book.cancel_jobs(run_id, TASK)
