"""The ``oci:PATH[:REF]`` and ``oci-archive:PATH[:REF]`` transports (containers/image ``oci/``).

As containers/image, the path ends at the first ``:``; REF is an OCI ref name (the
``org.opencontainers.image.ref.name`` annotation), validated before any I/O. Reading without REF is
allowed when index.json holds exactly one image. An ``oci-archive`` is an uncompressed tar of a
layout: read by seeking to its members, written by building the layout in a temp directory, taring
it (uid/gid 0) to a temp file next to the target and renaming that into place on success only.

``oci:`` reads and writes blobs and manifests in a shared blob directory instead of ``blobs/`` when
the side has one (``--src-shared-blob-dir`` / ``--dest-shared-blob-dir``, see ``layout.py``).
``oci-archive:`` ignores it: skopeo would leave the blobs out of the archive, mirror keeps archives
whole.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from mirror.core.reference import ManifestRef, Tag
from mirror.errors import InvalidReference, MirrorError
from mirror.transports.base import ImageDestination, ImageSource, Location, Untagged
from mirror.transports.local import files
from mirror.transports.local.layout import (
    CAPS,
    DirReader,
    LayoutDestination,
    LayoutSource,
    prepare_layout,
    validate_ref,
)
from mirror.transports.local.tarstore import TarReader, write_tar
from mirror.transports.side import SideOptions


def split_reference(transport: str, rest: str) -> tuple[Path, str]:
    """``PATH[:REF]`` → (path, ref or ""), refusing an empty path or an invalid ref name."""
    path, _, ref = rest.partition(":")
    if not path or "\x00" in path:
        raise InvalidReference(f"invalid {transport}: reference {rest!r}: empty path")
    validate_ref(ref, f"invalid {transport}: reference {rest!r}")
    return Path(path), ref



class OciTransport(Untagged):
    """``oci:``."""

    name = "oci"
    capabilities = CAPS

    def validate(self, rest: str) -> None:
        split_reference(self.name, rest)

    @asynccontextmanager
    async def source(self, rest: str, side: SideOptions) -> AsyncIterator[tuple[ImageSource, ManifestRef]]:
        path, ref = split_reference(self.name, rest)
        src = await LayoutSource.open(DirReader(path, side.local.shared_blob_dir), Location(self.name, "", str(path)))
        yield src, src.resolve(ref).digest

    @asynccontextmanager
    async def destination(self, rest: str, side: SideOptions
                          ) -> AsyncIterator[tuple[ImageDestination, Tag | None]]:
        path, ref = split_reference(self.name, rest)
        shared = side.local.shared_blob_dir
        await prepare_layout(path, shared)
        dest = LayoutDestination(path, ref, Location(self.name, "", str(path.absolute())), shared)
        yield dest, Tag(ref) if ref else None
        await dest.commit()


class OciArchiveTransport(Untagged):
    name = "oci-archive"
    capabilities = CAPS

    def validate(self, rest: str) -> None:
        split_reference(self.name, rest)

    @asynccontextmanager
    async def source(self, rest: str, side: SideOptions) -> AsyncIterator[tuple[ImageSource, ManifestRef]]:
        path, ref = split_reference(self.name, rest)
        src = await LayoutSource.open(await TarReader.load(path), Location(self.name, "", str(path)))
        yield src, src.resolve(ref).digest

    @asynccontextmanager
    async def destination(self, rest: str, side: SideOptions
                          ) -> AsyncIterator[tuple[ImageDestination, Tag | None]]:
        path, ref = split_reference(self.name, rest)
        target = path.absolute()

        def prepare() -> Path:
            if target.is_dir():
                raise MirrorError(f"refusing to write archive {target}: it is a directory")
            target.parent.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix=files.TMP_PREFIX, dir=side.local.tmpdir or target.parent))

        try:
            work = await anyio.to_thread.run_sync(prepare)
        except OSError as exc:
            raise MirrorError(f"preparing {target}: {exc.strerror}") from None
        try:
            await prepare_layout(work)
            dest = LayoutDestination(work, ref, Location(self.name, "", str(target)))
            yield dest, Tag(ref) if ref else None
            if await dest.commit() is None:
                raise MirrorError(f"{target}: no manifest was written")
            await write_tar(work, target)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(files.remove_tree, work)
