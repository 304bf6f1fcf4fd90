"""Lookaside signature storage (containers/image's ``docs/signature-protocols.md``): simple signatures
of a registry image kept beside the registry, as ``<base>@<alg>=<hex>/signature-<N>``, N from 1 up
to the first one missing.

Read from ``file://`` (a local directory) or ``http(s)://`` (anonymously: ``http.public`` never sends
the registry's credentials to the lookaside host); written only to ``file://``, as containers/image
writes (a web server is published to by other means: configure ``lookaside-staging``). A write
replaces ``signature-1…N`` and removes the stale ones after them, as skopeo does.

A ``file://`` lookaside that does not exist (the common case: nobody signs) costs one look per run,
not one file open per image: :class:`MissingDirs` remembers the directories found missing, and any
directory under one of them is missing too, until this run writes signatures there.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
from yarl import URL

from mirror import aio
from mirror.aio import LRU
from mirror.core.digest import Digest
from mirror.errors import MirrorError, SignatureError
from mirror.http.client import HttpClient
from mirror.http.public import get_public
from mirror.transports.registry.registriesd import SignatureStorage

MAX_SIGNATURE = 4 << 20   # containers/image's limit for one signature
MAX_SIGNATURES = 64
MAX_TOTAL = 16 << 20
MISSING_DIRS = 1024


class MissingDirs:
    """Local lookaside directories found missing, or present, during this run (bounded memories,
    shared by the run's images). A directory is missing when it or one of its parents was found
    missing; a write of this run under it forgets that."""

    def __init__(self, size: int = MISSING_DIRS) -> None:
        self._missing: LRU[str, bool] = LRU(size)
        self._present: LRU[str, bool] = LRU(size)

    def known_missing(self, directory: str) -> bool:
        return any(d in self._missing for d in _lineage(directory))

    async def missing(self, directory: str) -> bool:
        """Whether ``directory`` does not exist (looked at, off the event loop, once per run)."""
        if directory in self._present:
            return False
        if self.known_missing(directory):
            return True
        gone = await anyio.to_thread.run_sync(_missing_ancestor, directory)
        if gone is None:
            self._present.put(directory, True)
            return False
        self._missing.put(gone, True)
        return True

    def written(self, directory: str) -> None:
        for d in _lineage(directory):
            self._missing.pop(d)


def _lineage(directory: str) -> Iterator[str]:
    """``directory``, then each of its parents up to the root."""
    while True:
        yield directory
        parent = os.path.dirname(directory)
        if parent == directory:
            return
        directory = parent


def _missing_ancestor(directory: str) -> str | None:
    """The highest missing one of ``directory`` and its parents (None: ``directory`` exists)."""
    gone = None
    for d in _lineage(directory):
        if os.path.isdir(d):
            return gone
        gone = d
    return gone


async def read(http: HttpClient, storage: SignatureStorage, digest: Digest,
               dirs: MissingDirs | None = None) -> list[bytes]:
    """Every lookaside signature of ``digest``, in order (none: an empty list)."""
    if dirs is not None and storage.read.scheme == "file":
        first = storage.signature_url(storage.read, digest, 0).path  # <dir>/<repo>@<digest>/signature-1
        if await dirs.missing(os.path.dirname(os.path.dirname(first))):
            return []
    found: list[bytes] = []
    total = 0
    while len(found) <= MAX_SIGNATURES:
        url = storage.signature_url(storage.read, digest, len(found))
        data = await _read_one(http, url)
        if data is None:
            return found
        if not data:
            raise SignatureError(f"reading signature {_shown(url)}: the file is empty")
        total += len(data)
        if total > MAX_TOTAL:
            raise SignatureError(f"signatures of {digest} in {_shown(storage.read)}: more than {MAX_TOTAL} bytes")
        found.append(data)
    raise SignatureError(f"signatures of {digest} in {_shown(storage.read)}: more than {MAX_SIGNATURES}")


async def _read_one(http: HttpClient, url: URL) -> bytes | None:
    if url.scheme == "file":
        path = Path(url.path)
        return await anyio.to_thread.run_sync(aio.read_limited, path, MAX_SIGNATURE, "signature", SignatureError)
    if url.scheme in ("http", "https"):
        return await get_public(http, url, MAX_SIGNATURE, f"reading signature {_shown(url)}")
    raise SignatureError(f"Unsupported scheme when reading signature from {_shown(url)}")


async def write(storage: SignatureStorage, digest: Digest, signatures: list[bytes],
                dirs: MissingDirs | None = None) -> None:
    """Store ``signatures`` as ``signature-1…N`` of ``digest`` and remove stale ones after them."""
    if not signatures:
        return
    base = storage.write
    if base.scheme in ("http", "https"):
        raise SignatureError(f"Writing directly to a {base.scheme} lookaside {_shown(base)} is not supported. "
                             "Configure a lookaside-staging: location")
    if base.scheme != "file":
        raise SignatureError(f"Unsupported scheme when writing signature to {_shown(base)}")
    await write_or_delete(storage, digest, signatures)
    if dirs is not None:
        dirs.written(os.path.dirname(storage.signature_url(base, digest, 0).path))


async def delete(storage: SignatureStorage, digest: Digest) -> None:
    """Remove ``signature-1…`` of ``digest`` up to the first missing one (skopeo delete does this)."""
    await write_or_delete(storage, digest, [])


async def write_or_delete(storage: SignatureStorage, digest: Digest, signatures: list[bytes]) -> None:
    base = storage.write
    if base.scheme != "file":
        raise SignatureError(f"Writing directly to a {base.scheme} lookaside {_shown(base)} is not supported. "
                             "Configure a lookaside-staging: location")
    paths = [Path(storage.signature_url(base, digest, i).path) for i in range(len(signatures) + MAX_SIGNATURES)]
    await anyio.to_thread.run_sync(_write_files, paths, signatures)


def _write_files(paths: list[Path], signatures: list[bytes]) -> None:
    for path, data in zip(paths, signatures, strict=False):
        try:
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            _atomic_write(path, data)
        except OSError as exc:
            raise MirrorError(f"writing signature {path}: {exc.strerror or exc}") from None
    for path in paths[len(signatures):]:
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise MirrorError(f"removing stale signature {path}: {exc.strerror or exc}") from None


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".signature-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _shown(url: URL) -> str:
    """A URL for messages, without any user:password it may carry."""
    return str(url.with_user(None)) if url.user or url.password else str(url)
