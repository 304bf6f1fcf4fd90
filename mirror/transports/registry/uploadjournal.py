"""Where a resumable upload stands, and its record in the StateStore.

A chunked upload saves its session (Location, offset, chunk size) after every acknowledged chunk, so
a later run can ask the registry for the offset and continue; a finished blob is recorded as
present in its repository. The state is an optimisation: a failed read or write costs
resumability, never the upload.
"""

from __future__ import annotations

from collections.abc import Callable

from msgspec import Struct
from yarl import URL

from mirror.log import get_logger
from mirror.state import StateBackend, StateError, UploadRecord

log = get_logger("mirror.upload")


class UploadSession(Struct):
    """An open upload session: where to send the next request, and what the registry holds."""

    location: URL
    offset: int  # bytes the registry holds
    chunk: int


class UploadJournal:
    """The StateStore records of one blob's upload into one repository (``key``: registry, repository,
    digest). Sessions are saved only for ``chunked`` uploads: the others are not resumable."""

    def __init__(self, state: StateBackend | None, key: tuple[str, str, str], chunked: bool) -> None:
        self.state = state
        self.key = key
        self.chunked = chunked

    @property
    def resumable(self) -> bool:
        """Whether an interrupted session is saved for a later run to resume."""
        return self.chunked and self.state is not None

    def load(self) -> UploadSession | None:
        """The session a previous run saved, if any (the registry may have forgotten it since)."""
        if self.state is None:
            return None
        try:
            record = self.state.get_upload(*self.key)
        except StateError as exc:
            log.warning("state_unavailable", error=str(exc))
            return None
        if record is None:
            return None
        return UploadSession(URL(record.location, encoded=True), record.offset, record.chunk_size)

    def save(self, session: UploadSession) -> None:
        if self.state is None or not self.chunked:
            return
        self._call(self.state.save_upload, UploadRecord(*self.key, str(session.location), session.offset,
                                                        session.chunk))

    def forget(self) -> None:
        if self.state is not None and self.chunked:
            self._call(self.state.drop_upload, *self.key)

    def record_present(self) -> None:
        if self.state is not None:
            self._call(self.state.record_blob, *self.key)

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        try:
            fn(*args)
        except StateError as exc:
            log.warning("state_write_failed", error=str(exc), digest=self.key[2])
