"""OCI referrers on a registry: the referrers API where there is one, the fallback tag elsewhere.

Listing (distribution spec 1.1): ``GET /v2/<name>/referrers/<digest>`` answers an OCI index of the
subject's referrers, paginated with ``Link``; one ``?artifactType=`` filter may be applied by the
registry (``OCI-Filters-Applied``), and mirror filters again itself, so a registry that ignores
it is harmless. A registry without the API answers 404 (distribution 2.8: a plain-text
``404 page not found``, no error code), 405 or 406; then the referrers are the entries of the OCI
index tagged ``<alg>-<hex>`` (the referrers tag schema), and no such tag means none.

Attaching: a registry with the API indexes a pushed manifest's ``subject`` itself (it answers the
PUT with ``OCI-Subject``). Elsewhere the fallback index is updated by read-modify-write: read the
tag (with its ``ETag``), add the missing entries, PUT it back with ``If-Match`` when the registry
gave an ETag (412: another writer won, start again), then re-read after a settling delay and start
again if an entry is missing. Distribution 2.8 ignores ``If-Match``, so there the re-read is what
catches a concurrent writer whose stale index replaced ours: such a writer read before our PUT, and
its PUT lands within its own read-to-write time, which the delay (twice ours, at least
``SETTLE_MIN``) outlasts. A writer slower than that can still drop an entry on a registry without
conditional requests; no client can close that gap without the registry's help.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import anyio
from msgspec import Struct

from mirror.core import mediatype as mt
from mirror.core import referrers as ref
from mirror.core.descriptor import Descriptor
from mirror.core.digest import Digest
from mirror.core.reference import Repo, Tag
from mirror.errors import ManifestError, NotFound, RegistryError
from mirror.http.headers import strip_media_type
from mirror.log import get_logger
from mirror.transports.registry import api
from mirror.transports.registry.endpoint import RegistryEndpoint
from mirror.transports.registry.hostfact import HostFact
from mirror.transports.registry.pages import json_pages

log = get_logger("mirror.referrers")

SETTLE_MIN = 0.5  # seconds before the re-read that confirms a fallback update
SETTLE_MAX = 10.0
UPDATE_TRIES = 10
NO_API_STATUSES = frozenset({400, 404, 405, 406})


async def list_referrers(endpoint: RegistryEndpoint, repo: Repo, subject: Digest, artifact_types: tuple[str, ...],
                         support: HostFact, scopes: tuple[str, ...]) -> list[Descriptor]:
    """The referrers of ``subject`` in ``repo`` (only ``artifact_types`` when given)."""
    where = f"referrers of {repo}@{subject}"
    if support.get(repo.registry) is not False:
        query = f"?artifactType={quote(artifact_types[0], safe='')}" if len(artifact_types) == 1 else ""
        try:
            entries: list[dict[str, Any]] = []
            async for page in json_pages(endpoint, f"/v2/{repo.path}/referrers/{subject}{query}", scopes, where):
                entries.extend(ref.listed(page, where))
                if len(entries) > ref.MAX_REFERRERS:
                    raise ManifestError(f"{where}: more than {ref.MAX_REFERRERS} referrers")
        except RegistryError as exc:
            if exc.status not in NO_API_STATUSES:
                raise
            # A coded 404 (NAME_UNKNOWN) may come from a registry with the API: do not conclude.
            if not (isinstance(exc, NotFound) and exc.code):
                support.learn(repo.registry, False)
        else:
            support.learn(repo.registry, True)
            return ref.wanted(ref.descriptors(entries, where), artifact_types)
    try:
        entries, _etag = await read_fallback(endpoint, repo, subject, scopes)
    except NotAnIndex:  # someone's own tag of that name: it lists no referrers (as go-containerregistry reads it)
        return []
    return ref.wanted(ref.descriptors(entries, where), artifact_types)


class NotAnIndex(ManifestError):
    """The fallback tag names something other than an OCI index."""


async def read_fallback(endpoint: RegistryEndpoint, repo: Repo, subject: Digest,
                        scopes: tuple[str, ...]) -> tuple[list[dict[str, Any]], str | None]:
    """The entries of ``subject``'s fallback index and its ETag; ([], None) when the tag is absent.
    A tag holding anything but an OCI index is not a referrers index: an error (never overwritten)."""
    tag = ref.fallback_tag(subject)
    try:
        reply = await endpoint.fetch("GET", api.manifest_path(repo.path, Tag(tag)), scopes=scopes,
                                     headers={"Accept": api.ACCEPT_MANIFESTS},
                                     what=f"reading referrers tag {repo}:{tag}")
    except NotFound:
        return [], None
    media_type = strip_media_type(reply.headers.get("Content-Type"))
    try:
        data = json.loads(reply.body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ManifestError(f"referrers tag {repo}:{tag} is not JSON") from None
    declared = data.get("mediaType") if isinstance(data, dict) else None
    if (declared or media_type) != mt.OCI_INDEX:
        raise NotAnIndex(f"tag {repo}:{tag} holds {declared or media_type}, not a referrers index "
                            "(an OCI image index); refusing to use or overwrite it")
    return ref.listed(data, f"referrers tag {repo}:{tag}"), reply.headers.get("ETag")


class FallbackUpdate(Struct, frozen=True):
    """Adds entries to one subject's fallback index so that concurrent writers keep theirs (module doc)."""

    endpoint: RegistryEndpoint
    repo: Repo
    subject: Digest
    scopes: tuple[str, ...]
    settle_min: float = SETTLE_MIN

    async def add(self, additions: list[dict[str, Any]]) -> None:
        wrote = False
        span = 0.0
        entries, etag = await read_fallback(self.endpoint, self.repo, self.subject, self.scopes)
        for _ in range(UPDATE_TRIES):
            raw = ref.merged_index(entries, additions)
            if raw is None and not wrote:
                return  # listed already, and we changed nothing: no race of ours to check
            if raw is not None:
                started = anyio.current_time()
                if await self._write(raw, etag):
                    wrote = True
                    span = max(span, anyio.current_time() - started)
                    log.info("referrers_tag_written", repo=str(self.repo), subject=str(self.subject),
                             entries=len(json.loads(raw)["manifests"]))
                else:  # 412: another writer changed it since we read it
                    entries, etag = await read_fallback(self.endpoint, self.repo, self.subject, self.scopes)
                    continue
            await anyio.sleep(min(SETTLE_MAX, max(self.settle_min, 2 * span)))
            entries, etag = await read_fallback(self.endpoint, self.repo, self.subject, self.scopes)
            if not ref.lacks(entries, additions):
                return
            log.info("referrers_tag_race_lost", repo=str(self.repo), subject=str(self.subject))
        raise RegistryError(f"could not update referrers tag {self.repo}:{ref.fallback_tag(self.subject)}: "
                            f"other writers kept replacing it ({UPDATE_TRIES} tries)")

    async def _write(self, raw: bytes, etag: str | None) -> bool:
        """PUT the index (conditional on ``etag`` when there is one); False when the condition failed."""
        tag = ref.fallback_tag(self.subject)
        headers = {"Content-Type": mt.OCI_INDEX}
        if etag:
            headers["If-Match"] = etag
        reply = await self.endpoint.fetch(
            "PUT", api.manifest_path(self.repo.path, Tag(tag)), scopes=self.scopes, headers=headers, data=raw,
            ok=(200, 201, 202, 204, 412), what=f"writing referrers tag {self.repo}:{tag}")
        return reply.status != 412
