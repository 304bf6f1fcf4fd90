"""Persistent run state in one embedded SQLite file: resumable upload sessions and blob locations.

What is stored:

- ``uploads``: one open upload session per (registry, repo, digest): the latest upload URL the
  registry gave and the byte offset it acknowledged. A later run asks the registry for its real
  offset before trusting it (see ``transports.registry.upload``).
- ``blob_locations``: facts "this blob was verified present in this repository" (HEAD 200, a
  finished upload or a mount), used to pick cross-repository mount sources.
- ``index_choices``: which manifest a multi-arch index resolves to for one platform selection
  (an instance, or a platform subset's index). Indexes are content-addressed, so this never goes
  stale: a no-op resync of an index copied as one platform needs no GET of the index.

Everything here is a cache: losing the file costs re-uploads and extra requests, never correctness.

Crash safety: WAL journal; every write is one ``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction.
``synchronous=NORMAL`` keeps every committed transaction across a process crash or SIGKILL (the WAL
is written before COMMIT returns); only a power loss can drop the last few commits, and never
corrupts the file. Several processes may share the file (``busy_timeout`` waits for the writer).

A file that is not a usable database (corrupt, or not SQLite at all) is, by default, renamed to
``<name>.corrupt-<unix time>`` (with its ``-wal``/``-shm``) and a fresh one is created, with a
``state_reset`` warning; ``on_corrupt="error"`` raises :class:`~mirror.errors.ConfigError` instead.
Opening reads the header and schema; the full ``PRAGMA quick_check`` (the whole file: ~2 ms per MB, on
every ``mirror copy``) runs only when the last user may not have closed the file cleanly (its WAL is
still there) or a process met damage in it (``<name>.check``, left by the StateError reporting it).
A file written by a newer mirror (higher schema version) always raises ``ConfigError``.

Calls are tiny (tens of microseconds) and may run on the event loop thread; a lock makes one store
safe to share between threads too.
"""

from __future__ import annotations

import os
import pwd
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol

from msgspec import Struct

from mirror.errors import ConfigError, MirrorError
from mirror.log import get_logger

log = get_logger("mirror.state")

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000
#: SQLite page cache of a state file, in KiB (SQLite's default is 2000): the lookups touch a few
#: B-tree pages each, so a small cache serves them, and memory stops growing early in a long run.
CACHE_KIB = 512
#: Blob locations an in-memory store keeps (most recently verified kept): without a file nothing
#: outlives the run, so this is only the run's own memory, bounded like ``KnownLocations``.
MEMORY_LOCATIONS = 4096

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS uploads (
        registry TEXT NOT NULL, repo TEXT NOT NULL, digest TEXT NOT NULL,
        location TEXT NOT NULL, offset INTEGER NOT NULL, chunk_size INTEGER NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (registry, repo, digest)) WITHOUT ROWID""",
    # Keyed digest-first: the question asked is "which repos of this registry hold this digest".
    """CREATE TABLE IF NOT EXISTS blob_locations (
        registry TEXT NOT NULL, digest TEXT NOT NULL, repo TEXT NOT NULL, verified_at REAL NOT NULL,
        PRIMARY KEY (registry, digest, repo)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS index_choices (
        digest TEXT NOT NULL, selector TEXT NOT NULL, chosen TEXT NOT NULL,
        PRIMARY KEY (digest, selector)) WITHOUT ROWID""",
)

OnCorrupt = Literal["reset", "error"]


class StateError(MirrorError):
    """The state file could not be read or written (disk full, locked for too long, ...)."""


class UploadRecord(Struct, frozen=True):
    """An open upload session: ``location`` is the latest upload URL, exactly as the registry sent it
    (resolved to absolute), and ``offset`` the number of bytes the registry acknowledged."""

    registry: str
    repo: str
    digest: str
    location: str
    offset: int
    chunk_size: int
    updated_at: float = 0.0


class StateBackend(Protocol):
    """What transports and the engine need of run state: the embedded :class:`StateStore` (SQLite) or,
    for many workers, ``mirror.distributed.pgstate.PgState`` (PostgreSQL). Calls are short and
    synchronous; failures raise :class:`StateError`."""

    def get_upload(self, registry: str, repo: str, digest: str) -> UploadRecord | None: ...
    def save_upload(self, record: UploadRecord) -> None: ...
    def drop_upload(self, registry: str, repo: str, digest: str) -> None: ...
    def record_blob(self, registry: str, repo: str, digest: str) -> None: ...
    def known_repos(self, registry: str, digest: str, limit: int = 20) -> list[str]: ...
    def forget_blob(self, registry: str, repo: str, digest: str) -> None: ...
    def index_choice(self, digest: str, selector: str) -> str | None: ...
    def remember_index_choice(self, digest: str, selector: str, chosen: str) -> None: ...
    def close(self) -> None: ...


def default_state_path(env: Mapping[str, str]) -> Path:
    """``${XDG_STATE_HOME:-~/.local/state}/mirror/state.sqlite``; a relative XDG_STATE_HOME is
    ignored, as the XDG base-directory spec requires."""
    xdg = env.get("XDG_STATE_HOME", "")
    if xdg and os.path.isabs(xdg):
        base = Path(xdg)
    else:
        home = env.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir
        base = Path(home) / ".local" / "state"
    return base / "mirror" / "state.sqlite"


class StateStore:
    """The state file. Open with :meth:`open` (or :meth:`memory`); use as a context manager."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None,
                 clock: Callable[[], float] = time.time, max_locations: int | None = None) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._clock = clock
        self.path = path
        self._max_locations = max_locations  # None: unbounded (a file)
        self._recorded = 0  # record_blob calls since the last trim

    # -- opening and closing ------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str], *, on_corrupt: OnCorrupt = "reset",
             clock: Callable[[], float] = time.time) -> StateStore:
        """Open or create the state file (0600, in a directory created 0700)."""
        target = Path(path)
        _prepare(target)
        try:
            conn = _connect(target)
        except sqlite3.Error as exc:
            if not _is_corrupt(exc):  # locked, unreadable, no room: not the file's fault
                raise ConfigError(f"cannot open state file {target}: {exc}") from None
            if on_corrupt == "error":
                raise ConfigError(f"state file {target} is not a usable database ({exc}); "
                                  "move it away or remove it") from None
            moved = _move_aside(target)
            log.warning("state_reset", path=str(target), moved_to=str(moved), reason=str(exc))
            _prepare(target)
            try:
                conn = _connect(target)
            except sqlite3.Error as again:
                raise ConfigError(f"cannot create state file {target}: {again}") from None
        return cls(conn, target, clock)

    @classmethod
    def memory(cls, clock: Callable[[], float] = time.time,
               max_locations: int = MEMORY_LOCATIONS) -> StateStore:
        """A store that lives only as long as the process (for ``--state none``); it keeps at most
        about ``max_locations`` blob locations, the most recently verified."""
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        _init_schema(conn, "memory")
        return cls(conn, None, clock, max_locations)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- upload sessions ----------------------------------------------------------------------
    def get_upload(self, registry: str, repo: str, digest: str) -> UploadRecord | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT location, offset, chunk_size, updated_at FROM uploads "
                "WHERE registry = ? AND repo = ? AND digest = ?", (registry, repo, digest)).fetchone()
        if row is None:
            return None
        return UploadRecord(registry, repo, digest, str(row[0]), int(row[1]), int(row[2]), float(row[3]))

    def save_upload(self, record: UploadRecord) -> None:
        """Insert or replace the session for (registry, repo, digest); ``updated_at`` is set to now."""
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO uploads (registry, repo, digest, location, offset, chunk_size, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (record.registry, record.repo, record.digest, record.location, record.offset,
                 record.chunk_size, self._clock()))

    def drop_upload(self, registry: str, repo: str, digest: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM uploads WHERE registry = ? AND repo = ? AND digest = ?",
                         (registry, repo, digest))

    def uploads(self) -> list[UploadRecord]:
        """Every open session, oldest first (for reports and tests)."""
        with self._read() as conn:
            rows = conn.execute("SELECT registry, repo, digest, location, offset, chunk_size, updated_at "
                                "FROM uploads ORDER BY updated_at").fetchall()
        return [UploadRecord(str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), int(r[5]), float(r[6]))
                for r in rows]

    # -- blob locations -----------------------------------------------------------------------
    def record_blob(self, registry: str, repo: str, digest: str) -> None:
        """Remember that ``digest`` was verified present in ``repo`` just now."""
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO blob_locations (registry, digest, repo, verified_at) "
                         "VALUES (?, ?, ?, ?)", (registry, digest, repo, self._clock()))
            if self._max_locations is not None:
                self._recorded += 1
                if self._recorded >= max(1, self._max_locations // 8):  # trim in batches: cheap
                    self._recorded = 0
                    conn.execute("DELETE FROM blob_locations WHERE (registry, digest, repo) IN (SELECT registry, "
                                 "digest, repo FROM blob_locations ORDER BY verified_at DESC LIMIT -1 OFFSET ?)",
                                 (self._max_locations,))

    def location_count(self) -> int:
        """Blob locations stored (for tests and reports)."""
        with self._read() as conn:
            row = conn.execute("SELECT COUNT(*) FROM blob_locations").fetchone()
        return int(row[0]) if row else 0

    def known_repos(self, registry: str, digest: str, limit: int = 20) -> list[str]:
        """Repositories of ``registry`` known to hold ``digest``, most recently verified first."""
        with self._read() as conn:
            rows = conn.execute("SELECT repo FROM blob_locations WHERE registry = ? AND digest = ? "
                                "ORDER BY verified_at DESC, repo LIMIT ?", (registry, digest, limit)).fetchall()
        return [str(r[0]) for r in rows]

    def forget_blob(self, registry: str, repo: str, digest: str) -> None:
        """The blob turned out to be absent from ``repo`` (a failed mount, a HEAD 404)."""
        with self._write() as conn:
            conn.execute("DELETE FROM blob_locations WHERE registry = ? AND digest = ? AND repo = ?",
                         (registry, digest, repo))

    # -- index choices ------------------------------------------------------------------------
    def index_choice(self, digest: str, selector: str) -> str | None:
        """What index ``digest`` resolved to for ``selector`` (a platform selection), if remembered."""
        with self._read() as conn:
            row = conn.execute("SELECT chosen FROM index_choices WHERE digest = ? AND selector = ?",
                               (digest, selector)).fetchone()
        return None if row is None else str(row[0])

    def remember_index_choice(self, digest: str, selector: str, chosen: str) -> None:
        """Remember what index ``digest`` resolves to for ``selector``. An in-memory store keeps
        nothing: it would only grow with the catalog, and it outlives no run."""
        if self.path is None:
            return
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO index_choices (digest, selector, chosen) VALUES (?, ?, ?)",
                         (digest, selector, chosen))

    # -- plumbing -----------------------------------------------------------------------------
    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise self._failed("reading", exc) from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._failed("writing", exc) from None
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                if isinstance(exc, sqlite3.Error):
                    raise self._failed("writing", exc) from None
                raise

    def _failed(self, doing: str, exc: sqlite3.Error) -> StateError:
        if self.path is None or not _is_corrupt(exc):
            return StateError(f"{doing} state {self._where()}: {exc}")
        with suppress(OSError):
            _marker(self.path).touch()  # the next open checks the whole file, and resets it if damaged
        return StateError(f"{doing} state {self._where()}: {exc} (checked, and reset if damaged, on the next run)")

    def _where(self) -> str:
        return str(self.path) if self.path is not None else "(in memory)"


def _prepare(path: Path) -> None:
    """Create the directory (0700) and the file (0600) ourselves, so SQLite never creates either
    with the process umask; tighten an existing file that others can read."""
    parent = path.parent
    try:
        if not parent.exists():
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(parent, 0o700)  # mkdir's mode is filtered by the umask
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_mode & 0o077:
                os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
    except OSError as exc:
        raise ConfigError(f"cannot create state file {path}: {exc.strerror or exc}") from None


def _marker(path: Path, drop: bool = False) -> Path:
    marker = path.with_name(f"{path.name}.check")
    if drop:
        with suppress(OSError):
            marker.unlink(missing_ok=True)
    return marker


def _connect(path: Path) -> sqlite3.Connection:
    full_check = os.path.exists(f"{path}-wal") or os.path.exists(_marker(path))  # see the module's docstring
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                           timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot use WAL journal (got {mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        if full_check:
            check = conn.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise _Corrupt(f"integrity check failed: {check[0] if check else 'no answer'}")
            _marker(path, drop=True)
        _init_schema(conn, str(path))
    except BaseException:
        conn.close()
        raise
    return conn


class _Corrupt(sqlite3.DatabaseError):
    """``quick_check`` found damage."""


# SQLITE_CORRUPT and SQLITE_NOTADB (primary result codes): the file itself is bad. Everything else
# (SQLITE_BUSY, SQLITE_CANTOPEN, SQLITE_FULL, ...) is about the environment, and moving a good file
# aside for it would lose state for nothing.
_CORRUPT_CODES = frozenset({11, 26})


def _is_corrupt(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, _Corrupt) or (code is not None and code & 0xFF in _CORRUPT_CODES)


def _init_schema(conn: sqlite3.Connection, where: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA:
            conn.execute(statement)
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        version = row[0] if row else None
        if version is None:
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        elif int(version) > SCHEMA_VERSION:
            raise ConfigError(f"state file {where} has schema version {version}, newer than this mirror "
                              f"understands ({SCHEMA_VERSION}); use a newer mirror or another --state file")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _move_aside(path: Path) -> Path:
    moved = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    _marker(path, drop=True)
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            try:
                os.replace(source, Path(f"{moved}{suffix}"))
            except OSError as exc:
                raise ConfigError(f"state file {path} is corrupt and cannot be moved aside: "
                                  f"{exc.strerror or exc}") from None
    return moved
