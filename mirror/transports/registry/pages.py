"""Listings that span pages: JSON objects linked by ``Link: <...>; rel="next"`` (tags, catalog, referrers)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from yarl import URL

from mirror.errors import RegistryError
from mirror.http.headers import parse_link_next
from mirror.transports.registry.endpoint import RegistryEndpoint

MAX_PAGES = 100_000  # pages of one listing


async def json_pages(endpoint: RegistryEndpoint, first: str, scopes: tuple[str, ...],
                 what: str) -> AsyncIterator[dict[str, Any]]:
    """The JSON object of every page of a listing, following ``Link: <...>; rel="next"``.

    A hostile or broken registry cannot make this loop forever: a next link to a page already read
    and more than ``MAX_PAGES`` pages are errors.
    """
    target: str | URL = first
    visited: set[str] = set()
    while True:
        reply = await endpoint.fetch("GET", target, scopes=scopes, what=what)
        visited.add(str(reply.url))
        try:
            data = json.loads(reply.body)
        except (ValueError, RecursionError):
            raise RegistryError(f"{what}: response is not JSON") from None
        if not isinstance(data, dict):
            raise RegistryError(f"{what}: response is not a JSON object")
        yield data
        nxt = parse_link_next(reply.headers.get("Link"), str(reply.url))
        if nxt is None:
            return
        target = URL(nxt, encoded=True)
        if str(target) in visited:
            raise RegistryError(f"{what}: the registry's next-page link loops back to a page already read")
        if len(visited) >= MAX_PAGES:
            raise RegistryError(f"{what}: more than {MAX_PAGES} pages")
