"""Anonymous GETs of small documents that live outside any registry (lookaside signature storage).

Contract: no credential or token is ever sent (the request carries only ``User-Agent``), whichever
registry the document belongs to and wherever a redirect leads; ``https`` is always verified, with
the system CAs plus the certs.d directory of the document's own host (never the registry's
``--tls-verify=false``: a lookaside server is not the registry); a redirect from ``https`` to plain
``http`` is refused. Retries go through the client's one retry loop. 404 means "no such document".
"""

from __future__ import annotations

from msgspec import Struct
from multidict import MultiMapping
from yarl import URL

from mirror.errors import RegistryError, TransientError
from mirror.http.client import REDIRECTS, HttpClient
from mirror.http.retry import retrying
from mirror.http.seam import Request, Response
from mirror.http.tls import TLSOptions

MAX_REDIRECTS = 10


class _Answer(Struct, frozen=True, eq=False):
    resp: Response
    body: bytes

    @property
    def status(self) -> int:
        return self.resp.status

    @property
    def headers(self) -> MultiMapping[str]:
        return self.resp.headers

    def release(self) -> None:
        self.resp.release()


async def get_public(client: HttpClient, url: URL, limit: int, what: str) -> bytes | None:
    """The body at ``url`` (at most ``limit`` bytes), or None when the server answers 404."""

    async def attempt() -> _Answer:
        resp = await _follow(client, url, what)
        try:
            body = await resp.read(limit) if resp.status == 200 else b""
        except TransientError as exc:
            resp.release()
            raise TransientError(f"{what}: reading the response: {exc}") from None
        resp.release()
        return _Answer(resp, body)

    answer = await retrying(client.retry, "GET", attempt, ok=(200, 404), retryable=True, what=what)
    if answer.status == 404:
        return None
    if answer.status != 200:
        raise RegistryError(f"{what}: HTTP {answer.status}", status=answer.status)
    if len(answer.body) > limit:
        raise RegistryError(f"{what}: larger than {limit} bytes")
    return answer.body


async def _follow(client: HttpClient, url: URL, what: str) -> Response:
    origin_scheme = url.scheme
    for _ in range(MAX_REDIRECTS + 1):
        if url.scheme not in ("http", "https") or not url.host:
            raise RegistryError(f"{what}: unsupported URL {url.scheme}://")
        if origin_scheme == "https" and url.scheme == "http":
            raise RegistryError(f"{what}: refusing a redirect from https to plain http ({url.host})")
        host = f"{url.host}:{url.explicit_port}" if url.explicit_port else url.host
        ssl = client.ssl_context(host, TLSOptions()) if url.scheme == "https" else None
        resp = await client.sender.send(Request("GET", url, {"User-Agent": client.user_agent,
                                                             "Accept-Encoding": "identity"}, None, ssl))
        location = resp.headers.get("Location")
        if resp.status not in REDIRECTS or not location:
            return resp
        resp.release()
        url = url.join(URL(location, encoded=True))
    raise RegistryError(f"{what}: too many redirects")
