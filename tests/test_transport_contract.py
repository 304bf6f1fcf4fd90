"""One contract suite, run over every transport (design notes §1.2 and habit 9).

Every case goes through ``rt.transports[name]`` (the ``Transport`` protocol of transports/base.py) and
nothing else of mirror's; what ends up stored is checked from outside (the registry API, the files,
podman) with the test bed's own clients. The cases:

1. round trip: two generated single-platform images sharing a layer, written in the contract order
   (``has_blob`` → ``put_blob`` → ``put_manifest``) and read back: manifest, ``head_manifest``, every
   blob hashed (and re-read from an offset), tags as ``capabilities.list_tags`` says;
2. a destination whose context exits with an exception publishes nothing, and does not disturb the
   image already stored under that name;
3. ``put_blob`` with bytes that do not match the descriptor raises ``DigestMismatch`` and leaves no
   blob behind, and the destination stays usable;
4. ``validate`` refuses malformed names (and names escaping a root) before any I/O, as do
   ``source``/``destination``; stored names that would escape a local root are refused when read;
5. the capabilities each transport (and its sources and destinations) claims are the ones it has.

What each transport stores is in EXPECT: manifests are kept byte for byte by ``docker``, ``dir``,
``oci`` and ``oci-archive`` (any format: converting Docker schema2 to OCI for a layout is the copy's
job, ``engine/reformat.py``, as the layout's ``manifest_types`` asks); ``docker-archive``,
``docker-daemon`` and ``containers-storage`` hold ``docker save``
images, read back as a Docker schema2 manifest regenerated from the archive (config byte for byte,
plain-tar layers named by their diff_ids).

podman (a Docker-compatible API service and its store) backs ``docker-daemon`` and
``containers-storage``: without it those cases fail, they are not skipped.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
from support.images import (
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    BuiltImage,
    Client,
    Format,
    build_image,
    make_layer,
    sha256_digest,
)
from support.podman import PODMAN, Podman, start_podman
from support.registry import Registry, start_registry

from mirror.core import manifest as manifest_mod
from mirror.core.descriptor import Descriptor
from mirror.core.digest import Digest
from mirror.core.manifest import Manifest
from mirror.core.reference import TRANSPORTS, ManifestRef, Tag
from mirror.errors import DigestMismatch, InvalidReference, ManifestError, NotFound, Unsupported, UsageError
from mirror.http.tls import TLSOptions
from mirror.runtime import GlobalOptions, open_runtime
from mirror.transports.base import (
    BlobOpener,
    Deleter,
    ImageDestination,
    ImageSource,
    Transport,
    source_signatures,
    store_signatures,
)
from mirror.transports.catalog import validate_name
from mirror.transports.side import LocalOptions, SideOptions

FORMATS: tuple[Format, ...] = ("oci", "docker")


class Boom(Exception):
    """A failure the test makes happen (in a destination context, in a blob source)."""


DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
TMP_PREFIX = ".mirror-tmp-"
CHUNK = 1000  # the test opener's chunk size: blobs of a few KiB arrive in several chunks


@dataclass(frozen=True)
class Expect:
    """What a transport does with what it is given (checked by the cases, compared with its capabilities)."""

    read_back_unchanged: frozenset[str]  # image formats whose manifest is read back byte for byte
    stored_unchanged: frozenset[str]     # formats whose manifest digest the store itself keeps
    converts_to: str | None              # "docker-save": the shape of what is read back otherwise
    shared_store: bool                   # later writes see earlier blobs and manifests (has_blob, head_manifest)
    put_manifest_publishes: bool         # no transaction: put_manifest itself publishes (a registry)


ALL = frozenset(FORMATS)
NONE: frozenset[str] = frozenset()
EXPECT: dict[str, Expect] = {
    "docker": Expect(ALL, ALL, None, shared_store=True, put_manifest_publishes=True),
    "dir": Expect(ALL, ALL, None, shared_store=False, put_manifest_publishes=False),
    "oci": Expect(ALL, ALL, None, shared_store=True, put_manifest_publishes=False),
    "oci-archive": Expect(ALL, ALL, None, shared_store=False, put_manifest_publishes=False),
    # docker save archives keep no manifest at all: the reader regenerates one.
    "docker-archive": Expect(NONE, NONE, "docker-save", shared_store=False, put_manifest_publishes=False),
    # The daemon loads a docker save archive: what it records is regenerated too.
    "docker-daemon": Expect(NONE, NONE, "docker-save", shared_store=False, put_manifest_publishes=False),
    # podman pulls a dir: copy, so the store keeps the manifest digest; mirror reads it back with
    # `podman save` (a docker save archive), regenerated.
    "containers-storage": Expect(NONE, ALL, "docker-save", shared_store=False, put_manifest_publishes=False),
}
TRANSPORT_PARAMS = [pytest.param(name, id=name) for name in TRANSPORTS]


def test_the_suite_covers_every_transport() -> None:
    assert set(EXPECT) == set(TRANSPORTS)


# -- fixtures: one registry and one podman service per module, started only when a case needs them --


@pytest.fixture(scope="module")
def contract_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with start_registry(tmp_path_factory.mktemp("contract-registry")) as reg:
        yield reg


@pytest.fixture(scope="module")
def podman_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    if PODMAN is None:
        pytest.fail("podman is not installed: docker-daemon and containers-storage need it (scripts/test installs it)")
    # A short name: podman refuses a runroot path longer than 50 characters.
    with start_podman(tmp_path_factory.mktemp("podman")) as service:
        yield service


def _slug(text: str) -> str:
    """A valid repository path component from a test id."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@dataclass
class Bed:
    """One transport in one test: where its images go, how to name them, and how to look at what is
    stored without mirror."""

    name: str
    root: Path                  # local transports write here; it is also --tmpdir
    slug: str                   # unique per test: repository and image names
    registry: Registry | None
    podman: Podman | None

    @property
    def side(self) -> SideOptions:
        return SideOptions(tls=TLSOptions(verify=False),
                           local=LocalOptions(tmpdir=str(self.root),
                                              daemon_host=self.podman.socket if self.podman else None))

    @property
    def env(self) -> dict[str, str]:
        home = self.root.parent / f"{self.root.name}-home"
        registries_d = home / ".config" / "containers" / "registries.d"  # registry signatures stay in the test
        registries_d.mkdir(parents=True, exist_ok=True)
        (registries_d / "default.yaml").write_text(f"default-docker: {{lookaside: 'file://{home}/sigstore'}}\n")
        return {"HOME": str(home), "MIRROR_STATE": "none"}

    @property
    def repo(self) -> str:
        return f"contract/{self.slug}"

    def rest(self, tag: str) -> str:
        """The name (after ``TRANSPORT:``) of image ``tag``."""
        match self.name:
            case "docker":
                assert self.registry is not None
                return f"{self.registry.host}/{self.repo}:{tag}"
            case "dir":
                return str(self.root / f"dir-{tag}")
            case "oci":
                return f"{self.root / 'layout'}:{tag}"
            case "oci-archive":
                return f"{self.root / f'oci-{tag}.tar'}:{tag}"
            case "docker-archive":
                return f"{self.root / f'docker-{tag}.tar'}:{self.repo}:{tag}"
            case "docker-daemon":
                return f"{self.repo}:{tag}"
            case "containers-storage":
                assert self.podman is not None
                return self.podman.spec.removeprefix("containers-storage:") + f"{self.repo}:{tag}"
        raise AssertionError(self.name)

    def list_rest(self, tag: str) -> str:
        """What ``list_tags`` is given to list image ``tag`` (with its siblings, where they share a place)."""
        if self.name == "docker":
            assert self.registry is not None
            return f"{self.registry.host}/{self.repo}"
        if self.name == "docker-archive":
            return str(self.root / f"docker-{tag}.tar")
        if self.name == "oci":
            return str(self.root / "layout")
        return self.rest(tag)

    def listed(self, tag: str) -> str:
        """How ``list_tags`` names image ``tag``."""
        return f"docker.io/{self.repo}:{tag}" if self.name == "docker-archive" else tag

    def full_name(self, tag: str) -> str:
        return f"docker.io/{self.repo}:{tag}"

    def stored(self, tag: str) -> str | None:
        """What the store itself holds under ``tag``, read without mirror: the manifest digest it keeps
        (docker-archive: the config member, it keeps no manifest), or None when it holds nothing there."""
        match self.name:
            case "docker":
                assert self.registry is not None
                resp = Client(self.registry).request("GET", f"/v2/{self.repo}/manifests/{tag}",
                                                     {"Accept": f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"}, ok=(200, 404))
                return None if resp.status == 404 else sha256_digest(resp.body)
            case "dir":
                path = self.root / f"dir-{tag}"
                if not path.exists():
                    return None
                manifest = path / "manifest.json"
                return sha256_digest(manifest.read_bytes()) if manifest.is_file() else f"incomplete: {path}"
            case "oci":
                index = self.root / "layout" / "index.json"
                return _ref_in_index(index.read_bytes(), tag) if index.exists() else None
            case "oci-archive":
                path = self.root / f"oci-{tag}.tar"
                return _ref_in_index(_member(path, "index.json"), tag) if path.exists() else None
            case "docker-archive":
                path = self.root / f"docker-{tag}.tar"
                if not path.exists():
                    return None
                items = json.loads(_member(path, "manifest.json"))
                return f"{items[0]['Config']} {items[0]['RepoTags']}"
            case "docker-daemon" | "containers-storage":  # the daemon is podman: one store for both
                assert self.podman is not None
                if self.name == "docker-daemon":  # the daemon's API agrees with the store
                    assert (self.podman.daemon_image_id(self.full_name(tag)) or "").removeprefix("sha256:") \
                        == (self.podman.inspect(self.full_name(tag), "{{.Id}}") or "")
                return self.podman.stored_digest(self.full_name(tag))
        raise AssertionError(self.name)

    def leftovers(self) -> list[Path]:
        """Temp files and directories a finished destination or source left under the root."""
        return sorted(p for p in self.root.rglob("*") if p.name.startswith(TMP_PREFIX))


def _ref_in_index(raw: bytes, ref: str) -> str | None:
    entries = [e for e in json.loads(raw)["manifests"]
               if e.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref]
    assert len(entries) <= 1, entries
    return str(entries[0]["digest"]) if entries else None


def _member(archive: Path, name: str) -> bytes:
    with tarfile.open(archive) as tar:
        member = tar.extractfile(name)
        assert member is not None
        return member.read()


@pytest.fixture(params=TRANSPORT_PARAMS)
def bed(request: pytest.FixtureRequest, tmp_path: Path) -> Bed:
    """The transport under test (every test function runs once per transport)."""
    name: str = request.param
    registry = cast(Registry, request.getfixturevalue("contract_registry")) if name == "docker" else None
    podman = cast(Podman, request.getfixturevalue("podman_service")) \
        if name in ("docker-daemon", "containers-storage") else None
    root = tmp_path / "root"
    root.mkdir()
    return Bed(name, root, _slug(request.node.name), registry, podman)


@asynccontextmanager
async def transport_of(bed: Bed) -> AsyncIterator[Transport]:
    async with open_runtime(GlobalOptions(state="none"), env=bed.env) as rt:
        assert set(rt.transports) == set(TRANSPORTS)
        yield rt.transports[bed.name]


# -- images and the contract order ------------------------------------------------------------


def image_pair(bed: Bed, fmt: Format) -> tuple[BuiltImage, BuiltImage]:
    """Two images (config + 2 layers each) sharing their first layer. Their configs (image IDs) are
    the test's own: podman's store, shared by the module, records one manifest digest per image ID."""
    shared = make_layer(9000, 1500)
    first = build_image(fmt=fmt, seed=91, layers=[shared, make_layer(9001, 2500)],
                        labels={"test": bed.slug, "image": "first"})
    second = build_image(fmt=fmt, seed=92, layers=[shared, make_layer(9002, 3500)],
                         labels={"test": bed.slug, "image": "second"})
    return first, second


def manifest_of(image: BuiltImage) -> Manifest:
    return manifest_mod.parse(image.manifest, image.media_type)


def descriptors(image: BuiltImage) -> list[tuple[Descriptor, bytes]]:
    blobs = image.blobs()
    return [(desc, blobs[str(desc.digest)]) for desc in manifest_of(image).blobs()]


def opener(data: bytes) -> BlobOpener:
    """A blob source over ``data``, from any offset, in CHUNK-byte pieces."""
    @asynccontextmanager
    async def open_at(offset: int) -> AsyncIterator[AsyncIterator[bytes]]:
        async def chunks() -> AsyncIterator[bytes]:
            for start in range(offset, len(data), CHUNK):
                yield data[start:start + CHUNK]
        yield chunks()
    return open_at


def failing_opener(data: bytes) -> BlobOpener:
    """A blob source that breaks after its first chunk."""
    @asynccontextmanager
    async def open_at(offset: int) -> AsyncIterator[AsyncIterator[bytes]]:
        async def chunks() -> AsyncIterator[bytes]:
            yield data[offset:offset + CHUNK]
            raise Boom("the source went away")
        yield chunks()
    return open_at


async def put_blobs(dst: ImageDestination, image: BuiltImage) -> list[Digest]:
    """Config then layers, each skipped when ``has_blob`` says the destination has it; returns those sent."""
    sent: list[Digest] = []
    for desc, data in descriptors(image):
        if await dst.has_blob(desc):
            continue
        assert await dst.put_blob(desc, opener(data)) == len(data)
        sent.append(desc.digest)
    return sent


async def write_image(dst: ImageDestination, tag: Tag | None, image: BuiltImage) -> list[Digest]:
    sent = await put_blobs(dst, image)
    manifest = manifest_of(image)
    await dst.put_manifest(manifest, tag if tag is not None else manifest.digest)
    return sent


async def read_blob(src: ImageSource, desc: Descriptor, offset: int = 0) -> bytes:
    parts: list[bytes] = []
    async with src.open_blob(desc, offset) as chunks:
        async for chunk in chunks:
            parts.append(chunk)
    return b"".join(parts)


async def read_back(src: ImageSource, ref: ManifestRef) -> tuple[Manifest, dict[Digest, bytes]]:
    """The manifest ``ref`` names and every blob it references, each hashed against its descriptor."""
    manifest = await src.get_manifest(ref)
    for name in (ref, manifest.digest):
        head = await src.head_manifest(name)
        assert head is not None and (head.digest, head.size) == (manifest.digest, len(manifest.raw)), name
    assert (await src.get_manifest(manifest.digest)).raw == manifest.raw
    blobs: dict[Digest, bytes] = {}
    for desc in manifest.blobs():
        data = await read_blob(src, desc)
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (desc.digest.hex, desc.size), desc
        assert await read_blob(src, desc, desc.size // 2) == data[desc.size // 2:]  # a resumed read
        blobs[desc.digest] = data
    return manifest, blobs


def _plain(layer: bytes) -> bytes:
    return gzip.decompress(layer) if layer[:2] == b"\x1f\x8b" else layer


def check_shape(name: str, fmt: Format, image: BuiltImage, got: Manifest, blobs: dict[Digest, bytes]) -> None:
    """``got`` (read back) is ``image`` as ``name`` stores it: unchanged, or converted as EXPECT says."""
    expect = EXPECT[name]
    assert got.config is not None
    if fmt in expect.read_back_unchanged:
        assert (got.raw, got.media_type) == (image.manifest, image.media_type)
        assert blobs[got.config.digest] == image.config
        assert [blobs[layer.digest] for layer in got.layers] == list(image.layer_data)
        return
    assert str(got.digest) != image.digest
    # docker save: the config byte for byte, plain-tar layers named by their diff_ids
    assert expect.converts_to == "docker-save"
    assert got.media_type == DOCKER_MANIFEST
    assert blobs[got.config.digest] == image.config
    assert [(str(layer.digest), layer.media_type) for layer in got.layers] \
        == [(diff_id, DOCKER_LAYER_TAR) for diff_id in image.diff_ids]
    assert [blobs[layer.digest] for layer in got.layers] == [_plain(data) for data in image.layer_data]


# -- 1. round trip ------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("fmt", FORMATS)
async def test_round_trip(bed: Bed, fmt: Format) -> None:
    first, second = image_pair(bed, fmt)
    expect = EXPECT[bed.name]
    async with transport_of(bed) as t:
        async with t.destination(bed.rest("a"), bed.side) as (dst, tag_a):
            assert await write_image(dst, tag_a, first) == [desc.digest for desc, _ in descriptors(first)]
        async with t.source(bed.rest("a"), bed.side) as (src, ref):
            got_a, _blobs = await read_back(src, ref)
        async with t.destination(bed.rest("b"), bed.side) as (dst, tag_b):
            # What the destination already knows it answers truthfully (a shared store must know).
            for known in ([tag_a] if tag_a is not None else []) + [got_a.digest]:
                head = await dst.head_manifest(known)
                assert head is None or head.digest == got_a.digest, known
                assert head is not None or not expect.shared_store, known
            sent = await write_image(dst, tag_b, second)
        shared = manifest_of(second).layers[0].digest
        assert sent == [desc.digest for desc, _ in descriptors(second)
                        if not (expect.shared_store and desc.digest == shared)]
        for tag, image in (("a", first), ("b", second)):  # writing b left a as it was
            async with t.source(bed.rest(tag), bed.side) as (src, ref):
                got, blobs = await read_back(src, ref)
                check_shape(bed.name, fmt, image, got, blobs)
                if tag == "a":
                    assert got.digest == got_a.digest
                if t.capabilities.list_tags:
                    assert bed.listed(tag) in [listed async for listed in src.list_tags()]
            stored = bed.stored(tag)
            if fmt in expect.stored_unchanged:
                assert stored == image.digest
            else:
                assert stored is not None and stored != image.digest
        if t.capabilities.list_tags:
            listed_a = await t.list_tags(bed.list_rest("a"), bed.side)
            listed_b = await t.list_tags(bed.list_rest("b"), bed.side)
            assert bed.listed("a") in listed_a and bed.listed("b") in listed_b
            assert sorted({*listed_a, *listed_b}) == sorted({bed.listed("a"), bed.listed("b")})
        else:
            with pytest.raises(Unsupported):
                await t.list_tags(bed.list_rest("a"), bed.side)
    assert bed.leftovers() == []


# -- 2. nothing half-written ----------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("stage", ["after-blobs", "after-manifest"])
async def test_a_failed_write_publishes_nothing(bed: Bed, stage: str) -> None:
    old, new = image_pair(bed, "oci")
    publishes = stage == "after-manifest" and EXPECT[bed.name].put_manifest_publishes

    async def fail_writing(t: Transport, image: BuiltImage) -> None:
        with pytest.raises(Boom):
            async with t.destination(bed.rest("a"), bed.side) as (dst, tag):
                await put_blobs(dst, image)
                if stage == "after-manifest":
                    manifest = manifest_of(image)
                    await dst.put_manifest(manifest, tag if tag is not None else manifest.digest)
                raise Boom
        assert bed.leftovers() == []

    async with transport_of(bed) as t:
        # A new name: nothing appears (no directory, archive, index entry, tag or image).
        await fail_writing(t, old)
        if publishes:  # a registry has no transaction: the manifest PUT is the publication
            assert bed.stored("a") == old.digest
            return
        assert bed.stored("a") is None
        # Nothing at the target path, but for oci: as with skopeo, the layout directory is created
        # when the destination opens (blobs go straight in, content-addressed); it has no index.json.
        assert [p.name for p in bed.root.iterdir()] == (["layout"] if bed.name == "oci" else [])
        assert not (bed.root / "layout" / "index.json").exists()
        with pytest.raises(NotFound):
            async with t.source(bed.rest("a"), bed.side) as (src, ref):
                await src.get_manifest(ref)
        # An existing image under that name stays as it was.
        async with t.destination(bed.rest("a"), bed.side) as (dst, tag):
            await write_image(dst, tag, old)
        before = bed.stored("a")
        assert before is not None
        await fail_writing(t, new)
        assert bed.stored("a") == before
        async with t.source(bed.rest("a"), bed.side) as (src, ref):
            got, blobs = await read_back(src, ref)
        check_shape(bed.name, "oci", old, got, blobs)


# -- 3. bytes that do not match their descriptor --------------------------------------------------


def _corruptions(data: bytes) -> list[tuple[str, bytes]]:
    middle = len(data) // 2
    return [("one byte changed", data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]),
            ("one byte more", data + b"\0"),
            ("one byte short", data[:-1])]


@pytest.mark.anyio
async def test_put_blob_refuses_bytes_that_do_not_match(bed: Bed) -> None:
    image, _ = image_pair(bed, "oci")
    desc, data = descriptors(image)[2]  # the image's own layer
    async with transport_of(bed) as t:
        async with t.destination(bed.rest("a"), bed.side) as (dst, tag):
            for what, bad in [*_corruptions(data), ("source failing", b"")]:
                # Errors come out as themselves (the engine retries on DigestMismatch), not as groups.
                with pytest.raises(Boom if bad == b"" else DigestMismatch):
                    await dst.put_blob(desc, failing_opener(data) if bad == b"" else opener(bad))
                assert not await dst.has_blob(desc), what
                # Nowhere: no file named by the digest, no temp file, not in the registry.
                assert not [p for p in bed.root.rglob(f"*{desc.digest.hex}*")], what
                assert not [p for p in bed.root.rglob(f"{TMP_PREFIX}*") if p.is_file()], what
                if bed.registry is not None:
                    assert not Client(bed.registry).blob_exists(bed.repo, str(desc.digest)), what
            # The destination is still usable: the right bytes go in and the image is published.
            await write_image(dst, tag, image)
        async with t.source(bed.rest("a"), bed.side) as (src, ref):
            got, blobs = await read_back(src, ref)
        check_shape(bed.name, "oci", image, got, blobs)
    assert bed.leftovers() == []


# -- 4. names -----------------------------------------------------------------------------------

_ZEROS = "sha256:" + "0" * 64


def bad_names(bed: Bed) -> list[str]:
    """Malformed names, and names escaping a root, for each transport. A transport doing I/O before
    refusing one would fail with another error (the registry host here refuses connections; the
    daemon and podman answer "not found"; local paths are under a directory never created)."""
    path = str(bed.root / "never" / "created")
    match bed.name:
        case "docker":
            host = "127.0.0.1:9"
            return ["", f"{host}/UPPER/case:t", f"{host}/repo:bad tag", f"{host}/repo:-t", f"{host}/repo@sha256:abc",
                    f"{host}/repo:t@{_ZEROS}", f"{host}/../escape:t", f"{host}/repo:{'x' * 129}", "0" * 64]
        case "dir":
            return ["", f"{path}\x00x"]
        case "oci" | "oci-archive":
            return ["", ":t", f"{path}\x00:t", f"{path}:../escape", f"{path}:/absolute", f"{path}:a//b",
                    f"{path}:bad..ref", f"{path}:bad tag"]
        case "docker-archive":
            return ["", ":name:t", f"{path}:UPPER:t", f"{path}:../escape:t", f"{path}:name@{_ZEROS}", f"{path}:@x",
                    f"{path}:name:bad tag"]
        case "docker-daemon":
            return ["", "sha256:abc", "UPPER:t", f"name@{_ZEROS}", "../escape:t", "name:bad tag"]
        case "containers-storage":
            return ["", "[unterminated", f"[vfs@{path}]", "[vfs@relative/root]name:t", f"[vfs@{path}+relative]name:t",
                    "@abc", "UPPER:t", f"[vfs@{path}]../escape:t"]
    raise AssertionError(bed.name)


def good_name(bed: Bed) -> str:
    return "127.0.0.1:9/repo:t" if bed.name == "docker" else \
        f"[vfs@{bed.root}/never]name:t" if bed.name == "containers-storage" else \
        "name:t" if bed.name == "docker-daemon" else f"{bed.root}/never:name:t"


def destination_only_bad_names(bed: Bed) -> list[str]:
    """Names a source accepts but a destination cannot write (an image ID, an archive index)."""
    return {"docker-archive": [f"{bed.root}/never:@0"], "docker-daemon": [_ZEROS],
            "containers-storage": [f"[vfs@{bed.root}/never]{'a' * 64}"]}.get(bed.name, [])


def hostile_store(bed: Bed) -> str | None:
    """A stored image whose contents name something outside its root (where a transport reads a local
    root), as its ``rest``; None where the names mirror reads are not paths."""
    target = bed.root / "hostile"
    escaping = "sha256:../../../../etc/passwd"
    descriptor = {"mediaType": OCI_MANIFEST, "digest": escaping, "size": 100}
    match bed.name:
        case "dir":
            target.mkdir()
            (target / "version").write_bytes(b"Directory Transport Version: 1.1\n")
            (target / "manifest.json").write_text(json.dumps(
                {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {**descriptor, "mediaType": OCI_CONFIG},
                 "layers": [{**descriptor, "mediaType": OCI_LAYER_GZIP}]}))
            return str(target)
        case "oci":
            target.mkdir()
            (target / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
            (target / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [descriptor]}))
            return str(target)
        case "oci-archive":
            _tar(bed.root / "hostile.tar", {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
                                            "index.json": b'{"schemaVersion":2,"manifests":[]}',
                                            "../escape": b"x"})
            return str(bed.root / "hostile.tar")
        case "docker-archive":
            _tar(bed.root / "hostile.tar", {"c.json": b'{"rootfs":{"diff_ids":["' + _ZEROS.encode() + b'"]}}',
                                            "manifest.json": json.dumps([{"Config": "c.json", "RepoTags": [],
                                                                          "Layers": ["../../etc/passwd"]}]).encode()})
            return str(bed.root / "hostile.tar")
    return None


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.anyio
async def test_malformed_names_are_refused_before_any_io(bed: Bed) -> None:
    prefix = "docker://" if bed.name == "docker" else f"{bed.name}:"
    async with transport_of(bed) as t:
        t.validate(good_name(bed))
        assert validate_name(prefix + good_name(bed)) == (bed.name, good_name(bed))
        for rest in bad_names(bed):
            with pytest.raises(InvalidReference):
                t.validate(rest)
            with pytest.raises(InvalidReference):
                validate_name(prefix + rest)
            with pytest.raises(InvalidReference):
                async with t.source(rest, bed.side):
                    pass
            with pytest.raises(InvalidReference):
                async with t.destination(rest, bed.side):
                    pass
        for rest in destination_only_bad_names(bed):
            t.validate(rest)
            with pytest.raises(UsageError):
                async with t.destination(rest, bed.side):
                    pass
        assert list(bed.root.iterdir()) == []  # nothing was created
        hostile = hostile_store(bed)
        if hostile is not None:
            with pytest.raises((InvalidReference, ManifestError)):
                async with t.source(hostile, bed.side) as (src, ref):
                    await src.get_manifest(ref)
    assert bed.leftovers() == []


# -- 5. capabilities ------------------------------------------------------------------------------

#: Flags a destination acts on; a transport's own flags must say the same as its destinations'.
DESTINATION_FLAGS = ("mount", "delete", "chunked", "signatures", "compressed_layers", "converts_manifests")
SIGNATURES = [b"first opaque signature", b"second opaque signature"]


@pytest.mark.anyio
async def test_capabilities_are_honest(bed: Bed) -> None:
    """Each flag is checked against what the transport does: signatures stored and read back, deletion,
    tag listing, cross-repository mounts, and a Docker schema2 image stored with another digest
    exactly where ``converts_manifests`` says so."""
    image, _ = image_pair(bed, "docker")
    async with transport_of(bed) as t:
        caps = t.capabilities
        async with t.destination(bed.rest("a"), bed.side) as (dst, tag):
            assert {f: getattr(dst.capabilities, f) for f in DESTINATION_FLAGS} \
                == {f: getattr(caps, f) for f in DESTINATION_FLAGS}
            await write_image(dst, tag, image)
            if dst.capabilities.signatures:
                await store_signatures(dst, SIGNATURES, None, Digest.parse(image.digest))
            if not caps.delete:
                assert not hasattr(dst, "delete_manifest")
        async with t.source(bed.rest("a"), bed.side) as (src, ref):
            assert (src.capabilities.signatures, src.capabilities.named) == (caps.signatures, caps.named)
            got = await src.get_manifest(ref)
            # signatures: stored and read back exactly where claimed
            assert await source_signatures(src, None, got.digest) == (SIGNATURES if caps.signatures else [])
            if not caps.signatures:
                assert not hasattr(src, "signatures")
            location = src.location
        # converts_manifests: the store keeps another manifest than the one put, exactly where claimed
        stored = bed.stored("a")
        assert stored is not None
        assert caps.converts_manifests == (stored != image.digest)
        assert caps.converts_manifests == (EXPECT[bed.name].stored_unchanged != ALL)
        # list_tags
        if caps.list_tags:
            assert bed.listed("a") in await t.list_tags(bed.list_rest("a"), bed.side)
        else:
            with pytest.raises(Unsupported):
                await t.list_tags(bed.list_rest("a"), bed.side)
        # mount: a blob of the image, into another repository of the same registry
        layer = got.layers[0]
        other = bed.rest("a").replace(bed.repo, f"{bed.repo}-other") if bed.name == "docker" else bed.rest("m")
        async with t.destination(other, bed.side) as (dst, tag_m):
            mounted = await dst.mount_blob(layer, location)
            assert mounted == caps.mount
            if mounted:
                assert await dst.has_blob(layer)
            else:  # leave a complete image behind, as a copy would
                await write_image(dst, tag_m, image)
        # delete: the manifest is gone afterwards
        if caps.delete:
            async with t.destination(bed.rest("a"), bed.side) as (dst, _):
                await cast(Deleter, dst).delete_manifest(got.digest)
            async with t.source(bed.rest("a"), bed.side) as (src, ref):
                assert await src.head_manifest(got.digest) is None
                with pytest.raises(NotFound):
                    await src.get_manifest(ref)
            assert bed.stored("a") is None
    assert bed.leftovers() == []
