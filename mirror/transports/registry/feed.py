"""The read side of an upload: the source read ahead, every byte hashed, exact blocks handed out.

``Feed`` reads a ``BlobOpener`` from where a ``Hash`` left off, hashes every byte (in a worker thread
for big blocks), and hands out the bytes from ``send_from`` on in blocks that never straddle a chunk
boundary. It keeps a copy of the hash at every block end that may still be needed, so an upload that
must go back to an earlier offset reopens the source there instead of at 0. Memory is about
``DEPTH * BLOCK`` bytes whatever the blob size.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from mirror.aio import sole_error
from mirror.core.descriptor import Descriptor
from mirror.errors import DigestMismatch
from mirror.transports.base import BlobOpener

BLOCK = 1 << 20  # re-blocking size of the read-ahead pipeline
DEPTH = 8  # blocks read ahead of the network
INLINE_HASH = 64 << 10  # smaller blocks are hashed on the event loop, bigger ones in a worker thread


class Hash:
    """hashlib plus a byte count; copyable (snapshots), unlike ``core.digest.Hasher``."""

    __slots__ = ("h", "size")

    def __init__(self, algorithm: str) -> None:
        self.h = hashlib.new(algorithm)
        self.size = 0

    def update(self, data: bytes) -> None:
        self.h.update(data)
        self.size += len(data)

    def copy(self) -> Hash:
        twin = Hash.__new__(Hash)
        twin.h, twin.size = self.h.copy(), self.size
        return twin


class Feed:
    """The source read from ``base.size`` on: every byte hashed, bytes from ``send_from`` handed out.

    Blocks never straddle ``send_from`` or a chunk boundary (``send_from + k * chunk``), and a copy of
    the hash is kept at every block end from ``send_from`` on (dropped once acknowledged), so a retry
    re-reads at most one block before the registry's offset.
    Failures of the source (or a source of the wrong length) land in :attr:`error`: a PATCH body that
    raises reaches the caller only as a connection error.
    """

    def __init__(self, open_source: BlobOpener, desc: Descriptor, base: Hash, send_from: int,
                 chunk: int | None) -> None:
        self._open = open_source
        self._name = f"blob {desc.digest}"
        self._limit = desc.size if desc.size > 0 else None
        self.hash = base
        self._send_from = send_from
        self._chunk = chunk
        self._snapshots: dict[int, Hash] = {base.size: base.copy()}
        self.error: BaseException | None = None
        send, receive = anyio.create_memory_object_stream[bytes](DEPTH)
        self._send: MemoryObjectSendStream[bytes] = send
        self._receive: MemoryObjectReceiveStream[bytes] = receive
        self._carry = b""

    # -- producer -------------------------------------------------------------------------------
    async def produce(self) -> None:
        async with self._send:  # closed after ``error`` is set: the consumer never mistakes it for EOF
            try:
                await self._read()
            except Exception as exc:
                self.error = exc

    async def _read(self) -> None:
        async with self._open(self.hash.size) as pieces:
            pos = block_start = self.hash.size
            parts: list[bytes] = []
            async for piece in pieces:
                while piece:
                    cut = self._cut_after(block_start)
                    if cut is None:
                        raise DigestMismatch(f"{self._name}: size mismatch, the source has more than "
                                             f"the expected {self._limit} bytes")
                    take = min(len(piece), cut - pos)
                    parts.append(piece[:take] if take < len(piece) else piece)
                    piece, pos = piece[take:], pos + take
                    if pos == cut:
                        await self._emit(parts, block_start, pos)
                        parts, block_start = [], pos
            if parts:
                await self._emit(parts, block_start, pos)

    def _cut_after(self, start: int) -> int | None:
        """Where the block starting at ``start`` must end; None past the blob's end."""
        cut = start + BLOCK
        if start < self._send_from:
            cut = min(cut, self._send_from)
        elif self._chunk is not None:
            cut = min(cut, start + self._chunk - (start - self._send_from) % self._chunk)
        if self._limit is not None:
            if start >= self._limit:
                return None
            cut = min(cut, self._limit)
        return cut

    async def _emit(self, parts: list[bytes], start: int, end: int) -> None:
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        if len(data) >= INLINE_HASH:
            await anyio.to_thread.run_sync(self.hash.update, data)
        else:
            self.hash.update(data)
        if end >= self._send_from:
            self._snapshots[end] = self.hash.copy()
        if start >= self._send_from:
            await self._send.send(data)

    # -- consumer -------------------------------------------------------------------------------
    async def take(self, n: int | None) -> AsyncIterator[bytes]:
        """The next ``n`` bytes (all the rest when None), or an error (also kept in :attr:`error`).

        A source that ends early makes the rest zeros, with a DigestMismatch in :attr:`error` that
        the caller checks before trusting the acknowledgement: ending the request cleanly, rather
        than tearing it down, matters to distribution, which can re-create a session's data after
        our DELETE while it is still handling a torn request.
        """
        try:
            left = n
            while left is None or left > 0:
                block = self._carry or await self._next()
                self._carry = b""
                if not block:
                    if left is None:
                        return
                    self.error = self.error or DigestMismatch(
                        f"{self._name}: size mismatch, the source ended {left} bytes short of the "
                        f"expected {self._limit}")
                    while left > 0:
                        filler = bytes(min(left, BLOCK))
                        left -= len(filler)
                        yield filler
                    return
                if left is not None and len(block) > left:
                    block, self._carry = block[:left], block[left:]
                if left is not None:
                    left -= len(block)
                yield block
        except Exception as exc:
            self.error = self.error or exc
            raise

    async def _next(self) -> bytes:
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            if self.error is not None:
                raise self.error from None
            return b""

    async def finish(self) -> Hash:
        """Wait for the source's end; the hash of every byte."""
        async for _ in self.take(None):
            raise DigestMismatch(f"{self._name}: size mismatch, the source has more than "
                                 f"the expected {self._limit} bytes")
        return self.hash

    def acknowledged(self, offset: int) -> None:
        self._snapshots = {k: v for k, v in self._snapshots.items() if k >= offset}

    def snapshot(self, offset: int) -> Hash | None:
        """A copy of the hash at the largest kept boundary at or before ``offset``."""
        best = max((k for k in self._snapshots if k <= offset), default=None)
        return self._snapshots[best].copy() if best is not None else None

    def close(self) -> None:
        self._receive.close()


@asynccontextmanager
async def running(feed: Feed) -> AsyncIterator[Feed]:
    """Run the feed's producer for the block; errors come out as themselves, not as groups."""
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(feed.produce)
            try:
                yield feed
            finally:
                tg.cancel_scope.cancel()
                feed.close()
    except BaseExceptionGroup as group:
        sole = sole_error(group)
        if sole is None:
            raise
        raise sole from sole.__cause__
