"""`mirror copy` between real registries, checked with skopeo as the oracle."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from support.images import SeededImages, push_image
from support.mirror_cli import assert_one_line_error, run_mirror
from support.registry import Registry

Skopeo = Callable[..., subprocess.CompletedProcess[str]]
InspectRaw = Callable[..., bytes]
PLAIN = "--tls-verify=false"


def _copy(src: str, dst: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return run_mirror("copy", "--src-tls-verify=false", "--dest-tls-verify=false", *flags, src, dst)


def test_copy_all_keeps_index_and_children_byte_identical(
        seeded_images: SeededImages, registry2: Registry, inspect_raw: InspectRaw, tmp_path: Path) -> None:
    src = seeded_images.registry
    for index, target in ((seeded_images.oci_index, "copy/oci"), (seeded_images.docker_list, "copy/docker")):
        digestfile = tmp_path / f"{target.replace('/', '_')}.digest"
        _copy(src.ref(index.repo, index.tag), registry2.ref(target, "v1"), "--all",
              "--digestfile", str(digestfile))
        assert digestfile.read_text() == index.digest
        assert inspect_raw(registry2.ref(target, "v1"), PLAIN) == inspect_raw(src.ref(index.repo, index.tag), PLAIN)
        for child in index.children:
            assert inspect_raw(registry2.ref(target, child.digest), PLAIN) == child.manifest
        # skopeo can read everything mirror wrote, re-verifying every blob digest on the way.
        subprocess.run(["skopeo", "--insecure-policy", "copy", "--all", "--src-tls-verify=false",
                        registry2.ref(target, "v1"), f"dir:{tmp_path / target.replace('/', '_')}"],
                       check=True, capture_output=True)


def test_single_arch_copy_picks_platform(seeded_images: SeededImages, registry2: Registry,
                                         inspect_raw: InspectRaw) -> None:
    index = seeded_images.oci_index
    by_arch = {child.platform[1]: child for child in index.children}
    src = seeded_images.registry.ref(index.repo, index.tag)
    for arch in ("amd64", "arm64"):
        dst = registry2.ref("single", arch)
        out = _copy(src, dst, "--override-arch", arch)
        assert "Writing manifest to image destination" in out.stdout
        assert inspect_raw(dst, PLAIN) == by_arch[arch].manifest
    # No image for the requested platform: a clear one-line error, and nothing written.
    proc = run_mirror("copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--override-os", "windows",
                      src, registry2.ref("single", "windows"), check=False)
    assert_one_line_error(proc, "windows/")
    assert run_mirror("inspect", PLAIN, "--raw", registry2.ref("single", "windows"), check=False).returncode == 2


def test_mirror_reads_what_skopeo_wrote_and_skips_present_blobs(
        seeded_images: SeededImages, registry2: Registry, skopeo: Skopeo, inspect_raw: InspectRaw) -> None:
    image = seeded_images.docker_image
    src = seeded_images.registry
    skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false",
           src.ref(image.repo, image.tag or ""), registry2.ref("by-skopeo", "v1"))
    raw = run_mirror("inspect", PLAIN, "--raw", registry2.ref("by-skopeo", "v1")).stdout
    assert raw.encode() == image.manifest
    before = len(registry2.access_log_requests())
    # Same image again into a different repo of the same registry: every blob is mounted, none uploaded.
    out = _copy(registry2.ref("by-skopeo", "v1"), registry2.ref("mounted", "v1"), "--quiet")
    assert out.stdout == ""
    requests = registry2.access_log_requests()[before:]
    assert not [r for r in requests if r[0] == "PATCH"], requests
    mounts = [r for r in requests if r[0] == "POST" and "mount=" in r[1]]
    assert len(mounts) == len(image.layers) + 1 and all(r[2] == 201 for r in mounts), requests
    # And once more onto itself: blobs exist (HEAD 200), nothing is posted at all.
    before = len(registry2.access_log_requests())
    _copy(registry2.ref("by-skopeo", "v1"), registry2.ref("mounted", "v2"))
    requests = registry2.access_log_requests()[before:]
    assert not [r for r in requests if r[0] in ("POST", "PATCH")], requests
    assert inspect_raw(registry2.ref("mounted", "v2"), PLAIN) == image.manifest


def test_corrupt_blob_fails_and_publishes_nothing(registry: Registry, registry2: Registry) -> None:
    from support.proxy import RegistryProxy

    image = push_image(registry, "victim/app", "v1", seed=77)
    with RegistryProxy(registry, corrupt_blob={image.layers[0].digest}) as proxy:
        proc = run_mirror("copy", "--src-tls-verify=false", "--dest-tls-verify=false",
                          f"docker://{proxy.host}/victim/app:v1", registry2.ref("victim/app", "v1"), check=False)
    assert_one_line_error(proc, "digest", image.layers[0].digest)
    gone = run_mirror("inspect", PLAIN, "--raw", registry2.ref("victim/app", "v1"), check=False)
    assert gone.returncode == 2, gone.stderr
    assert [r for r in registry2.access_log_requests() if r[0] == "PUT" and "/manifests/" in r[1]] == []
