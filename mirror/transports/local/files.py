"""File helpers shared by the local transports: bounded reads, chunked reads, verified blob writes,
atomic replacement and an exclusive lock file. Blocking calls run in worker threads."""

from __future__ import annotations

import contextlib
import fcntl
import os
import posixpath
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import BinaryIO

import anyio

from mirror.aio import read_limited, temp_dir
from mirror.core.descriptor import Descriptor
from mirror.errors import DigestMismatch, InvalidReference, MirrorError, NotFound
from mirror.transports.base import BlobOpener
from mirror.transports.streams import hashed_stream

CHUNK = 1 << 20
TMP_PREFIX = ".mirror-tmp-"
FILE_MODE = 0o644


def member_name(name: str, where: str) -> str:
    """A relative, normalised POSIX name inside a root; refuses absolute names and ``..``."""
    if not name or "\x00" in name or name.startswith("/") or "\\" in name:
        raise InvalidReference(f"{where}: refusing member name {name!r} (absolute or malformed)")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InvalidReference(f"{where}: refusing member name {name!r} (escapes the root)")
    return "/".join(parts)


def link_target(member: str, target: str, symbolic: bool, where: str) -> str:
    """Where a link member points, as a name inside the root; refuses targets that escape it."""
    if target.startswith("/") or "\x00" in target:
        raise InvalidReference(f"{where}: link {member!r} points outside the archive ({target!r})")
    base = posixpath.dirname(member) if symbolic else ""
    joined = posixpath.normpath(posixpath.join(base, target))
    if joined == ".." or joined.startswith("../") or joined.startswith("/"):
        raise InvalidReference(f"{where}: link {member!r} points outside the archive ({target!r})")
    return member_name(joined, where)


async def read_file(path: Path, limit: int, what: str) -> bytes | None:
    """The whole file (None when missing), refusing files over ``limit`` bytes."""
    return await anyio.to_thread.run_sync(read_limited, path, limit, what)


@asynccontextmanager
async def open_chunks(path: Path, offset: int, length: int | None, what: str) -> AsyncIterator[AsyncIterator[bytes]]:
    """``length`` bytes (or to EOF when None) of ``path`` from ``offset``, in chunks."""
    try:
        f = await anyio.open_file(path, "rb")
    except FileNotFoundError:
        raise NotFound(f"{what} not found ({path})") from None
    except OSError as exc:
        raise MirrorError(f"opening {what} {path}: {exc.strerror}") from None
    async with f:
        await f.seek(offset)
        yield _chunks(f, length, what)


async def _chunks(f: anyio.AsyncFile[bytes], remaining: int | None, what: str) -> AsyncIterator[bytes]:
    while remaining is None or remaining > 0:
        data = await f.read(CHUNK if remaining is None else min(CHUNK, remaining))
        if not data:
            if remaining:
                raise MirrorError(f"{what}: unexpected end of file ({remaining} bytes missing)")
            return
        if remaining is not None:
            remaining -= len(data)
        yield data


def member_chunks(f: BinaryIO, start: int, size: int, archive: Path) -> Iterator[bytes]:
    """Bytes ``start .. start+size`` of an open archive, in CHUNK pieces; a short file is "truncated"."""
    f.seek(start)
    remaining = size
    while remaining > 0:
        data = f.read(min(CHUNK, remaining))
        if not data:
            raise MirrorError(f"archive {archive} is truncated")
        yield data
        remaining -= len(data)


async def write_blob(directory: Path, final: Path, desc: Descriptor, open_source: BlobOpener) -> int:
    """Stream a blob into a temp file in ``directory``, hashing every byte; rename it to ``final``
    only when digest and size match. Returns the bytes written."""
    fd, tmp_name = await anyio.to_thread.run_sync(lambda: tempfile.mkstemp(prefix=TMP_PREFIX, dir=directory))
    tmp = Path(tmp_name)
    hasher = desc.digest.hasher()
    try:
        async with await anyio.open_file(fd, "wb", closefd=True) as out, \
                hashed_stream(open_source, hasher) as chunks:
            async for chunk in chunks:
                if desc.size >= 0 and hasher.size > desc.size:
                    raise DigestMismatch(f"blob {desc.digest}: source sent more than {desc.size} bytes")
                await out.write(chunk)
        hasher.check(desc.digest, desc.size)
        await anyio.to_thread.run_sync(_publish, tmp, final)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_unlink, tmp)
        raise
    return hasher.size


async def read_blob(desc: Descriptor, open_source: BlobOpener, limit: int) -> bytes:
    """A small blob read into memory, every byte hashed; DigestMismatch unless digest and size match,
    MirrorError when it is over ``limit`` bytes."""
    hasher = desc.digest.hasher()
    parts: list[bytes] = []
    async with hashed_stream(open_source, hasher) as chunks:
        async for chunk in chunks:
            if desc.size >= 0 and hasher.size > desc.size:
                raise DigestMismatch(f"blob {desc.digest}: source sent more than {desc.size} bytes")
            if hasher.size > limit:
                raise MirrorError(f"blob {desc.digest} is larger than {limit} bytes")
            parts.append(chunk)
    hasher.check(desc.digest, desc.size)
    return b"".join(parts)


async def file_matches(path: Path, desc: Descriptor) -> bool:
    """True when ``path`` exists and holds exactly the blob ``desc`` names (size and digest)."""
    def run() -> bool:
        try:
            if path.stat().st_size != desc.size:
                return False
            hasher = desc.digest.hasher()
            with open(path, "rb") as f:
                while data := f.read(CHUNK):
                    hasher.update(data)
        except OSError:
            return False
        return hasher.digest() == desc.digest
    return await anyio.to_thread.run_sync(run)


@contextlib.contextmanager
def atomic_file_sync(path: Path) -> Iterator[BinaryIO]:
    """A temp file next to ``path``: flushed, synced and renamed into place only if the block
    finishes without an exception; removed otherwise."""
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _publish(Path(tmp), path)
    except BaseException:
        _unlink(Path(tmp))
        raise


def atomic_write_sync(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file next to ``path`` and rename it into place."""
    with atomic_file_sync(path) as f:
        f.write(data)


async def atomic_write(path: Path, data: bytes) -> None:
    await anyio.to_thread.run_sync(atomic_write_sync, path, data)


def _publish(tmp: Path, final: Path) -> None:
    """Make a finished temp file readable like any other file (mkstemp makes it 0600), rename it."""
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, final)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def exclusive_lock_sync(path: Path) -> Iterator[None]:
    """``exclusive_lock`` for code already running in a worker thread."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@asynccontextmanager
async def exclusive_lock(path: Path) -> AsyncIterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block; waits in a thread."""
    fd = await anyio.to_thread.run_sync(lambda: os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
    try:
        await anyio.to_thread.run_sync(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def work_dir(parent: str | Path | None) -> AbstractAsyncContextManager[Path]:
    """A private temp directory (in ``parent``, else the system's), removed on exit."""
    return temp_dir(parent, TMP_PREFIX)
