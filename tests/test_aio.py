"""SingleFlight: one call per key at a time, shared successes, forgotten failures, bounded memory."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from mirror.aio import SingleFlight


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
