"""Registry API v2 paths, scopes and manifest request helpers."""

from __future__ import annotations

from urllib.parse import quote

from msgspec.structs import replace

from mirror.core import mediatype as mt
from mirror.core.descriptor import Descriptor
from mirror.core.digest import Digest
from mirror.core.reference import ManifestRef
from mirror.errors import RegistryError
from mirror.transports.base import Capabilities

ACCEPT_MANIFESTS = ", ".join(mt.ALL_MANIFESTS)


def pull_scope(path: str) -> str:
    return f"repository:{path}:pull"


def push_scope(path: str) -> str:
    return f"repository:{path}:pull,push"


def delete_scope(path: str) -> str:
    # containers/image asks for "*" so that both distribution ("delete") and Quay accept it.
    return f"repository:{path}:*"


#: What registries can do (the transport, its sources and its destinations).
CAPABILITIES = Capabilities(mount=True, delete=True, chunked=True, list_tags=True, compressed_layers=True, named=True,
                            referrers=True)
#: An image opened for copying: its signatures are read and written (lookaside, sigstore attachments).
SIGNED_CAPABILITIES = replace(CAPABILITIES, signatures=True)


def manifest_path(path: str, ref: ManifestRef) -> str:
    return f"/v2/{path}/manifests/{quote(str(ref), safe=':')}"


def blob_path(path: str, digest: Digest) -> str:
    return f"/v2/{path}/blobs/{digest}"


def uploads_path(path: str) -> str:
    return f"/v2/{path}/blobs/uploads/"


def tags_path(path: str) -> str:
    return f"/v2/{path}/tags/list"


def descriptor_from_head(headers: dict[str, str], ref: ManifestRef) -> Descriptor:
    """A manifest descriptor from HEAD headers (Docker-Content-Digest and Content-Length are MUSTs;
    when asking by digest, the digest asked for wins over the header)."""
    media_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    digest_text = headers.get("Docker-Content-Digest")
    if isinstance(ref, Digest):
        digest = ref
    elif digest_text:
        digest = Digest.parse(digest_text.strip())
    else:
        raise RegistryError(f"HEAD of manifest {ref}: no Docker-Content-Digest header")
    try:
        size = int(headers.get("Content-Length", "-1"))
    except ValueError:
        size = -1
    return Descriptor(media_type, digest, max(size, 0))
