"""skopeo's ``dir:PATH`` transport (containers/image ``directory/``).

Layout: ``version`` (exactly ``Directory Transport Version: 1.1\\n``), ``manifest.json`` (the raw
top-level manifest), blobs named by their bare hex digest, and ``<hex>.manifest.json`` for each
instance of a list copied with ``--all``, and signatures as ``signature-N`` (top level) and
``<hex>.signature-N`` (an instance), N from 1, carried opaquely. One image per directory.

Writing builds the whole directory in a temp sibling and renames it into place only when the copy
succeeded; an existing dir-transport directory is replaced, any other non-empty path is refused
before anything is written. The top-level manifest is the last one put (children come first).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import anyio

from mirror.core import manifest as manifest_mod
from mirror.core.descriptor import Descriptor
from mirror.core.digest import Digest
from mirror.core.manifest import MAX_MANIFEST_SIZE, Manifest
from mirror.core.reference import ManifestRef, Tag
from mirror.errors import InvalidReference, ManifestError, MirrorError, NotFound
from mirror.transports.base import BlobOpener, Capabilities, ImageDestination, ImageSource, Location, Untagged
from mirror.transports.local import files
from mirror.transports.side import SideOptions

VERSION_FILE = "version"
VERSION = b"Directory Transport Version: 1.1\n"
MANIFEST = "manifest.json"
MAX_SIGNATURE_SIZE = 4 << 20  # containers/image's limit for one signature
MAX_SIGNATURES = 64
MAX_SIGNATURES_TOTAL = 16 << 20  # memory bound for one image's signatures


def _blob_file(digest: Digest) -> str:
    return digest.hex if digest.algorithm == "sha256" else f"{digest.algorithm}-{digest.hex}"


def _signature_file(index: int, instance: Digest | None) -> str:
    """containers/image's names: ``signature-N`` (top level) or ``<hex>.signature-N`` (an instance), N from 1."""
    return f"signature-{index + 1}" if instance is None else f"{_blob_file(instance)}.signature-{index + 1}"


class DirSource:
    capabilities = Capabilities(signatures=True)

    def __init__(self, root: Path, top: Manifest) -> None:
        self.root = root
        self.top = top
        self.location = Location("dir", "", str(root))

    @classmethod
    async def open(cls, root: Path) -> DirSource:
        raw = await files.read_file(root / MANIFEST, MAX_MANIFEST_SIZE, "manifest")
        if raw is None:
            raise NotFound(f"{root}: not a dir-transport directory (open {root / MANIFEST}: no such file or directory)")
        try:
            return cls(root, manifest_mod.parse(raw))
        except ManifestError as exc:
            raise ManifestError(f"{root / MANIFEST}: {exc}") from None

    async def get_manifest(self, ref: ManifestRef) -> Manifest:
        if ref == self.top.digest or ref == Tag(""):
            return self.top
        if not isinstance(ref, Digest):
            raise NotFound(f"{self.root}: the dir: transport has no tag {ref}")
        digest = ref
        raw = await files.read_file(self.root / f"{_blob_file(digest)}.manifest.json", MAX_MANIFEST_SIZE, "manifest")
        if raw is None:
            raise NotFound(f"{self.root}: manifest {digest} not found")
        try:
            return manifest_mod.parse(raw, None, digest)
        except ManifestError as exc:
            raise ManifestError(f"{self.root}: {exc}") from None

    async def head_manifest(self, ref: ManifestRef) -> Descriptor | None:
        try:
            return (await self.get_manifest(ref)).descriptor
        except NotFound:
            return None

    async def list_tags(self) -> AsyncIterator[str]:
        tags: tuple[str, ...] = ()  # the dir: transport has no tags
        for tag in tags:
            yield tag

    def open_blob(self, desc: Descriptor, offset: int = 0) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        return files.open_chunks(self.root / _blob_file(desc.digest), offset, None, f"{self.root}: blob {desc.digest}")

    async def signatures(self, instance: Digest | None, digest: Digest) -> list[bytes]:
        found: list[bytes] = []
        total = 0
        while len(found) < MAX_SIGNATURES:
            data = await files.read_file(self.root / _signature_file(len(found), instance), MAX_SIGNATURE_SIZE,
                                         "signature")
            if data is None:
                return found
            total += len(data)
            if total > MAX_SIGNATURES_TOTAL:
                raise MirrorError(f"{self.root}: signatures larger than {MAX_SIGNATURES_TOTAL} bytes in all")
            found.append(data)
        raise MirrorError(f"{self.root}: more than {MAX_SIGNATURES} signatures")


class DirDestination:
    capabilities = Capabilities(signatures=True)

    def __init__(self, target: Path, work: Path) -> None:
        self.target = target
        self.work = work
        self.location = Location("dir", "", str(target))
        self._top: Manifest | None = None

    async def has_blob(self, desc: Descriptor) -> bool:
        return False  # always a fresh directory

    async def mount_blob(self, desc: Descriptor, source: Location) -> bool:
        return False

    async def put_blob(self, desc: Descriptor, open_source: BlobOpener) -> int:
        return await files.write_blob(self.work, self.work / _blob_file(desc.digest), desc, open_source)

    async def head_manifest(self, ref: ManifestRef) -> Descriptor | None:
        return None

    async def put_manifest(self, manifest: Manifest, ref: ManifestRef) -> None:
        await files.atomic_write(self.work / f"{_blob_file(manifest.digest)}.manifest.json", manifest.raw)
        self._top = manifest

    async def put_signatures(self, signatures: list[bytes], instance: Digest | None, digest: Digest) -> None:
        for i, data in enumerate(signatures):
            await files.atomic_write(self.work / _signature_file(i, instance), data)

    async def commit(self) -> None:
        top = self._top
        if top is None:
            raise MirrorError(f"{self.target}: no manifest was written")

        def run() -> None:
            os.replace(self.work / f"{_blob_file(top.digest)}.manifest.json", self.work / MANIFEST)
            files.atomic_write_sync(self.work / VERSION_FILE, VERSION)
            old = self.target.with_name(f"{files.TMP_PREFIX}old-{self.target.name}-{secrets.token_hex(4)}")
            if self.target.exists():
                _check_replaceable(self.target)
                os.replace(self.target, old)
            os.replace(self.work, self.target)
            files.remove_tree(old)
        await anyio.to_thread.run_sync(run)


def _check_replaceable(path: Path) -> None:
    """A path we may replace: missing, an empty directory, or a dir-transport directory."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        raise MirrorError(f"refusing to overwrite {path}: not a directory")
    if not any(path.iterdir()):
        return
    try:
        version = (path / VERSION_FILE).read_bytes()
    except OSError:
        version = b""
    if version != VERSION:
        raise MirrorError(f"refusing to overwrite {path}: not empty and not a dir-transport directory "
                          "(no valid version file)")


CAPS = Capabilities(signatures=True)


class DirTransport(Untagged):
    name = "dir"
    capabilities = CAPS

    def validate(self, rest: str) -> None:
        if not rest or "\x00" in rest:
            raise InvalidReference(f"invalid dir: reference {rest!r}: empty path")

    @asynccontextmanager
    async def source(self, rest: str, side: SideOptions) -> AsyncIterator[tuple[ImageSource, ManifestRef]]:
        self.validate(rest)
        src = await DirSource.open(Path(rest))
        yield src, src.top.digest

    @asynccontextmanager
    async def destination(self, rest: str, side: SideOptions
                          ) -> AsyncIterator[tuple[ImageDestination, Tag | None]]:
        self.validate(rest)

        def prepare() -> tuple[Path, Path]:
            target = Path(os.path.abspath(rest))
            _check_replaceable(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            work = target.with_name(f"{files.TMP_PREFIX}{target.name}-{secrets.token_hex(4)}")
            work.mkdir()
            return target, work

        try:
            target, work = await anyio.to_thread.run_sync(prepare)
        except OSError as exc:
            raise MirrorError(f"preparing {rest}: {exc.strerror}") from None
        dest = DirDestination(target, work)
        try:
            yield dest, None
            await dest.commit()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(files.remove_tree, work)
