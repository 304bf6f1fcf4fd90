"""The send seam: the one method between the HTTP client and the network.

Everything the client does (ping, auth and token fetches, redirects, retries, rate limiting, error
mapping) sits above :class:`Sender`; the production sender (``http.sender``) wraps aiohttp, and tests
plug in an in-memory registry (``tests/support/fakeregistry.py``) in its place.

Contract of a sender:
- ``send`` sends one request exactly once: it follows no redirects, retries nothing, adds no headers
  and does not decompress. Failures to connect or to send become ``TransientError`` (``TLSError`` for
  certificate and handshake failures); every HTTP status, error or not, is a :class:`Response`.
- The caller must ``release()`` every response it gets (synchronous and idempotent, so it is safe in
  ``finally`` blocks under cancellation). The client holds responses across redirects and retries and
  frees its rate-limit permits with them, which is why ``send`` returns the response rather than a
  context manager.
- Reading a body that breaks (reset, truncated, read timeout) raises ``TransientError``.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from types import MappingProxyType
from typing import Protocol

from msgspec import Struct
from multidict import MultiMapping
from yarl import URL

Body = bytes | AsyncIterable[bytes] | None
"""A request body: bytes (can be sent again), a stream (sent once) or none."""

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


class Request(Struct, frozen=True):
    """One HTTP request. ``ssl`` is used for ``https`` URLs (None: the sender's default verification).

    Headers and body stay out of ``repr``: they carry credentials and tokens."""

    method: str
    url: URL
    headers: Mapping[str, str] = _NO_HEADERS
    body: Body = None
    ssl: ssl.SSLContext | None = None

    def __repr__(self) -> str:
        return f"Request(method={self.method!r}, url={self.url!r})"

    @property
    def streamed(self) -> bool:
        """Whether the body is produced while it is sent (and so cannot be sent again)."""
        return self.body is not None and not isinstance(self.body, bytes)


class Response(Protocol):
    """A response whose body has not been read yet."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> MultiMapping[str]:
        """Case-insensitive; ``getall`` gives every value of a repeated header."""
        ...

    @property
    def url(self) -> URL: ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body, piece by piece as it arrives (raises ``TransientError`` if it breaks)."""
        ...

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body; with ``limit``, at most ``limit + 1`` bytes (so a caller can tell it was
        too long). Raises ``TransientError`` if it breaks."""
        ...

    def release(self) -> None:
        """Give the connection back (the rest of the body is discarded). Idempotent."""
        ...


class Sender(Protocol):
    """Turns a request into a response (see the module documentation for the contract)."""

    async def send(self, request: Request) -> Response: ...
