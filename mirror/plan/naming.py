"""Destination names, exactly as ``skopeo sync`` forms them.

skopeo: ``path.Join(destination, suffix) + appendSuffix`` where suffix is the source's full docker
reference (``host/repo:tag`` or ``host/repo@digest``) with ``--scoped``, else its last path
element (``repo:tag``). So ``--append-suffix`` lands at the end of the tag.
"""

from __future__ import annotations

import posixpath

from msgspec import Struct

from mirror.core.digest import Digest
from mirror.core.reference import ManifestRef, Reference, parse_docker
from mirror.errors import UsageError


class Naming(Struct, frozen=True):
    destination: str          # DESTINATION argument: registry[:port][/namespace] (docker) or a directory
    scoped: bool = False
    append_suffix: str = ""


def source_suffix(src_registry: str, src_path: str, ref: ManifestRef, naming: Naming,
                  mapped: str | None = None) -> str:
    """``repo:tag`` / ``host/ns/repo:tag`` / ``repo@sha256:..``; ``mapped`` replaces the repository path."""
    sep = "@" if isinstance(ref, Digest) else ":"
    if mapped is not None:
        return f"{mapped}{sep}{ref}"
    full = f"{src_registry}/{src_path}{sep}{ref}"
    return full if naming.scoped else posixpath.basename(full)


def docker_destination(src_registry: str, src_path: str, ref: ManifestRef, naming: Naming,
                       mapped: str | None = None) -> Reference:
    suffix = source_suffix(src_registry, src_path, ref, naming, mapped)
    text = posixpath.join(naming.destination.rstrip("/"), suffix) + naming.append_suffix
    try:
        return parse_docker(text)
    except UsageError as exc:
        raise UsageError(f"destination name {text!r} for {src_registry}/{src_path}: {exc}") from None


def local_destination(src_registry: str, src_path: str, ref: ManifestRef, naming: Naming,
                      mapped: str | None = None) -> str:
    """``--dest dir``: ``DESTINATION/repo:tag`` (or ``DESTINATION/host/ns/repo:tag`` with --scoped)."""
    suffix = source_suffix(src_registry, src_path, ref, naming, mapped)
    if ".." in suffix.split("/"):
        raise UsageError(f"destination name {suffix!r} escapes {naming.destination!r}")
    return posixpath.join(naming.destination, suffix) + naming.append_suffix


def dir_image_suffix(root: str, image_dir: str, naming: Naming) -> str:
    """``--src dir``: the image directory's path below the source root (its last element unless
    --scoped), as skopeo names destinations from directories."""
    relative = posixpath.relpath(image_dir, root)
    if relative == ".":
        relative = posixpath.basename(root.rstrip("/"))
    return relative if naming.scoped else posixpath.basename(relative)


def layout_image_suffix(root: str, name: str, naming: Naming) -> str:
    """``--src oci`` (extension): an index.json ref name ``[path/]repo:tag`` (as ``--dest oci`` writes
    them) keeps its last path element unless --scoped, like ``--src dir``; a bare tag (``v1``, as
    ``skopeo copy … oci:LAYOUT:v1`` writes) is named after the layout directory."""
    repo, colon, tag = name.rpartition(":")
    if not colon or "/" in tag:
        repo, tag = posixpath.basename(root.rstrip("/")), name
    if not naming.scoped:
        repo = posixpath.basename(repo)
    return f"{repo}:{tag}"
