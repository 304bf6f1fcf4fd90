"""``inspect`` for the local transports (``dir:``, ``oci:``, archives): skopeo's output shapes.

As skopeo, a local image has no registry name (``Name`` is omitted) and ``RepoTags`` is empty.
"""

from __future__ import annotations

from typing import Any

from mirror.core.descriptor import Platform
from mirror.errors import UsageError
from mirror.ops.copy import ImageName
from mirror.ops.inspect import config_bytes, config_json, image_for, oci_config, summary
from mirror.transports.base import LocalOptions
from mirror.transports.catalog import local_transports
from mirror.transports.local.archive import DockerArchiveTransport


async def list_tags(name: ImageName, options: LocalOptions) -> list[str]:
    """``list-tags`` for local transports; as skopeo, only ``docker-archive:`` has tags to list."""
    transport = local_transports()[name.transport]
    if not isinstance(transport, DockerArchiveTransport):
        raise UsageError(f"list-tags is not supported for transport {name.transport!r} "
                         "(supported: docker, docker-archive)")
    return await transport.list_tags(name.rest, options)


async def inspect_raw(name: ImageName, options: LocalOptions) -> bytes:
    async with local_transports()[name.transport].source(name.rest, options) as (src, ref):
        return (await src.get_manifest(ref)).raw


async def inspect_config(name: ImageName, options: LocalOptions, platform: Platform,
                         raw: bool) -> bytes | dict[str, Any]:
    async with local_transports()[name.transport].source(name.rest, options) as (src, ref):
        _top, image = await image_for(src, ref, platform)
        data = await config_bytes(src, image)
    return data if raw else oci_config(config_json(data))


async def inspect(name: ImageName, options: LocalOptions, platform: Platform) -> dict[str, Any]:
    async with local_transports()[name.transport].source(name.rest, options) as (src, ref):
        top, image = await image_for(src, ref, platform)
        config = config_json(await config_bytes(src, image)) if image.config else {}
    return summary({}, top, image, config, [])
