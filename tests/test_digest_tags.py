"""``digest-tags``: cosign's signature/attestation/SBOM tags follow the images they belong to."""

from __future__ import annotations

import json
from pathlib import Path

from support.images import Client, PushedImage, push_image
from support.mirror_cli import run_mirror
from support.registry import Registry

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SIGNATURE = "application/vnd.dev.cosign.simplesigning.v1+json"
ATTESTATION = "application/vnd.dsse.envelope.v1+json"


def _cosign_tag(reg: Registry, repo: str, image_digest: str, suffix: str, layer_type: str) -> str:
    """Push what ``cosign sign``/``attest`` pushes: an OCI manifest tagged ``sha256-<hex>.<suffix>``."""
    client = Client(reg)
    payload = json.dumps({"critical": {"identity": {"docker-reference": f"{reg.host}/{repo}"},
                                       "image": {"docker-manifest-digest": image_digest},
                                       "type": "cosign container image signature"}, "optional": None}).encode()
    layer = client.push_blob(repo, payload)
    config = client.push_blob(repo, b"{}")
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2,
                                      "digest": config},
                           "layers": [{"mediaType": layer_type, "size": len(payload), "digest": layer,
                                       "annotations": {"dev.cosignproject.cosign/signature": "MEUCIQ=="}}]}).encode()
    tag = image_digest.replace(":", "-") + (f".{suffix}" if suffix else "")
    client.put_manifest(repo, tag, manifest, OCI_MANIFEST)
    return tag


def _tags(reg: Registry, repo: str) -> list[str]:
    out = run_mirror("list-tags", "--tls-verify=false", f"docker://{reg.host}/{repo}").stdout
    return sorted(json.loads(out)["Tags"])


def test_digest_tags_follow_the_selected_images(registry: Registry, registry2: Registry, tmp_path: Path) -> None:
    v1: PushedImage = push_image(registry, "signed/app", "v1", seed=81)
    v2: PushedImage = push_image(registry, "signed/app", "v2", seed=82)
    followers = [_cosign_tag(registry, "signed/app", v1.digest, "sig", SIGNATURE),
                 _cosign_tag(registry, "signed/app", v1.digest, "att", ATTESTATION)]
    v2_sig = _cosign_tag(registry, "signed/app", v2.digest, "sig", SIGNATURE)
    config = tmp_path / "sync.yaml"
    # Only v1 is selected: without digest-tags its signature stays behind ...
    config.write_text(json.dumps({registry.host: {"tls-verify": False, "images": {"signed/app": ["v1"]}}}))
    run_mirror("sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false", str(config),
               f"{registry2.host}/plain")
    assert _tags(registry2, "plain/app") == ["v1"]
    # ... with it, v1's .sig and .att come along (byte for byte), v2's signature does not.
    config.write_text(json.dumps({registry.host: {"tls-verify": False, "digest-tags": True,
                                                  "images": {"signed/app": ["v1"]}}}))
    run_mirror("sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false", str(config),
               f"{registry2.host}/followed")
    assert _tags(registry2, "followed/app") == sorted(["v1", *followers])
    for tag in followers:
        ours = run_mirror("inspect", "--tls-verify=false", "--raw", f"docker://{registry2.host}/followed/app:{tag}")
        theirs = run_mirror("inspect", "--tls-verify=false", "--raw", f"docker://{registry.host}/signed/app:{tag}")
        assert ours.stdout == theirs.stdout
    # The CLI flag does the same for --src docker; a rerun finds everything up to date.
    args = ("sync", "--src", "docker", "--dest", "docker", "--src-tls-verify=false", "--dest-tls-verify=false",
            "--digest-tags", f"{registry.host}/signed/app:v2", f"{registry2.host}/cli")
    run_mirror(*args)
    assert _tags(registry2, "cli/app") == sorted(["v2", v2_sig])
    assert "0 copied, 2 up to date" in run_mirror(*args).stderr
