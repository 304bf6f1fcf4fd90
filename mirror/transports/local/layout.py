"""OCI image layouts (``oci-layout``, ``index.json``, ``blobs/<alg>/<hex>``), read and written.

Reading goes through a :class:`Reader` (a directory, or the members of a tar), so ``oci:`` and
``oci-archive:`` share one source. Tags are the ``org.opencontainers.image.ref.name`` annotation of
``index.json`` entries.

A shared blob directory (skopeo's ``--src-shared-blob-dir`` / ``--dest-shared-blob-dir``, containers/image's
``OCISharedBlobDirPath``) holds the blobs and manifests of many layouts as ``DIR/<alg>/<hex>``: with one,
``blobs/`` is neither read nor written (the layout keeps ``oci-layout``, ``index.json`` and an empty
``blobs/``, as containers/image leaves it).

Writing (a directory only): blobs and manifests are content-addressed files, each written to a temp
file, hashed while written and renamed into place only when its digest matches; a blob already
present with the right content is not rewritten. ``commit`` adds the top-level manifest (the last
one put: the engine writes children first and the top last) to ``index.json``: under an exclusive
lock on ``index.json.lock``, read, modify, write to a temp file, rename, so concurrent writers into
one layout keep every entry. As containers/image does, an entry carrying the same ref name loses it
(the previous image under that ref is replaced); an unnamed entry of the same digest is replaced.

Manifests are stored byte for byte. A layout takes OCI manifests (``Capabilities.manifest_types``):
the copy converts Docker-format images to OCI on the way in, as skopeo does (``engine/reformat.py``,
``core/convert.py``), unless ``--format v2s2`` asks for Docker manifests, which skopeo then stores as
they are. As skopeo, a layout wants compressed layers (``compressed_layers``).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol

import anyio

from mirror.core import manifest as manifest_mod
from mirror.core import mediatype as mt
from mirror.core.descriptor import Descriptor
from mirror.core.digest import Digest
from mirror.core.manifest import MAX_MANIFEST_SIZE, Manifest
from mirror.core.reference import ManifestRef
from mirror.errors import ImageNotFound, InvalidReference, ManifestError, MirrorError, NotFound
from mirror.transports.base import BlobOpener, Capabilities, Location
from mirror.transports.local import files

LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
LOCK_FILE = "index.json.lock"
REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_VERSION = b'{"imageLayoutVersion":"1.0.0"}'
MAX_INDEX_SIZE = 64 << 20
#: As containers/image's OCI layout destination: OCI manifests only (the copy converts), compressed layers.
CAPS = Capabilities(compressed_layers=True, manifest_types=frozenset({mt.OCI_MANIFEST, mt.OCI_INDEX}))

_COMPONENT = r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*"
_REF_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")


def validate_ref(ref: str, where: str) -> None:
    """containers/image's rule for OCI ref names (no ``..``, no leading ``/``, no empty parts)."""
    if ref and not _REF_RE.match(ref):
        raise InvalidReference(f"{where}: invalid image reference name {ref!r}")


def blob_name(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.hex}"


class Reader(Protocol):
    """Read-only access to the files of a layout."""

    where: str

    async def read(self, name: str, limit: int) -> bytes | None: ...

    def open(self, name: str, offset: int) -> AbstractAsyncContextManager[AsyncIterator[bytes]]: ...


def blob_root(root: Path, shared: str | Path | None) -> Path:
    """Where a layout's blobs live: ``root/blobs``, or the shared blob directory."""
    return Path(shared) if shared else root / "blobs"


class DirReader:
    """A layout directory; ``shared``: the shared blob directory its blobs are read from."""

    def __init__(self, root: Path, shared: str | Path | None = None) -> None:
        self.root = root
        self.where = str(root)
        self._blobs = blob_root(root, shared)

    def _path(self, name: str) -> Path:
        return self._blobs / name.removeprefix("blobs/") if name.startswith("blobs/") else self.root / name

    async def read(self, name: str, limit: int) -> bytes | None:
        return await files.read_file(self._path(name), limit, name)

    def open(self, name: str, offset: int) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        return files.open_chunks(self._path(name), offset, None, f"{self.where}: {name}")


def parse_index(raw: bytes, where: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ManifestError(f"{where}: index.json is not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("manifests"), list):
        raise ManifestError(f"{where}: index.json has no manifests list")
    return data


def _entries(data: dict[str, Any], where: str) -> list[Descriptor]:
    return [Descriptor.from_json(e, f"{where}: index.json manifests[{i}]") for i, e in enumerate(data["manifests"])]


class LayoutSource:
    """``ImageSource`` over an OCI layout; ``ref`` tags resolve through index.json annotations."""

    capabilities = Capabilities()

    def __init__(self, reader: Reader, location: Location, entries: list[Descriptor]) -> None:
        self.reader = reader
        self.location = location
        self.entries = entries

    @classmethod
    async def open(cls, reader: Reader, location: Location) -> LayoutSource:
        raw = await reader.read(INDEX_FILE, MAX_INDEX_SIZE)
        if raw is None:
            raise NotFound(f"{reader.where}: not an OCI layout (no index.json)")
        return cls(reader, location, _entries(parse_index(raw, reader.where), reader.where))

    def resolve(self, ref: str) -> Descriptor:
        """The index entry for a ref name; without a name, the only entry (as skopeo)."""
        if ref:
            found = [e for e in self.entries if e.annotations.get(REF_NAME) == ref]
            if not found:
                raise ImageNotFound(f'{self.reader.where}: no descriptor found for reference "{ref}" '
                                    "(no image of that name in index.json)")
            return found[0]
        if len(self.entries) != 1:
            raise MirrorError(f"{self.reader.where}: index.json holds {len(self.entries)} images; "
                              "name one with PATH:REFERENCE")
        return self.entries[0]

    async def get_manifest(self, ref: ManifestRef) -> Manifest:
        digest = ref if isinstance(ref, Digest) else self.resolve(ref.name).digest
        raw = await self.reader.read(blob_name(digest), MAX_MANIFEST_SIZE)
        if raw is None:
            raise NotFound(f"{self.reader.where}: manifest {digest} not found")
        declared = next((e.media_type for e in self.entries if e.digest == digest and e.media_type), None)
        try:
            return manifest_mod.parse(raw, declared, digest)
        except ManifestError as exc:
            raise ManifestError(f"{self.reader.where}: {blob_name(digest)}: {exc}") from None

    async def head_manifest(self, ref: ManifestRef) -> Descriptor | None:
        try:
            return (await self.get_manifest(ref)).descriptor
        except NotFound:
            return None

    async def list_tags(self) -> AsyncIterator[str]:
        for entry in self.entries:
            name = entry.annotations.get(REF_NAME)
            if name:
                yield name

    def open_blob(self, desc: Descriptor, offset: int = 0) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        return self.reader.open(blob_name(desc.digest), offset)


async def prepare_layout(root: Path, shared: str | Path | None = None) -> None:
    """Create the layout (or check an existing one): refuses a non-empty directory without ``oci-layout``.
    Runs under the layout's lock, so concurrent writers creating one layout agree. ``shared``: the
    shared blob directory, created too."""
    def run() -> None:
        try:
            root.mkdir(parents=True, exist_ok=True)
            with files.exclusive_lock_sync(root / LOCK_FILE):
                check()
            if shared:
                (Path(shared) / "sha256").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MirrorError(f"creating OCI layout {root}: {exc.strerror}") from None

    def check() -> None:
        if not (root / LAYOUT_FILE).is_file():
            visible = [p for p in root.iterdir() if p.name != LOCK_FILE]
            if visible:
                raise MirrorError(f"refusing to write into {root}: not empty and not an OCI layout (no oci-layout)")
            files.atomic_write_sync(root / LAYOUT_FILE, LAYOUT_VERSION)
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    await anyio.to_thread.run_sync(run)


class LayoutDestination:
    """``ImageDestination`` into an OCI layout directory; ``commit`` publishes the index entry.
    ``shared``: the shared blob directory that receives blobs and manifests instead of ``blobs/``."""

    capabilities = CAPS

    def __init__(self, root: Path, ref: str | None, location: Location, shared: str | Path | None = None) -> None:
        self.root = root
        self.blobs = blob_root(root, shared)
        self.ref = ref or None
        self.location = location
        self._top: Manifest | None = None

    def _blob(self, digest: Digest) -> Path:
        return self.blobs / digest.algorithm / digest.hex

    async def has_blob(self, desc: Descriptor) -> bool:
        return await files.file_matches(self._blob(desc.digest), desc)

    async def mount_blob(self, desc: Descriptor, source: Location) -> bool:
        return False

    async def put_blob(self, desc: Descriptor, open_source: BlobOpener) -> int:
        final = self._blob(desc.digest)
        if desc.digest.algorithm != "sha256":
            await anyio.to_thread.run_sync(lambda: final.parent.mkdir(exist_ok=True))
        return await files.write_blob(final.parent, final, desc, open_source)

    async def head_manifest(self, ref: ManifestRef) -> Descriptor | None:
        if isinstance(ref, Digest):
            raw = await files.read_file(self._blob(ref), MAX_MANIFEST_SIZE, "manifest")
            if raw is None or Digest.of(raw, ref.algorithm) != ref:
                return None
            try:
                return manifest_mod.parse(raw).descriptor
            except ManifestError:
                return None
        if self._top is not None and ref.name == self.ref:
            return self._top.descriptor  # written by this destination, published on commit
        raw = await files.read_file(self.root / INDEX_FILE, MAX_INDEX_SIZE, "index.json")
        if raw is None:
            return None
        found = [e for e in _entries(parse_index(raw, str(self.root)), str(self.root))
                 if e.annotations.get(REF_NAME) == ref.name]
        return found[0] if found else None

    async def put_manifest(self, manifest: Manifest, ref: ManifestRef) -> None:
        if manifest.digest.algorithm != "sha256" or Digest.of(manifest.raw) != manifest.digest:
            raise ManifestError(f"{self.location}: manifest bytes do not match {manifest.digest}")
        path = self._blob(manifest.digest)
        if not await files.file_matches(path, manifest.descriptor):
            await files.atomic_write(path, manifest.raw)
        self._top = manifest

    async def commit(self) -> Manifest | None:
        """Add the top-level manifest to index.json (atomically, under the layout's lock)."""
        top = self._top
        if top is None:
            return None
        async with files.exclusive_lock(self.root / LOCK_FILE):
            raw = await files.read_file(self.root / INDEX_FILE, MAX_INDEX_SIZE, "index.json")
            data: dict[str, Any] = parse_index(raw, str(self.root)) if raw is not None else \
                {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
            data["manifests"] = add_entry(data["manifests"], top, self.ref)
            await files.atomic_write(self.root / INDEX_FILE, json.dumps(data, separators=(",", ":")).encode())
        return top


def add_entry(entries: list[Any], top: Manifest, ref: str | None) -> list[Any]:
    """containers/image's ``addManifest``: the ref moves to the new entry; an unnamed entry with the
    same digest is replaced; otherwise the entry is appended."""
    entry: dict[str, Any] = {"mediaType": top.media_type, "digest": str(top.digest), "size": len(top.raw)}
    if ref:
        entry["annotations"] = {REF_NAME: ref}
    out: list[Any] = []
    for old in entries:
        annotations = old.get("annotations") if isinstance(old, dict) else None
        named = annotations.get(REF_NAME) if isinstance(annotations, dict) else None
        if ref and named == ref:
            continue  # the previous image under this ref is replaced
        if not named and isinstance(old, dict) and old.get("digest") == str(top.digest):
            continue  # same image, unnamed: replaced by the new entry
        out.append(old)
    out.append(entry)
    return out
