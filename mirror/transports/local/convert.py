"""Docker schema2 → OCI manifest conversion, for writing Docker-format images into OCI layouts.

skopeo (containers/image) cannot store Docker media types in an OCI layout, so it converts. So do we,
producing the same bytes for the images we test against (a byte-for-byte check with skopeo is in
tests/test_transports_layout.py):

- manifest ``…docker.distribution.manifest.v2+json`` → ``…oci.image.manifest.v1+json``;
- config ``…docker.container.image.v1+json`` → ``…oci.image.config.v1+json``, its JSON re-serialised
  into the OCI config schema (containers/image's ``OCIConfig``: known fields only, in Go struct order,
  maps with sorted keys), so the config blob and the image ID change, as with skopeo;
- layers ``…docker.image.rootfs.(foreign.)diff.tar[.gzip]`` → ``…oci.image.layer.(nondistributable.)v1.tar[+gzip]``;
- a manifest list → an OCI index whose entries point at the converted children (so their digests
  and sizes change; each child must have been converted first, which the copy order guarantees).

Every converted manifest therefore has a new digest. Unknown descriptor fields (urls, annotations)
are kept. Schema1 manifests are refused. As with skopeo, only the converted config is stored: the
layout destination converts a Docker config blob as it arrives (``layout.py``), so the layout holds no
unreferenced Docker config. Known difference: ``created`` timestamps are kept as written (Go would re-format
fractional seconds).
"""

from __future__ import annotations

import json
from typing import Any

from mirror.core import manifest as manifest_mod
from mirror.core import mediatype as mt
from mirror.core.digest import Digest
from mirror.core.manifest import Manifest
from mirror.errors import ManifestError

LAYERS = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar": "application/vnd.oci.image.layer.nondistributable.v1.tar",
}
_PLATFORM_KEYS = ("architecture", "os", "os.version", "os.features", "variant")


def _dumps(data: dict[str, Any]) -> bytes:
    """Compact JSON, HTML characters escaped as Go's encoding/json does."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


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
    return _dumps(out)


def _descriptor(data: Any, media_type: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ManifestError("descriptor is not an object")
    out = {"mediaType": media_type, "digest": data.get("digest"), "size": data.get("size")}
    for key in ("urls", "annotations"):
        if data.get(key):
            out[key] = data[key]
    return out


class OciConverter:
    """Converts Docker-format manifests to OCI; remembers converted children in ``children`` (pass
    one mapping to every converter writing into the same layout, so a list whose instances another
    image of the run converted still converts)."""

    def __init__(self, children: dict[Digest, Manifest] | None = None) -> None:
        self._children: dict[Digest, Manifest] = {} if children is None else children

    def convert(self, manifest: Manifest, config: tuple[Digest, int] | None = None) -> Manifest:
        """The OCI form of ``manifest``; ``config``: digest and size of the converted config blob
        (see :func:`oci_config`), required for a Docker image."""
        if manifest.media_type in (mt.OCI_MANIFEST, mt.OCI_INDEX):
            return manifest
        if manifest.media_type == mt.DOCKER_MANIFEST:
            if config is None:
                raise ManifestError(f"converting {manifest.digest} to OCI needs its converted config")
            converted = self._image(manifest, config)
            self._children[manifest.digest] = converted
            return converted
        if manifest.media_type == mt.DOCKER_LIST:
            return self._index(manifest)
        raise ManifestError(f"cannot store a {manifest.media_type} manifest in an OCI layout "
                            "(only OCI and Docker schema2 images and lists can be converted)")

    def _image(self, manifest: Manifest, config: tuple[Digest, int]) -> Manifest:
        data = manifest.json()
        out: dict[str, Any] = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                               "config": {"mediaType": mt.OCI_CONFIG, "digest": str(config[0]),
                                          "size": config[1]},
                               "layers": [_descriptor(layer, LAYERS.get(str(layer.get("mediaType")),
                                                                        str(layer.get("mediaType"))))
                                          for layer in data.get("layers", []) if isinstance(layer, dict)]}
        if data.get("annotations"):
            out["annotations"] = data["annotations"]
        return manifest_mod.parse(_dumps(out), mt.OCI_MANIFEST)

    def _index(self, manifest: Manifest) -> Manifest:
        data = manifest.json()
        entries: list[dict[str, Any]] = []
        for desc, raw in zip(manifest.manifests, data.get("manifests", []), strict=True):
            child = self._children.get(desc.digest)
            if child is None and desc.media_type in (mt.OCI_MANIFEST, mt.OCI_INDEX):
                entries.append(raw)
                continue
            if child is None:
                raise ManifestError(f"cannot convert manifest list {manifest.digest} to OCI: "
                                    f"instance {desc.digest} was not copied (use --all)")
            entry: dict[str, Any] = {"mediaType": child.media_type, "digest": str(child.digest),
                                     "size": len(child.raw)}
            if isinstance(raw.get("platform"), dict):
                entry["platform"] = {k: raw["platform"][k] for k in _PLATFORM_KEYS if raw["platform"].get(k)}
            if raw.get("annotations"):
                entry["annotations"] = raw["annotations"]
            entries.append(entry)
        out: dict[str, Any] = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}
        return manifest_mod.parse(_dumps(out), mt.OCI_INDEX)
