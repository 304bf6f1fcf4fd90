"""``copy --pairs``: many ``copy``s in one process, on one engine.

Every pair is an ordinary :func:`mirror.ops.copy.copy` (same checks, same digest pinning, same
publication rules), but they share the run: connections, auth tokens, the blob locations learnt
(a layer uploaded for one pair is mounted, not sent again, for the next) and one scheduler per set
of copy options, which de-duplicates concurrent uploads of the same blob. ``jobs`` pairs run at
once; a pair whose destination is a local transport runs alone among those (files are written in
place). A pair that fails is reported with skopeo's exit status for it and the others go on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

import anyio
from msgspec import Struct

from mirror.aio import image_error
from mirror.engine.image import CopyOptions
from mirror.engine.reformat import Reformat
from mirror.engine.sync import ImageRecord, Scheduler, SyncOptions
from mirror.errors import MirrorError
from mirror.ops.copy import ImageName, copy, refuse_referrers
from mirror.runtime import Runtime
from mirror.signing.policy import Policy
from mirror.transports.side import SideOptions


class CopyPair(Struct, frozen=True):
    """One line of a pairs file: where it was, and the two images it names."""

    line: int
    source: str       # as written in the file
    destination: str
    src: ImageName
    dst: ImageName


class PairResult(Struct, frozen=True):
    pair: CopyPair
    record: ImageRecord
    status: int  # skopeo's exit status for this copy: 0 copied (or up to date), 2 image missing, 1 other


class PairsRun(Struct, frozen=True):
    """What every pair shares: the two sides' settings and the engine's limits."""

    src_side: SideOptions
    dst_side: SideOptions
    options: Callable[[ImageName], CopyOptions]  # the copy options for a pair's destination
    jobs: int = 8          # pairs at once
    blob_jobs: int = 16    # blob transfers at once, per scheduler
    policy: Policy | None = None
    referrers: tuple[str, ...] | None = None


async def copy_pairs(rt: Runtime, run: PairsRun, pairs: Iterable[CopyPair],
                     on_result: Callable[[PairResult], None]) -> None:
    """Copy every pair, ``run.jobs`` at a time; ``on_result`` hears about each as it ends. A failure
    of one image is its result; anything else (cancellation, an internal error) ends the run."""
    pairs = list(pairs)
    if run.referrers is not None:  # refused before any I/O, as copy does
        for pair in pairs:
            refuse_referrers(rt, pair.src, pair.dst)
    locations = rt.known_locations()
    schedulers: dict[Reformat, Scheduler] = {}

    def scheduler(options: CopyOptions) -> Scheduler:
        # Pairs' options differ only in what their destination transport (or a pinned digest) makes
        # of the reformat flags: one scheduler per variant, all sharing the blob locations learnt.
        found = schedulers.get(options.reformat)
        if found is None:
            found = schedulers[options.reformat] = Scheduler(
                SyncOptions(jobs=run.jobs, blob_jobs=run.blob_jobs, copy=options), locations, choices=rt.state)
        return found

    local = anyio.Lock()
    todo = iter(pairs)
    async with anyio.create_task_group() as tg:
        for _ in range(max(1, run.jobs)):
            tg.start_soon(_worker, rt, run, todo, scheduler, local, on_result)


async def _worker(rt: Runtime, run: PairsRun, todo: Iterator[CopyPair], scheduler: Callable[[CopyOptions], Scheduler],
                  local: anyio.Lock, on_result: Callable[[PairResult], None]) -> None:
    for pair in todo:  # a shared iterator: each pair goes to one worker
        if pair.dst.transport == "docker":
            on_result(await _one(rt, run, pair, scheduler))
        else:
            async with local:
                on_result(await _one(rt, run, pair, scheduler))


async def _one(rt: Runtime, run: PairsRun, pair: CopyPair, scheduler: Callable[[CopyOptions], Scheduler]
               ) -> PairResult:
    start = time.monotonic()
    try:
        record = await copy(rt, pair.src, pair.dst, run.src_side, run.dst_side, run.options(pair.dst),
                            policy=run.policy, referrers=run.referrers, scheduler=scheduler)
        return PairResult(pair, record, 0)
    except (MirrorError, BaseExceptionGroup) as exc:
        error = image_error(exc)
        if error is None:
            raise
        record = ImageRecord(str(pair.src), str(pair.dst), None, "failed", " ".join(str(error).splitlines()),
                             0, 0, 0, 0, round(time.monotonic() - start, 4))
        return PairResult(pair, record, error.exit_code)
