"""Which registries take a small blob in one request: OCI distribution's single-POST monolithic upload,
``POST /v2/<name>/blobs/uploads/?digest=<digest>`` with the bytes as the body, answered ``201``.

A registry without it (distribution 2.8, the reference one) answers ``202`` and opens an ordinary
session, ignoring the body: the upload then completes that session with its ``PUT``, as it would
have anyway, and the registry is remembered as one without it for the rest of the run. So the bytes
of one blob per registry are sent twice at most, and only one upload at a time asks (the others
wait for its answer). Only small blobs ask (``PROBE_MAX``): a server that does not read the body may
close the connection under a large one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio

from mirror.core.digest import Digest
from mirror.core.reference import Repo
from mirror.errors import RegistryError
from mirror.http.client import Reply
from mirror.transports.registry import api
from mirror.transports.registry.endpoint import RegistryEndpoint

PROBE_MAX = 64 << 10


class SinglePost:
    """Per registry host: whether it takes single-POST uploads (learnt once per run)."""

    def __init__(self) -> None:
        self._known: dict[str, bool] = {}
        self._asking: dict[str, anyio.Event] = {}

    def known(self, host: str) -> bool | None:
        return self._known.get(host)

    def learn(self, host: str, supported: bool) -> None:
        self._known[host] = supported

    @asynccontextmanager
    async def trial(self, host: str, size: int) -> AsyncIterator[bool]:
        """Whether this upload should try a single POST: yes when the host takes them, or when nobody
        asked it yet and the blob is small (this upload then asks, and must ``learn`` the answer)."""
        while True:
            known = self._known.get(host)
            if known is not None:
                yield known
                return
            asking = self._asking.get(host)
            if asking is None:
                break
            await asking.wait()
        if size > PROBE_MAX:
            yield False
            return
        self._asking[host] = event = anyio.Event()
        try:
            yield True
        finally:
            del self._asking[host]
            event.set()


async def post_blob(endpoint: RegistryEndpoint, repo: Repo, digest: Digest, data: bytes, scopes: Sequence[str],
                    single: SinglePost) -> Reply | None:
    """``POST ?digest=`` with ``data`` (verified already) where the registry may take it: the reply
    (``201``: stored; ``202``: a session to complete), or None (not tried, or refused as unsupported)."""
    host = repo.registry
    async with single.trial(host, len(data)) as trying:
        if not trying:
            return None
        try:
            reply = await endpoint.fetch(
                "POST", f"{api.uploads_path(repo.path)}?digest={digest.algorithm}%3A{digest.hex}", scopes=scopes,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
                data=data, ok=(201, 202), what=f"uploading blob {digest}", repeatable=True)
        except RegistryError as exc:
            if exc.status not in (400, 405, 415, 501):  # not a refusal of the single POST itself
                raise
            single.learn(host, False)
            return None
        single.learn(host, reply.status == 201)
        return reply
