"""docker-archive:, docker-daemon: and containers-storage: through the real CLI, with skopeo and podman
as the oracles. These transports store one image in their own format: what must survive a round
trip is the image config (the image ID) and the layer contents (uncompressed digests = diff_ids)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
from support.images import PushedImage, SeededImages, get_blob, get_manifest
from support.mirror_cli import assert_one_line_error, run_mirror
from support.podman import PODMAN, Podman, start_podman
from support.podman import api as daemon_api
from support.registry import Registry
from support.tlsforward import tls_forwarder, write_client_dir

Skopeo = Callable[..., subprocess.CompletedProcess[str]]
needs_podman = pytest.mark.skipif(PODMAN is None, reason="podman is not installed (scripts/test installs it)")


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _copy(src: str, dst: str, *flags: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_mirror("copy", "--src-tls-verify=false", "--dest-tls-verify=false", *flags, src, dst, check=check)


def _diff_ids(image: PushedImage) -> list[str]:
    return [str(d) for d in json.loads(image.config)["rootfs"]["diff_ids"]]


def _check_registry_copy(reg: Registry, repo: str, image: PushedImage) -> None:
    """The copy at ``reg`` has the same config bytes (image ID) and the same uncompressed layers."""
    raw, _media_type, _digest = get_manifest(reg, repo, "v1")
    manifest = json.loads(raw)
    assert manifest["config"]["digest"] == image.config_digest
    # As skopeo, the uncompressed layers of docker save are gzipped on the way to a registry.
    assert {layer["mediaType"] for layer in manifest["layers"]} == {"application/vnd.docker.image.rootfs.diff.tar.gzip"}
    assert get_blob(reg, repo, image.config_digest) == image.config
    layers = [get_blob(reg, repo, layer["digest"]) for layer in manifest["layers"]]
    plain = [gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data for data in layers]
    assert [_sha(data) for data in plain] == _diff_ids(image)


def _members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return {m.name: m for m in tar}


def _read(path: Path, name: str) -> bytes:
    with tarfile.open(path) as tar:
        member = tar.extractfile(name)
        assert member is not None
        return member.read()


@pytest.mark.parametrize("which", ["alpine", "docker_image"])
def test_docker_archive_round_trip_keeps_image_id_and_layers(
        which: str, seeded_images: SeededImages, registry2: Registry, skopeo: Skopeo, tmp_path: Path) -> None:
    image: PushedImage = getattr(seeded_images, which)
    archive = tmp_path / "image.tar"
    _copy(seeded_images.registry.ref(image.repo, image.tag or ""), f"docker-archive:{archive}:foo/bar:v1",
          "--additional-tag", "extra:tag")
    # docker save's layout, as skopeo 1.9 writes it: uncompressed <diff_id>.tar layers, the config byte
    # for byte as <hex>.json, legacy <id>/layer.tar symlinks, manifest.json and repositories.
    members = _members(archive)
    diff_ids = _diff_ids(image)
    assert json.loads(_read(archive, "manifest.json")) == [{
        "Config": image.config_digest.split(":")[1] + ".json",
        "RepoTags": ["docker.io/foo/bar:v1", "docker.io/library/extra:tag"],
        "Layers": [d.split(":")[1] + ".tar" for d in diff_ids]}]
    assert _read(archive, image.config_digest.split(":")[1] + ".json") == image.config
    for diff_id in diff_ids:
        assert _sha(_read(archive, diff_id.split(":")[1] + ".tar")) == diff_id
    links = [m for m in members.values() if m.issym()]
    assert len(links) == len(diff_ids) and all(m.name.endswith("/layer.tar") for m in links)
    repositories = json.loads(_read(archive, "repositories"))
    assert set(repositories) == {"docker.io/foo/bar", "docker.io/library/extra"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mirror-tmp")]
    # What mirror wrote, skopeo reads: same config (image ID), and a full verified copy.
    theirs = json.loads(skopeo("inspect", "--raw", f"docker-archive:{archive}").stdout)
    assert theirs["config"]["digest"] == image.config_digest
    assert skopeo("inspect", "--config", "--raw", f"docker-archive:{archive}:foo/bar:v1").stdout.encode() \
        == image.config
    skopeo("copy", f"docker-archive:{archive}", f"dir:{tmp_path / 'by-skopeo'}")
    # list-tags: skopeo's shape (no Repository), every RepoTag normalised; a REF part is ignored.
    for ref in ("", ":extra:tag"):
        listed = json.loads(run_mirror("list-tags", f"docker-archive:{archive}{ref}").stdout)
        assert listed == json.loads(skopeo("list-tags", f"docker-archive:{archive}{ref}").stdout) \
            == {"Tags": ["docker.io/foo/bar:v1", "docker.io/library/extra:tag"]}
    # ...and back into a registry: the image ID and the layer contents survive.
    _copy(f"docker-archive:{archive}:extra:tag", registry2.ref("back/archive", "v1"))
    _check_registry_copy(registry2, "back/archive", image)
    ours = json.loads(run_mirror("inspect", f"docker-archive:{archive}").stdout)
    assert ours["Layers"] == diff_ids


def test_mirror_reads_what_skopeo_wrote(seeded_images: SeededImages, registry2: Registry, skopeo: Skopeo,
                                        tmp_path: Path) -> None:
    image = seeded_images.docker_image
    archive = tmp_path / "skopeo.tar"
    skopeo("copy", "--src-tls-verify=false", seeded_images.registry.ref(image.repo, "v1"),
           f"docker-archive:{archive}:app/docker:v1")
    for ref in ("", ":app/docker:v1", ":docker.io/app/docker:v1", ":@0"):
        assert run_mirror("inspect", "--config", "--raw", f"docker-archive:{archive}{ref}").stdout.encode() \
            == image.config
    _copy(f"docker-archive:{archive}", registry2.ref("from-skopeo/archive", "v1"))
    _check_registry_copy(registry2, "from-skopeo/archive", image)
    # `docker save | gzip` archives are read too (decompressed to a temp file first, as skopeo does).
    compressed = tmp_path / "skopeo.tar.gz"
    compressed.write_bytes(gzip.compress(archive.read_bytes()))
    assert run_mirror("inspect", "--config", "--raw", f"docker-archive:{compressed}").stdout.encode() \
        == image.config
    # An untagged image is listed by its index, as skopeo does; other local transports have no tag list.
    untagged = tmp_path / "untagged.tar"
    skopeo("copy", "--src-tls-verify=false", seeded_images.registry.ref(image.repo, "v1"), f"docker-archive:{untagged}")
    for listed, plain in ((untagged, untagged), (archive, archive), (compressed, archive)):
        # (skopeo 1.9 fails on a gzip-compressed archive here; mirror reads it as it does for copy.)
        assert json.loads(run_mirror("list-tags", f"docker-archive:{listed}").stdout) \
            == json.loads(skopeo("list-tags", f"docker-archive:{plain}").stdout)
    assert json.loads(run_mirror("list-tags", f"docker-archive:{untagged}").stdout) == {"Tags": ["@0"]}
    assert_one_line_error(run_mirror("list-tags", f"dir:{tmp_path}", check=False), "not supported for transport")
    missing = run_mirror("inspect", f"docker-archive:{archive}:app/docker:nope", check=False)
    assert_one_line_error(missing, "no image tagged")
    assert_one_line_error(run_mirror("inspect", f"docker-archive:{archive}:@3", check=False), "no image @3")


def _docker25_archive(path: Path, image: PushedImage) -> None:
    """Docker >= 25's ``docker save``: an OCI layout, with manifest.json pointing into blobs/sha256."""
    layers = [gzip.decompress(data) for data in image.layer_data]
    files = {f"blobs/sha256/{_sha(data).split(':')[1]}": data for data in [image.config, *layers]}
    files["oci-layout"] = b'{"imageLayoutVersion":"1.0.0"}'
    files["index.json"] = b'{"schemaVersion":2,"manifests":[]}'
    files["manifest.json"] = json.dumps([{
        "Config": f"blobs/sha256/{image.config_digest.split(':')[1]}", "RepoTags": ["new:format"],
        "Layers": [f"blobs/sha256/{_sha(data).split(':')[1]}" for data in layers]}]).encode()
    _tar(path, files)


def _tar(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)


def test_reads_docker25_archives_with_an_embedded_oci_layout(seeded_images: SeededImages, registry2: Registry,
                                                            tmp_path: Path) -> None:
    image = seeded_images.alpine
    archive = tmp_path / "docker25.tar"
    _docker25_archive(archive, image)
    _copy(f"docker-archive:{archive}:new:format", registry2.ref("docker25/image", "v1"))
    _check_registry_copy(registry2, "docker25/image", image)


def test_malicious_and_broken_archives_are_refused(seeded_images: SeededImages, registry2: Registry,
                                                   tmp_path: Path) -> None:
    image = seeded_images.docker_image
    config_name = image.config_digest.split(":")[1] + ".json"

    def archive(name: str, layers: list[str], links: dict[str, str] | None = None) -> str:
        path = tmp_path / name
        files = {config_name: image.config,
                 "manifest.json": json.dumps([{"Config": config_name, "RepoTags": [], "Layers": layers}]).encode()}
        _tar(path, files, links)
        return f"docker-archive:{path}"

    dst = registry2.ref("evil/image", "v1")
    assert_one_line_error(_copy(archive("escape.tar", ["../../etc/passwd", "x.tar"]), dst, check=False),
                          "escapes the root")
    assert_one_line_error(_copy(archive("abs.tar", ["/etc/passwd", "x.tar"]), dst, check=False), "absolute")
    evil_link = archive("link.tar", ["a/layer.tar", "b/layer.tar"], {"a/layer.tar": "../../../etc/passwd"})
    assert_one_line_error(_copy(evil_link, dst, check=False), "points outside")
    abs_link = archive("abslink.tar", ["a/layer.tar", "b/layer.tar"], {"a/layer.tar": "/etc/shadow"})
    assert_one_line_error(_copy(abs_link, dst, check=False), "points outside")
    # A truncated archive (what mirror wrote, cut short).
    good = tmp_path / "good.tar"
    _copy(seeded_images.registry.ref(image.repo, "v1"), f"docker-archive:{good}")
    data = good.read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2])
    assert_one_line_error(_copy(f"docker-archive:{tmp_path / 'cut.tar'}", dst, check=False), "truncated")
    assert_one_line_error(_copy(f"docker-archive:{tmp_path / 'missing.tar'}", dst, check=False), "does not exist")
    # References: a digest cannot name an archive image; a failed write leaves nothing behind.
    bad_ref = _copy(seeded_images.registry.ref(image.repo, "v1"), f"docker-archive:{tmp_path / 'x.tar'}:a@sha256:"
                    + "0" * 64, check=False)
    assert_one_line_error(bad_ref, "digest")
    index = seeded_images.oci_index
    listed = _copy(seeded_images.registry.ref(index.repo, index.tag), f"docker-archive:{tmp_path / 'y.tar'}",
                   "--all", check=False)
    assert_one_line_error(listed, "one image")
    assert not (tmp_path / "x.tar").exists() and not (tmp_path / "y.tar").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mirror-tmp")]


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    if PODMAN is None:
        pytest.skip("podman is not installed")
    with start_podman(tmp_path_factory.mktemp("podman")) as service:
        yield service


def _podman_image(podman: Podman, name: str) -> dict[str, object]:
    data = json.loads(podman.run("image", "inspect", name))
    assert isinstance(data, list) and len(data) == 1
    result: dict[str, object] = data[0]
    return result


@needs_podman
def test_docker_daemon_both_ways_with_podman_service(podman: Podman, seeded_images: SeededImages,
                                                     registry2: Registry) -> None:
    image = seeded_images.docker_image
    _copy(seeded_images.registry.ref(image.repo, "v1"), "docker-daemon:daemon/loaded:v1",
          "--dest-daemon-host", podman.socket)
    # The image shows up through the API and in podman's own listing, with the config digest as ID.
    status, body = daemon_api(podman.socket, "/images/daemon%2Floaded:v1/json")
    assert status == 200 and json.loads(body)["Id"] == image.config_digest
    listed = podman.run("images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}")
    assert f"docker.io/daemon/loaded:v1 {image.config_digest}" in listed
    # An image loaded via podman is copied out of the daemon (DOCKER_HOST is honoured) to a registry.
    alpine = seeded_images.alpine
    podman.run("pull", "--tls-verify=false", "-q", seeded_images.registry.ref(alpine.repo, "3.19").removeprefix(
        "docker://"))
    name = f"{seeded_images.registry.host}/{alpine.repo}:3.19"
    env = {**os.environ, "DOCKER_HOST": podman.socket}
    run_mirror("copy", "--dest-tls-verify=false", f"docker-daemon:{name}", registry2.ref("from-daemon/alpine", "v1"),
               env=env)
    _check_registry_copy(registry2, "from-daemon/alpine", alpine)
    missing = _copy("docker-daemon:no/such:image", registry2.ref("x/y", "v1"), "--src-daemon-host", podman.socket,
                    check=False)
    assert_one_line_error(missing, "not found")


@needs_podman
def test_containers_storage_both_ways_with_podman(podman: Podman, seeded_images: SeededImages,
                                                  registry2: Registry) -> None:
    image = seeded_images.alpine
    _copy(seeded_images.registry.ref(image.repo, "3.19"), f"{podman.spec}storage/written:v1")
    # podman lists it under the name, with the source's manifest digest and config digest (image ID).
    info = _podman_image(podman, "storage/written:v1")
    assert info["Id"] == image.config_digest.split(":")[1]
    assert info["Digest"] == image.digest
    assert "docker.io/storage/written:v1" in info["RepoTags"]  # type: ignore[operator]
    listed = podman.run("images", "--digests", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.Digest}}")
    assert f"docker.io/storage/written:v1 {image.digest}" in listed
    # An image podman pulled is copied out by mirror to a registry (by name, and by image ID).
    docker_image = seeded_images.docker_image
    podman.run("pull", "--tls-verify=false", "-q",
               seeded_images.registry.ref(docker_image.repo, "v1").removeprefix("docker://"))
    name = f"{seeded_images.registry.host}/{docker_image.repo}:v1"
    _copy(f"{podman.spec}{name}", registry2.ref("from-storage/app", "v1"))
    _check_registry_copy(registry2, "from-storage/app", docker_image)
    _copy(f"{podman.spec}{docker_image.config_digest}", registry2.ref("from-storage/by-id", "v1"))
    _check_registry_copy(registry2, "from-storage/by-id", docker_image)
    missing = _copy(f"{podman.spec}no/such:image", registry2.ref("x/y", "v1"), check=False)
    assert_one_line_error(missing, "not found")


@needs_podman
def test_docker_daemon_over_tls_with_client_certificates(podman: Podman, seeded_images: SeededImages,
                                                         registry2: Registry, skopeo: Skopeo, tmp_path: Path) -> None:
    """``tcp://`` is HTTPS, as in containers/image: the daemon's CA and our client pair come from
    ``--*-cert-dir`` (ca.pem, cert.pem, key.pem); the daemon here refuses clients without a certificate."""
    ca = trustme.CA()
    certs = write_client_dir(ca, tmp_path / "certs")
    image = seeded_images.docker_image
    with tls_forwarder(ca, podman.socket.removeprefix("unix://")) as host:
        run_mirror("copy", "--src-tls-verify=false", "--dest-daemon-host", host, "--dest-cert-dir", str(certs),
                   seeded_images.registry.ref(image.repo, "v1"), "docker-daemon:tls/loaded:v1")
        status, body = daemon_api(podman.socket, "/images/tls%2Floaded:v1/json")
        assert status == 200 and json.loads(body)["Id"] == image.config_digest
        info = json.loads(run_mirror("inspect", "--daemon-host", host, "--cert-dir", str(certs),
                                     "docker-daemon:tls/loaded:v1").stdout)
        assert info["Layers"] == _diff_ids(image)
        run_mirror("copy", "--src-daemon-host", host, "--src-cert-dir", str(certs), "--dest-tls-verify=false",
                   "docker-daemon:tls/loaded:v1", registry2.ref("from-tls-daemon/app", "v1"))
        _check_registry_copy(registry2, "from-tls-daemon/app", image)
        # skopeo reads the same daemon with the same flags (the setup is what skopeo users have).
        skopeo("copy", "--src-daemon-host", host, "--src-cert-dir", str(certs), "docker-daemon:tls/loaded:v1",
               f"dir:{tmp_path / 'by-skopeo'}")
        # Without the CA the daemon's certificate is refused; without a client pair the daemon refuses us.
        unknown = run_mirror("inspect", "--daemon-host", host, "docker-daemon:tls/loaded:v1", check=False)
        assert_one_line_error(unknown, "certificate verification failed")
        (tmp_path / "ca-only").mkdir()
        shutil.copy(certs / "ca.pem", tmp_path / "ca-only" / "ca.pem")
        anonymous = run_mirror("inspect", "--daemon-host", host, "--cert-dir", str(tmp_path / "ca-only"),
                               "docker-daemon:tls/loaded:v1", check=False)
        assert_one_line_error(anonymous, "docker daemon at")
        half = run_mirror("inspect", "--daemon-host", host, "--cert-dir", str(tmp_path / "half"),
                          "docker-daemon:tls/loaded:v1", check=False)
        assert_one_line_error(half, "does not exist")
