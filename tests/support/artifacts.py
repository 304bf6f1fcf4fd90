"""OCI artifacts attached to images by ``subject`` (SBOMs, signatures), pushed as ORAS and cosign push
them: an image manifest with ``artifactType``, the empty config ``application/vnd.oci.empty.v1+json``
and the payload as its one layer.

Where the registry has no referrers API (docker-registry 2.8), :func:`attach` also lists the artifact
in the subject's fallback index (the referrers tag schema: tag ``sha256-<hex>``, an OCI index).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .images import Client, sha256_digest
from .registry import Registry

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
EMPTY_DATA = b"{}"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

SBOM = "application/spdx+json"
SIGNATURE = "application/vnd.dev.cosign.artifact.sig.v1+json"
#: A media type nobody knows: such artifacts must still be copied byte for byte.
STRANGE = "application/vnd.example.strange.v7+octet"


@dataclass(frozen=True)
class Artifact:
    digest: str
    raw: bytes
    artifact_type: str
    subject: str
    payload_digest: str

    def entry(self) -> dict[str, Any]:
        """The index entry a referrers listing gives for this artifact."""
        data = json.loads(self.raw)
        out: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": self.digest, "size": len(self.raw),
                               "artifactType": self.artifact_type}
        if data.get("annotations"):
            out["annotations"] = data["annotations"]
        return out


def attach(reg: Registry, repo: str, subject: tuple[str, str, int], artifact_type: str, payload: bytes,
           *, annotations: dict[str, str] | None = None, layer_type: str | None = None,
           fallback: bool = True) -> Artifact:
    """Push an artifact whose subject is ``subject`` = (digest, media type, size), by digest; with
    ``fallback`` also add it to the subject's fallback index (read-modify-write, for registries without
    the referrers API)."""
    client = Client(reg)
    assert client.push_blob(repo, EMPTY_DATA) == EMPTY_DIGEST
    payload_digest = client.push_blob(repo, payload)
    manifest: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
        "config": {"mediaType": EMPTY_CONFIG, "digest": EMPTY_DIGEST, "size": 2},
        "layers": [{"mediaType": layer_type or artifact_type, "digest": payload_digest, "size": len(payload)}],
        "subject": {"mediaType": subject[1], "digest": subject[0], "size": subject[2]},
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z", **(annotations or {})},
    }
    raw = json.dumps(manifest, separators=(",", ":")).encode()
    digest = client.put_manifest(repo, sha256_digest(raw), raw, OCI_MANIFEST)
    artifact = Artifact(digest, raw, artifact_type, subject[0], payload_digest)
    if fallback:
        entries = fallback_entries(reg, repo, subject[0]) or []
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [*entries, artifact.entry()]}
        client.put_manifest(repo, fallback_tag(subject[0]), json.dumps(index).encode(), OCI_INDEX)
    return artifact


def fallback_tag(digest: str) -> str:
    return digest.replace(":", "-")


def fallback_entries(reg: Registry, repo: str, subject: str) -> list[dict[str, Any]] | None:
    """The entries of ``subject``'s fallback index, or None when there is no such tag."""
    resp = Client(reg).request("GET", f"/v2/{repo}/manifests/{fallback_tag(subject)}",
                               {"Accept": OCI_INDEX}, ok=(200, 404))
    if resp.status == 404:
        return None
    assert resp.headers.get("Content-Type") == OCI_INDEX
    entries = json.loads(resp.body)["manifests"]
    assert isinstance(entries, list)
    return entries


def api_referrers(reg: Registry, repo: str, subject: str) -> list[dict[str, Any]]:
    """The referrers API's listing (one page)."""
    resp = Client(reg).request("GET", f"/v2/{repo}/referrers/{subject}")
    entries = json.loads(resp.body)["manifests"]
    assert isinstance(entries, list)
    return entries
