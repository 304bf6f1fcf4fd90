"""Docker-format images written into OCI layouts leave exactly skopeo's blobs: every blob referenced,
none left over (the Docker config is converted and only its OCI form is stored)."""

from __future__ import annotations

import json
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from support.images import Client, PushedImage, PushedIndex, SeededImages, push_image, push_index
from support.mirror_cli import run_mirror
from support.registry import Registry

Skopeo = Callable[..., subprocess.CompletedProcess[str]]
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")


def _blob_path(digest: str) -> str:
    algorithm, hex_ = digest.split(":")
    return f"blobs/{algorithm}/{hex_}"


def _referenced(read: Callable[[str], bytes]) -> set[str]:
    """Every blob reachable from index.json: manifests, their children, configs and layers."""
    seen: set[str] = set()
    todo = [entry for entry in json.loads(read("index.json"))["manifests"]]
    while todo:
        desc = todo.pop()
        if desc["digest"] in seen:
            continue
        seen.add(desc["digest"])
        manifest = json.loads(read(_blob_path(desc["digest"])))
        if desc["mediaType"] in INDEX_TYPES:
            todo += manifest["manifests"]
        else:
            seen.update(d["digest"] for d in [manifest["config"], *manifest["layers"]])
    return {_blob_path(d) for d in seen}


def _layout_blobs(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in (root / "blobs").rglob("*") if p.is_file()}


def _check_layout(root: Path) -> None:
    """No blob that index.json does not reach, and every reachable blob present."""
    assert _layout_blobs(root) == _referenced(lambda name: (root / name).read_bytes())


def _copy(*args: str) -> None:
    run_mirror("copy", "--src-tls-verify=false", *args)


@pytest.mark.parametrize(("image_name", "flags"), [
    ("docker_image", ()), ("docker_list", ("--multi-arch", "all")), ("docker_list", ()),
], ids=["docker-image", "docker-list-all", "docker-list-one"])
def test_copy_docker_into_oci_layout_has_skopeo_blobs(image_name: str, flags: tuple[str, ...],
                                                      seeded_images: SeededImages, skopeo: Skopeo,
                                                      tmp_path: Path) -> None:
    image: PushedImage | PushedIndex = getattr(seeded_images, image_name)
    ref = seeded_images.registry.ref(image.repo, image.tag or "")
    theirs, ours = tmp_path / "skopeo", tmp_path / "mirror"
    skopeo("copy", *flags, "--src-tls-verify=false", ref, f"oci:{theirs}:v1")
    _copy(*flags, ref, f"oci:{ours}:v1")
    # The blobs/ trees are identical file for file, byte for byte (diff -r prints nothing).
    diff = subprocess.run(["diff", "-r", str(theirs / "blobs"), str(ours / "blobs")], capture_output=True, text=True)
    assert (diff.returncode, diff.stdout) == (0, "")
    _check_layout(ours)
    # index.json names the same manifest under the same ref.
    entries = [json.loads((root / "index.json").read_bytes())["manifests"] for root in (theirs, ours)]
    assert entries[0] == entries[1]


def test_copy_docker_list_into_oci_archive_has_no_stray_blob(seeded_images: SeededImages, tmp_path: Path) -> None:
    listing = seeded_images.docker_list
    archive = tmp_path / "list.tar"
    _copy("--all", seeded_images.registry.ref(listing.repo, listing.tag), f"oci-archive:{archive}:v1")
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}

        def read(name: str) -> bytes:
            f = tar.extractfile(members[name])
            assert f is not None
            return f.read()

        assert {n for n in members if n.startswith("blobs/")} == _referenced(read)


def test_sync_docker_tags_into_one_layout_leaves_no_stray_blob(registry: Registry, tmp_path: Path) -> None:
    """Two tags of one Docker image, a second image, and two tags of a Docker list (``--all``): the
    second tag's config and instances were brought in by the first (the engine skips them), yet its
    manifest still converts, and nothing unreferenced stays."""
    client = Client(registry)
    first = push_image(registry, "team/app", "v1", fmt="docker", seed=5, client=client)
    client.put_manifest("team/app", "v1-alias", first.manifest, first.media_type)
    push_image(registry, "team/app", "v2", fmt="docker", seed=6, client=client)
    listing = push_index(registry, "team/multi", "v1", fmt="docker", seed=3, client=client)
    client.put_manifest("team/multi", "v1-alias", listing.manifest, listing.media_type)
    layout = tmp_path / "layout"
    for _ in range(2):  # the second run (nothing new to copy) leaves nothing behind either
        for repo in ("team/app", "team/multi"):
            run_mirror("sync", "--all", "--src", "docker", "--dest", "oci", "--src-tls-verify=false",
                       f"{registry.host}/{repo}", str(layout))
        names = {e["annotations"]["org.opencontainers.image.ref.name"]
                 for e in json.loads((layout / "index.json").read_bytes())["manifests"]}
        assert names == {"app:v1", "app:v1-alias", "app:v2", "multi:v1", "multi:v1-alias"}
        _check_layout(layout)
