"""Manifests of all six media types, parsed from (and always keeping) their raw bytes.

Raw bytes are never re-serialised: the digest of a copied manifest is the digest of the bytes the
source served, which is what makes ``--preserve-digests`` and byte-identical mirrors possible.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from msgspec import Struct

from mirror.core import mediatype as mt
from mirror.core.descriptor import Descriptor, Platform, host_platform, matches
from mirror.core.digest import Digest
from mirror.errors import ManifestError

#: distribution rejects manifest PUTs over 4 MiB; we refuse to read larger ones.
MAX_MANIFEST_SIZE = 4 * 1024 * 1024


class Manifest(Struct, frozen=True):
    raw: bytes
    media_type: str
    digest: Digest
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    manifests: tuple[Descriptor, ...]
    subject: Descriptor | None = None

    @property
    def is_index(self) -> bool:
        return mt.is_index(self.media_type)

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.raw))

    def blobs(self) -> tuple[Descriptor, ...]:
        """Config then layers: every blob an image manifest references."""
        return ((self.config,) if self.config is not None else ()) + self.layers

    def json(self) -> dict[str, Any]:
        data = json.loads(self.raw)
        assert isinstance(data, dict)
        return data

    def select(self, wanted: Platform) -> Descriptor:
        """The index child for ``wanted`` (first match, as containers/image does)."""
        for child in self.manifests:
            if child.platform is not None and matches(child.platform, wanted):
                return child
        available = ", ".join(str(c.platform) for c in self.manifests if c.platform) or "none"
        raise ManifestError(f"no image found in manifest list for platform {wanted} (available: {available})")


def guess_media_type(data: dict[str, Any]) -> str:
    """Sniff a manifest's type when Content-Type is missing or generic (containers/image's rules)."""
    declared = data.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    version = data.get("schemaVersion")
    if version == 1:
        return mt.DOCKER_V1_SIGNED if data.get("signatures") else mt.DOCKER_V1
    if isinstance(data.get("manifests"), list):
        return mt.OCI_INDEX
    config = data.get("config")
    if isinstance(config, dict) and config.get("mediaType") == mt.DOCKER_CONFIG:
        return mt.DOCKER_MANIFEST
    return mt.OCI_MANIFEST


def schema1_payload(raw: bytes) -> bytes:
    """The bytes a signed schema1 manifest's digest covers: the JWS payload without signatures."""
    data = json.loads(raw)  # already parsed once by ``parse``: a JSON object
    sigs = data.get("signatures")
    if not isinstance(sigs, list) or not sigs:
        return raw
    try:
        protected = sigs[0]["protected"]
        header = json.loads(base64.urlsafe_b64decode(protected + "=" * (-len(protected) % 4)))
        length = int(header["formatLength"])
        tail = base64.urlsafe_b64decode(header["formatTail"] + "=" * (-len(header["formatTail"]) % 4))
    except (KeyError, TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise ManifestError(f"malformed schema1 signature: {exc}") from None
    if length < 0 or length > len(raw):
        raise ManifestError("malformed schema1 signature: formatLength out of range")
    return raw[:length] + tail


def compute_digest(raw: bytes, media_type: str, algorithm: str = "sha256") -> Digest:
    if media_type == mt.DOCKER_V1_SIGNED:
        return Digest.of(schema1_payload(raw), algorithm)
    return Digest.of(raw, algorithm)


def parse(raw: bytes, content_type: str | None = None, expected: Digest | None = None) -> Manifest:
    """Parse and validate ``raw``; verify it against ``expected`` when given."""
    if len(raw) > MAX_MANIFEST_SIZE:
        raise ManifestError(f"manifest is {len(raw)} bytes, over the {MAX_MANIFEST_SIZE} byte limit")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest is not valid JSON: {exc}") from None
    except RecursionError:
        raise ManifestError("manifest is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise ManifestError("manifest is not a JSON object")
    body_type = guess_media_type(data)
    media_type = body_type
    if content_type and content_type not in ("application/json", "text/plain"):
        declared = data.get("mediaType")
        if isinstance(declared, str) and declared and declared != content_type:
            raise ManifestError(f"manifest mediaType {declared!r} disagrees with Content-Type {content_type!r}")
        media_type = content_type
    if not mt.is_manifest(media_type):
        raise ManifestError(f"unsupported manifest media type {media_type!r}")
    digest = compute_digest(raw, media_type, expected.algorithm if expected else "sha256")
    if expected is not None and digest != expected:
        raise ManifestError(f"manifest digest mismatch: expected {expected}, got {digest}")
    return _build(raw, media_type, digest, data)


def _build(raw: bytes, media_type: str, digest: Digest, data: dict[str, Any]) -> Manifest:
    if media_type in mt.SCHEMA1:
        fs_layers = data.get("fsLayers")
        if not isinstance(fs_layers, list):
            raise ManifestError("schema1 manifest has no fsLayers")
        layers = tuple(
            Descriptor.from_json({"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                                  "digest": layer.get("blobSum") if isinstance(layer, dict) else None,
                                  "size": 0}, "fsLayer")
            for layer in reversed(fs_layers)
        )
        return Manifest(raw, media_type, digest, None, layers, ())
    if data.get("schemaVersion") != 2:
        raise ManifestError(f"unsupported schemaVersion {data.get('schemaVersion')!r}")
    subject = Descriptor.from_json(data["subject"], "subject") if data.get("subject") is not None else None
    if mt.is_index(media_type):
        children = data.get("manifests")
        if not isinstance(children, list):
            raise ManifestError("index has no manifests list")
        manifests = tuple(Descriptor.from_json(c, f"manifests[{i}]") for i, c in enumerate(children))
        return Manifest(raw, media_type, digest, None, (), manifests, subject)
    layers_json = data.get("layers")
    if not isinstance(layers_json, list):
        raise ManifestError("image manifest has no layers list")
    config = Descriptor.from_json(data.get("config"), "config")
    layers = tuple(Descriptor.from_json(layer, f"layers[{i}]") for i, layer in enumerate(layers_json))
    return Manifest(raw, media_type, digest, config, layers, (), subject)


__all__ = ["MAX_MANIFEST_SIZE", "Manifest", "Platform", "compute_digest", "host_platform", "parse"]
