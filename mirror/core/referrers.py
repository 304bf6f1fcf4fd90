"""OCI referrers as values: the fallback tag's name, index entries, merging, artifact-type filters.

A referrer is a manifest whose ``subject`` names another manifest (a signature, an SBOM, an
attestation). Registries with the referrers API (distribution spec 1.1) list them at
``/v2/<name>/referrers/<digest>``; elsewhere they are listed in an OCI index stored under the
"referrers tag schema" tag ``<alg>-<hex>`` (``sha256-<hex>``). No I/O here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from mirror.core import mediatype as mt
from mirror.core.descriptor import Descriptor
from mirror.core.digest import Digest
from mirror.core.manifest import Manifest
from mirror.errors import ManifestError

_ILLEGAL = re.compile(r"[^A-Za-z0-9_.-]")
#: RFC 6838 ``type/subtype`` (with a ``+suffix``): what ``artifactType`` must look like.
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")
#: Entries read from one listing (API pages or fallback index) before it is refused as hostile.
MAX_REFERRERS = 10_000


def fallback_tag(subject: Digest) -> str:
    """The referrers tag schema's tag for ``subject``: ``<alg>-<hex>``, the algorithm cut to 32 and the
    hex to 64 characters, anything a tag may not hold replaced by ``-`` (distribution spec 1.1)."""
    return _ILLEGAL.sub("-", subject.algorithm[:32]) + "-" + _ILLEGAL.sub("-", subject.hex[:64])


def valid_artifact_type(text: str) -> bool:
    return _MEDIA_TYPE.match(text) is not None


def artifact_type(manifest: Manifest) -> str | None:
    """The manifest's ``artifactType``, else its config's media type (as the referrers API lists it)."""
    declared = manifest.json().get("artifactType")
    if isinstance(declared, str) and declared:
        return declared
    return manifest.config.media_type if manifest.config is not None else None


def entry(manifest: Manifest) -> dict[str, Any]:
    """The index entry that lists ``manifest`` among its subject's referrers: media type, digest,
    size, artifact type and the manifest's annotations."""
    out: dict[str, Any] = {"mediaType": manifest.media_type, "digest": str(manifest.digest),
                           "size": len(manifest.raw)}
    kind = artifact_type(manifest)
    if kind:
        out["artifactType"] = kind
    annotations = manifest.json().get("annotations")
    if isinstance(annotations, dict) and annotations:
        out["annotations"] = {str(k): str(v) for k, v in annotations.items()}
    return out


def listed(data: Any, where: str) -> list[dict[str, Any]]:
    """The ``manifests`` entries of a referrers response or fallback index (each a descriptor
    object), checked; at most MAX_REFERRERS."""
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: not a JSON object")
    entries = data.get("manifests") or []
    if not isinstance(entries, list):
        raise ManifestError(f"{where}: manifests is not a list")
    if len(entries) > MAX_REFERRERS:
        raise ManifestError(f"{where}: more than {MAX_REFERRERS} referrers")
    for i, item in enumerate(entries):
        Descriptor.from_json(item, f"{where}: manifests[{i}]")
    return entries


def descriptors(entries: Iterable[dict[str, Any]], where: str) -> list[Descriptor]:
    return [Descriptor.from_json(item, f"{where}: manifests[{i}]") for i, item in enumerate(entries)]


def wanted(descs: Iterable[Descriptor], artifact_types: Sequence[str]) -> list[Descriptor]:
    """``descs`` whose artifact type is one of ``artifact_types`` (all of them when empty), each once."""
    out: dict[Digest, Descriptor] = {}
    for desc in descs:
        if not artifact_types or desc.artifact_type in artifact_types:
            out.setdefault(desc.digest, desc)
    return list(out.values())


def merged_index(entries: Sequence[dict[str, Any]], additions: Sequence[dict[str, Any]]) -> bytes | None:
    """The fallback index holding ``entries`` (kept verbatim, in order) plus the ``additions`` it lacks;
    None when it lacks none."""
    have = {str(item.get("digest")) for item in entries}
    new = [item for item in additions if item["digest"] not in have]
    if not new:
        return None
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [*entries, *new]}
    return json.dumps(index, separators=(",", ":")).encode()


def lacks(entries: Sequence[dict[str, Any]], additions: Sequence[dict[str, Any]]) -> bool:
    have = {str(item.get("digest")) for item in entries}
    return any(item["digest"] not in have for item in additions)
