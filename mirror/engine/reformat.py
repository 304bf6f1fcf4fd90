"""What a copy changes on the way, and the changing: manifest format (``--format``, or what the
destination takes) and layer compression (``--dest-compress*``, or what the destination wants), with
containers/image's rules (``copy/manifest.go``, ``copy/compression.go`` in skopeo 1.9's c/image 5.22):

- the manifest type written is the forced one, else the source's when the destination takes it, else
  one it takes (an OCI layout: OCI); lists follow their images (Docker list ⇄ OCI index);
- a destination that wants compressed layers (registry, OCI layout) gets uncompressed ones compressed
  (gzip, or ``--dest-compress-format``), and layers compressed otherwise than an explicitly requested
  format recompressed; ``dir:`` changes layers only with ``--dest-compress``/``--dest-decompress``;
- Docker manifests have no zstd layers: a zstd request turns a Docker image into OCI, as skopeo's
  fallback does, unless ``--format v2s2`` was forced (then refused); OCI artifacts, schema1 and
  unknown layer types are not converted;
- with ``--preserve-digests``, a digest destination or signatures to carry, nothing may change: a
  needed conversion or an explicitly requested layer change is refused, an implicit compression is
  left out (skopeo then pushes the layer as it is).

Everything is decided (and refused) before any blob moves. Unchanged images keep their bytes.
Deviation from skopeo 1.9, as later containers/image: a requested compression is applied even when
the destination already holds the source's layer (c/image 5.22 reuses it unconverted), and zstd
layers are recompressed before a conversion to Docker rather than refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from enum import Enum
from pathlib import Path
from typing import Any

import anyio
from msgspec import Struct

from mirror.aio import LRU
from mirror.core import convert
from mirror.core import mediatype as mt
from mirror.core.descriptor import Descriptor, Platform
from mirror.core.digest import Digest
from mirror.core.manifest import Manifest
from mirror.engine.spool import SpoolSource, read_small, spool_dir, spool_layer
from mirror.errors import ManifestError
from mirror.transports.base import Capabilities, ImageSource

#: Layer conversions remembered per run (source digest, algorithm, level → result).
REMEMBERED = 4096


class LayerCompression(Enum):
    """containers/image's ``LayerCompression``: what the destination wants done to layers."""

    PRESERVE = "preserve"
    COMPRESS = "compress"
    DECOMPRESS = "decompress"


class Reformat(Struct, frozen=True):
    """What a run may change. ``compression`` None: the destination's wish (``compressed_layers``);
    ``frozen``: why nothing may change (skopeo's words: "Instructed to preserve digests")."""

    manifest_type: str | None = None  # --format: OCI_MANIFEST or DOCKER_MANIFEST
    compression: LayerCompression | None = None
    algorithm: str | None = None  # --dest-compress-format: gzip | zstd
    level: int | None = None  # --dest-compress-level
    frozen: str = ""
    tmpdir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """As plain data for another process (a queue's workers); ``tmpdir`` is each process's own."""
        return {"manifest_type": self.manifest_type, "algorithm": self.algorithm, "level": self.level,
                "compression": self.compression.value if self.compression is not None else None,
                "frozen": self.frozen}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], tmpdir: str | None = None) -> Reformat:
        compression = data.get("compression")
        return cls(manifest_type=data.get("manifest_type"), algorithm=data.get("algorithm"), level=data.get("level"),
                   compression=LayerCompression(compression) if compression is not None else None,
                   frozen=str(data.get("frozen") or ""), tmpdir=tmpdir)

    @property
    def explicit_layers(self) -> bool:
        """The user asked for a layer change (not only the destination's default)."""
        return self.algorithm is not None or self.compression in (LayerCompression.COMPRESS,
                                                                  LayerCompression.DECOMPRESS)


class ImagePlan(Struct, frozen=True):
    source: str  # the source manifest type
    target: str  # the type written
    edits: tuple[tuple[int, str | None], ...] = ()  # (layer index, algorithm it gets; None: uncompressed)

    @property
    def changed(self) -> bool:
        return bool(self.edits) or self.target != self.source

    def layer_types(self, manifest: Manifest) -> list[str]:
        """The media type of each layer as written; raises where containers/image refuses."""
        source, target = convert.FORMAT_OF[self.source], convert.FORMAT_OF[self.target]
        edits = dict(self.edits)
        return [convert.recompressed_layer_type(layer.media_type, target, edits[i]) if i in edits
                else convert.converted_layer_type(layer.media_type, source, target)
                for i, layer in enumerate(manifest.layers)]


def _cannot(target: str, reason: str, what: str = "Manifest") -> ManifestError:
    return ManifestError(f'{what} must be converted to type "{target}" to be written to destination, '
                         f'but we cannot modify it: "{reason}"')


class Reformatter:
    """Plans and performs the changes of one run; remembers layer conversions so a layer shared by
    many images is converted once (and spooled again only when its bytes are needed)."""

    def __init__(self, reformat: Reformat) -> None:
        self.reformat = reformat
        self._done: LRU[tuple[Digest, str | None, int | None], tuple[Digest, int]] = LRU(REMEMBERED)
        self._limit = anyio.CapacityLimiter(2)

    def converts(self, media_type: str, caps: Capabilities) -> bool:
        """A manifest of this type may be rewritten for reasons other than its layers' compression
        (otherwise a copy already at the destination under its own digest can be used as it is)."""
        r = self.reformat
        op = self._operation(caps)
        if op is LayerCompression.DECOMPRESS or (op is LayerCompression.COMPRESS and r.explicit_layers):
            return True
        if r.manifest_type is not None:
            return convert.FORMAT_OF.get(media_type) != convert.FORMAT_OF[r.manifest_type]
        return bool(caps.manifest_types) and media_type not in caps.manifest_types

    def plan(self, manifest: Manifest, caps: Capabilities, frozen: str = "") -> ImagePlan:
        """What happens to one image, checked in full before any blob moves."""
        r = self.reformat
        frozen = r.frozen or frozen
        source = manifest.media_type
        if source in mt.SCHEMA1:
            if r.manifest_type is not None or (caps.manifest_types and source not in caps.manifest_types):
                raise ManifestError(f"converting the Docker schema1 manifest {manifest.digest} is not supported")
            return ImagePlan(source, source)
        edits = self._edits(manifest, caps)
        target = self._target(source, caps, edits)
        if frozen:
            if target != source:
                raise _cannot(target, frozen)
            if edits and r.explicit_layers:
                raise ManifestError("Copying this image would require changing layer representation, "
                                    f'which we cannot do: "{frozen}"')
            edits = ()
        plan = ImagePlan(source, target, edits)
        if plan.changed:
            if target != source:
                convert.check_image_config(manifest)
            plan.layer_types(manifest)
        return plan

    def _edits(self, manifest: Manifest, caps: Capabilities) -> tuple[tuple[int, str | None], ...]:
        r = self.reformat
        op = self._operation(caps)
        if op is LayerCompression.PRESERVE:
            return ()
        out: list[tuple[int, str | None]] = []
        for i, layer in enumerate(manifest.layers):
            kind = convert.layer_kind(layer.media_type)
            if kind is None or layer.urls:  # unknown types and foreign layers stay as they are
                continue
            current = kind[2]
            wanted = None if op is LayerCompression.DECOMPRESS else (r.algorithm or current or "gzip")
            if wanted != current:
                out.append((i, wanted))
        return tuple(out)

    def _operation(self, caps: Capabilities) -> LayerCompression:
        if self.reformat.compression is not None:
            return self.reformat.compression
        return LayerCompression.COMPRESS if caps.compressed_layers else LayerCompression.PRESERVE

    def _target(self, source: str, caps: Capabilities, edits: tuple[tuple[int, str | None], ...]) -> str:
        forced = self.reformat.manifest_type
        if forced is not None:
            return forced
        target = source
        if caps.manifest_types and source not in caps.manifest_types:
            target = mt.DOCKER_MANIFEST if mt.DOCKER_MANIFEST in caps.manifest_types else mt.OCI_MANIFEST
        if target == mt.DOCKER_MANIFEST and any(algorithm == "zstd" for _, algorithm in edits):
            target = mt.OCI_MANIFEST  # skopeo's fallback: Docker has no zstd layers, the destination takes OCI
        return target

    def list_type(self, index: Manifest, caps: Capabilities) -> str:
        forced = self.reformat.manifest_type
        if forced is not None:
            return convert.LIST_OF[forced]
        if not caps.manifest_types or index.media_type in caps.manifest_types:
            return index.media_type
        return mt.DOCKER_LIST if mt.DOCKER_LIST in caps.manifest_types else mt.OCI_INDEX

    def check_list(self, index: Manifest, caps: Capabilities, frozen: str) -> None:
        """Refuse, before any child moves, a list that must change type but may not change."""
        target = self.list_type(index, caps)
        if target != index.media_type and (self.reformat.frozen or frozen):
            raise _cannot(target, self.reformat.frozen or frozen, "Manifest list")

    def index(self, index: Manifest, children: Mapping[Digest, Descriptor], caps: Capabilities, frozen: str,
              host: Platform) -> Manifest:
        """``index`` as written: its type converted as needed, entries pointing at the children written."""
        target = self.list_type(index, caps)
        moved = {d: c for d, c in children.items() if c.digest != d}
        if target == index.media_type and not moved:
            return index
        if self.reformat.frozen or frozen:
            raise _cannot(target, self.reformat.frozen or frozen, "Manifest list")
        platform = {"architecture": host.architecture, "os": host.os}
        entries = convert.index_entries(index, target, platform)
        for entry in entries:
            child = moved.get(Digest.parse(str(entry.get("digest"))))
            if child is not None:
                entry.update(mediaType=child.media_type, digest=str(child.digest), size=child.size)
        return convert.index(target, entries, _extras(index))

    @asynccontextmanager
    async def image(self, src: ImageSource, manifest: Manifest, plan: ImagePlan
                    ) -> AsyncIterator[tuple[Manifest, SpoolSource | None]]:
        """The image as written and a source of its new blobs (None when nothing changes); the blobs
        stay readable until this exits."""
        if not plan.changed:
            yield manifest, None
            return
        async with spool_dir(self.reformat.tmpdir) as work:
            spool = SpoolSource(work)
            layers = await self._layers(src, manifest, plan, spool)
            config = await self._config(src, manifest, plan, spool)
            yield convert.image(plan.target, config, layers, _extras(manifest)), spool

    async def _layers(self, src: ImageSource, manifest: Manifest, plan: ImagePlan,
                      spool: SpoolSource) -> list[dict[str, Any]]:
        data = manifest.json()
        layers = [dict(layer) for layer in data["layers"]]
        for layer, media_type in zip(layers, plan.layer_types(manifest), strict=True):
            layer["mediaType"] = media_type
        edits = dict(plan.edits)
        results: dict[tuple[Digest, str | None], tuple[Digest, int]] = {}
        todo = {(manifest.layers[i].digest, algorithm): manifest.layers[i] for i, algorithm in edits.items()}
        async with anyio.create_task_group() as tg:
            for (_digest, algorithm), desc in todo.items():
                tg.start_soon(self._convert, src, desc, algorithm, spool, results)
        for i, algorithm in edits.items():
            digest, size = results[(manifest.layers[i].digest, algorithm)]
            layers[i].update(digest=str(digest), size=size)
        return layers

    async def _convert(self, src: ImageSource, layer: Descriptor, algorithm: str | None, spool: SpoolSource,
                       results: dict[tuple[Digest, str | None], tuple[Digest, int]]) -> None:
        level = self.reformat.level if algorithm is not None else None
        key = (layer.digest, algorithm, level)

        async def respool(path: Path) -> tuple[Digest, int]:
            async with self._limit:
                return await spool_layer(src, layer, algorithm, level, path)

        known = self._done.get(key)
        if known is None:
            path = spool.work / f"layer-{layer.digest.hex}-{algorithm}"
            known = await respool(path)
            spool.add_file(known[0], path)
            self._done.put(key, known)
        else:
            spool.add_later(known[0], respool)
        results[(layer.digest, algorithm)] = known

    async def _config(self, src: ImageSource, manifest: Manifest, plan: ImagePlan,
                      spool: SpoolSource) -> dict[str, Any]:
        config = dict(manifest.json()["config"])
        if plan.target == plan.source:
            return config
        if plan.target == mt.DOCKER_MANIFEST:  # the OCI config is kept byte for byte
            config["mediaType"] = mt.DOCKER_CONFIG
            return config
        assert manifest.config is not None
        stored = spool.add_data(convert.oci_config(await read_small(src, manifest.config)))
        return {"mediaType": mt.OCI_CONFIG, "digest": str(stored.digest), "size": stored.size}


def _extras(manifest: Manifest) -> dict[str, Any]:
    """The OCI-only top-level fields a rewritten manifest keeps (from an OCI source; Docker has none)."""
    if convert.FORMAT_OF.get(manifest.media_type) != "oci":
        return {}
    data = manifest.json()
    return {k: data[k] for k in ("artifactType", "subject", "annotations") if data.get(k)}
