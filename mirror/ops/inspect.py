"""``inspect`` and ``list-tags`` for every transport: skopeo's output shapes, built from the raw data."""

from __future__ import annotations

import json
from typing import Any

from mirror.core.descriptor import Platform
from mirror.core.manifest import Manifest
from mirror.core.reference import ManifestRef, parse_docker
from mirror.errors import ManifestError
from mirror.ops.copy import ImageName
from mirror.runtime import Runtime
from mirror.transports.base import ImageSource
from mirror.transports.side import SideOptions

MAX_CONFIG_SIZE = 4 << 20

_OCI_CONFIG_KEYS = ("created", "author", "architecture", "os", "os.version", "os.features", "variant",
                    "config", "rootfs", "history")
_OCI_RUNTIME_KEYS = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir",
                     "Labels", "StopSignal", "ArgsEscaped")
_HISTORY_KEYS = ("created", "created_by", "author", "comment", "empty_layer")


async def image_for(src: ImageSource, ref: ManifestRef, platform: Platform) -> tuple[Manifest, Manifest]:
    """(top-level manifest, the image manifest for ``platform``), from any transport."""
    top = await src.get_manifest(ref)
    if not top.is_index:
        return top, top
    child = await src.get_manifest(top.select(platform).digest)
    if child.is_index:
        raise ManifestError(f"nested index for {platform} is not supported")
    return top, child


async def config_bytes(src: ImageSource, image: Manifest) -> bytes:
    """The image's config blob, size-capped and digest-verified."""
    if image.config is None:
        raise ManifestError("schema1 images have no config blob")
    if image.config.size > MAX_CONFIG_SIZE:
        raise ManifestError(f"config blob is {image.config.size} bytes, over the {MAX_CONFIG_SIZE} limit")
    hasher = image.config.digest.hasher()
    parts: list[bytes] = []
    async with src.open_blob(image.config) as chunks:
        async for chunk in chunks:
            hasher.update(chunk)
            parts.append(chunk)
            if hasher.size > MAX_CONFIG_SIZE:
                raise ManifestError("config blob larger than its descriptor says")
    hasher.check(image.config.digest, image.config.size, "config")
    return b"".join(parts)


def config_json(data: bytes) -> dict[str, Any]:
    try:
        config = json.loads(data)
    except (ValueError, RecursionError):
        raise ManifestError("image config is not valid JSON") from None
    if not isinstance(config, dict):
        raise ManifestError("image config is not a JSON object")
    return config


async def inspect_raw(rt: Runtime, name: ImageName, side: SideOptions) -> bytes:
    async with rt.transport(name.transport).source(name.rest, side) as (src, ref):
        return (await src.get_manifest(ref)).raw


async def inspect_config(rt: Runtime, name: ImageName, side: SideOptions, raw: bool) -> bytes | dict[str, Any]:
    async with rt.transport(name.transport).source(name.rest, side) as (src, ref):
        _top, image = await image_for(src, ref, rt.options.platform)
        data = await config_bytes(src, image)
    return data if raw else oci_config(config_json(data))


async def list_tags(rt: Runtime, name: ImageName, side: SideOptions) -> list[str]:
    """Every tag; as skopeo, only registries and ``docker-archive:`` have tags to list."""
    return await rt.transport(name.transport).list_tags(name.rest, side)


async def inspect(rt: Runtime, name: ImageName, side: SideOptions, no_tags: bool) -> dict[str, Any]:
    """skopeo's summary. As skopeo, an image outside a registry has no ``Name`` and no ``RepoTags``."""
    transport = rt.transport(name.transport)
    async with transport.source(name.rest, side) as (src, ref):
        top, image = await image_for(src, ref, rt.options.platform)
        config = config_json(await config_bytes(src, image)) if image.config else {}
        named = src.capabilities.named
    if not named:
        return summary({}, top, image, config, [])
    repo = parse_docker(name.rest).repo
    tags = [] if no_tags else await transport.list_tags(str(repo), side)
    return summary({"Name": str(repo)}, top, image, config, tags)


def summary(head: dict[str, Any], top: Manifest, image: Manifest, config: dict[str, Any],
            tags: list[str]) -> dict[str, Any]:
    """skopeo's inspect output, in skopeo's key order, after ``head`` (``Name`` for registries)."""
    runtime = config.get("config") or {}
    out: dict[str, Any] = {**head, "Digest": str(top.digest), "RepoTags": tags}
    if config.get("created"):
        out["Created"] = config["created"]
    out["DockerVersion"] = config.get("docker_version", "")
    out["Labels"] = runtime.get("Labels") or None
    out["Architecture"] = config.get("architecture", "")
    out["Os"] = config.get("os", "")
    if config.get("variant"):
        out["Variant"] = config["variant"]
    out["Layers"] = [str(layer.digest) for layer in image.layers]
    out["LayersData"] = [
        {"MIMEType": layer.media_type, "Digest": str(layer.digest), "Size": layer.size,
         "Annotations": dict(layer.annotations) or None}
        for layer in image.layers
    ]
    out["Env"] = runtime.get("Env") or None
    return out


def oci_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config as skopeo's ``--config`` shows it: converted to the OCI image config schema."""
    out: dict[str, Any] = {}
    for key in _OCI_CONFIG_KEYS:
        value = config.get(key)
        if value in (None, "", [], {}):
            continue
        if key == "config" and isinstance(value, dict):
            value = {k: value[k] for k in _OCI_RUNTIME_KEYS if value.get(k) not in (None, "", [], {}, False)}
        elif key == "history" and isinstance(value, list):
            value = [{k: h[k] for k in _HISTORY_KEYS if isinstance(h, dict) and h.get(k) not in (None, "", False)}
                     for h in value]
        out[key] = value
    out.setdefault("architecture", "")
    out.setdefault("os", "")
    out.setdefault("rootfs", {"type": "", "diff_ids": None})
    out.setdefault("config", {})
    return out
