"""Writing one image as a docker-archive, member for member what skopeo 1.9 writes.

Blobs are received verified (``files.write_blob``) into a private work directory. At ``finish`` (only
when the copy succeeded) the archive is built in a worker thread, in skopeo's order:

1. every layer as ``<diff_id hex>.tar``, **uncompressed** (``docker save``'s format: gzip and zstd
   layers are decompressed here, and each uncompressed digest must equal the config's
   ``rootfs.diff_ids`` entry, or the write fails);
2. the config blob byte for byte as ``<config hex>.json`` (so the image ID survives);
3. the legacy per-layer directories ``<chain id>/{layer.tar -> ../<hex>.tar, VERSION, json}``;
4. ``manifest.json`` ``[{"Config","RepoTags","Layers"}]`` and ``repositories``.

Members have mode 0444, uid/gid 0, mtime 0. The tar goes to a temp file next to the target and is
renamed into place. ``RepoTags`` are written in skopeo's full form (``docker.io/library/x:y``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from mirror.core.compression import CompressionError, Transcoder
from mirror.core.convert import go_json as _dumps
from mirror.core.descriptor import Descriptor
from mirror.core.digest import Digest
from mirror.core.manifest import Manifest
from mirror.core.reference import ManifestRef
from mirror.errors import DigestMismatch, ManifestError, MirrorError
from mirror.transports.base import BlobOpener, Capabilities, Location
from mirror.transports.local import files

LEGACY_KEYS = ("architecture", "config", "container", "container_config", "created", "docker_version", "os")


def _blob(work: Path, digest: Digest) -> Path:
    return work / f"blob-{digest.algorithm}-{digest.hex}"


class ArchiveDestination:
    """``ImageDestination`` for one single-platform image; ``finish`` writes the archive.

    An archive keeps no manifest (readers regenerate one, with plain-tar layers), so the digest read
    back differs from the one put: ``converts_manifests``."""

    capabilities = Capabilities(converts_manifests=True)

    def __init__(self, work: Path, location: Location, repo_tags: list[str]) -> None:
        self.work = work
        self.location = location
        self.repo_tags = repo_tags
        self._top: Manifest | None = None

    async def has_blob(self, desc: Descriptor) -> bool:
        return False

    async def mount_blob(self, desc: Descriptor, source: Location) -> bool:
        return False

    async def put_blob(self, desc: Descriptor, open_source: BlobOpener) -> int:
        return await files.write_blob(self.work, _blob(self.work, desc.digest), desc, open_source)

    async def head_manifest(self, ref: ManifestRef) -> Descriptor | None:
        return None

    async def put_manifest(self, manifest: Manifest, ref: ManifestRef) -> None:
        if manifest.is_index:
            raise ManifestError(f"{self.location}: a docker-archive holds one image, not a list "
                                "(copy without --all, or pick a platform)")
        if manifest.config is None:
            raise ManifestError(f"{self.location}: schema1 images cannot be stored in a docker-archive")
        self._top = manifest

    def build(self, target: Path) -> None:
        """Write the archive to ``target`` (blocking: call from a worker thread)."""
        top = self._top
        if top is None or top.config is None:
            raise MirrorError(f"{self.location}: no image was written")
        config = _blob(self.work, top.config.digest).read_bytes()
        try:
            diff_ids = [str(d) for d in json.loads(config)["rootfs"]["diff_ids"]]
        except (ValueError, UnicodeDecodeError, KeyError, TypeError):
            raise ManifestError(f"{self.location}: the image config has no rootfs.diff_ids") from None
        if len(diff_ids) != len(top.layers):
            raise ManifestError(f"{self.location}: config has {len(diff_ids)} diff_ids for {len(top.layers)} layers")
        layers: list[str] = []
        for i, (layer, diff_id) in enumerate(zip(top.layers, diff_ids, strict=True)):
            got = _uncompress(_blob(self.work, layer.digest), self.work / f"layer-{i}.tar")
            if got != diff_id:
                raise DigestMismatch(f"{self.location}: layer {layer.digest} uncompresses to {got}, "
                                     f"but the config says {diff_id}")
            layers.append(got)
        with files.atomic_file_sync(target) as out:
            _write(out, self.work, config, top.config.digest, layers, self.repo_tags)


def _uncompress(src: Path, dst: Path) -> str:
    """Copy ``src`` to ``dst`` uncompressed (gzip, zstd or plain), returning the sha256 of what was written."""
    hasher = hashlib.sha256()
    codec = Transcoder(None)
    try:
        with open(src, "rb") as f, open(dst, "wb") as out:
            while data := f.read(files.CHUNK):
                plain = codec.feed(data)
                hasher.update(plain)
                out.write(plain)
            tail = codec.finish()
            hasher.update(tail)
            out.write(tail)
    except CompressionError as exc:
        raise MirrorError(f"layer {src.name}: {exc}") from None
    os.replace(dst, dst.with_name(f"sha256-{hasher.hexdigest()}.tar"))
    return f"sha256:{hasher.hexdigest()}"


def _info(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname = size, kind, link
    info.mode = 0o444 if kind == tarfile.REGTYPE else 0
    info.mtime = info.uid = info.gid = 0
    return info


def _write(out: BinaryIO, work: Path, config: bytes, config_digest: Digest, layers: list[str],
           repo_tags: list[str]) -> None:
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, data: bytes) -> None:
            tar.addfile(_info(name, len(data)), io.BytesIO(data))

        names: list[str] = []
        for diff_id in layers:
            name = f"{diff_id.split(':', 1)[1]}.tar"
            names.append(name)
            if name in tar.getnames():
                continue
            path = work / f"sha256-{name}"
            with open(path, "rb") as f:
                tar.addfile(_info(name, path.stat().st_size), f)
        config_name = f"{config_digest.hex}.json"
        add(config_name, config)
        top_id = _legacy(tar, add, config, layers)
        add("manifest.json", json.dumps([{"Config": config_name, "RepoTags": repo_tags, "Layers": names}],
                                        separators=(",", ":")).encode())
        repositories: dict[str, dict[str, str]] = {}
        for tag in repo_tags:
            name, _, tag_name = tag.rpartition(":")
            repositories.setdefault(name, {})[tag_name] = top_id
        add("repositories", json.dumps(repositories, separators=(",", ":")).encode())


def _legacy(tar: tarfile.TarFile, add: Callable[[str, bytes], None], config: bytes, layers: list[str]) -> str:
    """containers/image's ``writeLegacyMetadataLocked``: one directory per layer, named by the digest of
    its legacy config with the chain ID mixed in (so IDs never repeat or loop); returns the top one."""
    data: dict[str, Any] = json.loads(config)
    chain, last = "", ""
    written: set[str] = set()
    for i, diff_id in enumerate(layers):
        chain = diff_id if not chain else "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest()
        layer_config: dict[str, Any] = {"parent": last} if last else {}
        if i == len(layers) - 1:
            layer_config.update({key: data.get(key) for key in LEGACY_KEYS})
        layer_id = hashlib.sha256(_dumps(dict(sorted({**layer_config, "layer_id": chain}.items())))).hexdigest()
        layer_config["id"] = layer_id
        if layer_id not in written:
            written.add(layer_id)
            tar.addfile(_info(f"{layer_id}/layer.tar", kind=tarfile.SYMTYPE,
                              link=f"../{diff_id.split(':', 1)[1]}.tar"))
            add(f"{layer_id}/VERSION", b"1.0")
            add(f"{layer_id}/json", _dumps(dict(sorted(layer_config.items()))))
        last = layer_id
    return last
