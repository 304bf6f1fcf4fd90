"""The blob upload protocol: monolithic, streamed and chunked (resumable) uploads to one repository.

Which path a blob takes (:class:`UploadOptions`):

- ``size <= monolithic_max`` (1 MiB): the bytes are read and verified in memory, then
  ``POST`` + ``PUT ?digest=`` with the body: two requests, and the PUT is retried by the HTTP client;
  one request (``POST ?digest=`` with the body) where the registry takes it (``singlepost.py``).
- ``size < threshold``: ``POST``, one streamed ``PATCH`` (no Content-Range, as docker and skopeo
  send it), ``PUT ?digest=``.
- ``size >= threshold``: ``POST``, then ``PATCH`` chunks of ``chunk_size`` (raised to the
  registry's ``OCI-Chunk-Min-Length``) with ``Content-Range: <start>-<end>``, then ``PUT ?digest=``.
  After every acknowledged chunk the latest Location and offset are saved in the StateStore, so a
  later run resumes the session: ``GET <location>`` answers the registry's offset (204 + Range).

Integrity: every byte of the blob, 0 to size, goes through the hash before the closing PUT is sent;
resuming at offset K re-reads bytes 0..K-1 from the source to hash them (reading is cheap, sending
is not). Within one run, hash snapshots are kept at chunk boundaries, so a retry re-reads only from
the last acknowledged boundary. On a digest or size mismatch the session is DELETEd (best effort,
shielded from cancellation), the saved session dropped, and ``DigestMismatch`` raised: the PUT that
would publish the blob is never sent.

Retries: the HTTP client retries idempotent requests (GET status, PUT). A PATCH that fails
(connection reset, 5xx, 416) is recovered here, at most ``max_resumes`` times per blob: ask the
registry for its offset and continue from there; the registry's word wins over ours. A session the
registry no longer knows (404) is replaced by a new POST. (Not a second HTTP retry layer: the client
never retries a streamed PATCH, and retries the status query and the POST itself.)

Distribution (2.x, and registries built on it, such as Harbor) signs the offset into the Location's
``_state``; a request carrying an older offset than the session really has makes it cancel the
session (404 BLOB_UPLOAD_INVALID). So when an interrupted PATCH had already delivered some bytes,
the session cannot be resumed, and the upload restarts from byte 0 in a new session; it resumes
without re-sending only when the registry holds exactly the offset we last saw acknowledged.
That is why a cancelled resumable upload (Ctrl-C, SIGTERM turned into cancellation, a failing
sibling) first lets the chunk in flight finish, for at most ``stop_grace`` seconds, and saves its
offset: a SIGKILL mid-chunk cannot be resumed on distribution, a cancellation can.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
from yarl import URL

from mirror.core.descriptor import Descriptor
from mirror.core.digest import Digest
from mirror.core.reference import Repo
from mirror.errors import DigestMismatch, MirrorError, NotFound, RegistryError, TransientError
from mirror.http.client import Reply
from mirror.http.headers import parse_upload_range
from mirror.log import get_logger
from mirror.state import StateBackend
from mirror.transports.base import BlobOpener
from mirror.transports.registry import api
from mirror.transports.registry.endpoint import RegistryEndpoint
from mirror.transports.registry.feed import Feed, Hash, running
from mirror.transports.registry.hostfact import HostFact
from mirror.transports.registry.singlepost import post_blob
from mirror.transports.registry.uploadjournal import UploadJournal, UploadSession
from mirror.transports.registry.uploadopts import UploadOptions

log = get_logger("mirror.upload")

MAX_CHUNK_MIN = 1 << 30  # OCI-Chunk-Min-Length is honoured up to 1 GiB (as regclient caps it)
PATCH_OK = (202, 201, 204)  # ECR answers 201 to a PATCH
RECOVERABLE = frozenset({404, 416, 429})  # a failed PATCH worth a status query (5xx: TransientError)


class _Stopped(Exception):
    """A cancelled resumable upload stopped at a chunk boundary."""


class BlobUpload:
    """One blob into one repository; :meth:`run` returns the bytes sent (re-sent ones included)."""

    def __init__(self, endpoint: RegistryEndpoint, repo: Repo, desc: Descriptor, open_source: BlobOpener, *,
                 options: UploadOptions, state: StateBackend | None, single: HostFact | None = None) -> None:
        self.endpoint = endpoint
        self.single = single  # the run's knowledge of which registries take a single-POST upload
        self.repo = repo
        self.desc = desc
        self.open_source = open_source
        self.options = options
        self.sent = 0
        self._scopes = (api.push_scope(repo.path),)
        self._chunked = desc.size >= options.threshold
        self.journal = UploadJournal(state, (repo.registry, repo.path, str(desc.digest)), self._chunked)
        self._min_chunk = 0  # OCI-Chunk-Min-Length of the last POST
        self._in_patch = False  # a PATCH body is on its way: stopping now would break the session
        self._stopping = False  # cancelled: stop at the next acknowledged chunk

    async def run(self) -> int:
        size = self.desc.size
        if 0 < size <= self.options.monolithic_max:
            await self._monolithic()
        else:
            await self._streamed()
        self.journal.record_present()
        return self.sent

    # -- small blobs: verified in memory, one PUT with the body -----------------------------
    async def _monolithic(self) -> None:
        data = await self._read_verified()
        session = None  # a session the opening single POST left to complete (None: open one)
        if self.single is not None:
            posted = await post_blob(self.endpoint, self.repo, self.desc.digest, data, self._scopes, self.single)
            if posted is not None:
                reply, with_body = posted
                self.sent += len(data) if with_body else 0
                if reply.status == 201:
                    return
                session = location_of(reply)
        for attempt in range(self.options.max_resumes + 1):
            location = session or await self._post()
            session = None
            try:
                self.sent += len(data)
                await self._complete(location, data)
                return
            except NotFound as exc:  # the session expired before the PUT: open another one
                if attempt >= self.options.max_resumes:
                    raise
                log.info("upload_restarted", digest=str(self.desc.digest), repo=str(self.repo), reason=str(exc))
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._delete(location)
                raise

    async def _read_verified(self) -> bytes:
        hasher = Hash(self.desc.digest.algorithm)
        parts: list[bytes] = []
        async with self.open_source(0) as chunks:
            async for chunk in chunks:
                hasher.update(chunk)
                parts.append(chunk)
                if hasher.size > self.desc.size:
                    break
        self._check(hasher)
        return b"".join(parts)

    # -- PATCH uploads (one streamed body, or chunks) -----------------------------------------
    async def _streamed(self) -> None:
        if self.journal.resumable:
            await self._stop_at_chunk_boundary(self._patched)
        else:
            await self._patched()

    async def _stop_at_chunk_boundary(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` shielded; when cancelled mid-PATCH, let that chunk finish (at most
        ``stop_grace`` seconds) so the saved offset is the registry's, then let the cancellation on."""
        outcome: list[BaseException] = []
        done = anyio.Event()
        shield = anyio.CancelScope(shield=True)

        async def runner() -> None:
            with shield:
                try:
                    await work()
                except BaseException as exc:  # handed to the caller below, never as a group
                    outcome.append(exc)
                finally:
                    done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(runner)
            try:
                await done.wait()
            except anyio.get_cancelled_exc_class():
                if self._in_patch:
                    self._stopping = True
                    log.info("upload_stopping", digest=str(self.desc.digest), repo=str(self.repo))
                    with anyio.move_on_after(self.options.stop_grace, shield=True):
                        await done.wait()
                shield.cancel()
                raise
        if outcome:
            raise outcome[0]

    async def _patched(self) -> None:
        session = await self._from_state() if self._chunked else None
        if session is None:
            session = await self._open_session()
        base = Hash(self.desc.digest.algorithm)
        failures = 0
        try:
            while True:
                feed = Feed(self.open_source, self.desc, base, session.offset,
                             session.chunk if self._chunked else None)
                try:
                    async with running(feed):
                        await self._send(session, feed)
                        self._check(await feed.finish())
                    await self._complete(session.location, b"")  # 404 (session expired): a new session
                    break
                except (TransientError, RegistryError) as exc:
                    if feed.error is not None:  # the source failed, not the PATCH
                        raise feed.error from None
                    if self._stopping:
                        raise
                    failures += 1
                    if failures > self.options.max_resumes or self.desc.size <= 0 \
                            or (isinstance(exc, RegistryError) and exc.status not in RECOVERABLE):
                        raise
                    session, base = await self._recover(session, feed, exc)
        except DigestMismatch:
            with anyio.CancelScope(shield=True):
                await self._delete(session.location)
            self.journal.forget()
            raise
        except BaseException:
            if not self.journal.resumable:  # nobody could resume it later
                with anyio.CancelScope(shield=True):
                    await self._delete(session.location)
            raise

    async def _send(self, session: UploadSession, feed: Feed) -> None:
        """PATCH from ``session.offset`` to the end: chunk by chunk, or as one streamed body."""
        size = self.desc.size
        while size <= 0 or session.offset < size:
            start = session.offset
            end = size if size <= 0 or not self._chunked else min(start + session.chunk, size)
            headers = {"Content-Type": "application/octet-stream"}
            if size > 0:
                headers["Content-Length"] = str(end - start)
            if self._chunked or start > 0:  # one-shot bodies go without (GHCR refuses a range there)
                headers["Content-Range"] = f"{start}-{end - 1}"
            body = self._counted(feed.take(end - start if size > 0 else None))
            self._in_patch = True
            try:
                reply = await self.endpoint.fetch("PATCH", session.location, scopes=self._scopes, headers=headers,
                                                  data=body, ok=PATCH_OK, what=f"uploading blob {self.desc.digest}")
            finally:
                self._in_patch = False
            # The latest Location first, even for a chunk we won't keep: a DELETE with an older one
            # makes distribution cancel through its stale-offset path, which leaves the data behind.
            session.location = _latest(reply, session.location)
            if feed.error is not None:  # the chunk was padded or the source failed: not ours to keep
                raise feed.error
            if size <= 0:
                return
            _note_range(reply, end, self.desc.digest)
            session.offset = end
            feed.acknowledged(end)
            self.journal.save(session)
            if self._stopping:
                log.info("upload_stopped", digest=str(self.desc.digest), repo=str(self.repo), offset=end)
                raise _Stopped(f"upload of {self.desc.digest} stopped at {end} bytes")

    async def _counted(self, blocks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for block in blocks:
            self.sent += len(block)
            yield block

    async def _recover(self, session: UploadSession, feed: Feed, exc: MirrorError) -> tuple[UploadSession, Hash]:
        """After a failed PATCH: continue where the registry is, or in a new session."""
        status = await self._status(session)
        if status is not None and isinstance(exc, RegistryError) and exc.status == 416 \
                and status.offset == session.offset:
            raise exc  # the registry refuses the chunk itself (GHCR: too large), not its offset
        if status is None:
            log.info("upload_restarted", digest=str(self.desc.digest), repo=str(self.repo), reason=str(exc))
            return await self._open_session(), Hash(self.desc.digest.algorithm)
        log.info("upload_resumed", digest=str(self.desc.digest), repo=str(self.repo), offset=status.offset,
                 was=session.offset, reason=str(exc))
        self.journal.save(status)
        return status, feed.snapshot(status.offset) or Hash(self.desc.digest.algorithm)

    # -- sessions -----------------------------------------------------------------------------
    async def _post(self) -> URL:
        reply = await self.endpoint.fetch("POST", api.uploads_path(self.repo.path), scopes=self._scopes,
                                          headers={"Content-Length": "0"}, data=b"", ok=(202,),
                                          what=f"starting upload of {self.desc.digest}", repeatable=True)
        self._min_chunk = _chunk_min(reply)
        return location_of(reply)

    async def _open_session(self) -> UploadSession:
        location = await self._post()
        session = UploadSession(location, 0, max(self.options.chunk_size, self._min_chunk))
        self.journal.save(session)
        return session

    async def _from_state(self) -> UploadSession | None:
        """The saved session, if the registry still has it (at the offset it reports)."""
        saved = self.journal.load()
        if saved is None:
            return None
        status = await self._status(saved)
        if status is None:
            log.info("upload_session_expired", digest=str(self.desc.digest), repo=str(self.repo))
            self.journal.forget()
            return None
        log.info("upload_resumed", digest=str(self.desc.digest), repo=str(self.repo), offset=status.offset,
                 saved=saved.offset, source="state")
        return status

    async def _status(self, session: UploadSession) -> UploadSession | None:
        """``GET <location>``: the registry's offset and latest Location; None if the session is gone
        or its offset unusable (no Range, or more bytes than the blob has)."""
        try:
            reply = await self.endpoint.fetch("GET", session.location, scopes=self._scopes, ok=(204, 200),
                                              what=f"checking upload of {self.desc.digest}")
        except NotFound:
            return None
        except RegistryError as exc:
            if exc.status in (400, 410, 416):
                return None
            raise
        offset = parse_upload_range(reply.headers.get("Range"))
        location = _latest(reply, session.location)
        if offset is None or offset > self.desc.size:
            await self._delete(location)
            return None
        return UploadSession(location, offset, session.chunk)

    async def _complete(self, location: URL, body: bytes) -> None:
        headers = {"Content-Length": str(len(body))}
        if body:
            headers["Content-Type"] = "application/octet-stream"
        try:
            await self.endpoint.fetch("PUT", with_digest(location, self.desc.digest), scopes=self._scopes,
                                      headers=headers, data=body, ok=(201, 204),
                                      what=f"completing upload of {self.desc.digest}")
        except NotFound:
            # A retried PUT finds the session consumed when the first one did commit.
            if not await self._present():
                raise
        self.journal.forget()

    async def _present(self) -> bool:
        try:
            reply = await self.endpoint.fetch("HEAD", api.blob_path(self.repo.path, self.desc.digest),
                                              scopes=self._scopes, what=f"checking blob {self.desc.digest}")
        except NotFound:
            return False
        length = reply.headers.get("Content-Length")
        return length is None or int(length) == self.desc.size

    async def _delete(self, location: URL) -> None:
        """Best effort: registries may refuse (Quay never grants delete); all failures are ignored."""
        try:
            await self.endpoint.fetch("DELETE", location, scopes=self._scopes, ok=(200, 202, 204),
                                      what=f"cancelling upload of {self.desc.digest}")
        except MirrorError:
            log.debug("upload_cancel_failed", repo=str(self.repo), digest=str(self.desc.digest))

    # -- checks -------------------------------------------------------------------------------
    def _check(self, hasher: Hash) -> None:
        size, digest = self.desc.size, self.desc.digest
        if size > 0 and hasher.size != size:
            raise DigestMismatch(f"blob {digest}: size mismatch, expected {size} bytes, got {hasher.size}")
        actual = Digest(digest.algorithm, hasher.h.hexdigest())
        if actual != digest:
            raise DigestMismatch(f"blob digest mismatch: expected {digest}, got {actual}")


def _chunk_min(reply: Reply) -> int:
    value = reply.headers.get("OCI-Chunk-Min-Length", "").strip()
    return min(int(value), MAX_CHUNK_MIN) if value.isdigit() and len(value) < 19 else 0


def _note_range(reply: Reply, end: int, digest: Digest) -> None:
    """The offset a chunk acknowledgement reports, compared with ours. A 2xx for an exact
    Content-Range is trusted over the header: ECR stops advancing Range after the 2nd PATCH."""
    try:
        reported = parse_upload_range(reply.headers.get("Range"))
    except RegistryError:
        reported = None
    if reported is not None and reported != end:
        log.debug("upload_range_disagrees", digest=str(digest), ours=end, registry=reported)


def _latest(reply: Reply, current: URL) -> URL:
    return location_of(reply) if reply.headers.get("Location") else current


def location_of(reply: Reply) -> URL:
    """The reply's Location resolved against the request URL, kept exactly as encoded."""
    location = reply.headers.get("Location")
    if not location:
        raise RegistryError("upload response has no Location header")
    return reply.url.join(URL(location, encoded=True))


def with_digest(location: URL, digest: Digest) -> URL:
    """Append ``digest=`` to an opaque upload URL without re-encoding what is already there."""
    raw = str(location)
    sep = "&" if "?" in raw else "?"
    return URL(f"{raw}{sep}digest={digest.algorithm}%3A{digest.hex}", encoded=True)
