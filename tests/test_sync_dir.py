"""`sync --src docker --dest dir` and `--src dir --dest docker`, compared with skopeo sync's trees."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from support.images import push_image, push_index
from support.mirror_cli import assert_one_line_error, run_mirror
from support.registry import Registry

Skopeo = Callable[..., subprocess.CompletedProcess[str]]


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_sync_to_directories_matches_skopeo_and_back(registry: Registry, registry2: Registry, skopeo: Skopeo,
                                                     tmp_path: Path) -> None:
    images = {tag: push_image(registry, "air/gap", tag, seed=60 + i) for i, tag in enumerate(("v1", "v2"))}
    index = push_index(registry, "air/multi", "v1", seed=70)
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for repo in ("air/gap", "air/multi"):
        run_mirror("sync", "--src", "docker", "--dest", "dir", "--src-tls-verify=false", "--all",
                   f"{registry.host}/{repo}", str(ours))
        skopeo("sync", "--src", "docker", "--dest", "dir", "--src-tls-verify=false", "--all",
               f"{registry.host}/{repo}", str(theirs))
    assert sorted(p.name for p in ours.iterdir()) == ["gap:v1", "gap:v2", "multi:v1"]
    assert _tree(ours) == _tree(theirs)
    assert (ours / "gap:v1" / "manifest.json").read_bytes() == images["v1"].manifest
    # And back into a registry: manifests byte-identical to the original source.
    run_mirror("sync", "--src", "dir", "--dest", "docker", "--dest-tls-verify=false", "--all", str(ours),
               f"{registry2.host}/restored")
    for tag, image in images.items():
        raw = run_mirror("inspect", "--tls-verify=false", "--raw", f"docker://{registry2.host}/restored/gap:{tag}")
        assert raw.stdout.encode() == image.manifest
    raw = run_mirror("inspect", "--tls-verify=false", "--raw", f"docker://{registry2.host}/restored/multi:v1")
    assert raw.stdout.encode() == index.manifest
    assert json.loads(raw.stdout)["manifests"]
    refused = run_mirror("sync", "--src", "dir", "--dest", "dir", str(ours), str(tmp_path / "x"), check=False)
    assert_one_line_error(refused, "dir to dir")
