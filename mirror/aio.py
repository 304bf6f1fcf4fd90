"""Small anyio helpers with no policy of their own."""

from __future__ import annotations

import shutil
import tempfile
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Generic, TypeVar, cast

import anyio

from mirror.errors import MirrorError

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def read_limited(path: str | Path, limit: int, what: str, error: type[MirrorError] = MirrorError) -> bytes | None:
    """A small file, whole (blocking: call it from a worker thread in async code). None when it does
    not exist; a one-line ``error`` when it cannot be read or is larger than ``limit`` bytes."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise error(f"reading {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise error(f"{what} {path} is larger than {limit} bytes")
    return data


#: Default bound of the run-wide memories (SingleFlight successes, blob locations). A key forgotten
#: (least recently used first) only means the work is checked again (a HEAD), never lost. Sized for
#: the working set (images in flight and the layers they share), not for the catalog: it fills
#: within the first few thousand images and memory stays flat however large the catalog is.
REMEMBER = 4096


class LRU(Generic[K, V]):
    """A dict bounded to ``size`` entries; reads and writes make an entry the most recent."""

    def __init__(self, size: int) -> None:
        self._data: OrderedDict[K, V] = OrderedDict()
        self.size = size

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def pop(self, key: K) -> V | None:
        return self._data.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)


class _Flight(Generic[T]):
    __slots__ = ("done", "ok", "result")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.ok = False
        self.result: T | None = None


class SingleFlight(Generic[T]):
    """Runs one call per key at a time; callers that arrive while it runs share its success.
    Failures (and cancellation) are shared with nobody: a waiting or later caller runs the call
    again (as go-containerregistry's workers.Do). Afterwards at most ``remember`` successes are
    kept, least recently used evicted first; ``remember=0`` keeps nothing once a call is over (the
    caller remembers what it needs elsewhere), so memory is only what is in flight."""

    def __init__(self, remember: int = REMEMBER) -> None:
        self._flights: dict[Hashable, _Flight[T]] = {}
        self._done: LRU[Hashable, tuple[T]] = LRU(remember)

    async def do(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """(result, shared): ``shared`` is True when another caller's result was reused."""
        while True:
            done = self._done.get(key)
            if done is not None:
                return done[0], True
            flight = self._flights.get(key)
            if flight is None:
                break
            await flight.done.wait()
            if flight.ok:
                return cast(T, flight.result), True
        flight = self._flights[key] = _Flight()
        try:
            result = await fn()
            flight.ok, flight.result = True, result
            if self._done.size:
                self._done.put(key, (result,))
            return result, False
        finally:
            del self._flights[key]
            flight.done.set()

    def done(self, key: Hashable) -> bool:
        """True once a call for ``key`` has succeeded (and is still remembered)."""
        return key in self._done

    def held(self) -> int:
        """Keys held: calls in flight and remembered successes."""
        return len(self._flights) + len(self._done)


def leaf_errors(exc: BaseException) -> list[BaseException]:
    """The errors inside ``exc``, task-group nesting flattened, in the order they were raised."""
    leaves: list[BaseException] = []
    stack = [exc]
    while stack:
        item = stack.pop(0)
        if isinstance(item, BaseExceptionGroup):
            stack[:0] = list(item.exceptions)
        else:
            leaves.append(item)
    return leaves


def image_error(exc: BaseException) -> MirrorError | None:
    """One image's failure: ``exc`` itself, or the first error of a group made only of MirrorErrors
    (a group holding anything else, cancellation included, is not one image's failure)."""
    leaves = leaf_errors(exc)
    if not leaves or not all(isinstance(leaf, MirrorError) for leaf in leaves):
        return None
    first = leaves[0]
    assert isinstance(first, MirrorError)
    return first


def sole_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one real error in ``group`` (cancellations aside), or None when there are several."""
    leaves = leaf_errors(group)
    cancelled = anyio.get_cancelled_exc_class()
    real = [e for e in leaves if not isinstance(e, cancelled)] or leaves
    return real[0] if len(real) == 1 else None


@asynccontextmanager
async def temp_dir(parent: str | Path | None, prefix: str) -> AsyncIterator[Path]:
    """A private temp directory (in ``parent``, else the system's), removed on exit even when cancelled."""
    try:
        work = Path(await anyio.to_thread.run_sync(lambda: tempfile.mkdtemp(prefix=prefix, dir=parent)))
    except OSError as exc:
        raise MirrorError(f"creating a temporary directory in {parent or tempfile.gettempdir()}: "
                          f"{exc.strerror}") from None
    try:
        yield work
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lambda: shutil.rmtree(work, ignore_errors=True))
