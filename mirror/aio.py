"""Small anyio helpers with no policy of their own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Runs one call per key at a time; later callers share a success. Failures are forgotten,
    so a later caller retries (as go-containerregistry's workers.Do)."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, anyio.Lock] = {}
        self._done: dict[Hashable, T] = {}

    async def do(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """(result, shared): ``shared`` is True when another caller's result was reused."""
        if key in self._done:
            return self._done[key], True
        lock = self._locks.setdefault(key, anyio.Lock())
        async with lock:
            if key in self._done:
                return self._done[key], True
            result = await fn()
            self._done[key] = result
            self._locks.pop(key, None)  # waiters keep their reference; new callers see _done
            return result, False

    def done(self, key: Hashable) -> bool:
        """True once a call for ``key`` has succeeded."""
        return key in self._done
