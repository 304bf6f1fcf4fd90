"""policy.json enforced by copy and sync as skopeo enforces it, with skopeo as the oracle for every
decision: scopes (image, namespace, transport default, default), reject, insecureAcceptAnything,
signedBy with real GPG signatures on dir: images."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.gpg import gpg_home
from support.images import SeededImages, push_image
from support.mirror_cli import assert_one_line_error, run_mirror
from support.registry import Registry

from mirror.core.reference import parse_docker
from mirror.errors import ConfigError, SignatureInvalid
from mirror.signing.policy import Identity, parse_policy
from mirror.signing.simple import parse_payload
from mirror.signing.trust import _check_identity

PLAIN = ("--src-tls-verify=false", "--dest-tls-verify=false")


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[tuple[tuple[dict[str, str], str, bytes], tuple[dict[str, str], str, bytes]]]:
    """Two GnuPG homes with one key each: (environment, fingerprint, armored public key)."""
    trusted, stranger = gpg_home(tmp_path / "trusted"), gpg_home(tmp_path / "stranger")
    t_key, s_key = trusted.new_key("trusted@example.com"), stranger.new_key("stranger@example.com")
    yield (trusted.env, t_key, trusted.public_key(t_key)), (stranger.env, s_key, stranger.public_key(s_key))
    trusted.close()
    stranger.close()


def _both(policy: Path, *args: str, theirs_dest: str | None = None
          ) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    """The same copy by mirror and by skopeo under the same policy (skopeo to ``theirs_dest`` if given:
    skopeo creates a dir: destination before it checks the policy)."""
    ours = run_mirror("--policy", str(policy), "copy", *args, check=False)
    other = [*args[:-1], theirs_dest] if theirs_dest else list(args)
    theirs = subprocess.run(["skopeo", "--policy", str(policy), "copy", *other], capture_output=True, text=True,
                            check=False)
    return ours, theirs


def test_scopes_reject_and_accept_like_skopeo(registry: Registry, registry2: Registry, tmp_path: Path) -> None:
    for repo in ("allowed/app", "other/app", "allowed/exact"):
        push_image(registry, repo, "v1", seed=hash(repo) % 1000)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({
        "default": [{"type": "reject"}],
        "transports": {"docker": {
            f"{registry.host}/allowed": [{"type": "insecureAcceptAnything"}],
            f"{registry.host}/allowed/exact:v1": [{"type": "reject"}],  # the image's own scope wins
        }}}))
    cases = {"allowed/app": True, "other/app": False, "allowed/exact": False}
    for repo, accepted in cases.items():
        ours, theirs = _both(policy, *PLAIN, registry.ref(repo, "v1"), registry2.ref(f"copy/{repo}", "v1"))
        assert (ours.returncode == 0) == (theirs.returncode == 0) == accepted, (repo, ours.stderr, theirs.stderr)
        if not accepted:
            assert_one_line_error(ours, "rejected by the signature policy")
    # Nothing of a rejected image reached the destination (skopeo's copies were rejected too).
    catalog = run_mirror("--insecure-policy", "list-tags", "--tls-verify=false",
                         f"docker://{registry2.host}/copy/allowed/app").stdout
    assert json.loads(catalog)["Tags"] == ["v1"]
    for repo in ("other/app", "allowed/exact"):
        missing = run_mirror("inspect", "--tls-verify=false", f"docker://{registry2.host}/copy/{repo}:v1", check=False)
        assert missing.returncode != 0
    # sync applies the same policy per image; --keep-going finishes the allowed ones.
    (tmp_path / "sync.yaml").write_text(json.dumps({registry.host: {"tls-verify": False, "images": {
        "allowed/app": ["v1"], "other/app": ["v1"]}}}))
    synced = run_mirror("--policy", str(policy), "sync", "--src", "yaml", "--dest", "docker", "--keep-going",
                        "--dest-tls-verify=false", str(tmp_path / "sync.yaml"), f"{registry2.host}/synced", check=False)
    assert synced.returncode == 3
    assert "1 copied" in synced.stderr and "1 failed" in synced.stderr
    assert "rejected by the signature policy" in synced.stderr
    # --insecure-policy skips the policy; a missing or malformed policy stops before any work.
    run_mirror("--insecure-policy", "--policy", str(policy), "copy", *PLAIN, registry.ref("other/app", "v1"),
               registry2.ref("insecure/app", "v1"))
    missing_policy = run_mirror("--policy", str(tmp_path / "none.json"), "copy", *PLAIN,
                                registry.ref("allowed/app", "v1"), registry2.ref("x/app", "v1"), check=False)
    assert_one_line_error(missing_policy, "--insecure-policy")
    for bad, message in (({"transports": {}}, "missing default"), ({"default": []}, "non-empty list"),
                         ({"default": [{"type": "insecureAcceptAnything", "x": 1}]}, "unknown field"),
                         ({"default": [{"type": "sometimes"}]}, "unknown requirement type"),
                         ({"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyData": "!!"}]}, "base64")):
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        refused = run_mirror("--policy", str(tmp_path / "bad.json"), "copy", *PLAIN,
                             registry.ref("allowed/app", "v1"), registry2.ref("x/app", "v1"), check=False)
        assert_one_line_error(refused, message)
    # A requirement mirror cannot check (sigstore with Fulcio) is refused, not ignored.
    (tmp_path / "sigstore.json").write_text(json.dumps({"default": [{"type": "sigstoreSigned", "fulcio": {
        "caPath": "ca.pem", "oidcIssuer": "https://issuer.example.com", "subjectEmail": "a@example.com"},
        "rekorPublicKeyPath": "rekor.pub"}]}))
    sigstore = run_mirror("--policy", str(tmp_path / "sigstore.json"), "copy", *PLAIN,
                          registry.ref("allowed/app", "v1"), registry2.ref("x/app", "v1"), check=False)
    assert_one_line_error(sigstore, "cannot check", "fulcio")


def test_signed_by_accepts_only_good_signatures_like_skopeo(
        seeded_images: SeededImages, keys: tuple[tuple[dict[str, str], str, bytes], ...], tmp_path: Path) -> None:
    (trusted_env, trusted_fpr, trusted_pub), (stranger_env, stranger_fpr, _) = keys
    image = seeded_images.alpine
    identity = f"{seeded_images.registry.host}/{image.repo}:{image.tag}"
    source = seeded_images.registry.ref(image.repo, image.tag or "")

    def signed_dir(name: str, env: dict[str, str], fingerprint: str, sign_identity: str = identity) -> Path:
        target = tmp_path / f"img-{name}"
        proc = subprocess.run(["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false", "--sign-by",
                               fingerprint, "--sign-identity", sign_identity, source, f"dir:{target}"], env=env,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return target

    good = signed_dir("good", trusted_env, trusted_fpr)
    stranger = signed_dir("stranger", stranger_env, stranger_fpr)
    other_name = signed_dir("other-name", trusted_env, trusted_fpr, identity.replace(":3.19", ":9.9"))
    unsigned = tmp_path / "unsigned"
    run_mirror("--insecure-policy", "copy", "--src-tls-verify=false", source, f"dir:{unsigned}")
    (tmp_path / "trusted.asc").write_bytes(trusted_pub)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "reject"}], "transports": {"dir": {"": [{
        "type": "signedBy", "keyType": "GPGKeys", "keyPath": str(tmp_path / "trusted.asc"),
        "signedIdentity": {"type": "exactReference", "dockerReference": identity}}]}}}))
    cases = {good: True, stranger: False, other_name: False, unsigned: False}
    for directory, accepted in cases.items():
        target = tmp_path / "out" / directory.name
        ours, theirs = _both(policy, f"dir:{directory}", f"dir:{target}-ours", theirs_dest=f"dir:{target}-theirs")
        assert (ours.returncode == 0) == accepted, (directory.name, ours.stderr)
        assert (theirs.returncode == 0) == accepted, (directory.name, theirs.stderr)
        if accepted:
            assert (Path(f"{target}-ours") / "signature-1").read_bytes() == (directory / "signature-1").read_bytes()
        else:
            assert_one_line_error(ours, "signature")
            assert not Path(f"{target}-ours").exists()
    # The same key as inline keyData, and the default identity rule: a dir: image has no docker
    # reference to match, so matchRepoDigestOrExact rejects even a good signature (as skopeo does).
    policy.write_text(json.dumps({"default": [{"type": "signedBy", "keyType": "GPGKeys",
                                               "keyData": base64.b64encode(trusted_pub).decode()}]}))
    ours, theirs = _both(policy, f"dir:{good}", f"dir:{tmp_path / 'default-ours'}",
                         theirs_dest=f"dir:{tmp_path / 'default-theirs'}")
    assert ours.returncode != 0 and theirs.returncode != 0
    assert_one_line_error(ours, "docker reference")


# ----------------------------------------------------------------------- hostile policy and payloads
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
REQUIREMENT_PIECES = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["reject", "insecureAcceptAnything", "signedBy", "sigstoreSigned", "x"]) | json_values,
    "keyType": st.sampled_from(["GPGKeys", "x"]) | json_values, "keyPath": json_values, "keyPaths": json_values,
    "keyData": st.sampled_from(["", "AAAA", "!!"]) | json_values, "signedIdentity": json_values})


def _policy_outcome(doc: object) -> None:
    try:
        policy = parse_policy(json.dumps(doc).encode(), "p.json", Path("/nonexistent"))
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert policy.default  # a parsed policy always has requirements to apply


@settings(max_examples=150, deadline=1000)
@given(json_values)
def test_random_policy_documents_give_one_line_errors(doc: object) -> None:
    _policy_outcome(doc)
    _policy_outcome({"default": doc})
    _policy_outcome({"default": [{"type": "reject"}], "transports": {"docker": {"": doc}}})


@settings(max_examples=150, deadline=1000)
@given(st.lists(REQUIREMENT_PIECES, max_size=3))
def test_random_requirements_give_one_line_errors(requirements: list[dict[str, object]]) -> None:
    _policy_outcome({"default": requirements})


@settings(max_examples=150, deadline=1000)
@given(json_values)
def test_random_signature_payloads_are_refused_cleanly(doc: object) -> None:
    for value in (doc, {"critical": doc}, {"critical": {"type": "atomic container signature", "image": doc,
                                                        "identity": {"docker-reference": "a/b:c"}}}):
        try:
            parse_payload(json.dumps(value).encode())
        except SignatureInvalid as exc:
            assert str(exc) and "\n" not in str(exc)


D = "sha256:" + "ab" * 32
IDENTITY_CASES = [
    # (signedIdentity, image reference or None, signed reference, accepted) — containers/image's rules
    (Identity(), "busybox:latest", "docker.io/library/busybox:latest", True),
    (Identity(), "busybox:latest", "busybox:1", False),
    (Identity(), f"busybox@{D}", "busybox:whatever", True),
    (Identity(), f"busybox@{D}", f"other@{D}", False),
    (Identity("matchExact"), f"busybox@{D}", f"busybox@{D}", True),
    (Identity("matchExact"), f"busybox@{D}", "busybox:1", False),
    (Identity("matchRepository"), "busybox:1", "busybox:2", True),
    (Identity("matchRepository"), "busybox:1", "quay.io/busybox:1", False),
    (Identity("exactReference", ("quay.io/a/b:1",)), None, "quay.io/a/b:1", True),
    (Identity("exactReference", ("quay.io/a/b:1",)), "busybox:1", "quay.io/a/b:2", False),
    (Identity("exactRepository", ("quay.io/a/b",)), "busybox:1", "quay.io/a/b:9", True),
    (Identity("exactRepository", ("quay.io/a/b",)), "busybox:1", "quay.io/a/c:9", False),
    (Identity("remapIdentity", ("mirror.local/dh", "docker.io")), "mirror.local/dh/library/busybox:1",
     "busybox:1", True),
    (Identity("remapIdentity", ("mirror.local/dh", "docker.io")), "mirror.local/dh/library/busybox:1",
     "mirror.local/dh/library/busybox:1", False),
    (Identity("remapIdentity", ("mirror.local/dh", "docker.io")), "mirror.local/dhx/busybox:1",
     "docker.io/x/busybox:1", False),
    (Identity("matchRepository"), None, "busybox:1", False),
    (Identity(), "busybox:1", "Not A Reference", False),
]


@pytest.mark.parametrize(("identity", "image", "signed", "accepted"), IDENTITY_CASES)
def test_signed_identity_rules(identity: Identity, image: str | None, signed: str, accepted: bool) -> None:
    ref = parse_docker(image) if image is not None else None
    if accepted:
        _check_identity(identity, ref, signed)
    else:
        with pytest.raises(SignatureInvalid):
            _check_identity(identity, ref, signed)
