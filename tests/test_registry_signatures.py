"""Signatures of registry images (registries.d lookaside storage, signing while copying), with skopeo
1.9 as the oracle in both directions: what skopeo stores mirror verifies and copies, what mirror
stores and signs skopeo verifies. Real registry, real GnuPG (a throw-away home)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.gpg import gpg_home
from support.images import push_image
from support.mirror_cli import assert_one_line_error, run_mirror
from support.registry import Registry

PLAIN = ("--src-tls-verify=false", "--dest-tls-verify=false")


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[tuple[dict[str, str], str, str, Path]]:
    """A GnuPG home with a trusted and a stranger key: (environment, trusted fpr, stranger fpr, trusted.asc)."""
    home = gpg_home(tmp_path / "gnupg")
    trusted, stranger = home.new_key("trusted@example.com"), home.new_key("stranger@example.com")
    (tmp_path / "trusted.asc").write_bytes(home.public_key(trusted))
    yield home.env, trusted, stranger, tmp_path / "trusted.asc"
    home.close()


def write_registries_d(directory: Path, config: dict[str, object]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "default.yaml").write_text(json.dumps(config))
    return directory


def write_policy(path: Path, requirement: dict[str, object]) -> Path:
    path.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}],
                                "transports": {"docker": {"": [requirement]}}}))
    return path


def skopeo_run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], env=env, capture_output=True, text=True, check=False)


def test_lookaside_signatures_interoperate_with_skopeo(registry: Registry, keys: tuple[dict[str, str], str, str, Path],
                                                      tmp_path: Path) -> None:
    env, trusted, stranger, trusted_asc = keys
    image = push_image(registry, "plain/app", "v1", seed=11)
    sigs = tmp_path / "sigs"
    regd = write_registries_d(tmp_path / "registries.d", {"default-docker": {"lookaside": f"file://{sigs}"}})
    signed_by = write_policy(tmp_path / "policy.json", {"type": "signedBy", "keyType": "GPGKeys",
                                                        "keyPath": str(trusted_asc)})
    hexdigest = image.digest.split(":")[1]

    # skopeo signs while pushing and stores the signature in the lookaside; mirror verifies it.
    pushed = skopeo_run("--insecure-policy", "--registries.d", str(regd), "copy", *PLAIN, "--sign-by", trusted,
                        registry.ref("plain/app", "v1"), registry.ref("signed/app", "v1"), env=env)
    assert pushed.returncode == 0, pushed.stderr
    theirs = sigs / f"signed/app@sha256={hexdigest}" / "signature-1"
    assert theirs.is_file()
    out = tmp_path / "out"
    run_mirror("--registries.d", str(regd), "--policy", str(signed_by), "copy", *PLAIN,
               registry.ref("signed/app", "v1"), f"dir:{out}", env=env)
    assert (out / "signature-1").read_bytes() == theirs.read_bytes()
    # An unsigned image, and one signed by another key, are refused (as skopeo refuses them).
    for name, key in (("unsigned", None), ("stranger", stranger)):
        flags = ["--sign-by", key] if key else []
        assert skopeo_run("--insecure-policy", "--registries.d", str(regd), "copy", *PLAIN, *flags,
                          registry.ref("plain/app", "v1"), registry.ref(f"{name}/app", "v1"), env=env).returncode == 0
        ours = run_mirror("--registries.d", str(regd), "--policy", str(signed_by), "copy", *PLAIN,
                          registry.ref(f"{name}/app", "v1"), f"dir:{tmp_path / name}", env=env, check=False)
        assert_one_line_error(ours, "signature")
        assert skopeo_run("--registries.d", str(regd), "--policy", str(signed_by), "copy", *PLAIN,
                          registry.ref(f"{name}/app", "v1"), f"dir:{tmp_path / (name + '-skopeo')}",
                          env=env).returncode != 0
        assert not (tmp_path / name).exists()

    # mirror pushes a signed dir: image: the signature lands where skopeo looks, and skopeo accepts it
    # under a policy for the name it was signed for.
    run_mirror("--registries.d", str(regd), "--insecure-policy", "copy", *PLAIN, f"dir:{out}",
               registry.ref("mirrored/app", "v1"))
    ours = sigs / f"mirrored/app@sha256={hexdigest}" / "signature-1"
    assert ours.read_bytes() == theirs.read_bytes()
    exact = write_policy(tmp_path / "exact.json", {
        "type": "signedBy", "keyType": "GPGKeys", "keyPath": str(trusted_asc),
        "signedIdentity": {"type": "exactReference", "dockerReference": f"{registry.host}/signed/app:v1"}})
    verified = skopeo_run("--registries.d", str(regd), "--policy", str(exact), "copy", *PLAIN,
                          registry.ref("mirrored/app", "v1"), f"dir:{tmp_path / 'skopeo-check'}", env=env)
    assert verified.returncode == 0, verified.stderr
    # The default identity rule refuses it there (signed for signed/app), for both tools.
    assert run_mirror("--registries.d", str(regd), "--policy", str(signed_by), "copy", *PLAIN,
                      registry.ref("mirrored/app", "v1"), f"dir:{tmp_path / 'refused'}", check=False).returncode != 0

    # mirror signs while copying (--sign-by): source signatures are kept, its own is added, and
    # skopeo verifies the copy under the default identity rule.
    run_mirror("--registries.d", str(regd), "--policy", str(signed_by), "copy", *PLAIN, "--sign-by", trusted,
               registry.ref("signed/app", "v1"), registry.ref("resigned/app", "v1"), env=env)
    stored = sigs / f"resigned/app@sha256={hexdigest}"
    assert (stored / "signature-1").read_bytes() == theirs.read_bytes()
    assert (stored / "signature-2").is_file() and not (stored / "signature-3").exists()
    verified = skopeo_run("--registries.d", str(regd), "--policy", str(signed_by), "copy", *PLAIN,
                          registry.ref("resigned/app", "v1"), f"dir:{tmp_path / 'skopeo-resigned'}", env=env)
    assert verified.returncode == 0, verified.stderr
    payload = subprocess.run(["gpg", "--batch", "--decrypt", str(stored / "signature-2")], env=env,
                             capture_output=True, check=True).stdout
    assert json.loads(payload)["critical"]["identity"]["docker-reference"] == f"{registry.host}/resigned/app:v1"
    # Signing again replaces the lookaside's list (as skopeo writes it): no stale signature-3 is left.
    run_mirror("--registries.d", str(regd), "--insecure-policy", "copy", *PLAIN, "--remove-signatures",
               "--sign-by", trusted, registry.ref("signed/app", "v1"), registry.ref("resigned/app", "v1"), env=env)
    assert (stored / "signature-1").is_file() and not (stored / "signature-2").exists()
