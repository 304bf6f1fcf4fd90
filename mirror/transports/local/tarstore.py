"""Tar archives of layouts: an indexed reader that seeks to members, and a writer.

The reader walks the member headers once (tarfile reads headers and seeks past data, so memory does
not grow with the archive), keeps ``name -> (data offset, size)``, and then serves every file by
seeking. Member names that are absolute or contain ``..``, links pointing outside the archive, and
device or fifo members are refused; a member whose data runs past the end of the file means a
truncated archive.
"""

from __future__ import annotations

import tarfile
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio

from mirror.errors import MirrorError, NotFound
from mirror.transports.local import files

MAX_LINK_HOPS = 16


def _index(path: Path) -> dict[str, tuple[int, int]]:
    where = f"archive {path}"
    try:
        total = path.stat().st_size
        members: dict[str, tuple[int, int]] = {}
        links: dict[str, str] = {}
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                name = files.member_name(member.name, where)
                if member.isreg():
                    if member.offset_data + member.size > total:
                        raise MirrorError(f"{where} is truncated: member {name!r} ends past the end of the file")
                    members[name] = (member.offset_data, member.size)
                elif member.issym() or member.islnk():
                    links[name] = files.link_target(name, member.linkname, member.issym(), where)
                elif not member.isdir():
                    raise MirrorError(f"{where}: refusing member {name!r} of unsupported type")
            end = tar.offset
        with open(path, "rb") as f:
            f.seek(end)
            marker = f.read(tarfile.BLOCKSIZE)
        if len(marker) < tarfile.BLOCKSIZE or marker.count(0) != len(marker):
            raise MirrorError(f"{where} is truncated or corrupt: no end-of-archive marker after its last member")
    except FileNotFoundError:
        raise NotFound(f"{where} does not exist") from None
    except (tarfile.TarError, EOFError) as exc:
        raise MirrorError(f"{where} is corrupt or truncated: {exc}") from None
    except IsADirectoryError:
        raise MirrorError(f"{where} is a directory, not a tar archive") from None
    for name, target in links.items():
        for _ in range(MAX_LINK_HOPS):
            if target not in links:
                break
            target = links[target]
        if target in members:
            members.setdefault(name, members[target])
    return members


class TarReader:
    """A layout ``Reader`` over the members of an uncompressed tar."""

    def __init__(self, path: Path, members: dict[str, tuple[int, int]]) -> None:
        self.path = path
        self.members = members
        self.where = f"archive {path}"

    @classmethod
    async def load(cls, path: Path) -> TarReader:
        return cls(path, await anyio.to_thread.run_sync(_index, path))

    def _member(self, name: str) -> tuple[int, int] | None:
        return self.members.get(name)

    async def read(self, name: str, limit: int) -> bytes | None:
        found = self._member(name)
        if found is None:
            return None
        start, size = found
        if size > limit:
            raise MirrorError(f"{self.where}: {name} is larger than {limit} bytes")
        parts: list[bytes] = []
        async with files.open_chunks(self.path, start, size, f"{self.where}: {name}") as chunks:
            async for chunk in chunks:
                parts.append(chunk)
        return b"".join(parts)

    def open(self, name: str, offset: int) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        found = self._member(name)
        if found is None:
            raise NotFound(f"{self.where}: {name} not found")
        start, size = found
        return files.open_chunks(self.path, start + min(offset, size), size - min(offset, size),
                                 f"{self.where}: {name}")


def _write_tar(root: Path, target: Path) -> None:
    with files.atomic_file_sync(target) as out, \
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.name.startswith(files.TMP_PREFIX) or rel.endswith(".lock"):
                continue
            info = tar.gettarinfo(str(path), arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isreg():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)


async def write_tar(root: Path, target: Path) -> None:
    """Tar the tree at ``root`` (uid/gid 0) into a temp file next to ``target``, then rename it there."""
    try:
        await anyio.to_thread.run_sync(_write_tar, root, target)
    except OSError as exc:
        raise MirrorError(f"writing archive {target}: {exc.strerror}") from None
