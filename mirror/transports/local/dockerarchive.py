"""skopeo's ``docker-archive:PATH[:REF|:@N]`` transport (``docker save`` tarballs), read side.

The archive is indexed once by :class:`TarReader` (member headers only; data is served by seeking,
never unpacked) and ``manifest.json`` (a JSON array of ``{"Config","RepoTags","Layers"}``, capped at
1 MiB as containers/image does) says where the config and the layers are. Its paths are followed as
written, so both the legacy layout (``<id>/layer.tar`` symlinks to ``<hex>.tar``) and Docker >= 25's
(an embedded OCI layout, ``blobs/sha256/<hex>``) are read. Member names escaping the root, links
pointing outside it and truncated archives are refused by the reader.

The image is presented as a Docker schema2 manifest built from the archive, as containers/image does
(compact JSON, config then layers, the config blob byte for byte so the image ID survives).
Layers, and where mirror differs from skopeo 1.9:

- an uncompressed layer (what ``docker save`` stores) is described as
  ``application/vnd.docker.image.rootfs.diff.tar`` with its diff_id as digest and its member size;
  skopeo labels it ``…diff.tar.gzip`` (wrongly, the bytes are not gzip), so ``mirror inspect`` and
  ``skopeo inspect`` of an archive report different manifest digests (same config, same layers);
- copying to a destination that wants compressed layers (a registry, an OCI layout), skopeo gzips
  each such layer on the way; so does mirror (``engine/reformat.py``): the registry gets
  ``…diff.tar.gzip`` layers, the config (image ID) byte for byte. Copies to ``dir:`` and archives
  keep the layers uncompressed, byte for byte;
- a gzip-compressed layer member (some tools write them) is described as ``…diff.tar.gzip`` with
  the digest of its compressed bytes (hashed once when the archive is opened).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio

from mirror.core import manifest as manifest_mod
from mirror.core import mediatype as mt
from mirror.core.convert import go_json as _dumps
from mirror.core.descriptor import Descriptor
from mirror.core.digest import Digest, Hasher
from mirror.core.manifest import Manifest
from mirror.core.reference import ManifestRef, Tag, parse_docker
from mirror.errors import InvalidReference, ManifestError, MirrorError, NotFound
from mirror.transports.base import Capabilities, Location
from mirror.transports.local import files
from mirror.transports.local.tarstore import TarReader

MANIFEST = "manifest.json"
MAX_ARCHIVE_MANIFEST = 1 << 20
MAX_CONFIG = 4 << 20
LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

#: What selects the image in an archive: None (the only one), a normalised ``name:tag``, or an index.
Selector = str | int | None


def normalise_tag(text: str, where: str) -> str:
    """``name[:tag]`` → ``registry/path:tag`` (``:latest`` added); digests are refused, as skopeo does."""
    try:
        ref = parse_docker(text)
    except MirrorError as exc:
        raise InvalidReference(f"{where}: {exc}") from None
    if ref.digest is not None:
        raise InvalidReference(f"{where}: a digest reference ({text!r}) cannot be used here")
    return str(ref)


def split_reference(transport: str, rest: str) -> tuple[Path, Selector]:
    """``PATH[:REF|:@N]`` → (path, selector); the path ends at the first ``:``."""
    path, colon, ref = rest.partition(":")
    where = f"invalid {transport}: reference {rest!r}"
    if not path or "\x00" in path:
        raise InvalidReference(f"{where}: empty path")
    if not colon or not ref:
        return Path(path), None
    if ref.startswith("@"):
        if not ref[1:].isdigit() or len(ref) > 10:
            raise InvalidReference(f"{where}: invalid image index {ref!r}")
        return Path(path), int(ref[1:])
    return Path(path), normalise_tag(ref, where)


def _compact(data: dict[str, Any]) -> bytes:
    return _dumps(data)


def _items(raw: bytes, where: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ManifestError(f"{where}: manifest.json is not valid JSON") from None
    if not isinstance(data, list) or not all(isinstance(i, dict) for i in data):
        raise ManifestError(f"{where}: manifest.json is not an array of images")
    for i, item in enumerate(data):
        if not isinstance(item.get("Config"), str) or not isinstance(item.get("Layers"), list) \
                or not all(isinstance(layer, str) for layer in item["Layers"]):
            raise ManifestError(f"{where}: manifest.json entry {i} has no Config or Layers")
        tags = item.get("RepoTags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ManifestError(f"{where}: manifest.json entry {i} has invalid RepoTags")
    return data


def _matches(tag: str, wanted: str) -> bool:
    try:
        return normalise_tag(tag, "RepoTags") == wanted
    except InvalidReference:
        return False


def select(items: list[dict[str, Any]], selector: Selector, where: str) -> dict[str, Any]:
    """The manifest.json entry named by ``selector`` (containers/image's rules)."""
    if selector is None:
        if len(items) != 1:
            raise MirrorError(f"{where} holds {len(items)} images; name one with PATH:NAME:TAG or PATH:@N")
        return items[0]
    if isinstance(selector, int):
        if selector >= len(items):
            raise NotFound(f"{where}: no image @{selector} (the archive holds {len(items)})")
        return items[selector]
    found = [i for i in items if any(_matches(t, selector) for t in i.get("RepoTags") or [])]
    if not found:
        raise NotFound(f"{where}: no image tagged {selector!r}")
    return found[0]


def _hash_member(path: Path, start: int, size: int) -> Digest:
    hasher = Hasher("sha256")
    with open(path, "rb") as f:
        for data in files.member_chunks(f, start, size, path):
            hasher.update(data)
    return hasher.digest()


def _head(path: Path, start: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(min(size, 8))


async def archive_tags(path: Path) -> list[str]:
    """skopeo's ``list-tags docker-archive:PATH``: every image's normalised RepoTags, ``@N`` if untagged."""
    reader = await TarReader.load(path)
    raw = await reader.read(MANIFEST, MAX_ARCHIVE_MANIFEST)
    if raw is None:
        raise NotFound(f"{reader.where}: not a docker-archive (no manifest.json)")
    tags: list[str] = []
    for i, item in enumerate(_items(raw, reader.where)):
        names = item.get("RepoTags") or []
        tags.extend(normalise_tag(name, f"{reader.where}: RepoTags") for name in names)
        if not names:
            tags.append(f"@{i}")
    return tags


class ArchiveSource:
    """``ImageSource`` over one image of a docker-archive; ``get_manifest("")`` is that image."""

    capabilities = Capabilities()

    def __init__(self, reader: TarReader, manifest: Manifest, blobs: dict[Digest, str],
                 location: Location, repo_tags: list[str]) -> None:
        self.reader = reader
        self.manifest = manifest
        self.blobs = blobs
        self.location = location
        self.repo_tags = repo_tags

    @classmethod
    async def open(cls, path: Path, selector: Selector, location: Location) -> ArchiveSource:
        reader = await TarReader.load(path)
        where = reader.where
        raw = await reader.read(MANIFEST, MAX_ARCHIVE_MANIFEST)
        if raw is None:
            raise NotFound(f"{where}: not a docker-archive (no manifest.json)")
        item = select(_items(raw, where), selector, where)
        config_name = files.member_name(item["Config"], where)
        config = await reader.read(config_name, MAX_CONFIG)
        if config is None:
            raise NotFound(f"{where}: config {config_name!r} named by manifest.json is missing")
        config_digest = Digest.of(config)
        try:
            diff_ids = json.loads(config)["rootfs"]["diff_ids"]
        except (ValueError, UnicodeDecodeError, KeyError, TypeError):
            raise ManifestError(f"{where}: config {config_name!r} has no rootfs.diff_ids") from None
        if not isinstance(diff_ids, list) or len(diff_ids) != len(item["Layers"]):
            raise ManifestError(f"{where}: config lists {len(diff_ids) if isinstance(diff_ids, list) else 0} "
                                f"diff_ids for {len(item['Layers'])} layers")
        blobs: dict[Digest, str] = {config_digest: config_name}
        layers: list[dict[str, Any]] = []
        for layer, diff_id in zip(item["Layers"], diff_ids, strict=True):
            name = files.member_name(layer, where)
            found = reader.members.get(name)
            if found is None:
                raise NotFound(f"{where}: layer {name!r} named by manifest.json is missing")
            start, size = found
            head = await anyio.to_thread.run_sync(_head, path, start, size)
            if head.startswith(ZSTD_MAGIC):
                raise ManifestError(f"{where}: layer {name!r} is zstd-compressed (not supported)")
            if head.startswith(GZIP_MAGIC):
                digest, media_type = await anyio.to_thread.run_sync(_hash_member, path, start, size), LAYER_GZIP
            else:
                try:
                    digest, media_type = Digest.parse(str(diff_id)), LAYER_TAR
                except MirrorError:
                    raise ManifestError(f"{where}: config has an invalid diff_id {diff_id!r}") from None
            blobs[digest] = name
            layers.append({"mediaType": media_type, "size": size, "digest": str(digest)})
        manifest_raw = _compact({"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST,
                                 "config": {"mediaType": mt.DOCKER_CONFIG, "size": len(config),
                                            "digest": str(config_digest)},
                                 "layers": layers})
        manifest = manifest_mod.parse(manifest_raw, mt.DOCKER_MANIFEST)
        return cls(reader, manifest, blobs, location, list(item.get("RepoTags") or []))

    async def get_manifest(self, ref: ManifestRef) -> Manifest:
        if ref in (Tag(""), self.manifest.digest):
            return self.manifest
        raise NotFound(f"{self.location}: manifest {ref} not found (the archive image is {self.manifest.digest})")

    async def head_manifest(self, ref: ManifestRef) -> Descriptor | None:
        return self.manifest.descriptor if ref in (Tag(""), self.manifest.digest) else None

    async def list_tags(self) -> AsyncIterator[str]:
        for tag in self.repo_tags:
            yield tag

    def open_blob(self, desc: Descriptor, offset: int = 0) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        name = self.blobs.get(desc.digest)
        if name is None:
            raise NotFound(f"{self.location}: blob {desc.digest} is not in the archive")
        return self.reader.open(name, offset)
