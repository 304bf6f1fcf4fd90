"""dir:, oci: and oci-archive: through the real CLI, with skopeo as the oracle on both sides."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from support.images import PushedImage, PushedIndex, SeededImages
from support.mirror_cli import assert_one_line_error, run_mirror
from support.registry import Registry

Skopeo = Callable[..., subprocess.CompletedProcess[str]]
InspectRaw = Callable[..., bytes]
PLAIN = "--tls-verify=false"
DIR_VERSION = b"Directory Transport Version: 1.1\n"


def _copy(src: str, dst: str, *flags: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_mirror("copy", "--src-tls-verify=false", "--dest-tls-verify=false", *flags, src, dst, check=check)


def _local(transport: str, base: Path, name: str, ref: str = "") -> str:
    path = base / (f"{name}.tar" if transport == "oci-archive" else name)
    return f"{transport}:{path}" + (f":{ref}" if ref else "")


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _check_dir_layout(path: Path, image: PushedImage | PushedIndex) -> None:
    """skopeo's dir: format: version, manifest.json, bare-hex blobs, <hex>.manifest.json per instance."""
    assert (path / "version").read_bytes() == DIR_VERSION
    assert (path / "manifest.json").read_bytes() == image.manifest
    images = image.children if isinstance(image, PushedIndex) else (image,)
    for child in images:
        if isinstance(image, PushedIndex):
            assert (path / f"{child.digest.split(':')[1]}.manifest.json").read_bytes() == child.manifest
        assert (path / child.config_digest.split(":")[1]).read_bytes() == child.config
        for blob, data in zip(child.layers, child.layer_data, strict=True):
            assert (path / blob.digest.split(":")[1]).read_bytes() == data
    assert not [n for n in os.listdir(path.parent) if n.startswith(".mirror-tmp")]


@pytest.mark.parametrize("transport", ["dir", "oci", "oci-archive"])
def test_round_trip_registry_local_registry_is_byte_identical(
        transport: str, seeded_images: SeededImages, registry2: Registry, inspect_raw: InspectRaw,
        skopeo: Skopeo, tmp_path: Path) -> None:
    src = seeded_images.registry
    for image in (seeded_images.alpine, seeded_images.oci_index):
        local = _local(transport, tmp_path, image.repo.replace("/", "_"), "" if transport == "dir" else "v1")
        _copy(src.ref(image.repo, image.tag or ""), local, "--all")
        # What mirror wrote, skopeo reads: the same raw manifest, and a full copy verifying every blob.
        assert inspect_raw(local) == image.manifest
        skopeo("copy", "--all", local, f"dir:{tmp_path / ('check-' + image.repo.replace('/', '_'))}")
        assert run_mirror("inspect", "--raw", local).stdout.encode() == image.manifest
        if transport == "dir":
            _check_dir_layout(Path(local.split(":", 1)[1]), image)
        back = registry2.ref(f"back/{transport}/{image.repo}", "v1")
        _copy(local, back, "--all")
        assert inspect_raw(back, PLAIN) == image.manifest
        for child in getattr(image, "children", ()):
            assert inspect_raw(registry2.ref(f"back/{transport}/{image.repo}", child.digest), PLAIN) == child.manifest
    # inspect of a local image agrees with skopeo's (no registry name, no tags).
    alpine = _local(transport, tmp_path, "library_alpine", "" if transport == "dir" else "v1")
    ours = json.loads(run_mirror("inspect", alpine).stdout)
    theirs = json.loads(skopeo("inspect", alpine).stdout)
    for key in ("Digest", "RepoTags", "Layers", "Architecture", "Os", "Labels", "Env", "Created"):
        assert ours.get(key) == theirs.get(key), key
    config = run_mirror("inspect", "--config", "--raw", alpine).stdout.encode()
    assert config == seeded_images.alpine.config
    if transport == "dir":
        # An existing dir: directory is replaced as a whole: nothing of the previous image remains.
        index = seeded_images.oci_index
        _copy(src.ref(index.repo, index.tag), alpine, "--all")
        _check_dir_layout(tmp_path / "library_alpine", index)
        old = {b.digest.split(":")[1] for b in seeded_images.alpine.layers}
        assert not old & set(os.listdir(tmp_path / "library_alpine"))


@pytest.mark.parametrize("transport", ["dir", "oci", "oci-archive"])
def test_mirror_reads_what_skopeo_wrote(transport: str, seeded_images: SeededImages, registry2: Registry,
                                        inspect_raw: InspectRaw, skopeo: Skopeo, tmp_path: Path) -> None:
    src = seeded_images.registry
    index = seeded_images.oci_index
    # oci: without a ref (one unnamed entry: mirror reads it as skopeo does), the archive with one.
    local = _local(transport, tmp_path, "by-skopeo", "multi" if transport == "oci-archive" else "")
    skopeo("copy", "--all", "--src-tls-verify=false", src.ref(index.repo, index.tag), local)
    dst = registry2.ref("from-skopeo/multi", "v1")
    out = _copy(local, dst, "--all", "--digestfile", str(tmp_path / "digest"))
    assert "Writing manifest" in out.stdout
    assert (tmp_path / "digest").read_text() == index.digest
    assert inspect_raw(dst, PLAIN) == index.manifest
    for child in index.children:
        assert inspect_raw(registry2.ref("from-skopeo/multi", child.digest), PLAIN) == child.manifest
    # Without --all, the platform's image is picked out of the index, as skopeo does.
    single = registry2.ref("from-skopeo/single", "arm64")
    _copy(local, single, "--override-arch", "arm64")
    assert inspect_raw(single, PLAIN) == index.children[1].manifest


def test_one_layout_holds_many_images_and_shares_blobs(seeded_images: SeededImages, tmp_path: Path) -> None:
    src = seeded_images.registry
    alpine, index = seeded_images.alpine, seeded_images.oci_index
    layout = tmp_path / "layout"
    _copy(src.ref(alpine.repo, "3.19"), f"oci:{layout}:alpine")
    _copy(src.ref(index.repo, "latest"), f"oci:{layout}:multi", "--all")
    blobs = {p.name: p.stat() for p in (layout / "blobs" / "sha256").iterdir()}
    expected = {alpine.digest, alpine.config_digest, *(b.digest for b in alpine.layers), index.digest}
    for child in index.children:
        expected |= {child.digest, child.config_digest, *(b.digest for b in child.layers)}
    assert set(blobs) == {d.split(":")[1] for d in expected}
    # The same image under a second name: no blob is rewritten (same inode, same mtime).
    _copy(src.ref(alpine.repo, "3.19"), f"oci:{layout}:alpine-again")
    after = {p.name: p.stat() for p in (layout / "blobs" / "sha256").iterdir()}
    assert {n: (s.st_ino, s.st_mtime_ns) for n, s in after.items()} == \
        {n: (s.st_ino, s.st_mtime_ns) for n, s in blobs.items()}
    # Writing an existing ref replaces that entry (as containers/image); other entries stay.
    _copy(src.ref(index.repo, "latest"), f"oci:{layout}:alpine", "--all")
    entries = json.loads((layout / "index.json").read_bytes())["manifests"]
    names = {e["annotations"]["org.opencontainers.image.ref.name"]: e["digest"] for e in entries}
    assert names == {"alpine": index.digest, "multi": index.digest, "alpine-again": alpine.digest}
    assert (layout / "oci-layout").read_bytes() == b'{"imageLayoutVersion":"1.0.0"}'
    # Several images and no ref named: which one is meant is ambiguous.
    assert_one_line_error(run_mirror("inspect", "--raw", f"oci:{layout}", check=False), "3 images")
    assert not [n for n in _tree(layout) if ".mirror-tmp" in n]


def test_concurrent_copies_into_one_layout_keep_every_entry(seeded_images: SeededImages, skopeo: Skopeo,
                                                            tmp_path: Path) -> None:
    src = seeded_images.registry
    layout = tmp_path / "shared"
    jobs = {f"t{i}": (seeded_images.alpine if i % 2 else seeded_images.oci_index) for i in range(4)}
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "MIRROR_STATE": "none"}
    procs = [subprocess.Popen([os.sys.executable, "-m", "mirror", "copy", "--all", "--src-tls-verify=false",
                               src.ref(image.repo, image.tag or ""), f"oci:{layout}:{tag}"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for tag, image in jobs.items()]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    entries = json.loads((layout / "index.json").read_bytes())["manifests"]
    got = {e["annotations"]["org.opencontainers.image.ref.name"]: e["digest"] for e in entries}
    assert got == {tag: image.digest for tag, image in jobs.items()}
    for tag, image in jobs.items():
        assert skopeo("inspect", "--raw", f"oci:{layout}:{tag}").stdout.encode() == image.manifest


def test_docker_format_is_converted_to_oci_as_skopeo_does(seeded_images: SeededImages, inspect_raw: InspectRaw,
                                                          skopeo: Skopeo, tmp_path: Path) -> None:
    src = seeded_images.registry
    layout = tmp_path / "converted"
    docker, listing = seeded_images.docker_image, seeded_images.docker_list
    for name, image, flags in (("image", docker, ()), ("list-all", listing, ("--all",)), ("list-one", listing, ())):
        ref = src.ref(image.repo, image.tag or "")
        skopeo("copy", *flags, "--src-tls-verify=false", ref, f"oci:{layout}:{name}-by-skopeo")
        _copy(ref, f"oci:{layout}:{name}", *flags, "--digestfile", str(tmp_path / name))
        ours = inspect_raw(f"oci:{layout}:{name}")
        # Byte for byte what skopeo writes: manifests, converted configs, and so every digest.
        assert ours == inspect_raw(f"oci:{layout}:{name}-by-skopeo")
        assert json.loads(ours)["mediaType"].startswith("application/vnd.oci.image.")
        assert (tmp_path / name).read_text() == "sha256:" + hashlib.sha256(ours).hexdigest()
    # Through an archive too; skopeo re-verifies every blob of what mirror wrote.
    archive = f"oci-archive:{tmp_path / 'converted.tar'}:v1"
    _copy(src.ref(listing.repo, listing.tag), archive, "--all")
    assert inspect_raw(archive) == inspect_raw(f"oci:{layout}:list-all-by-skopeo")
    skopeo("copy", "--all", archive, f"dir:{tmp_path / 'verified'}")


def _evil_archive(path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for info in members:
            payload = data.get(info.name)
            if payload is not None:
                info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)


def test_malicious_and_corrupt_inputs_are_refused(seeded_images: SeededImages, registry2: Registry,
                                                  tmp_path: Path) -> None:
    src = seeded_images.registry
    alpine = seeded_images.alpine
    work = tmp_path / "work"
    work.mkdir()
    # Refs that try to escape, checked before any I/O.
    for name in (f"oci:{work}/l:../../evil", f"oci-archive:{work}/a.tar:/etc/passwd", f"oci:{work}/l:a/../../b"):
        assert_one_line_error(_copy(src.ref(alpine.repo, "3.19"), name, check=False), "invalid")
    assert os.listdir(work) == []
    # Archives whose members escape the root: `../evil`, an absolute name, a symlink pointing outside.
    layout = tmp_path / "good"
    _copy(src.ref(alpine.repo, "3.19"), f"oci:{layout}:v1")
    good = {n: (layout / n).read_bytes() for n in ("oci-layout", "index.json")}
    cases = {
        "dotdot": ([tarfile.TarInfo("../evil")], {"../evil": b"pwned"}),
        "absolute": ([tarfile.TarInfo("/tmp/evil-abs")], {"/tmp/evil-abs": b"pwned"}),
    }
    link = tarfile.TarInfo("blobs/sha256/" + alpine.config_digest.split(":")[1])
    link.type, link.linkname = tarfile.SYMTYPE, "../../../outside-secret"
    cases["symlink"] = ([link], {})
    for case, (extra, data) in cases.items():
        archive = work / f"{case}.tar"
        members = [tarfile.TarInfo(n) for n in good] + extra
        _evil_archive(archive, members, {**good, **data})
        proc = _copy(f"oci-archive:{archive}:v1", registry2.ref("evil", case), check=False)
        assert_one_line_error(proc, str(archive))
        assert "outside" in proc.stderr or "escapes" in proc.stderr or "absolute" in proc.stderr, proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["good", "registry2", "work"]
    assert not Path("/tmp/evil-abs").exists()
    # A truncated archive (cut inside a blob) is named as such.
    whole = work / "whole.tar"
    _copy(src.ref(alpine.repo, "3.19"), f"oci-archive:{whole}:v1")
    cut = work / "cut.tar"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert_one_line_error(_copy(f"oci-archive:{cut}:v1", registry2.ref("evil", "cut"), check=False), "truncated")
    # A layout blob whose content does not match its name: refused, and nothing published.
    layer = layout / "blobs" / "sha256" / alpine.layers[0].digest.split(":")[1]
    layer.write_bytes(b"X" * alpine.layers[0].size)
    proc = _copy(f"oci:{layout}:v1", f"dir:{work / 'out'}", check=False)
    assert_one_line_error(proc, "digest", alpine.layers[0].digest)
    proc = _copy(f"oci:{layout}:v1", f"oci-archive:{work / 'out.tar'}", check=False)
    assert_one_line_error(proc, "digest", alpine.layers[0].digest)
    assert_one_line_error(_copy(f"oci:{layout}:v1", registry2.ref("evil", "blob"), check=False), "digest")
    assert not (work / "out").exists() and not (work / "out.tar").exists()
    assert not [n for n in os.listdir(work) if n.startswith(".mirror-tmp")]
    # A non-empty directory that is not a dir: directory is never overwritten.
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    assert_one_line_error(_copy(src.ref(alpine.repo, "3.19"), f"dir:{victim}", check=False), "refusing")
    assert _tree(victim) == {"precious.txt"}
    # Registry stayed clean: no manifest was ever written by the failed copies.
    assert [r for r in registry2.access_log_requests() if r[0] == "PUT" and "/manifests/" in r[1]] == []
