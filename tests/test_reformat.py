"""--format (manifest conversion) and layer compression on copy and sync, with skopeo 1.9 as the oracle.

Format conversions are deterministic, so mirror must write exactly skopeo's bytes (hence digests).
Compressed bytes differ between gzip/zstd implementations (skopeo uses pgzip and klauspost/zstd), so
compression cases compare what can be compared: manifest and layer media types, the config (so the
diff_ids), the *uncompressed* layer contents, and that each tool reads and fully verifies what the
other wrote.

Where skopeo 1.9 (containers/image 5.22) differs from what containers/image documents today, the
case says so and asserts the documented behaviour.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard
from support.images import Client, PushedImage, SeededImages, make_layer, push_image
from support.mirror_cli import assert_one_line_error, run_mirror
from support.postgres import Postgres
from support.registry import Registry
from support.workers import run_workers

Skopeo = Callable[..., subprocess.CompletedProcess[str]]
InspectRaw = Callable[..., bytes]
PLAIN = "--tls-verify=false"
TLS = ("--src-tls-verify=false", "--dest-tls-verify=false")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def _mirror(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_mirror("copy", "-q", *TLS, *args, check=check)


def _plain(data: bytes) -> bytes:
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar_layer(seed: int, size: int) -> bytes:
    """An uncompressed layer (as ``docker save`` and some builders store them)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(f"plain/file-{seed}")
        info.size, info.mtime = size, 0
        tar.addfile(info, io.BytesIO(bytes(range(256)) * (size // 256)))
    return buf.getvalue()


class Read:
    """An image as stored in a registry (``reg``), a dir: or an OCI layout, read with the test bed's
    own clients."""

    def __init__(self, name: str, inspect_raw: InspectRaw, reg: Registry | None = None) -> None:
        self.name = name
        self.reg = reg
        self.raw = inspect_raw(name, PLAIN) if reg is not None else inspect_raw(name)
        self.manifest = json.loads(self.raw)
        self.digest = _sha(self.raw)

    def blob(self, digest: str) -> bytes:
        if self.reg is not None:
            repo = self.name.removeprefix(f"docker://{self.reg.host}/").rsplit(":", 1)[0].split("@")[0]
            data = Client(self.reg).get_blob(repo, digest)
        elif self.name.startswith("dir:"):
            data = (Path(self.name[4:]) / digest.split(":")[1]).read_bytes()
        else:
            data = (Path(self.name[4:].split(":")[0]) / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
        assert _sha(data) == digest
        return data

    @property
    def layer_types(self) -> list[str]:
        return [layer["mediaType"] for layer in self.manifest["layers"]]

    @property
    def config(self) -> bytes:
        return self.blob(self.manifest["config"]["digest"])

    def contents(self) -> list[str]:
        """The uncompressed digest of every layer (what the config's diff_ids must list)."""
        return [_sha(_plain(self.blob(layer["digest"]))) for layer in self.manifest["layers"]]


# -- manifest format conversion: byte for byte what skopeo writes ----------------------------------


CONVERSIONS = [
    pytest.param("docker_image", ("--format", "oci"), id="v2s2-to-oci"),
    pytest.param("alpine", ("--format", "v2s2"), id="oci-to-v2s2"),
    pytest.param("oci_index", ("--all", "--format", "v2s2"), id="index-to-list"),
    pytest.param("docker_list", ("--all", "-f", "oci"), id="list-to-index"),
    pytest.param("docker_list", ("--format", "oci"), id="list-one-platform-to-oci"),
    pytest.param("alpine", ("--format", "oci"), id="oci-unchanged"),
]


@pytest.mark.parametrize(("which", "flags"), CONVERSIONS)
def test_format_conversion_writes_skopeos_bytes(which: str, flags: tuple[str, ...], seeded_images: SeededImages,
                                                registry2: Registry, skopeo: Skopeo, inspect_raw: InspectRaw,
                                                tmp_path: Path) -> None:
    image = getattr(seeded_images, which)
    src = seeded_images.registry.ref(image.repo, image.tag or "")
    skopeo("copy", *TLS, *flags, src, registry2.ref("by-skopeo", "v1"))
    _mirror(*flags, "--digestfile", str(tmp_path / "digest"), src, registry2.ref("by-mirror", "v1"))
    theirs = Read(registry2.ref("by-skopeo", "v1"), inspect_raw, registry2)
    ours = Read(registry2.ref("by-mirror", "v1"), inspect_raw, registry2)
    assert ours.raw == theirs.raw
    assert (tmp_path / "digest").read_text() == ours.digest
    if "manifests" in ours.manifest:  # every instance too, and each is an image of the new format
        for entry in ours.manifest["manifests"]:
            child = inspect_raw(registry2.ref("by-mirror", entry["digest"]), PLAIN)
            assert child == inspect_raw(registry2.ref("by-skopeo", entry["digest"]), PLAIN)
            assert json.loads(child)["mediaType"] == entry["mediaType"]
    if flags[-1] == "oci" and which == "alpine":
        assert ours.raw == image.manifest  # nothing to convert: the source's bytes
    # Each reads (and verifies every blob of) what the other wrote.
    skopeo("copy", "--all", "--src-tls-verify=false", ours.name, f"dir:{tmp_path / 'check-skopeo'}")
    run_mirror("copy", "--all", "--src-tls-verify=false", theirs.name, f"dir:{tmp_path / 'check-mirror'}")
    assert Read(f"dir:{tmp_path / 'check-mirror'}", inspect_raw).raw == theirs.raw


def test_format_into_layouts_and_dirs_as_skopeo(seeded_images: SeededImages, skopeo: Skopeo,
                                                inspect_raw: InspectRaw, tmp_path: Path) -> None:
    """An OCI layout takes OCI manifests, so a Docker image is converted unless ``--format v2s2`` is
    forced, which skopeo obeys by storing the Docker manifest in the layout (its own reader then
    cannot name it: skopeo 1.9 says "no descriptor found for reference"); dir: takes any format."""
    src = seeded_images.registry
    alpine, docker = seeded_images.alpine, seeded_images.docker_image
    for name, image, flags in (("implicit", docker, ()), ("forced-v2s2", alpine, ("--format", "v2s2")),
                               ("dir-oci", docker, ("--format", "oci"))):
        ref = src.ref(image.repo, image.tag or "")
        dst = f"dir:{tmp_path / name}" if name.startswith("dir") else f"oci:{tmp_path / name}:v1"
        skopeo("copy", "--src-tls-verify=false", *flags, ref, dst.replace(name, name + "-skopeo"))
        run_mirror("copy", "-q", "--src-tls-verify=false", *flags, ref, dst)
        if dst.startswith("oci:"):
            index = json.loads((tmp_path / name / "index.json").read_bytes())
            theirs = json.loads((tmp_path / (name + "-skopeo") / "index.json").read_bytes())
            assert index["manifests"] == theirs["manifests"]
            entry = index["manifests"][0]
            stored = (tmp_path / name / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_bytes()
            assert json.loads(stored)["mediaType"] == (DOCKER_MANIFEST if flags else OCI_MANIFEST)
        else:
            assert Read(dst, inspect_raw).raw == Read(dst.replace(name, name + "-skopeo"), inspect_raw).raw


def test_sync_format_matches_skopeo_sync(seeded_images: SeededImages, registry2: Registry, skopeo: Skopeo,
                                         inspect_raw: InspectRaw, tmp_path: Path) -> None:
    """``sync --format`` converts every image as ``copy --format`` does, as skopeo sync does; the
    digest file names the converted digests; a second run leaves the same manifests."""
    listing = seeded_images.docker_list
    source = f"{seeded_images.registry.host}/{listing.repo}"
    skopeo("sync", "--all", "--format", "oci", "--src", "docker", "--dest", "docker", "--src-tls-verify=false",
           "--dest-tls-verify=false", source, f"{registry2.host}/skopeo")
    for run in (1, 2):
        run_mirror("sync", "-q", "--all", "--format", "oci", "--src", "docker", "--dest", "docker",
                   "--src-tls-verify=false", "--dest-tls-verify=false", "--digestfile", str(tmp_path / "digests"),
                   source, f"{registry2.host}/mirror")
        ours = Read(registry2.ref(f"mirror/{listing.repo.rsplit('/', 1)[1]}", listing.tag), inspect_raw, registry2)
        theirs = Read(registry2.ref(f"skopeo/{listing.repo.rsplit('/', 1)[1]}", listing.tag), inspect_raw,
                      registry2)
        assert ours.raw == theirs.raw, run
        assert ours.manifest["mediaType"] == "application/vnd.oci.image.index.v1+json"
        assert (tmp_path / "digests").read_text().split()[0] == ours.digest


# -- layer compression --------------------------------------------------------------------------


def _plain_image(reg: Registry) -> PushedImage:
    """An OCI image whose first layer is an uncompressed tar."""
    return push_image(reg, "plain/oci", "v1", layers=[_tar_layer(1, 64 << 10), make_layer(2, 3000)])


def test_uncompressed_layers_are_compressed_for_registries_and_layouts(
        seeded_images: SeededImages, registry: Registry, registry2: Registry, skopeo: Skopeo,
        inspect_raw: InspectRaw, tmp_path: Path) -> None:
    """skopeo's default: a destination that wants compressed layers (a registry, an OCI layout) gets
    uncompressed ones gzipped; dir: keeps them; ``--dest-oci-accept-uncompressed-layers`` keeps them
    in a layout. The config (diff_ids) is unchanged, the layer contents identical to skopeo's."""
    image = _plain_image(registry)
    src = registry.ref(image.repo, "v1")
    diff_ids = json.loads(image.config)["rootfs"]["diff_ids"]
    for tool, name in (("skopeo", "by-skopeo"), ("mirror", "by-mirror")):
        if tool == "skopeo":
            skopeo("copy", *TLS, src, registry2.ref(name, "v1"))
        else:
            _mirror(src, registry2.ref(name, "v1"))
        got = Read(registry2.ref(name, "v1"), inspect_raw, registry2)
        assert got.layer_types == [OCI_GZIP, OCI_GZIP], tool
        assert got.config == image.config and got.contents() == diff_ids, tool
        assert got.manifest["layers"][1]["digest"] == image.layers[1].digest  # already compressed: as it was
    skopeo("copy", "--src-tls-verify=false", registry2.ref("by-mirror", "v1"), f"dir:{tmp_path / 'verified'}")
    accept = ("--dest-oci-accept-uncompressed-layers",)
    for flags, expected in (((), [OCI_GZIP, OCI_GZIP]), (accept, [OCI_TAR, OCI_GZIP])):
        layout = tmp_path / f"layout{len(flags)}"
        skopeo("copy", "--src-tls-verify=false", *flags, src, f"oci:{layout}-skopeo:v1")
        run_mirror("copy", "-q", "--src-tls-verify=false", *flags, src, f"oci:{layout}:v1")
        for path in (layout, Path(f"{layout}-skopeo")):
            got = Read(f"oci:{path}:v1", inspect_raw)
            assert got.layer_types == expected, (path, flags)
    run_mirror("copy", "-q", "--src-tls-verify=false", src, f"dir:{tmp_path / 'dir'}")
    assert Read(f"dir:{tmp_path / 'dir'}", inspect_raw).raw == image.manifest


COMPRESSIONS = [
    # (destination kind, flags, expected manifest type, expected layer types)
    pytest.param("dir", ("--dest-compress",), OCI_MANIFEST, [OCI_GZIP, OCI_GZIP], id="dir-compress"),
    pytest.param("dir", ("--dest-decompress",), OCI_MANIFEST, [OCI_TAR, OCI_TAR], id="dir-decompress"),
    pytest.param("dir", ("--dest-compress", "--dest-compress-format", "zstd", "--dest-compress-level", "19"),
                 OCI_MANIFEST, [OCI_ZSTD, OCI_ZSTD], id="dir-zstd-level"),
    pytest.param("dir", ("--dest-compress-format", "zstd"), OCI_MANIFEST, [OCI_TAR, OCI_GZIP],
                 id="dir-format-without-compress-changes-nothing"),
    pytest.param("docker", ("--dest-compress-format", "zstd"), OCI_MANIFEST, [OCI_ZSTD, OCI_ZSTD],
                 id="registry-zstd"),
]


@pytest.mark.parametrize(("kind", "flags", "manifest_type", "layer_types"), COMPRESSIONS)
def test_compression_flags_as_skopeo(kind: str, flags: tuple[str, ...], manifest_type: str, layer_types: list[str],
                                     registry: Registry, registry2: Registry, skopeo: Skopeo,
                                     inspect_raw: InspectRaw, tmp_path: Path) -> None:
    image = _plain_image(registry)
    src = registry.ref(image.repo, "v1")
    diff_ids = json.loads(image.config)["rootfs"]["diff_ids"]
    results = []
    for tool in ("skopeo", "mirror"):
        dst = f"dir:{tmp_path / tool}" if kind == "dir" else registry2.ref(tool, "v1")
        if tool == "skopeo":
            skopeo("copy", *TLS, *flags, src, dst)
        else:
            _mirror(*flags, src, dst)
        got = Read(dst, inspect_raw, registry2 if kind == "docker" else None)
        assert (got.manifest["mediaType"], got.layer_types) == (manifest_type, layer_types), tool
        assert got.config == image.config and got.contents() == diff_ids, tool
        results.append(got)
    theirs, ours = results
    if layer_types == [OCI_TAR, OCI_GZIP]:
        assert ours.raw == theirs.raw == image.manifest
    # Each reads, and verifies, what the other wrote.
    skopeo("copy", "--src-tls-verify=false", ours.name, f"dir:{tmp_path / 'skopeo-reads'}")
    run_mirror("copy", "-q", "--src-tls-verify=false", theirs.name, f"dir:{tmp_path / 'mirror-reads'}")
    assert Read(f"dir:{tmp_path / 'mirror-reads'}", inspect_raw).raw == theirs.raw


def test_docker_image_to_zstd_becomes_oci_and_back(seeded_images: SeededImages, registry: Registry,
                                                   registry2: Registry, skopeo: Skopeo, inspect_raw: InspectRaw,
                                                   tmp_path: Path) -> None:
    """Docker schema2 has no zstd layer type: asked for zstd, skopeo 1.9 falls back to OCI (config
    converted as for ``--format oci``); so does mirror. Recompressing zstd to gzip with ``--format
    v2s2`` then gives a Docker image again. skopeo 1.9 refuses that last step (it converts the
    manifest before the layer edits); containers/image now recompresses first, and mirror does so.
    Sources and destinations are different registries: skopeo 1.9 would otherwise reuse the
    destination's copy of a source layer instead of recompressing it (fixed in later c/image).
    Written to a docker-archive, the zstd layers are decompressed, as skopeo does."""
    docker = seeded_images.docker_image
    src = seeded_images.registry.ref(docker.repo, docker.tag or "")
    skopeo("copy", *TLS, "--dest-compress-format", "zstd", src, registry.ref("zstd/skopeo", "v1"))
    _mirror("--dest-compress-format", "zstd", src, registry.ref("zstd/mirror", "v1"))
    theirs, ours = (Read(registry.ref(f"zstd/{tool}", "v1"), inspect_raw, registry) for tool in ("skopeo", "mirror"))
    for got in (theirs, ours):
        assert (got.manifest["mediaType"], got.layer_types) == (OCI_MANIFEST, [OCI_ZSTD, OCI_ZSTD])
    assert ours.manifest["config"] == theirs.manifest["config"]  # the same converted OCI config
    diff_ids = json.loads(docker.config)["rootfs"]["diff_ids"]
    assert ours.contents() == theirs.contents() == diff_ids
    _mirror("--format", "v2s2", "--dest-compress-format", "gzip", ours.name, registry2.ref("back", "v1"))
    back = Read(registry2.ref("back", "v1"), inspect_raw, registry2)
    assert (back.manifest["mediaType"], back.layer_types) == (DOCKER_MANIFEST, [DOCKER_GZIP, DOCKER_GZIP])
    assert back.contents() == diff_ids and back.manifest["config"]["digest"] == ours.manifest["config"]["digest"]
    skopeo("copy", "--src-tls-verify=false", back.name, f"dir:{tmp_path / 'verified'}")
    # A docker save archive holds plain layers: zstd ones are decompressed (c/image's Decompress).
    archive = tmp_path / "zstd.tar"
    run_mirror("copy", "-q", "--src-tls-verify=false", ours.name, f"docker-archive:{archive}:zstd/image:v1")
    saved = json.loads(skopeo("inspect", "--config", "--raw", f"docker-archive:{archive}").stdout)
    assert saved["rootfs"]["diff_ids"] == diff_ids
    skopeo("copy", f"docker-archive:{archive}", f"dir:{tmp_path / 'from-archive'}")


# -- what cannot change: one line, nothing written -----------------------------------------------


def test_refusals_are_one_line_and_write_nothing(seeded_images: SeededImages, registry: Registry,
                                                 registry2: Registry, skopeo: Skopeo, tmp_path: Path) -> None:
    """Each refusal is decided before any blob moves, in containers/image's words, and the
    destination gets no tag. skopeo 1.9 with ``--preserve-digests`` silently keeps a single image's
    format (``--format`` ignored, "hoping for the best" in c/image's words) while it refuses for a
    list; mirror refuses both, with the list's message (a documented deviation)."""
    src = seeded_images.registry
    docker, alpine, listing = seeded_images.docker_image, seeded_images.alpine, seeded_images.docker_list
    zstd = registry.ref("zstd", "v1")
    _mirror("--dest-compress-format", "zstd", src.ref(alpine.repo, alpine.tag or ""), zstd)
    signed = tmp_path / "signed"
    run_mirror("copy", "-q", "--src-tls-verify=false", src.ref(docker.repo, docker.tag or ""), f"dir:{signed}")
    (signed / "signature-1").write_bytes(b"an opaque signature")
    # args, mirror's words, whether skopeo refuses too (its words if they differ)
    cases: list[tuple[tuple[str, ...], str, bool | str]] = [
        (("--all", "--preserve-digests", "--format", "oci", src.ref(listing.repo, listing.tag)),
         'Manifest list must be converted to type "application/vnd.oci.image.index.v1+json" to be written to '
         'destination, but we cannot modify it: "Instructed to preserve digests"', True),
        (("--preserve-digests", "--format", "oci", src.ref(docker.repo, docker.tag or "")),
         'cannot modify it: "Instructed to preserve digests"', False),
        (("--format", "v2s2", "--dest-compress-format", "zstd", src.ref(docker.repo, docker.tag or "")),
         "compression using zstd required together with format "
         "application/vnd.docker.distribution.manifest.v2+json, which does not support it",
         "zstd compression is not supported for type"),  # skopeo 1.9: after the upload; c/image now: this
        (("--format", "v2s2", zstd),
         'Error during manifest conversion: "application/vnd.oci.image.layer.v1.tar+zstd": '
         "zstd compression is not supported for docker images", True),
        (("--preserve-digests", "--dest-compress-format", "zstd", src.ref(alpine.repo, alpine.tag or "")),
         'Copying this image would require changing layer representation, which we cannot do: '
         '"Instructed to preserve digests"', False),
        (("--format", "v2s1", src.ref(docker.repo, docker.tag or "")), "--format v2s1 is not supported", False),
        (("--referrers", "--format", "oci", src.ref(docker.repo, docker.tag or "")),
         "--referrers cannot be combined with --format", False),  # a mirror extension: referrers name digests
        (("--format", "v3", src.ref(docker.repo, docker.tag or "")),
         "unknown format \"v3\". Choose one of the supported formats: 'oci', 'v2s1', or 'v2s2'", True),
        (("--dest-compress-format", "brotli", src.ref(docker.repo, docker.tag or "")),
         'cannot find compressor for "brotli"', True),
        (("--dest-compress-format", "gzip", "--dest-compress-level", "42", src.ref(docker.repo, docker.tag or "")),
         "gzip: invalid compression level: 42", False),
    ]
    for i, (args, message, skopeo_too) in enumerate(cases):
        dst = registry2.ref(f"refused{i}", "v1")
        proc = _mirror(*args, dst, check=False)
        assert_one_line_error(proc, message)
        assert Client(registry2).request("GET", f"/v2/refused{i}/tags/list", ok=(200, 404)).status == 404, args
        if skopeo_too:
            theirs = skopeo("copy", *TLS, *args, registry2.ref(f"skopeo-refused{i}", "v1"), check=False)
            said = skopeo_too if isinstance(skopeo_too, str) else message
            assert theirs.returncode != 0 and said in theirs.stderr.replace('\\"', '"'), theirs.stderr
    # dir: takes --dest-compress and --dest-decompress, but not both (skopeo's words).
    both = ("--dest-compress", "--dest-decompress", src.ref(docker.repo, docker.tag or ""))
    assert_one_line_error(_mirror(*both, f"dir:{tmp_path / 'both'}", check=False),
                          "Cannot compress and decompress at the same time")
    assert not (tmp_path / "both").exists()
    # Signatures sign the manifest as it is: a signed image is not converted (dir: stores signatures).
    assert_one_line_error(_mirror("--format", "oci", f"dir:{signed}", f"dir:{tmp_path / 'resigned'}", check=False),
                          'cannot modify it: "Would invalidate signatures"')
    assert not (tmp_path / "resigned").exists()
    # A digest destination cannot receive a converted image.
    by_digest = registry2.ref("pinned", docker.digest)
    assert_one_line_error(_mirror("--format", "oci", src.ref(docker.repo, docker.tag or ""), by_digest, check=False),
                          'cannot modify it: "Destination specifies a digest"')


def test_transcoder_reads_concatenated_streams_and_refuses_truncated_ones() -> None:
    """pgzip and zstd:chunked write several gzip members / zstd frames per layer: all are read."""
    from mirror.core.compression import CompressionError, Transcoder
    from mirror.errors import MirrorError

    parts = [b"first part " * 1000, b"second part " * 1000]
    for stream in (gzip.compress(parts[0]) + gzip.compress(parts[1]),
                   zstandard.ZstdCompressor().compress(parts[0]) + zstandard.ZstdCompressor().compress(parts[1])):
        for target in (None, "gzip", "zstd"):
            codec = Transcoder(target)
            out = b"".join(codec.feed(stream[i:i + 777]) for i in range(0, len(stream), 777)) + codec.finish()
            assert _plain(out) == b"".join(parts), target
        codec = Transcoder(None)
        codec.feed(stream[:-3])  # the second member / frame cut short
        with pytest.raises(CompressionError) as err:
            codec.finish()
        assert isinstance(err.value, MirrorError) and "truncated" in str(err.value)


def test_a_large_layer_is_converted_in_constant_memory(registry: Registry, registry2: Registry, inspect_raw: InspectRaw,
                                                       tmp_path: Path) -> None:
    """A 128 MiB incompressible plain layer, zstd-compressed on its way to a registry: the peak RSS
    of the mirror process stays below the layer's size (it is streamed through a temp file under
    --tmpdir, which is gone afterwards), and the result holds the same bytes uncompressed."""
    import os
    import sys

    size = 128 << 20
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("big.bin")
        info.size = size
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    layer = buf.getvalue()
    image = push_image(registry, "big/plain", "v1", layers=[layer])
    del buf
    spool = tmp_path / "spool"
    spool.mkdir()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), MIRROR_STATE="none")
    rss = tmp_path / "rss"
    # GNU time reports the command's own peak (wait4's would include this process's memory at fork).
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss), sys.executable, "-m", "mirror", "copy", "-q",
                           *TLS, "--tmpdir", str(spool), "--dest-compress-format", "zstd",
                           registry.ref("big/plain", "v1"), registry2.ref("big/zstd", "v1")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    peak = int(rss.read_text().split()[-1]) * 1024
    assert peak < size, f"peak RSS {peak >> 20} MiB"
    assert list(spool.iterdir()) == []
    got = Read(registry2.ref("big/zstd", "v1"), inspect_raw, registry2)
    assert got.layer_types == [OCI_ZSTD]
    assert got.contents() == [_sha(layer)] == json.loads(image.config)["rootfs"]["diff_ids"]


def test_queued_sync_workers_convert_as_asked(seeded_images: SeededImages, registry2: Registry, skopeo: Skopeo,
                                              inspect_raw: InspectRaw, tmp_path: Path, postgres: Postgres,
                                              queue_url: str) -> None:
    """``sync --queue --format oci``: the run's conversion travels with its options, so a ``mirror
    worker`` writes what ``copy --format oci`` (and skopeo) writes."""
    docker = seeded_images.docker_image
    src = seeded_images.registry
    skopeo("copy", *TLS, "--format", "oci", src.ref(docker.repo, docker.tag or ""), registry2.ref("skopeo", "v1"))
    with run_workers(postgres, queue_url, 1, tmp_path / "workers", "--dest-tls-verify=false", "--lease", "3s"):
        run_mirror("sync", "-q", "--format", "oci", "--src", "docker", "--dest", "docker", "--src-tls-verify=false",
                   "--dest-tls-verify=false", "--queue", queue_url, f"{src.host}/{docker.repo}", f"{registry2.host}/q")
    ours = Read(registry2.ref("q/docker", docker.tag or ""), inspect_raw, registry2)
    assert ours.raw == Read(registry2.ref("skopeo", "v1"), inspect_raw, registry2).raw
    assert ours.manifest["mediaType"] == OCI_MANIFEST
