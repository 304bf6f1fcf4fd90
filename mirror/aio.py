"""Small anyio helpers with no policy of their own."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")


#: Successes remembered per SingleFlight: memory stays bounded however large the catalog; a key
#: forgotten (least recently used first) only means the work is checked again (HEAD), never lost.
REMEMBER = 8192


class SingleFlight(Generic[T]):
    """Runs one call per key at a time; later callers share a success. Failures are forgotten,
    so a later caller retries (as go-containerregistry's workers.Do). At most ``remember``
    successes are kept, least recently used evicted first."""

    def __init__(self, remember: int = REMEMBER) -> None:
        self._locks: dict[Hashable, anyio.Lock] = {}
        self._done: OrderedDict[Hashable, T] = OrderedDict()
        self._remember = remember

    async def do(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """(result, shared): ``shared`` is True when another caller's result was reused."""
        if key in self._done:
            self._done.move_to_end(key)
            return self._done[key], True
        lock = self._locks.setdefault(key, anyio.Lock())
        async with lock:
            if key in self._done:
                return self._done[key], True
            result = await fn()
            self._done[key] = result
            if len(self._done) > self._remember:
                self._done.popitem(last=False)
            self._locks.pop(key, None)  # waiters keep their reference; new callers see _done
            return result, False

    def done(self, key: Hashable) -> bool:
        """True once a call for ``key`` has succeeded (and is still remembered)."""
        return key in self._done
