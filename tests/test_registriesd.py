"""registries.d scope resolution, file merging and errors (containers-registries.d(5)), the signature
blob format, and sigstoreSigned policy parsing: fast checks of the pure parts behind the end-to-end
tests in test_registry_signatures.py."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from mirror.core.digest import Digest
from mirror.core.reference import parse_docker
from mirror.core.sigblob import Sigstore, format_of, sigstore_blob, sigstore_signature, simple_signature
from mirror.errors import ConfigError, SignatureInvalid
from mirror.signing.policy import parse_policy
from mirror.transports.registry import registriesd

DIGEST = Digest.parse("sha256:" + "ab" * 32)


def _load(tmp_path: Path, files: dict[str, object]) -> registriesd.RegistriesD:
    directory = tmp_path / "registries.d"
    directory.mkdir(parents=True)
    for name, doc in files.items():
        (directory / name).write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return registriesd.load(str(directory), {"HOME": str(tmp_path / "home")})


def test_the_most_specific_scope_wins_and_staging_is_for_writing(tmp_path: Path) -> None:
    config = _load(tmp_path, {
        "a.yaml": {"default-docker": {"lookaside": "file:///default", "use-sigstore-attachments": True}},
        "b.yaml": {"docker": {
            "reg.example.com": {"lookaside": "https://sigs.example.com/all"},
            "reg.example.com/team": {"sigstore": "https://sigs.example.com/team",
                                     "sigstore-staging": "file:///staging/team", "use-sigstore-attachments": False},
            "*.example.com": {"lookaside": "file:///wildcard"},
            "reg.example.com/team/app:v1": {"lookaside-staging": "file:///only-staging"}}},
        "ignored.yml": "not: [valid",  # only *.yaml files are read
    })
    team = config.storage(parse_docker("reg.example.com/team/app:v1"))
    # The image's own scope sets only a staging location: reading falls through to the namespace.
    assert str(team.read) == "https://sigs.example.com/team/team/app"
    assert str(team.write) == "file:///only-staging/team/app"
    assert team.attachments is False
    other = config.storage(parse_docker("reg.example.com/other/app:v1"))
    assert (str(other.read), str(other.write), other.attachments) == (
        "https://sigs.example.com/all/other/app", "https://sigs.example.com/all/other/app", True)
    assert str(config.storage(parse_docker("x.example.com/a:1")).read) == "file:///wildcard/a"
    elsewhere = config.storage(parse_docker("localhost:5000/a/b@" + str(DIGEST)))
    assert str(elsewhere.signature_url(elsewhere.read, DIGEST, 1)) == f"file:///default/a/b@sha256={DIGEST.hex}/signature-2"


def test_defaults_and_errors(tmp_path: Path) -> None:
    empty = registriesd.load(str(tmp_path / "missing"), {"HOME": str(tmp_path)})
    storage = empty.storage(parse_docker("docker.io/library/busybox:latest"))
    assert storage.read == storage.write and storage.read.path.endswith("/sigstore/library/busybox")
    assert storage.attachments is False
    for files, message in (
            ({"a.yaml": {"default-docker": {}}, "b.yaml": {"default-docker": {}}}, "defined both"),
            ({"a.yaml": {"docker": {"r.io": {}}}, "b.yaml": {"docker": {"r.io": {}}}}, "defined both"),
            ({"a.yaml": "docker: [1, 2"}, "parsing"),
            ({"a.yaml": {"docker": {"r.io": {"lookaside": 5}}}}, "expected a URL"),
            ({"a.yaml": {"docker": {"r.io": {"use-sigstore-attachments": "yes"}}}}, "true or false"),
            ({"a.yaml": {"docker": ["r.io"]}}, "expected a mapping")):
        case = tmp_path / f"case-{len(list(tmp_path.iterdir()))}"
        with pytest.raises(ConfigError, match=message):
            _load(case, files)


def test_signature_blobs_round_trip_as_containers_image_stores_them() -> None:
    sig = Sigstore("application/vnd.dev.cosign.simplesigning.v1+json", b'{"a":"<&>"}',
                   {"z": "1", "dev.cosignproject.cosign/signature": "MEUC+/=="})
    blob = sigstore_blob(sig)
    # Go's encoding/json: struct field order, sorted map keys, <>& escaped, payload in base64.
    assert blob == (b'\x00sigstore-json\n{"mimeType":"application/vnd.dev.cosign.simplesigning.v1+json",'
                    b'"payload":"' + base64.b64encode(sig.payload) + b'","annotations":'
                    b'{"dev.cosignproject.cosign/signature":"MEUC+/==","z":"1"}}')
    assert sigstore_signature(blob) == sig
    assert simple_signature(blob) is None
    openpgp = b"\xa3\x01rest"
    assert (format_of(openpgp), simple_signature(openpgp), sigstore_signature(openpgp)) == \
        ("simple-signing", openpgp, None)
    assert simple_signature(b"\x00simple-signing\n\xa3x") == b"\xa3x"
    for bad in (b"", b"plain text", b"\x00no-newline", b"\x00sigstore-json\n{not json"):
        with pytest.raises(SignatureInvalid):
            sigstore_signature(bad)


def test_sigstore_signed_requirements_parse_strictly(tmp_path: Path) -> None:
    def parse(requirement: dict[str, object]) -> object:
        doc = {"default": [{"type": "sigstoreSigned", **requirement}]}
        return parse_policy(json.dumps(doc).encode(), "p.json", tmp_path).default[0]

    key = base64.b64encode(b"-----BEGIN PUBLIC KEY-----").decode()
    assert parse({"keyPaths": ["a.pub", "b.pub"]}).key_paths == (tmp_path / "a.pub", tmp_path / "b.pub")
    assert parse({"keyDatas": [key, key]}).key_data == (b"-----BEGIN PUBLIC KEY-----",) * 2
    rekor = parse({"keyPath": "a.pub", "rekorPublicKeyPath": "rekor.pub"})
    assert "rekorPublicKeyPath" in rekor.unsupported
    assert "fulcio" in parse({"fulcio": {"caPath": "x"}, "rekorPublicKeyData": key}).unsupported
    for requirement, message in (({}, "exactly one of"), ({"keyPath": "a", "keyData": key}, "exactly one of"),
                                 ({"keyDatas": []}, "non-empty"), ({"keyData": "!"}, "base64"),
                                 ({"keyPath": "a", "keyType": "GPGKeys"}, "unknown field"),
                                 ({"rekorPublicKeyPath": "r"}, "is required")):
        with pytest.raises(ConfigError, match=message):
            parse(requirement)
