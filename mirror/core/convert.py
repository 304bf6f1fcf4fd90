"""Manifest format conversion (Docker schema2 ⇄ OCI) and layer media types, as containers/image does them.

Pure functions over manifests and config bytes; the engine (``engine/reformat.py``) decides what to
change and moves the blobs. What each conversion writes, as skopeo writes it (Go's encoding/json of
containers/image's structs, so the bytes, and therefore digests, match skopeo's for the same input):

- Docker image → OCI: config ``…docker.container.image.v1+json`` re-serialised into the OCI config
  schema (:func:`oci_config`: known fields only, Go struct order, maps with sorted keys), so the config
  blob and the image ID change; layers ``…docker.image.rootfs.(foreign.)diff.tar[.gzip]`` →
  ``…oci.image.layer.(nondistributable.)v1.tar[+gzip]``.
- OCI image → Docker: the config blob is kept byte for byte (only its media type changes); layer
  types map back; zstd layers have no Docker type and are refused, as are OCI artifacts (a config that
  is not an image config) and layer types Docker does not know.
- lists ⇄ indexes: entries keep digest, size and platform (``features`` exists only in Docker lists,
  annotations only in OCI indexes); an OCI entry without a platform gets the host's, as Go's
  ``runtime.GOOS/GOARCH`` would.

Every converted manifest has a new digest. Schema1 manifests are not converted. Known difference:
``created`` timestamps are kept as written (Go would re-format fractional seconds).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from mirror.core import manifest as manifest_mod
from mirror.core import mediatype as mt
from mirror.core.manifest import Manifest
from mirror.errors import ManifestError

OCI_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

#: Layer types that differ only in compression: (uncompressed, gzip, zstd) per kind; None = no such type.
#: Row 0 is ordinary layers, row 1 non-distributable (OCI) / foreign (Docker) ones, in both formats.
VARIANTS: dict[str, tuple[tuple[str | None, ...], ...]] = {
    "oci": ((OCI_TAR, OCI_GZIP, OCI_ZSTD),
            ("application/vnd.oci.image.layer.nondistributable.v1.tar",
             "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
             "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd")),
    "docker": ((DOCKER_TAR, DOCKER_GZIP, None),
               ("application/vnd.docker.image.rootfs.foreign.diff.tar",
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", None)),
}
ALGORITHMS: tuple[str | None, ...] = (None, "gzip", "zstd")  # the columns of VARIANTS
FORMAT_OF = {mt.OCI_MANIFEST: "oci", mt.OCI_INDEX: "oci", mt.DOCKER_MANIFEST: "docker", mt.DOCKER_LIST: "docker"}
LIST_OF = {mt.OCI_MANIFEST: mt.OCI_INDEX, mt.DOCKER_MANIFEST: mt.DOCKER_LIST}
IMAGE_OF = {"oci": mt.OCI_MANIFEST, "docker": mt.DOCKER_MANIFEST}

_OCI_DESCRIPTOR = ("mediaType", "digest", "size", "urls", "annotations", "data", "platform", "artifactType")
_DOCKER_DESCRIPTOR = ("mediaType", "size", "digest", "urls", "platform")
_OCI_PLATFORM = ("architecture", "os", "os.version", "os.features", "variant")
_DOCKER_PLATFORM = ("architecture", "os", "os.version", "os.features", "variant", "features")


def go_json(data: Any) -> bytes:
    """Compact JSON, HTML characters escaped as Go's encoding/json does."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def layer_kind(media_type: str) -> tuple[str, int, str | None] | None:
    """(format, row of VARIANTS, compression algorithm) of a known layer type; None for others."""
    for fmt, rows in VARIANTS.items():
        for row, variants in enumerate(rows):
            if media_type in variants:
                return fmt, row, ALGORITHMS[variants.index(media_type)]
    return None


def converted_layer_type(media_type: str, source: str, target: str) -> str:
    """A layer type of format ``source`` as format ``target`` holds it, same compression (containers/
    image's conversion rules and words: no zstd in Docker, unknown types refused)."""
    if source == target:
        return media_type
    kind = layer_kind(media_type)
    if kind is None:
        raise ManifestError(f"Unknown media type during manifest conversion: {media_type!r}")
    found = VARIANTS[target][kind[1]][ALGORITHMS.index(kind[2])]
    if found is None:
        raise ManifestError(f'Error during manifest conversion: "{media_type}": {kind[2]} compression is '
                            "not supported for docker images")
    return found


def recompressed_layer_type(media_type: str, target: str, algorithm: str | None) -> str:
    """The type, in format ``target``, of a known layer type once compressed with ``algorithm``
    (None: uncompressed)."""
    kind = layer_kind(media_type)
    if kind is None:
        raise ManifestError(f"cannot change the compression of a layer of type {media_type!r}")
    found = VARIANTS[target][kind[1]][ALGORITHMS.index(algorithm)]
    if found is None:
        raise ManifestError(f"compression using {algorithm} required together with format "
                            f"{IMAGE_OF[target]}, which does not support it")
    return found


def _ordered(data: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {k: data[k] for k in keys if k in data and data[k] not in (None, "", [], {})}


def descriptor(data: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    """A descriptor (or list entry) in ``fmt``'s field order, without the fields ``fmt`` lacks."""
    out: dict[str, Any] = {}
    for key in _OCI_DESCRIPTOR if fmt == "oci" else _DOCKER_DESCRIPTOR:
        if key == "size":
            out[key] = data.get("size", 0)
        elif key == "platform":
            if isinstance(data.get(key), dict):
                out[key] = platform(data[key], fmt)
        elif data.get(key) not in (None, "", [], {}):
            out[key] = data[key]
    return out


def platform(data: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    """A platform in ``fmt``'s field order (architecture and os always present, as in Go)."""
    out: dict[str, Any] = {}
    for key in _OCI_PLATFORM if fmt == "oci" else _DOCKER_PLATFORM:
        if key in ("architecture", "os"):
            out[key] = data.get(key) or ""
        elif data.get(key) not in (None, "", [], {}):
            out[key] = data[key]
    return out


def image(media_type: str, config: Mapping[str, Any], layers: Sequence[Mapping[str, Any]],
          extra: Mapping[str, Any] | None = None) -> Manifest:
    """An image manifest of ``media_type`` (Go's field order); ``extra``: OCI-only top-level fields
    (artifactType, subject, annotations) carried over from the source, ignored for Docker."""
    fmt = FORMAT_OF[media_type]
    extra = extra or {}
    out: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type}
    if fmt == "oci" and extra.get("artifactType"):
        out["artifactType"] = extra["artifactType"]
    out["config"] = descriptor(config, fmt)
    out["layers"] = [descriptor(layer, fmt) for layer in layers]
    if fmt == "oci":
        out.update(_ordered(extra, ("subject", "annotations")))
    return manifest_mod.parse(go_json(out), media_type)


def index(media_type: str, entries: Sequence[Mapping[str, Any]], extra: Mapping[str, Any] | None = None) -> Manifest:
    """A list (Docker) or index (OCI) of ``entries`` in Go's field order."""
    fmt = FORMAT_OF[media_type]
    extra = extra or {}
    out: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type}
    if fmt == "oci" and extra.get("artifactType"):
        out["artifactType"] = extra["artifactType"]
    out["manifests"] = [descriptor(entry, fmt) for entry in entries]
    if fmt == "oci":
        out.update(_ordered(extra, ("subject", "annotations")))
    return manifest_mod.parse(go_json(out), media_type)


def index_entries(manifest: Manifest, target: str, host: Mapping[str, str]) -> list[dict[str, Any]]:
    """The entries of a list or index as ``target`` (a list type) holds them; ``host``: the platform
    given to OCI entries that have none when they become Docker entries."""
    data = manifest.json()
    entries = [dict(e) for e in data.get("manifests", []) if isinstance(e, dict)]
    if FORMAT_OF[target] == "docker":
        for entry in entries:
            if not isinstance(entry.get("platform"), dict):
                entry["platform"] = dict(host)
    return entries


def check_image_config(manifest: Manifest) -> None:
    """containers/image converts only images, not OCI artifacts."""
    config = manifest.config
    if config is None or config.media_type not in (mt.OCI_CONFIG, mt.DOCKER_CONFIG):
        kind = config.media_type if config is not None else "none"
        raise ManifestError(f"unsupported image-specific operation on artifact with type {kind!r}")


#: Field order of image-spec v1.1.0-rc2's ``Image`` (vendored by skopeo 1.9-1.14); v1.1.0 final moves
#: ``variant`` after ``os.features``.
_IMAGE_KEYS = ("created", "author", "architecture", "variant", "os", "os.version", "os.features")
_RUNTIME_KEYS = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels",
                 "StopSignal", "ArgsEscaped")
_MAP_KEYS = frozenset({"ExposedPorts", "Volumes", "Labels"})
_HISTORY_KEYS = ("created", "created_by", "author", "comment", "empty_layer")


def _empty(value: Any) -> bool:
    return value is None or value is False or value == "" or value == [] or value == {}


def oci_config(raw: bytes) -> bytes:
    """A Docker image config re-serialised as containers/image's ``imgspecv1.Image`` (Go encoding/json)."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ManifestError("image config is not valid JSON") from None
    if not isinstance(data, dict):
        raise ManifestError("image config is not a JSON object")
    out: dict[str, Any] = {}
    for key in _IMAGE_KEYS:
        if key in ("architecture", "os") or not _empty(data.get(key)):
            out[key] = data.get(key) or ""
    runtime: dict[str, Any] = data["config"] if isinstance(data.get("config"), dict) else {}
    out["config"] = {k: ({m: {} for m in sorted(runtime[k])} if k in ("ExposedPorts", "Volumes")
                         else dict(sorted(runtime[k].items())) if k in _MAP_KEYS else runtime[k])
                     for k in _RUNTIME_KEYS if not _empty(runtime.get(k))}
    rootfs: dict[str, Any] = data["rootfs"] if isinstance(data.get("rootfs"), dict) else {}
    out["rootfs"] = {"type": rootfs.get("type") or "", "diff_ids": rootfs.get("diff_ids")}
    history = data.get("history")
    if isinstance(history, list) and history:
        out["history"] = [{k: h[k] for k in _HISTORY_KEYS if not _empty(h.get(k))}
                          for h in history if isinstance(h, dict)]
    return go_json(out)
