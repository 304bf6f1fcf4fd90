"""The endpoint a registry source or destination talks through, and one whose credential is found late.

Finding a credential may read auth files and run a ``docker-credential-*`` helper (seconds, for a
keychain or a cloud token exchange). Transports are built by synchronous code, so a
:class:`DeferredEndpoint` stands in for the real :class:`Endpoint` and finds it, credential
included, on the first request: the lookup is awaited (off the event loop) instead of blocking it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from yarl import URL

from mirror.http.client import Endpoint, Reply
from mirror.http.seam import Response


class DeferredEndpoint:
    """An :class:`Endpoint` made by ``connect`` on first use (once, whoever asks first).

    ``connect`` failing (a broken auth file, a failing helper) fails that request; the next request
    tries again."""

    def __init__(self, registry: str, connect: Callable[[], Awaitable[Endpoint]]) -> None:
        self.registry = registry
        self._connect = connect
        self._endpoint: Endpoint | None = None
        self._lock = anyio.Lock()

    async def resolve(self) -> Endpoint:
        async with self._lock:
            if self._endpoint is None:
                self._endpoint = await self._connect()
            return self._endpoint

    async def fetch(self, method: str, target: str | URL, **options: Any) -> Reply:
        """:meth:`Endpoint.fetch` on the real endpoint."""
        endpoint = self._endpoint or await self.resolve()
        return await endpoint.fetch(method, target, **options)

    @asynccontextmanager
    async def stream(self, method: str, target: str | URL, **options: Any) -> AsyncIterator[Response]:
        """:meth:`Endpoint.stream` on the real endpoint."""
        endpoint = self._endpoint or await self.resolve()
        async with endpoint.stream(method, target, **options) as response:
            yield response


#: What registry sources, destinations and uploads talk through.
RegistryEndpoint = Endpoint | DeferredEndpoint
