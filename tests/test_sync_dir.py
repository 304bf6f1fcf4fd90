"""`sync --src docker --dest dir` and `--src dir --dest docker`, compared with skopeo sync's trees."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from support.images import make_layer, push_image, push_index
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
    # --scoped: the full source name as the directory path, the same tree as skopeo's; and back, scoped.
    scoped_ours, scoped_theirs = tmp_path / "scoped-ours", tmp_path / "scoped-theirs"
    run_mirror("sync", "--src", "docker", "--dest", "dir", "--src-tls-verify=false", "--scoped",
               f"{registry.host}/air/gap", str(scoped_ours))
    skopeo("sync", "--src", "docker", "--dest", "dir", "--src-tls-verify=false", "--scoped",
           f"{registry.host}/air/gap", str(scoped_theirs))
    assert _tree(scoped_ours) == _tree(scoped_theirs)
    assert (scoped_ours / registry.host / "air" / "gap:v1" / "manifest.json").read_bytes() == images["v1"].manifest
    # (a host:port element is not a valid repository path: both tools refuse to sync that tree back scoped)
    back = ("sync", "--src", "dir", "--dest", "docker", "--dest-tls-verify=false", "--scoped", str(scoped_ours),
            f"{registry2.host}/scoped")
    assert_one_line_error(run_mirror(*back, check=False), "invalid reference")
    assert skopeo(*back, check=False).returncode != 0
    run_mirror("sync", "--src", "dir", "--dest", "docker", "--dest-tls-verify=false", "--scoped",
               str(scoped_ours / registry.host), f"{registry2.host}/scoped")
    raw = run_mirror("inspect", "--tls-verify=false", "--raw", f"docker://{registry2.host}/scoped/air/gap:v2")
    assert raw.stdout.encode() == images["v2"].manifest
    refused = run_mirror("sync", "--src", "dir", "--dest", "dir", str(ours), str(tmp_path / "x"), check=False)
    assert_one_line_error(refused, "dir to dir")


def test_sync_into_one_shared_oci_layout_and_back(registry: Registry, registry2: Registry, skopeo: Skopeo,
                                                  tmp_path: Path) -> None:
    base = make_layer(321, 8192)
    pushed = {(r, t): push_image(registry, f"oci/app{r}", f"v{t}", layers=[base, make_layer(r * 10 + t)],
                                 seed=r * 10 + t) for r in range(3) for t in range(2)}
    (tmp_path / "sync.yaml").write_text(json.dumps({registry.host: {"tls-verify": False, "images": {
        f"oci/app{r}": [] for r in range(3)}}}))
    layout = tmp_path / "layout"
    run_mirror("sync", "--src", "yaml", "--dest", "oci", str(tmp_path / "sync.yaml"), str(layout))
    index = json.loads((layout / "index.json").read_text())
    names = sorted(m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"])
    assert names == [f"app{r}:v{t}" for r in range(3) for t in range(2)]
    blobs = list((layout / "blobs" / "sha256").iterdir())
    # base once + 6 own layers + 6 configs + 6 manifests: every blob stored once for the catalog
    assert len(blobs) == 1 + 6 + 6 + 6
    run_mirror("copy", "--dest-tls-verify=false", f"oci:{layout}:app0:v1", f"docker://{registry2.host}/one/app0:v1")
    assert _raw(registry2, "one/app0:v1") == pushed[0, 1].manifest
    # --src oci (extension): the whole layout back into a registry, manifests byte-identical; the shared
    # base layer is uploaded once and mounted into the other repositories; a rerun copies nothing.
    report = tmp_path / "report.jsonl"
    run_mirror("sync", "--src", "oci", "--dest", "docker", "--dest-tls-verify=false", "--report", str(report),
               str(layout), f"{registry2.host}/back")
    for (r, t), image in pushed.items():
        assert _raw(registry2, f"back/app{r}:v{t}") == image.manifest
    records = [json.loads(line) for line in report.read_text().splitlines()]
    assert sorted(rec["source"] for rec in records) == sorted(f"oci:{layout}:{n}" for n in names)
    assert {rec["outcome"] for rec in records} == {"copied"}
    assert sum(rec["blobs"]["uploaded"] for rec in records) == 1 + 6 + 6
    again = run_mirror("sync", "--src", "oci", "--dest", "docker", "--dest-tls-verify=false", "--report",
                       str(report), str(layout), f"{registry2.host}/back")
    assert "0 copied, 6 up to date" in again.stderr
    # A layout skopeo wrote with a bare tag name is named after its directory.
    theirs = tmp_path / "skopeo-layout"
    skopeo("copy", "--src-tls-verify=false", registry.ref("oci/app2", "v0"), f"oci:{theirs}:v9")
    run_mirror("sync", "--src", "oci", "--dest", "docker", "--dest-tls-verify=false", "--scoped", str(theirs),
               f"{registry2.host}/sk")
    assert _raw(registry2, "sk/skopeo-layout:v9") == pushed[2, 0].manifest
    empty = tmp_path / "empty"
    skopeo("copy", "--src-tls-verify=false", registry.ref("oci/app2", "v0"), f"oci:{empty}")
    refused = run_mirror("sync", "--src", "oci", "--dest", "docker", str(empty), f"{registry2.host}/x", check=False)
    assert_one_line_error(refused, "no named images")
    refused = run_mirror("sync", "--src", "oci", "--dest", "oci", str(layout), str(tmp_path / "y"), check=False)
    assert_one_line_error(refused, "only to docker")


def _raw(reg: Registry, ref: str) -> bytes:
    return run_mirror("inspect", "--tls-verify=false", "--raw", f"docker://{reg.host}/{ref}").stdout.encode()
