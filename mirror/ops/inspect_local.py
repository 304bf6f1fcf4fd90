"""``inspect`` for the local transports (``dir:``, ``oci:``, archives): skopeo's output shapes.

As skopeo, a local image has no registry name (``Name`` is omitted) and ``RepoTags`` is empty.
"""

from __future__ import annotations

import json
from typing import Any

from mirror.core.descriptor import Platform
from mirror.core.manifest import Manifest
from mirror.errors import ManifestError
from mirror.ops.copy import ImageName
from mirror.ops.inspect import MAX_CONFIG_SIZE, oci_config
from mirror.transports.base import ImageSource, LocalOptions
from mirror.transports.catalog import local_transports


async def _image(src: ImageSource, ref: str, platform: Platform) -> tuple[Manifest, Manifest]:
    top = await src.get_manifest(ref)
    if not top.is_index:
        return top, top
    child = await src.get_manifest(str(top.select(platform).digest))
    if child.is_index:
        raise ManifestError(f"nested index for {platform} is not supported")
    return top, child


async def _config(src: ImageSource, image: Manifest) -> bytes:
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


async def inspect_raw(name: ImageName, options: LocalOptions) -> bytes:
    async with local_transports()[name.transport].source(name.rest, options) as (src, ref):
        return (await src.get_manifest(ref)).raw


async def inspect_config(name: ImageName, options: LocalOptions, platform: Platform,
                         raw: bool) -> bytes | dict[str, Any]:
    async with local_transports()[name.transport].source(name.rest, options) as (src, ref):
        _top, image = await _image(src, ref, platform)
        data = await _config(src, image)
    return data if raw else oci_config(json.loads(data))


async def inspect(name: ImageName, options: LocalOptions, platform: Platform) -> dict[str, Any]:
    async with local_transports()[name.transport].source(name.rest, options) as (src, ref):
        top, image = await _image(src, ref, platform)
        config = json.loads(await _config(src, image)) if image.config else {}
    runtime = config.get("config") or {}
    out: dict[str, Any] = {"Digest": str(top.digest), "RepoTags": []}
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
