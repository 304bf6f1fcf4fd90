"""The production :class:`~mirror.http.seam.Sender`: one aiohttp session for the run.

aiohttp's exceptions are translated here, once: certificate and handshake failures become
``TLSError``, other connection, payload and timeout errors ``TransientError``. Bodies are never
decompressed (``auto_decompress=False``: blobs are hashed as stored) and redirects never followed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from msgspec import Struct
from multidict import MultiMapping
from yarl import URL

from mirror.errors import TLSError, TransientError
from mirror.http.aiohttplib import aiohttp
from mirror.http.errors import PLAIN_HTTP_SERVER
from mirror.http.seam import Request, Response

_BROKEN = (aiohttp.ClientError, TimeoutError, OSError)


class Timeouts(Struct, frozen=True):
    """Per request: to connect, and between two reads of the response (a stall, not a total)."""

    connect: float = 30.0
    read: float = 120.0


class AiohttpSender:
    """Sends requests on one ``aiohttp.ClientSession`` (created by :func:`open_aiohttp_sender`,
    or the caller's own, which must have ``auto_decompress=False``)."""

    def __init__(self, session: aiohttp.ClientSession, timeouts: Timeouts | None = None) -> None:
        self.session = session
        t = timeouts or Timeouts()
        self._timeout = aiohttp.ClientTimeout(total=None, connect=t.connect, sock_connect=t.connect,
                                              sock_read=t.read)

    async def send(self, request: Request) -> Response:
        url = request.url
        kwargs: dict[str, Any] = {"headers": request.headers, "allow_redirects": False,
                                  "timeout": self._timeout, "auto_decompress": False}
        if isinstance(request.body, bytes):
            kwargs["data"] = request.body
        elif request.body is not None:
            kwargs["data"] = aiohttp.AsyncIterablePayload(request.body)
        if url.scheme == "https" and request.ssl is not None:
            kwargs["ssl"] = request.ssl
        try:
            return _AiohttpResponse(await self.session.request(request.method, url, **kwargs))
        except aiohttp.ClientConnectorCertificateError as exc:
            raise TLSError(f"TLS verification failed for {url.host}:{url.port}: "
                           f"{exc.certificate_error.__class__.__name__}: "
                           f"{getattr(exc.certificate_error, 'verify_message', '')}".rstrip(": ")) from None
        except aiohttp.ClientSSLError as exc:
            # The underlying ssl error, not aiohttp's text (which embeds the SSLContext repr).
            reason = getattr(exc, "os_error", None) or exc
            if getattr(reason, "reason", None) == "WRONG_VERSION_NUMBER":  # a plain-HTTP server answered
                # Go's words (what skopeo prints), which scripts match on.
                raise TLSError(f'{request.method.capitalize()} "https://{url.host}:{url.port}{url.path}": '
                               f"{PLAIN_HTTP_SERVER}") from None
            raise TLSError(f"TLS handshake with {url.host}:{url.port} failed: {short_error(reason)}") from None
        except _BROKEN as exc:
            raise TransientError(f"{request.method} {url.host}:{url.port}{url.path}: {short_error(exc)}") from None


class _AiohttpResponse:
    """``Response`` over ``aiohttp.ClientResponse``; body errors become ``TransientError``."""

    __slots__ = ("_resp",)

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp

    @property
    def status(self) -> int:
        return self._resp.status

    @property
    def headers(self) -> MultiMapping[str]:
        return self._resp.headers

    @property
    def url(self) -> URL:
        return self._resp.url

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except _BROKEN as exc:
            raise TransientError(f"reading {self._resp.url.path}: {short_error(exc)}") from None

    async def read(self, limit: int | None = None) -> bytes:
        parts: list[bytes] = []
        size = 0
        try:
            while limit is None or size <= limit:
                # ``StreamReader.read(n)`` returns whatever has arrived: loop until the end or the limit.
                chunk = await self._resp.content.read(-1 if limit is None else limit + 1 - size)
                if not chunk:
                    break
                parts.append(chunk)
                size += len(chunk)
        except _BROKEN as exc:
            raise TransientError(f"reading {self._resp.url.path}: {short_error(exc)}") from None
        return b"".join(parts)

    def release(self) -> None:
        self._resp.release()


@asynccontextmanager
async def open_aiohttp_sender(timeouts: Timeouts | None = None) -> AsyncIterator[AiohttpSender]:
    """The run's session: up to 64 connections, 32 per host, DNS cached for 5 minutes. No cookie jar
    (as containers/image's Go client, registries get no cookies back; and per request it is work)."""
    connector = aiohttp.TCPConnector(limit=64, limit_per_host=32, ttl_dns_cache=300)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                     cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield AiohttpSender(session, timeouts)


def short_error(exc: BaseException) -> str:
    """``Type: first line of the message`` (aiohttp's messages can run over many lines)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
