"""SingleFlight: one call per key at a time, shared successes, forgotten failures, bounded memory."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from mirror.aio import LRU, SingleFlight
from mirror.core.digest import Digest
from mirror.engine.blobs import MAX_SOURCES, KnownLocations
from mirror.transports.base import Location


@pytest.mark.anyio
async def test_single_flight_shares_forgets_failures_and_is_bounded() -> None:
    calls: list[str] = []
    flight: SingleFlight[str] = SingleFlight(remember=2)

    async def work(key: str) -> str:
        calls.append(key)
        await anyio.lowlevel.checkpoint()
        return key.upper()

    results: list[tuple[str, bool]] = []
    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(lambda: _collect(flight, "a", work, results))
    assert calls == ["a"] and sorted(shared for _, shared in results) == [False, True, True, True, True]

    async def boom() -> str:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        await flight.do("b", boom)
    assert await flight.do("b", lambda: work("b")) == ("B", False)  # the failure was not remembered
    await flight.do("c", lambda: work("c"))  # remembers b and c: a (least recently used) is forgotten
    assert not flight.done("a") and flight.done("b") and flight.done("c")
    assert await flight.do("a", lambda: work("a")) == ("A", False)
    assert calls == ["a", "b", "c", "a"]


async def _collect(flight: SingleFlight[str], key: str, work, results: list[tuple[str, bool]]) -> None:  # type: ignore[no-untyped-def]
    results.append(await flight.do(key, lambda: work(key)))


@pytest.mark.anyio
async def test_single_flight_without_memory_shares_only_while_in_flight() -> None:
    flight: SingleFlight[int] = SingleFlight(remember=0)
    calls: list[int] = []
    gate = anyio.Event()

    async def work() -> int:
        calls.append(1)
        await gate.wait()
        return len(calls)

    results: list[tuple[int, bool]] = []

    async def call() -> None:
        results.append(await flight.do("k", work))

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        assert flight.held() == 1  # one call in flight, two callers waiting for it
        gate.set()
    assert sorted(results) == [(1, False), (1, True), (1, True)]
    assert flight.held() == 0 and not flight.done("k")  # nothing kept once the call is over
    assert await flight.do("k", work) == (2, False)


@pytest.mark.anyio
async def test_single_flight_waiters_retry_after_a_cancelled_call() -> None:
    flight: SingleFlight[str] = SingleFlight(remember=0)
    started = anyio.Event()

    async def hangs() -> str:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError

    results: list[tuple[str, bool]] = []

    async def waiter() -> None:
        async def quick() -> str:
            return "second"
        results.append(await flight.do("k", quick))

    async with anyio.create_task_group() as tg:
        first = anyio.CancelScope()

        async def owner() -> None:
            with first:
                await flight.do("k", hangs)

        tg.start_soon(owner)
        await started.wait()
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        first.cancel()
    assert results == [("second", False)]


def test_lru_is_bounded_and_reads_refresh() -> None:
    lru: LRU[str, int] = LRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # a is now the most recent
    lru.put("c", 3)
    assert "b" not in lru and lru.get("a") == 1 and lru.get("c") == 3 and len(lru) == 2


def test_known_locations_are_bounded() -> None:
    known = KnownLocations(remember=3)
    hot = Digest("sha256", "0" * 64)
    for i in range(MAX_SOURCES + 5):
        known.add(Location("docker", "r", f"repo{i}"), hot)
    assert known.candidates(Location("docker", "r", "x"), hot) == \
        [f"repo{i}" for i in reversed(range(5, MAX_SOURCES + 5))]  # the newest mount sources, newest first
    assert known.facts() == 3  # facts: the three most recent
    latest = Location("docker", "r", f"repo{MAX_SOURCES + 4}")
    assert known.present(latest, hot) and not known.present(Location("docker", "r", "repo0"), hot)
    for i in range(1, 5):
        assert known.present(latest, hot)  # a hit keeps the fact recent
        known.add(Location("docker", "r", "once"), Digest("sha256", f"{i:064x}"))
    assert known.facts() == 3 and known.present(latest, hot)
    assert not known.present(Location("docker", "r", "once"), Digest("sha256", f"{1:064x}"))
