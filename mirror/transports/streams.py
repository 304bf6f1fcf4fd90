"""Blob byte pipelines shared by destinations: prefetch, re-block and hash off the event loop.

Reading the source and writing the destination overlap through a small bounded buffer (memory is
about ``depth * block`` bytes whatever the blob size), and SHA-256 runs in a worker thread (hashlib
releases the GIL) while earlier blocks are being sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from mirror.aio import sole_error
from mirror.core.digest import Hasher
from mirror.transports.base import BlobOpener

BLOCK = 1 << 20
DEPTH = 8


@asynccontextmanager
async def hashed_stream(open_source: BlobOpener, hasher: Hasher, offset: int = 0, *,
                        block: int = BLOCK, depth: int = DEPTH) -> AsyncIterator[AsyncIterator[bytes]]:
    """An iterator over the source's bytes from ``offset`` in blocks of about ``block`` bytes.

    Every byte is fed to ``hasher`` before it is handed out, so once the iterator is exhausted the
    caller can check the hasher. Leaving the context early cancels the reader. Errors, the caller's
    (a ``DigestMismatch`` raised in the block) and the source's, come out as themselves, not as an
    exception group (as ``registry.feed.running``).
    """
    send, receive = anyio.create_memory_object_stream[bytes](depth)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_produce, open_source, offset, hasher, block, send)
            try:
                yield _drain(receive)
            finally:
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        sole = sole_error(group)
        if sole is None:
            raise
        raise sole from sole.__cause__


async def _drain(receive: MemoryObjectReceiveStream[bytes]) -> AsyncIterator[bytes]:
    async with receive:
        async for data in receive:
            yield data


async def _produce(open_source: BlobOpener, offset: int, hasher: Hasher, block: int,
                   send: MemoryObjectSendStream[bytes]) -> None:
    async with send, open_source(offset) as chunks:
        parts: list[bytes] = []
        size = 0
        async for chunk in chunks:
            parts.append(chunk)
            size += len(chunk)
            if size >= block:
                await _emit(parts, hasher, send)
                parts, size = [], 0
        if parts:
            await _emit(parts, hasher, send)


async def _emit(parts: list[bytes], hasher: Hasher, send: MemoryObjectSendStream[bytes]) -> None:
    data = parts[0] if len(parts) == 1 else b"".join(parts)
    await anyio.to_thread.run_sync(hasher.update, data)
    await send.send(data)
