"""The signature examples: configs/policy/*.json load with mirror's own policy loader and decide as
their comments say (the lab policy drives a real ``mirror copy --policy``, the production policy
refuses unsigned and unlisted images), and configs/registries.d/*.yaml hold only the documented keys
and load with mirror's registries.d loader into the storage their comments describe.

Then skopeo 1.9, the reference, and mirror read the examples (hosts, URLs and the key swapped for the
test's): skopeo's signing copy writes its signature where the registry's own entry says, not
default-docker's, and under the production policy both accept that image through the lookaside and
refuse an unsigned one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml
from support import skopeo_env
from support.configs import filled
from support.gpg import gpg_home
from support.images import get_manifest, push_image
from support.mirror_cli import ROOT, assert_one_line_error, run_mirror
from support.registry import Registry

from mirror.core.reference import parse_docker
from mirror.signing.policy import load_policy
from mirror.transports.registry import registriesd

POLICY = ROOT / "configs" / "policy"
REGISTRIES_D = ROOT / "configs" / "registries.d"
EXAMPLE_HOST = "registry.example.com"
PLAIN = ("--src-tls-verify=false", "--dest-tls-verify=false")
#: containers-registries.d(5): the keys of a scope (``sigstore``/``sigstore-staging`` are the old names).
SCOPE_KEYS = {"lookaside", "lookaside-staging", "use-sigstore-attachments", "sigstore", "sigstore-staging"}


def _policy(name: str, tmp_path: Path, replacements: dict[str, str]) -> Path:
    return filled(POLICY / name, tmp_path, replacements)


def _production(tmp_path: Path, registry: Registry) -> Path:
    """production.json for ``registry`` (as registry.example.com) and the key in platform-team.gpg."""
    return _policy("production.json", tmp_path, {EXAMPLE_HOST: registry.host, "/etc/pki/containers/platform-team.gpg":
                                                 str(tmp_path / "platform-team.gpg")})


def test_the_lab_policy_lets_mirror_copy_anything(registry: Registry, registry2: Registry, tmp_path: Path) -> None:
    policy = load_policy(str(POLICY / "lab.json"))
    assert [r.kind for r in policy.default] == ["insecureAcceptAnything"] and not policy.transports
    image = push_image(registry, "lab/app", "v1", seed=61)
    run_mirror("copy", "--policy", str(POLICY / "lab.json"), *PLAIN, registry.ref("lab/app", "v1"),
               registry2.ref("lab/app", "v1"))
    assert get_manifest(registry2, "lab/app", "v1")[2] == image.digest
    # Local transports too: out to a directory and back in under another name.
    run_mirror("--policy", str(POLICY / "lab.json"), "copy", "--src-tls-verify=false", registry.ref("lab/app", "v1"),
               f"dir:{tmp_path / 'app'}")
    run_mirror("--policy", str(POLICY / "lab.json"), "copy", "--dest-tls-verify=false", f"dir:{tmp_path / 'app'}",
               registry2.ref("lab/again", "v1"))
    assert get_manifest(registry2, "lab/again", "v1")[2] == image.digest


def test_the_production_policy_requires_signatures_and_rejects_the_rest(registry: Registry, registry2: Registry,
                                                                       tmp_path: Path) -> None:
    policy = load_policy(str(POLICY / "production.json"))  # as shipped
    assert [r.kind for r in policy.default] == ["reject"]
    decided = {ref: policy.for_docker(parse_docker(ref)) for ref in (
        "registry.example.com/platform/app:1.0", "registry.redhat.io/ubi9/ubi:latest",
        "registry.access.redhat.com/ubi8:latest", "registry.example.com/other/app:1.0", "docker.io/library/alpine")}
    kinds = {ref: [r.kind for r in d.requirements] for ref, d in decided.items()}
    assert kinds == {"registry.example.com/platform/app:1.0": ["signedBy"], "registry.redhat.io/ubi9/ubi:latest":
                     ["signedBy"], "registry.access.redhat.com/ubi8:latest": ["signedBy"],
                     "registry.example.com/other/app:1.0": ["reject"], "docker.io/library/alpine": ["reject"]}
    [platform] = decided["registry.example.com/platform/app:1.0"].requirements
    assert platform.identity.kind == "matchRepository"
    assert [str(p) for p in platform.key_paths] == ["/etc/pki/containers/platform-team.gpg"]
    # A real copy under it (the example registry is the test's): unsigned or unlisted, nothing moves.
    home = gpg_home(tmp_path / "gpg")
    try:
        key = home.public_key(home.new_key("platform@example.com"))
    finally:
        home.close()
    (tmp_path / "platform-team.gpg").write_bytes(key)
    prod = _production(tmp_path, registry)
    push_image(registry, "platform/app", "v1", seed=62)
    push_image(registry2, "team/app", "v1", seed=63)
    unsigned = run_mirror("--policy", str(prod), "copy", *PLAIN, registry.ref("platform/app", "v1"),
                          registry2.ref("copied/app", "v1"), check=False)
    assert_one_line_error(unsigned, "signature policy", "platform/app")
    unlisted = run_mirror("--policy", str(prod), "copy", *PLAIN, registry2.ref("team/app", "v1"),
                          registry.ref("copied/app", "v1"), check=False)
    assert_one_line_error(unlisted, "rejected by the signature policy")
    writes = [r for r in registry.access_log_requests() + registry2.access_log_requests()
              if "/copied/" in r[1] and r[0] not in ("GET", "HEAD")]
    assert writes == []


def _registries_d() -> dict[str, dict[str, Any]]:
    return {path.name: yaml.safe_load(path.read_text()) for path in sorted(REGISTRIES_D.glob("*.yaml"))}


def test_the_registries_d_examples_hold_only_documented_keys() -> None:
    files = _registries_d()
    assert set(files) >= {"default.yaml", "registry.example.com.yaml", "redhat.yaml"}
    scopes: dict[str, str] = {}
    defaults = [name for name, doc in files.items() if "default-docker" in doc]
    assert defaults == ["default.yaml"]  # containers/image refuses default-docker in two files
    for name, doc in files.items():
        assert isinstance(doc, dict) and doc and set(doc) <= {"default-docker", "docker"}, name
        entries = dict(doc.get("docker") or {})
        if "default-docker" in doc:
            entries[""] = doc["default-docker"]
        for scope, entry in entries.items():
            assert scope not in scopes, f"{scope!r} in {name} and {scopes.get(scope)}"  # also refused
            scopes[scope] = name
            assert "://" not in scope and scope == scope.strip("/"), (name, scope)
            assert isinstance(entry, dict) and entry and set(entry) <= SCOPE_KEYS, (name, scope, entry)
            for key, value in entry.items():
                if key == "use-sigstore-attachments":
                    assert isinstance(value, bool), (name, scope)
                else:
                    assert isinstance(value, str) and value.split("://")[0] in ("file", "http", "https"), value
                    assert key.endswith("-staging") <= value.startswith("file://"), (name, scope, key)


def test_mirror_reads_the_registries_d_examples_as_their_comments_say() -> None:
    config = registriesd.load(str(REGISTRIES_D), {})

    def storage(ref: str) -> tuple[str, str, bool]:
        found = config.storage(parse_docker(ref))
        return str(found.read), str(found.write), found.attachments

    assert storage("registry.example.com/platform/app:1.0") == (
        "https://sigstore.example.com/sigstore/platform/app", "file:///srv/sigstore/platform/app", True)
    # A scope's lookaside is its write location too (containers/image): the most specific scope wins.
    assert storage("registry.redhat.io/ubi9/ubi:latest")[::2] == (
        "https://registry.redhat.io/containers/sigstore/ubi9/ubi", False)
    # Elsewhere default-docker's staging directory takes signatures; they are read from the built-in one.
    assert storage("quay.io/team/app:1.0")[1:] == ("file:///var/lib/containers/sigstore/team/app", False)


def _skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, env=skopeo_env(), timeout=120)


def test_skopeo_signs_into_and_verifies_from_the_registries_d_examples(registry: Registry, registry2: Registry,
                                                                       tmp_path: Path) -> None:
    """The examples, their web lookaside and staging directories swapped for local ones, in skopeo's
    --registries.d; the production policy with the test's key."""
    lookaside, default_staging, registries_d = tmp_path / "lookaside", tmp_path / "default-staging", tmp_path / "d"
    registries_d.mkdir()
    for name, doc in _registries_d().items():
        text = (REGISTRIES_D / name).read_text().replace(EXAMPLE_HOST, registry.host)
        if "default-docker" in doc:
            text = text.replace(doc["default-docker"]["lookaside-staging"], default_staging.as_uri())
        for entry in (doc.get("docker") or {}).values():
            for key in ("lookaside", "lookaside-staging"):
                if key in entry:
                    text = text.replace(entry[key], lookaside.as_uri())
        (registries_d / name).write_text(text)
    home = gpg_home(tmp_path / "gpg")
    try:
        fingerprint = home.new_key("platform@example.com")
        (tmp_path / "platform-team.gpg").write_bytes(home.public_key(fingerprint))
        image = push_image(registry, "build/app", "v1", seed=64)
        push_image(registry, "platform/unsigned", "v1", seed=65)
        signing = subprocess.run(
            ["skopeo", "--insecure-policy", "--registries.d", str(registries_d), "copy", *PLAIN, "--sign-by",
             fingerprint, registry.ref("build/app", "v1"), registry.ref("platform/app", "v1")],
            capture_output=True, text=True, env={**skopeo_env(), **home.env, "REGISTRY_AUTH_FILE": "/nonexistent"},
            timeout=120)
        assert signing.returncode == 0, signing.stderr
    finally:
        home.close()
    # registry.example.com.yaml's lookaside-staging, not default.yaml's, laid out as containers/image lays it.
    hexdigest = image.digest.removeprefix("sha256:")
    assert (lookaside / f"platform/app@sha256={hexdigest}" / "signature-1").is_file()
    assert not default_staging.exists()
    prod = _production(tmp_path, registry)
    base = ["--policy", str(prod), "--registries.d", str(registries_d), "copy", *PLAIN]
    accepted = _skopeo(*base, registry.ref("platform/app", "v1"), registry2.ref("verified/app", "v1"))
    assert accepted.returncode == 0, accepted.stderr
    refused = _skopeo(*base, registry.ref("platform/unsigned", "v1"), registry2.ref("verified/unsigned", "v1"))
    assert refused.returncode != 0 and "signature" in refused.stderr.lower(), refused.stderr
    assert json.loads(get_manifest(registry2, "verified/app", "v1")[0]) == json.loads(image.manifest)
    # mirror, given the same directory and policy, decides alike.
    ours = ["--policy", str(prod), "--registries.d", str(registries_d), "copy", *PLAIN]
    run_mirror(*ours, registry.ref("platform/app", "v1"), registry2.ref("mirrored/app", "v1"))
    assert get_manifest(registry2, "mirrored/app", "v1")[2] == image.digest
    refused_too = run_mirror(*ours, registry.ref("platform/unsigned", "v1"), registry2.ref("mirrored/unsigned", "v1"),
                             check=False)
    assert_one_line_error(refused_too, "signature")
