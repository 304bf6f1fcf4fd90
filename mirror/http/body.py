"""Reading bounded response bodies."""

from __future__ import annotations

import aiohttp


async def read_limited(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The whole body when it has at most ``limit`` bytes, else its first ``limit + 1`` bytes (so the
    caller can tell it was too long). ``StreamReader.read(n)`` alone returns whatever has arrived."""
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await stream.read(limit + 1 - size)
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)
