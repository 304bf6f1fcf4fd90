"""`delete` and `manifest-digest`, checked against the registry and skopeo."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from support.images import push_image, push_index
from support.mirror_cli import assert_one_line_error, run_mirror
from support.registry import Registry, start_registry

Skopeo = Callable[..., subprocess.CompletedProcess[str]]
PLAIN = "--tls-verify=false"


def test_delete_removes_the_manifest_and_every_tag_on_it(registry: Registry, skopeo: Skopeo) -> None:
    image = push_image(registry, "del/app", "v1", seed=5)
    other = push_image(registry, "del/app", "keep", seed=6)
    skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", registry.ref("del/app", "v1"),
           registry.ref("del/app", "alias"))
    run_mirror("delete", PLAIN, registry.ref("del/app", "v1"))
    for tag in ("v1", "alias"):
        assert skopeo("inspect", PLAIN, "--raw", registry.ref("del/app", tag), check=False).returncode != 0
    assert skopeo("inspect", PLAIN, "--raw", registry.ref("del/app", "keep")).stdout.encode() == other.manifest
    deletes = [r for r in registry.access_log_requests() if r[0] == "DELETE"]
    assert deletes == [("DELETE", f"/v2/del/app/manifests/{image.digest}", 202)]
    missing = run_mirror("delete", PLAIN, registry.ref("del/app", "v1"), check=False)
    assert_one_line_error(missing, "manifest")


def test_delete_disabled_is_reported_clearly(tmp_path: Path) -> None:
    with start_registry(tmp_path / "nodelete", delete=False) as reg:
        push_image(reg, "locked/app", "v1", seed=9)
        proc = run_mirror("delete", PLAIN, reg.ref("locked/app", "v1"), check=False)
        assert_one_line_error(proc, "does not allow deletion")
        assert run_mirror("inspect", PLAIN, "--raw", reg.ref("locked/app", "v1")).returncode == 0


def test_manifest_digest_matches_skopeo(registry: Registry, skopeo: Skopeo, tmp_path: Path) -> None:
    index = push_index(registry, "md/multi", "v1", fmt="docker", seed=3)
    for name, raw in (("list.json", index.manifest), ("child.json", index.children[0].manifest)):
        path = tmp_path / name
        path.write_bytes(raw)
        ours = run_mirror("manifest-digest", str(path)).stdout.strip()
        assert ours == skopeo("manifest-digest", str(path)).stdout.strip()
    assert run_mirror("manifest-digest", str(tmp_path / "list.json")).stdout.strip() == index.digest
    # Bytes that are not JSON are digested as they are, as skopeo digests them (its test suite signs an
    # empty "manifest"); a malformed signed schema1 manifest is refused.
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "empty.json").write_bytes(b"")
    for name in ("bad.json", "empty.json"):
        ours = run_mirror("manifest-digest", str(tmp_path / name)).stdout.strip()
        assert ours == skopeo("manifest-digest", str(tmp_path / name)).stdout.strip()
    (tmp_path / "schema1.json").write_text('{"schemaVersion": 1, "signatures": [{"protected": "!"}]}')
    assert_one_line_error(run_mirror("manifest-digest", str(tmp_path / "schema1.json"), check=False), "schema1")
    assert_one_line_error(run_mirror("manifest-digest", str(tmp_path / "nope.json"), check=False), "nope.json")
