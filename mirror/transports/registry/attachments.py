"""Sigstore attachments (``use-sigstore-attachments`` in registries.d): cosign-style signatures stored
in the image's own repository, as containers/image stores them.

The signatures of manifest ``sha256:<hex>`` are the layers of an OCI manifest tagged
``sha256-<hex>.sig``: each layer's bytes are a payload (``application/vnd.dev.cosign.simplesigning.v1+json``
for signatures) and its annotations carry the signature (``dev.cosignproject.cosign/signature``).
Writing adds the layers not already there (same type, bytes and annotations) and re-tags an updated
manifest and config; reading digest-verifies every payload.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mirror.core import mediatype as mt
from mirror.core.descriptor import Descriptor
from mirror.core.digest import Digest
from mirror.core.manifest import Manifest
from mirror.core.manifest import parse as parse_manifest
from mirror.core.reference import Tag
from mirror.core.sigblob import Sigstore, go_json, sigstore_blob
from mirror.errors import DigestMismatch, NotFound, SignatureError
from mirror.transports.base import ImageDestination, ImageSource

MAX_PAYLOAD = 4 << 20
MAX_CONFIG = 4 << 20
MAX_LAYERS = 256


def attachment_tag(digest: Digest) -> Tag:
    return Tag(f"{digest.algorithm}-{digest.hex}.sig")


async def _manifest(src: ImageSource, digest: Digest) -> Manifest | None:
    try:
        manifest = await src.get_manifest(attachment_tag(digest))
    except NotFound:
        return None
    if manifest.media_type != mt.OCI_MANIFEST:
        raise SignatureError(f"sigstore attachment {attachment_tag(digest)} is a {manifest.media_type}, "
                             "not an OCI image manifest")
    if len(manifest.layers) > MAX_LAYERS:
        raise SignatureError(f"sigstore attachment {attachment_tag(digest)} has more than {MAX_LAYERS} layers")
    return manifest


async def read(src: ImageSource, digest: Digest) -> list[bytes]:
    """The attachments of ``digest`` as signature blobs (``sigstore-json``), in layer order."""
    manifest = await _manifest(src, digest)
    if manifest is None:
        return []
    out = []
    for layer in manifest.layers:
        payload = await _contents(src, layer, MAX_PAYLOAD)
        out.append(sigstore_blob(Sigstore(layer.media_type, payload, layer.annotations)))
    return out


async def _contents(src: ImageSource, desc: Descriptor, limit: int) -> bytes:
    if desc.size > limit:
        raise SignatureError(f"sigstore attachment blob {desc.digest} is larger than {limit} bytes")
    data = bytearray()
    async with src.open_blob(desc) as chunks:
        async for chunk in chunks:
            data += chunk
            if len(data) > desc.size:
                break
    if len(data) != desc.size or Digest.of(bytes(data), desc.digest.algorithm) != desc.digest:
        raise DigestMismatch(f"sigstore attachment blob {desc.digest}: the registry served other bytes")
    return bytes(data)


async def write(src: ImageSource, dst: ImageDestination, digest: Digest, signatures: list[Sigstore]) -> None:
    """Add ``signatures`` to the attachments of ``digest`` (those already there are not repeated)."""
    if not signatures:
        return
    manifest = await _manifest(src, digest)
    if manifest is None:
        layers: list[dict[str, Any]] = []
        config: dict[str, Any] = {"architecture": "", "os": "", "config": {},
                                  "rootfs": {"type": "layers", "diff_ids": []}}
    else:
        layers = [dict(layer) for layer in manifest.json().get("layers") or []]
        assert manifest.config is not None
        config = _config(await _contents(src, manifest.config, MAX_CONFIG))
    added = False
    for sig in signatures:
        desc = Descriptor(sig.mime_type, Digest.of(sig.payload), len(sig.payload))
        if any(_same(layer, desc, sig) for layer in layers):
            continue
        await _put(dst, desc, sig.payload)
        layers.append({"mediaType": desc.media_type, "digest": str(desc.digest), "size": desc.size,
                       "annotations": dict(sorted(sig.annotations.items()))})
        config.setdefault("rootfs", {}).setdefault("diff_ids", []).append(str(desc.digest))
        added = True
    if not added:
        return
    config_raw = go_json(config)
    config_desc = Descriptor(mt.OCI_CONFIG, Digest.of(config_raw), len(config_raw))
    await _put(dst, config_desc, config_raw)
    raw = go_json({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                   "config": {"mediaType": mt.OCI_CONFIG, "digest": str(config_desc.digest), "size": len(config_raw)},
                   "layers": layers})
    await dst.put_manifest(parse_manifest(raw, mt.OCI_MANIFEST), attachment_tag(digest))


def _config(raw: bytes) -> dict[str, Any]:
    try:
        config = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        config = None
    if not isinstance(config, dict) or not isinstance(config.get("rootfs", {}), dict):
        raise SignatureError("the sigstore attachment's config is not a JSON image config")
    return config


def _same(layer: dict[str, Any], desc: Descriptor, sig: Sigstore) -> bool:
    return (layer.get("mediaType") == desc.media_type and layer.get("size") == desc.size
            and layer.get("digest") == str(desc.digest) and (layer.get("annotations") or {}) == dict(sig.annotations))


async def _put(dst: ImageDestination, desc: Descriptor, data: bytes) -> None:
    if await dst.has_blob(desc):
        return

    @asynccontextmanager
    async def opener(offset: int) -> AsyncIterator[AsyncIterator[bytes]]:
        async def chunks() -> AsyncIterator[bytes]:
            yield data[offset:]

        yield chunks()

    await dst.put_blob(desc, opener)

