"""skopeo parity, second pass: shared blob directories, compressed docker archives, skopeo's hidden flags,
``sync --dry-run``'s lines, ``--version``, and the error words and exit codes scripts depend on.

skopeo 1.9 (Debian) is the oracle throughout: each test runs the same command with both tools against the
same registries and files. Where skopeo 1.9 and the reference skopeo 1.22 differ (exit 2 for a missing
image arrived in skopeo 1.16), the test says so.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support.images import SeededImages, get_manifest, push_image, push_index
from support.mirror_cli import ROOT, assert_one_line_error, run_mirror
from support.registry import Registry
from support.tokenserver import TokenServer

Skopeo = Callable[..., subprocess.CompletedProcess[str]]
PLAIN = "--tls-verify=false"
CREDS = "alice:wonderland-secret-9"  # conftest.ALICE


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _index_entries(layout: Path) -> list[tuple[str, str]]:
    index = json.loads((layout / "index.json").read_text())
    return [(m["digest"], m["annotations"]["org.opencontainers.image.ref.name"]) for m in index["manifests"]]


def test_shared_blob_dir_both_directions(seeded_images: SeededImages, skopeo: Skopeo, tmp_path: Path) -> None:
    """``--dest-shared-blob-dir`` writes what skopeo writes (DIR/sha256/<hex>, nothing in the layout's
    blobs/), and each tool reads, with ``--src-shared-blob-dir`` / ``--shared-blob-dir``, what the other wrote."""
    src = seeded_images.registry.ref("multi/oci", "latest")  # an OCI index: two images, three manifests
    out = {tool: (tmp_path / f"{tool}-layout", tmp_path / f"{tool}-shared") for tool in ("skopeo", "mirror")}
    skopeo("copy", "--all", "--src-tls-verify=false", "--dest-shared-blob-dir", str(out["skopeo"][1]),
           src, f"oci:{out['skopeo'][0]}:multi")
    run_mirror("copy", "--all", "--src-tls-verify=false", "--dest-shared-blob-dir", str(out["mirror"][1]),
               src, f"oci:{out['mirror'][0]}:multi")
    shared = _files(out["mirror"][1])
    assert shared == _files(out["skopeo"][1])
    assert len(shared) == 3 + 2 * 3 and all(name.startswith("sha256/") for name in shared)
    for layout, _ in out.values():
        assert not [p for p in (layout / "blobs").rglob("*") if p.is_file()], layout
    assert _index_entries(out["mirror"][0]) == _index_entries(out["skopeo"][0])

    # Each reads the other's: the same dir: copy, and the same raw manifests.
    def read_with(tool: str, written_by: str) -> dict[str, bytes]:
        layout, blobs = out[written_by]
        target = tmp_path / f"{tool}-reads-{written_by}"
        run = skopeo if tool == "skopeo" else run_mirror
        run("copy", "--all", "--src-shared-blob-dir", str(blobs), f"oci:{layout}:multi", f"dir:{target}")
        return _files(target)

    assert read_with("mirror", "skopeo") == read_with("skopeo", "mirror") == read_with("skopeo", "skopeo")
    raw = run_mirror("inspect", "--raw", "--shared-blob-dir", str(out["skopeo"][1]), f"oci:{out['skopeo'][0]}:multi")
    assert raw.stdout == skopeo("inspect", "--raw", "--shared-blob-dir", str(out["mirror"][1]),
                                f"oci:{out['mirror'][0]}:multi").stdout
    # Without the flag neither finds the manifest: the layout holds none.
    assert skopeo("inspect", "--raw", f"oci:{out['mirror'][0]}:multi", check=False).returncode != 0
    assert_one_line_error(run_mirror("inspect", "--raw", f"oci:{out['skopeo'][0]}:multi", check=False), "not found")


def _compressors() -> dict[str, Callable[[bytes], bytes]]:
    return {"xz": lzma.compress, "bzip2": bz2.compress, "gzip": gzip.compress}


def test_compressed_docker_archives_read_as_skopeo_reads_them(seeded_images: SeededImages, registry2: Registry,
                                                               skopeo: Skopeo, tmp_path: Path) -> None:
    """An archive skopeo wrote, compressed with xz, bzip2 or gzip, lists, inspects and copies as skopeo reads
    the same file (skopeo 1.9 fails on the gzip one: "loading tar component manifest.json: unexpected EOF",
    so that one is compared with skopeo's reading of the plain archive). The decompressed copy lives in
    --tmpdir while the command runs and is gone afterwards."""
    image = seeded_images.docker_image
    plain = tmp_path / "app.tar"
    skopeo("copy", "--src-tls-verify=false", seeded_images.registry.ref(image.repo, "v1"),
           f"docker-archive:{plain}:app/docker:v1", "--additional-tag", "app/docker:extra")
    theirs_dir = tmp_path / "skopeo-dir"
    skopeo("copy", f"docker-archive:{plain}:app/docker:extra", f"dir:{theirs_dir}")
    expected_files = {k: v for k, v in _files(theirs_dir).items() if k != "manifest.json"}
    for name, compress in _compressors().items():
        path = tmp_path / f"app.tar.{name}"
        path.write_bytes(compress(plain.read_bytes()))
        oracle = plain if name == "gzip" else path
        tmpdir = tmp_path / f"tmp-{name}"
        tmpdir.mkdir()
        g = ["--tmpdir", str(tmpdir)]
        listed = json.loads(run_mirror(*g, "list-tags", f"docker-archive:{path}").stdout)
        assert listed == json.loads(skopeo("list-tags", f"docker-archive:{oracle}").stdout) \
            == {"Tags": ["docker.io/app/docker:v1", "docker.io/app/docker:extra"]}
        config = run_mirror(*g, "inspect", "--config", "--raw", f"docker-archive:{path}:app/docker:v1").stdout
        assert config.encode() == image.config
        assert config == skopeo("inspect", "--config", "--raw", f"docker-archive:{oracle}:app/docker:v1").stdout
        ours = json.loads(run_mirror(*g, "inspect", f"docker-archive:{path}:app/docker:v1").stdout)
        mine_skopeo = json.loads(skopeo("inspect", f"docker-archive:{oracle}:app/docker:v1").stdout)
        assert ours["Layers"] == mine_skopeo["Layers"] and ours["Env"] == mine_skopeo["Env"]
        target = tmp_path / f"mirror-dir-{name}"
        run_mirror(*g, "copy", f"docker-archive:{path}:app/docker:extra", f"dir:{target}")
        assert {k: v for k, v in _files(target).items() if k != "manifest.json"} == expected_files
        assert list(tmpdir.iterdir()) == []
    # ...and into a registry: the image ID (config bytes) survives, the layers are gzipped on the way.
    run_mirror("copy", "--dest-tls-verify=false", f"docker-archive:{tmp_path / 'app.tar.xz'}:app/docker:v1",
               registry2.ref("from/xz", "v1"))
    manifest = json.loads(get_manifest(registry2, "from/xz", "v1")[0])
    assert manifest["config"]["digest"] == image.config_digest
    assert run_mirror("inspect", PLAIN, "--config", "--raw", registry2.ref("from/xz", "v1")).stdout.encode() \
        == image.config


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_compressed_archive_is_streamed_not_held_in_memory(tmp_path: Path) -> None:
    """A 256 MiB archive, gzip-compressed: inspecting it decompresses all of it (through a temp file in
    --tmpdir), yet the process's peak RSS stays far below the archive's size."""
    size = 256 << 20
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w") as layer_tar:
        _add(layer_tar, "hello.txt", b"hello\n")
    layer = layer_buf.getvalue()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}})
    archive = tmp_path / "big.tar.gz"
    with gzip.open(archive, "wb", compresslevel=1) as out, tarfile.open(fileobj=out, mode="w|") as tar:
        _add(tar, "manifest.json", json.dumps([{"Config": "config.json", "RepoTags": ["big:v1"],
                                                "Layers": ["layer.tar"]}]).encode())
        _add(tar, "config.json", config.encode())
        _add(tar, "layer.tar", layer)
        padding = tarfile.TarInfo("padding.bin")  # read through by the decompressor, never by the image
        padding.size = size
        tar.addfile(padding, io.BufferedReader(_Zeros(size)))
    assert archive.stat().st_size < size // 100
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MIRROR_STATE": "none"}
    command = [sys.executable, "-m", "mirror", "--tmpdir", str(tmp_path), "inspect", "--config", "--raw",
               f"docker-archive:{archive}"]
    # Measured from a small parent: a child forked from pytest itself would count pytest's pages in its peak.
    probe = ("import resource, subprocess, sys\n"
             "out = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, check=True).stdout\n"
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
             "sys.stdout.flush(); sys.stdout.buffer.write(out)\n")
    proc = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, env=env, cwd=ROOT, check=True)
    peak_kib, _, output = proc.stdout.partition(b"\n")
    assert output == config.encode()
    assert int(peak_kib) * 1024 < 128 << 20, f"peak RSS {int(peak_kib)} KiB for a {size >> 20} MiB archive"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.tar.gz"]


def test_hidden_skopeo_flags(seeded_images: SeededImages, htpasswd_registry: Registry, registry2: Registry,
                             skopeo: Skopeo, tmp_path: Path) -> None:
    """``--dcreds``/``--screds``, ``copy``/``sync``'s ``--tls-verify``, the global ``--tls-verify`` and
    ``--registries-conf`` are accepted with skopeo's meaning and warnings, and hidden from ``--help``."""
    src = seeded_images.registry.ref("app/docker", "v1")
    for tool, run in (("skopeo", skopeo), ("mirror", run_mirror)):
        dst = htpasswd_registry.ref(f"{tool}/app", "v1")
        # copy's --tls-verify is both sides' (deprecated, with skopeo's warning); --dcreds is --dest-creds.
        into = run("copy", PLAIN, "--dcreds", CREDS, src, dst)
        assert "'--tls-verify' is deprecated, instead use: --src-tls-verify, --dest-tls-verify" in into.stderr
        run("copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--screds", CREDS, dst,
            registry2.ref(f"{tool}/back", "v1"))
        # A side's own flag beats copy's --tls-verify: verifying TLS against a plain-HTTP registry fails.
        refused = run("copy", PLAIN, "--src-tls-verify=true", "--screds", CREDS, dst, f"dir:{tmp_path / tool}",
                      check=False)
        assert refused.returncode == 1 and "http: server gave HTTP response to HTTPS client" in refused.stderr
        # sync takes --dcreds as well.
        run("sync", "--src", "docker", "--dest", "docker", "--src-tls-verify=false", "--dest-tls-verify=false",
            "--dcreds", CREDS, f"{seeded_images.registry.host}/library/alpine", f"{htpasswd_registry.host}/{tool}-sync")
        # The global --tls-verify (before the command) sets every image's default; warned as deprecated.
        listed = run("--tls-verify=false", "list-tags", "--creds", CREDS,
                     f"docker://{htpasswd_registry.host}/{tool}-sync/alpine")
        assert json.loads(listed.stdout)["Tags"] == ["3.19"]
        assert "'--tls-verify' is deprecated, please set this on the specific subcommand" in listed.stderr
        overridden = run("--tls-verify=false", "inspect", "--tls-verify=true", registry2.ref(f"{tool}/back", "v1"),
                         check=False)
        assert overridden.returncode == 1 and "server gave HTTP response to HTTPS client" in overridden.stderr
    assert get_manifest(registry2, "mirror/back", "v1") == get_manifest(registry2, "skopeo/back", "v1")
    for args in (["copy", "--help"], ["sync", "--help"], ["--help"]):
        shown = run_mirror(*args).stdout + skopeo(*args).stdout
        assert not re.search(r"--screds|--dcreds|--registries-conf|(?<![\w-])--tls-verify\b", shown), args
    # --registries-conf: read as skopeo reads it; what would redirect or loosen access is refused, not ignored.
    harmless = tmp_path / "harmless.conf"
    harmless.write_text('unqualified-search-registries = ["docker.io"]\n[aliases]\n"app" = "docker.io/lib/app"\n')
    redirect = tmp_path / "redirect.conf"
    redirect.write_text(f'[[registry]]\nprefix = "{registry2.host}/a"\nlocation = "{registry2.host}/b"\n')
    ref = registry2.ref("mirror/back", "v1")
    assert run_mirror("--registries-conf", str(harmless), "inspect", "--raw", PLAIN, ref).stdout \
        == skopeo("--registries-conf", str(harmless), "inspect", "--raw", PLAIN, ref).stdout
    assert_one_line_error(run_mirror("--registries-conf", str(redirect), "inspect", PLAIN, ref, check=False),
                          "does not apply registries.conf", f"{registry2.host}/a redirected to {registry2.host}/b")
    missing = str(tmp_path / "missing.conf")
    assert skopeo("--registries-conf", missing, "inspect", PLAIN, ref, check=False).returncode == 1
    assert_one_line_error(run_mirror("--registries-conf", missing, "inspect", PLAIN, ref, check=False),
                          "loading registries configuration")


_LOGRUS = re.compile(r'^time="[^"]+" level=(\w+) msg="((?:[^"\\]|\\.)*)"(?: from="([^"]*)" to="([^"]*)")?$')


def _logrus_lines(stderr: str) -> list[tuple[str, str, str | None, str | None]]:
    """The logrus-shaped lines of a sync's stderr, as (level, msg, from, to); skopeo's "Processing repo"
    and the like are dropped, mirror's own summary lines do not match."""
    out = []
    for line in stderr.splitlines():
        match = _LOGRUS.match(line)
        if match and (match.group(2).startswith(("Would have", "Running", "Synced"))):
            level, msg, src, dst = match.groups()
            out.append((level, msg, src, dst))
    return out


def test_sync_dry_run_prints_what_skopeo_prints(registry: Registry, registry2: Registry, skopeo: Skopeo,
                                                 tmp_path: Path) -> None:
    """``sync --dry-run``: skopeo's lines, on stderr, nothing on stdout; mirror, which really compares,
    says "skipped" for an image the destination already has, and counts it all the same."""
    push_image(registry, "shop/cart", "v1", seed=1)
    push_image(registry, "shop/cart", "v2", seed=2)
    push_index(registry, "shop/multi", "v1", seed=3)
    config = tmp_path / "sync.yaml"
    config.write_text(json.dumps({registry.host: {"tls-verify": False, "images": {"shop/cart": [],
                                                                                 "shop/multi": ["v1"]}}}))
    args = ["sync", "--dry-run", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false", str(config),
            f"{registry2.host}/m"]
    theirs, ours = skopeo(*args), run_mirror(*args)
    assert theirs.stdout == ours.stdout == ""
    expected = _logrus_lines(theirs.stderr)
    assert len(expected) == 5 and expected[-1] == ("info", "Would have synced 3 images from 2 sources", None, None)
    assert expected[0] == ("warning", "Running in dry-run mode", None, None)
    assert sorted(_logrus_lines(ours.stderr)) == sorted(expected)
    assert [r for r in registry2.access_log_requests() if r[0] not in ("GET", "HEAD")] == []
    # --dest dir: skopeo's destination names, dir: prefix included. mirror writes nothing (skopeo 1.9's dry
    # run creates the empty image directories).
    to_dir = ["sync", "--dry-run", "--src", "docker", "--src-tls-verify=false", "--dest", "dir",
              f"{registry.host}/shop/cart", str(tmp_path / "out")]
    ours_dir = _logrus_lines(run_mirror(*to_dir).stderr)
    assert not (tmp_path / "out").exists()
    assert sorted(ours_dir) == sorted(_logrus_lines(skopeo(*to_dir).stderr))
    # One image already there: "skipped (up to date)" in mirror's words, still counted as synced.
    run_mirror("copy", "--src-tls-verify=false", "--dest-tls-verify=false", registry.ref("shop/cart", "v2"),
               registry2.ref("m/cart", "v2"))
    again = _logrus_lines(run_mirror(*args).stderr)
    src, dst = f"docker://{registry.host}/shop/cart:v2", f"docker://{registry2.host}/m/cart:v2"
    assert ("info", "Would have skipped image ref 2/2 (up to date)", src, dst) in again
    assert ("info", "Would have copied image ref 1/2", src.replace("v2", "v1"), dst.replace("v2", "v1")) in again
    assert again[-1] == expected[-1]
    # A real run closes with skopeo's count too.
    done = _logrus_lines(run_mirror(*[a for a in args if a != "--dry-run"]).stderr)
    assert done == [("info", "Synced 3 images from 2 sources", None, None)]


def test_version_and_unknown_commands_as_skopeo(skopeo: Skopeo) -> None:
    """``--version``/``-v`` print ``mirror version X`` (skopeo: ``skopeo version 1.9.3``); 1.x has no
    ``version`` command, so both refuse it; ``--version`` imports no HTTP client."""
    theirs = skopeo("--version").stdout
    assert re.fullmatch(r"skopeo version \S+\n", theirs)
    for flag in ("--version", "-v", "--version=true"):
        assert re.fullmatch(r"mirror version \S+\n", run_mirror(flag).stdout)
    refused = run_mirror("version", check=False)
    assert_one_line_error(refused, "Unrecognized command `mirror version`")
    assert refused.returncode == skopeo("version", check=False).returncode == 1
    assert "Unrecognized command `skopeo version`" in skopeo("version", check=False).stderr
    imports = subprocess.run([sys.executable, "-X", "importtime", "-m", "mirror", "--version"], capture_output=True,
                             text=True, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}).stderr
    assert "mirror.cli.start" in imports and "aiohttp" not in imports and "mirror.runtime" not in imports
    # (test_startup.py: what --version, --help and a copy import)


def test_error_words_and_exit_codes_match_skopeo(registry: Registry, htpasswd_registry: Registry,
                                                 token_registry: Registry, token_server: TokenServer,
                                                 skopeo: Skopeo, tmp_path: Path) -> None:
    """The phrases scripts match on appear in mirror's one-line error exactly as skopeo 1.9 prints them,
    for the same command on the same registry. Exit codes are skopeo 1.22's: 2 when the image itself does
    not exist (skopeo 1.9 predates that and exits 1), 1 otherwise."""
    push_image(registry, "here/app", "v1", seed=5)
    layout = tmp_path / "layout"
    skopeo("copy", "--src-tls-verify=false", registry.ref("here/app", "v1"), f"oci:{layout}:v1")
    cases: list[tuple[list[str], str, int]] = [
        (["inspect", PLAIN, registry.ref("here/app", "nope")], "manifest unknown", 2),
        (["copy", "--src-tls-verify=false", registry.ref("here/app", "nope"), f"dir:{tmp_path / 'x'}"],
         "reading manifest nope in", 2),
        (["inspect", f"oci:{layout}:nope"], 'no descriptor found for reference "nope"', 2),
        (["inspect", registry.ref("here/app", "v1")], "http: server gave HTTP response to HTTPS client", 1),
        (["inspect", PLAIN, htpasswd_registry.ref("a/b", "v1")], "unauthorized: authentication required", 1),
        (["inspect", PLAIN, "--creds", "alice:wrong-pass", token_registry.ref("a/b", "v1")],
         "unable to retrieve auth token: invalid username/password", 1),
        (["login", PLAIN, "-u", "alice", "-p", "wrong-pass", htpasswd_registry.host], "invalid username/password", 1),
        (["inspect", "alpine"], 'Invalid image name "alpine", expected colon-separated transport:reference', 1),
        (["inspect", "nope://x"], 'Invalid image name "nope://x", unknown transport "nope"', 1),
        (["inspect", "docker:alpine"], "docker: image reference alpine does not start with //", 1),
        (["inspect", f"docker://{registry.host}/a/b:c:d"], "invalid reference format", 1),
        (["inspect", f"docker://{registry.host}/a/b@sha256:abc"], "invalid reference format", 1),
        (["inspect", f"docker://{registry.host}/a/b:c@sha256:{'0' * 64}"],
         "Docker references with both a tag and digest are currently not supported", 1),
        (["inspect", f"dir:{tmp_path / 'missing'}"], "no such file", 1),
    ]
    for args, phrase, code in cases:
        theirs = skopeo(*args, check=False)
        fatal = re.search(r'level=fatal msg="((?:[^"\\]|\\.)*)"', theirs.stderr)
        assert theirs.returncode == 1 and fatal, (args, theirs.stderr)
        assert phrase in json.loads(f'"{fatal.group(1)}"'), (args, theirs.stderr)
        ours = run_mirror(*args, check=False)
        assert_one_line_error(ours, phrase)
        assert phrase in ours.stderr and ours.returncode == code, (args, ours.stderr)
