"""``mirror worker``: take units from the queue and sync them, on as many machines as you like.

Each worker resolves credentials from its own flags, auth files and ``--credentials-from`` YAML;
the queue holds none. A unit that fails is tried again (by any worker) until the run's
``max_attempts``, then reported failed with its reason. A worker that stops heart-beating for
``lease`` seconds (killed, partitioned) is presumed dead: another worker puts its jobs back in the
queue, and the one that takes a job over resumes its chunked upload from the shared session.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

import anyio
import procrastinate
from msgspec import Struct, field
from msgspec.structs import replace
from procrastinate import JobContext, RetryStrategy

from mirror.aio import LRU
from mirror.config.schema import Credentials
from mirror.distributed.app import MAX_TASK_ATTEMPTS, QUEUE, TASK, open_queue
from mirror.distributed.gate import PgBlobGate, open_gate
from mirror.distributed.pgstate import PgState, share_cooldowns
from mirror.distributed.runs import Claim, RunBook
from mirror.engine.blobs import KnownLocations
from mirror.engine.sync import ImageRecord, Scheduler, SyncOptions
from mirror.http.tls import TLSOptions
from mirror.log import bound, get_logger
from mirror.ops.units import Resolver
from mirror.plan.pairs import WorkUnit
from mirror.runtime import Runtime
from mirror.signing.policy import Policy
from mirror.transports.side import SideOptions

log = get_logger("mirror.worker")

#: Seconds before a unit that failed is offered again.
RETRY_WAIT = 1
#: Runs a worker keeps a scheduler for (a worker serves every run in the queue).
RUNS = 8


class RetryUnit(Exception):
    """The unit failed and has attempts left: procrastinate offers it again."""


class WorkerSettings(Struct, frozen=True):
    url: str
    jobs: int = 4
    blob_jobs: int = 8
    lease: float = 30.0
    src_side: SideOptions = field(default_factory=SideOptions)
    dst_side: SideOptions = field(default_factory=SideOptions)
    dest_tls_given: bool = False          # --dest-tls-verify given: it beats the run's
    secrets: Mapping[str, Credentials] = field(default_factory=dict)
    policy: Policy | None = None
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")


class Worker:
    def __init__(self, rt: Runtime, state: PgState, settings: WorkerSettings, book: RunBook,
                 gate: PgBlobGate) -> None:
        self.rt = rt
        self.state = state
        self.settings = settings
        self.book = book
        self.gate = gate
        self._runs: LRU[str, Scheduler] = LRU(RUNS)

    def _scheduler(self, run_id: str, claim: Claim) -> Scheduler:
        options = claim.options
        found = self._runs.get(run_id)
        if found is None:
            dst = self.settings.dst_side
            if not self.settings.dest_tls_given:
                dst = replace(dst, tls=TLSOptions(verify=options.dest_tls_verify,
                                                  cert_dir=dst.tls.cert_dir or options.dest_cert_dir))
            resolver = Resolver(self.rt, self.settings.src_side, dst, self.settings.secrets, self.settings.policy)
            reformat = replace(options.copy.reformat, tmpdir=dst.local.tmpdir)  # this worker's --tmpdir
            sync_options = SyncOptions(jobs=self.settings.jobs, blob_jobs=self.settings.blob_jobs, keep_going=True,
                                       copy=replace(options.copy, reformat=reformat))
            state, since = self.state, claim.started
            locations = KnownLocations(lambda host, digest: state.known_repos(host, str(digest)),
                                       shared=lambda host, repo, digest: state.verified_since(host, repo, str(digest),
                                                                                               since))
            found = Scheduler(sync_options, locations, opener=resolver.open, gate=self.gate, choices=state)
            self._runs.put(run_id, found)
        return found

    async def sync_unit(self, context: JobContext, run: str, seq: int) -> None:
        attempt = context.job.attempts
        claim = await self.book.claim(run, seq, self.settings.name, attempt)
        if claim is None:  # finished already, or its run was given up
            return
        unit = claim.unit
        with bound(run=run, unit=seq, attempt=attempt + 1):
            if attempt >= claim.options.max_attempts:
                await self.book.complete(run, seq, _failed(unit, f"gave up after {attempt} attempts "
                                                                 "(its workers stopped or it kept failing)"))
                return
            try:
                record = await self._scheduler(run, claim).sync_one(unit)
            except Exception as exc:  # not one image's failure (a bug, a broken setting): fail the unit anyway
                log.exception("unit_crashed")
                record = _failed(unit, str(exc) or type(exc).__name__)
            if record.outcome == "failed" and attempt + 1 < claim.options.max_attempts:
                await self.book.requeue(run, seq, record.reason)
                raise RetryUnit(record.reason)
            await self.book.complete(run, seq, record)


def _failed(unit: WorkUnit, reason: str) -> ImageRecord:
    return ImageRecord(unit.src_name, unit.dst_name, None, "failed", reason, 0, 0, 0, 0, 0.0)


async def run_worker(rt: Runtime, state: PgState, settings: WorkerSettings) -> None:
    """Serve the queue until SIGTERM/SIGINT (procrastinate's handlers: running units finish first)."""
    async with open_queue(settings.url) as (app, pool), \
            open_gate(settings.url, settings.blob_jobs * 2 + settings.jobs) as gate:
        worker = Worker(rt, state, settings, RunBook(pool), gate)
        app.task(name=TASK, queue=QUEUE, pass_context=True,
                 retry=RetryStrategy(max_attempts=MAX_TASK_ATTEMPTS, wait=RETRY_WAIT,
                                     retry_exceptions={RetryUnit}))(worker.sync_unit)
        log.info("worker_started", worker=settings.name, jobs=settings.jobs, lease=settings.lease)
        async with anyio.create_task_group() as tg:
            tg.start_soon(share_cooldowns, state, rt.http)
            tg.start_soon(_requeue_stalled, app, settings.lease)
            await app.run_worker_async(
                queues=[QUEUE], name=settings.name, concurrency=settings.jobs, wait=True,
                fetch_job_polling_interval=1.0, update_heartbeat_interval=max(0.5, settings.lease / 4),
                stalled_worker_timeout=settings.lease, delete_jobs="successful")
            tg.cancel_scope.cancel()
        log.info("worker_stopped", worker=settings.name)


async def _requeue_stalled(app: procrastinate.App, lease: float) -> None:
    """Forever: put the jobs of workers silent for ``lease`` seconds back in the queue."""
    manager: Any = app.job_manager
    while True:
        await anyio.sleep(max(0.5, lease / 2))
        for job in await manager.get_stalled_jobs(task_name=TASK, seconds_since_heartbeat=lease):
            try:
                await manager.retry_job(job)
            except Exception as exc:  # another worker put it back first
                log.debug("requeue_skipped", job=job.id, error=str(exc))
                continue
            log.warning("job_requeued", job=job.id, worker=job.worker_id, attempts=job.attempts)
