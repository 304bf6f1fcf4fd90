"""Signatures of registry images (registries.d lookaside storage, signing while copying), with skopeo
1.9 as the oracle in both directions: what skopeo stores mirror verifies and copies, what mirror
stores and signs skopeo verifies. Real registry, real GnuPG (a throw-away home)."""

from __future__ import annotations

import base64
import functools
import http.server
import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import pytest
import trustme
from support.gpg import gpg_home
from support.images import push_image, push_index
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
    # under a policy for the name it was signed for. The image is already there (unsigned): the copy
    # finds it up to date and still stores its signatures, as skopeo's copy does.
    run_mirror("--insecure-policy", "copy", *PLAIN, registry.ref("plain/app", "v1"), registry.ref("mirrored/app", "v1"))
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
    # delete removes the manifest's lookaside signatures too, as skopeo delete does.
    assert skopeo_run("--registries.d", str(regd), "delete", "--tls-verify=false",
                      registry.ref("mirrored/app", "v1")).returncode == 0
    assert not ours.exists()
    run_mirror("--registries.d", str(regd), "delete", "--tls-verify=false", registry.ref("resigned/app", "v1"))
    assert not (stored / "signature-1").exists() and theirs.exists()


def _openssl_verifies(public_key: Path, payload: bytes, signature: bytes, tmp_path: Path) -> bool:
    """An independent check of a sigstore signature: OpenSSL's ``dgst -sha256 -verify``."""
    (tmp_path / "payload.bin").write_bytes(payload)
    (tmp_path / "sig.der").write_bytes(signature)
    return subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(public_key), "-signature",
                           str(tmp_path / "sig.der"), str(tmp_path / "payload.bin")],
                          capture_output=True, check=False).returncode == 0


def _sigstore_parts(blob: bytes) -> tuple[str, bytes, dict[str, str]]:
    """(mimeType, payload, annotations) of a stored sigstore signature (``0x00 sigstore-json\\n`` + JSON)."""
    assert blob.startswith(b"\x00sigstore-json\n")
    doc = json.loads(blob.split(b"\n", 1)[1])
    return doc["mimeType"], base64.b64decode(doc["payload"]), doc["annotations"]


def test_sigstore_attachments_interoperate_with_skopeo(registry: Registry, tmp_path: Path) -> None:
    """Key-based sigstore with ``use-sigstore-attachments``. Debian's skopeo 1.9 is built with sigstore
    signing and verification disabled ("Debian-local change: sigstore disabled") but still moves
    attachments, so it is the oracle for storage (attachments and ``dir:`` bytes), and OpenSSL is the
    independent signer and verifier of the ECDSA signatures."""
    image = push_image(registry, "plain/app", "v1", seed=21)
    (tmp_path / "pass").write_text("correct horse\n")
    pass_file = str(tmp_path / "pass")
    made = run_mirror("generate-sigstore-key", "--output-prefix", str(tmp_path / "key"), "--passphrase-file", pass_file)
    assert made.stdout == f'Key written to "{tmp_path}/key.private" and "{tmp_path}/key.pub"\n'
    assert (tmp_path / "key.private").stat().st_mode & 0o777 == 0o600
    assert b"ENCRYPTED COSIGN PRIVATE KEY" in (tmp_path / "key.private").read_bytes()
    assert_one_line_error(run_mirror("generate-sigstore-key", "--output-prefix", str(tmp_path / "key"),
                                     "--passphrase-file", pass_file, check=False), "Refusing to overwrite")
    run_mirror("generate-sigstore-key", "--output-prefix", str(tmp_path / "other"), "--passphrase-file", pass_file)
    regd = write_registries_d(tmp_path / "registries.d", {"default-docker": {
        "lookaside": f"file://{tmp_path / 'sigs'}", "use-sigstore-attachments": True}})
    trusted = write_policy(tmp_path / "trusted.json", {"type": "sigstoreSigned", "keyPath": str(tmp_path / "key.pub")})
    stranger = write_policy(tmp_path / "other.json", {"type": "sigstoreSigned", "keyPath": str(tmp_path / "other.pub")})
    base = ("--registries.d", str(regd))
    sign = ("--sign-by-sigstore-private-key", str(tmp_path / "key.private"), "--sign-passphrase-file", pass_file)

    # mirror signs into an attachment; skopeo reads it back into dir: and OpenSSL checks the signature.
    run_mirror(*base, "--insecure-policy", "copy", *PLAIN, *sign, registry.ref("plain/app", "v1"),
               registry.ref("ours/app", "v1"))
    tags = json.loads(run_mirror("list-tags", "--tls-verify=false", f"docker://{registry.host}/ours/app").stdout)
    assert sorted(tags["Tags"]) == sorted(["v1", image.digest.replace(":", "-") + ".sig"])
    pulled = skopeo_run(*base, "--insecure-policy", "copy", *PLAIN, registry.ref("ours/app", "v1"),
                        f"dir:{tmp_path / 'skopeo-ours'}")
    assert pulled.returncode == 0, pulled.stderr
    theirs_blob = (tmp_path / "skopeo-ours" / "signature-1").read_bytes()
    mime, payload, annotations = _sigstore_parts(theirs_blob)
    assert mime == "application/vnd.dev.cosign.simplesigning.v1+json"
    critical = json.loads(payload)["critical"]
    assert critical["identity"]["docker-reference"] == f"{registry.host}/ours/app:v1"
    assert critical["image"]["docker-manifest-digest"] == image.digest
    signature = base64.b64decode(annotations["dev.cosignproject.cosign/signature"])
    assert _openssl_verifies(tmp_path / "key.pub", payload, signature, tmp_path)
    assert not _openssl_verifies(tmp_path / "other.pub", payload, signature, tmp_path)
    # mirror verifies its own under sigstoreSigned, and stores it in dir: byte for byte as skopeo did.
    run_mirror(*base, "--policy", str(trusted), "copy", *PLAIN, registry.ref("ours/app", "v1"),
               f"dir:{tmp_path / 'mine'}")
    assert (tmp_path / "mine" / "signature-1").read_bytes() == theirs_blob

    # OpenSSL signs a payload with its own key; skopeo pushes it from dir: into an attachment it writes
    # itself; mirror verifies it with OpenSSL's public key (and refuses it with another key).
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out",
                    str(tmp_path / "ossl.key")], check=True, capture_output=True)
    subprocess.run(["openssl", "ec", "-in", str(tmp_path / "ossl.key"), "-pubout", "-out", str(tmp_path / "ossl.pub")],
                   check=True, capture_output=True)
    foreign = json.dumps({"critical": {"identity": {"docker-reference": f"{registry.host}/theirs/app:v1"},
                                       "image": {"docker-manifest-digest": image.digest},
                                       "type": "cosign container image signature"}, "optional": None}).encode()
    (tmp_path / "foreign.json").write_bytes(foreign)
    der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(tmp_path / "ossl.key"),
                          str(tmp_path / "foreign.json")], check=True, capture_output=True).stdout
    blob = b"\x00sigstore-json\n" + json.dumps({
        "mimeType": mime, "payload": base64.b64encode(foreign).decode(),
        "annotations": {"dev.cosignproject.cosign/signature": base64.b64encode(der).decode()}}).encode()
    (tmp_path / "skopeo-ours" / "signature-1").write_bytes(blob)
    pushed = skopeo_run(*base, "--insecure-policy", "copy", *PLAIN, f"dir:{tmp_path / 'skopeo-ours'}",
                        registry.ref("theirs/app", "v1"))
    assert pushed.returncode == 0, pushed.stderr
    ossl_policy = write_policy(tmp_path / "ossl.json", {"type": "sigstoreSigned",
                                                        "keyPath": str(tmp_path / "ossl.pub")})
    run_mirror(*base, "--policy", str(ossl_policy), "copy", *PLAIN, registry.ref("theirs/app", "v1"),
               f"dir:{tmp_path / 'foreign'}")
    for policy, repo in ((stranger, "theirs/app"), (stranger, "ours/app"), (trusted, "theirs/app")):
        refused = run_mirror(*base, "--policy", str(policy), "copy", *PLAIN, registry.ref(repo, "v1"),
                             f"dir:{tmp_path / 'refused'}", check=False)
        assert_one_line_error(refused, "cryptographic signature verification failed")
        assert not (tmp_path / "refused").exists()

    # dir: → registry carries the sigstore signature into an attachment; a mirror of ours/app under
    # another name is accepted through remapIdentity (key given inline as keyData).
    for repo in ("mirror/app", "other/app"):
        run_mirror(*base, "--insecure-policy", "copy", *PLAIN, f"dir:{tmp_path / 'mine'}", registry.ref(repo, "v1"))
    remap = write_policy(tmp_path / "remap.json", {
        "type": "sigstoreSigned", "keyData": base64.b64encode((tmp_path / "key.pub").read_bytes()).decode(),
        "signedIdentity": {"type": "remapIdentity", "prefix": f"{registry.host}/mirror",
                           "signedPrefix": f"{registry.host}/ours"}})
    run_mirror(*base, "--policy", str(remap), "copy", *PLAIN, registry.ref("mirror/app", "v1"),
               f"dir:{tmp_path / 'remapped'}")
    not_remapped = run_mirror(*base, "--policy", str(remap), "copy", *PLAIN, registry.ref("other/app", "v1"),
                              f"dir:{tmp_path / 'not-remapped'}", check=False)
    assert_one_line_error(not_remapped, "is not")

    # Without use-sigstore-attachments a sigstore signature has nowhere to go: one line, as skopeo fails.
    plain_regd = write_registries_d(tmp_path / "plain.d", {"default-docker": {"lookaside": f"file://{tmp_path}/s2"}})
    refused = run_mirror("--registries.d", str(plain_regd), "--insecure-policy", "copy", *PLAIN,
                         f"dir:{tmp_path / 'mine'}", registry.ref("nowhere/app", "v1"), check=False)
    assert_one_line_error(refused, "use-sigstore-attachments")


def test_sigstore_parameter_files_and_refusals(registry: Registry, tmp_path: Path) -> None:
    push_image(registry, "plain/app", "v1", seed=31)
    (tmp_path / "pass").write_text("pw\n")
    run_mirror("generate-sigstore-key", "--output-prefix", str(tmp_path / "key"), "--passphrase-file",
               str(tmp_path / "pass"))
    regd = write_registries_d(tmp_path / "registries.d", {"docker": {registry.host: {
        "use-sigstore-attachments": True, "lookaside": f"file://{tmp_path / 'sigs'}"}}})
    params = tmp_path / "params.yaml"
    params.write_text(f"privateKeyFile: {tmp_path / 'key.private'}\nprivateKeyPassphraseFile: {tmp_path / 'pass'}\n")
    run_mirror("--registries.d", str(regd), "--insecure-policy", "copy", *PLAIN, "--sign-by-sigstore", str(params),
               registry.ref("plain/app", "v1"), registry.ref("params/app", "v1"))
    policy = write_policy(tmp_path / "policy.json", {"type": "sigstoreSigned", "keyPath": str(tmp_path / "key.pub")})
    run_mirror("--registries.d", str(regd), "--policy", str(policy), "copy", *PLAIN,
               registry.ref("params/app", "v1"), f"dir:{tmp_path / 'checked'}")
    assert (tmp_path / "checked" / "signature-1").read_bytes().startswith(b"\x00sigstore-json\n")
    (tmp_path / "bad-pass").write_text("wrong\n")
    fulcio = tmp_path / "fulcio.yaml"
    fulcio.write_text("fulcio: {fulcioURL: 'https://fulcio.example.com', oidcMode: interactive}\n"
                      "rekorURL: https://rekor.example.com\n")
    typo = tmp_path / "typo.yaml"
    typo.write_text(f"privateKeyFle: {tmp_path / 'key.private'}\n")
    cases = [
        (("--sign-by-sigstore", str(fulcio)), "Fulcio and Rekor signing are not supported"),
        (("--sign-by-sigstore", str(typo)), "privateKeyFle"),
        (("--sign-by-sigstore-private-key", str(tmp_path / "key.private"), "--sign-passphrase-file",
          str(tmp_path / "bad-pass")), "wrong passphrase"),
        (("--sign-by-sigstore-private-key", str(tmp_path / "key.private")), "not a TTY"),
        (("--sign-by-sigstore-private-key", str(tmp_path / "key.pub"), "--sign-passphrase-file",
          str(tmp_path / "pass")), "pem type"),
        (("--sign-by", "ABCD", "--sign-by-sigstore-private-key", str(tmp_path / "key.private"),
          "--sign-passphrase-file", str(tmp_path / "pass")), "Only one of"),
        (("--sign-identity", "busybox", "--sign-by", "ABCD"), "fully specified"),
    ]
    for flags, message in cases:
        refused = run_mirror("--registries.d", str(regd), "--insecure-policy", "copy", *PLAIN, *flags,
                             registry.ref("plain/app", "v1"), registry.ref("refused/app", "v1"), check=False,
                             input="")
        assert_one_line_error(refused, message)
    # Signing a copy into a destination without a docker reference needs --sign-identity; nothing is written.
    refused = run_mirror("--insecure-policy", "copy", *PLAIN, "--sign-by-sigstore", str(params),
                         registry.ref("plain/app", "v1"), f"dir:{tmp_path / 'unnamed'}", check=False)
    assert_one_line_error(refused, "--sign-identity")
    assert not (tmp_path / "unnamed").exists()
    tags = run_mirror("list-tags", "--tls-verify=false", f"docker://{registry.host}/refused/app", check=False)
    assert tags.returncode != 0


class _Lookaside(http.server.SimpleHTTPRequestHandler):
    """A static lookaside web server that records every request's path and headers."""

    seen: ClassVar[list[tuple[str, dict[str, str]]]] = []

    def do_GET(self) -> None:
        self.seen.append((self.path, dict(self.headers)))
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def https_lookaside(root: Path, cert_dir: Path) -> Iterator[str]:
    """An in-process HTTPS server (trustme certificate for 127.0.0.1) serving ``root``; yields its host:port.
    ``cert_dir`` receives ``ca.crt``, the CA a client must be told about."""
    ca = trustme.CA()
    cert_dir.mkdir(parents=True, exist_ok=True)
    ca.cert_pem.write_to_path(str(cert_dir / "ca.crt"))
    handler = functools.partial(_Lookaside, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_https_lookaside_is_read_with_verified_tls_and_no_credentials(
        htpasswd_registry: Registry, keys: tuple[dict[str, str], str, str, Path], tmp_path: Path) -> None:
    """signedBy over an https:// lookaside (a web server beside a password-protected registry): the
    server's certificate must verify (certs.d of the lookaside host, never the registry's
    --tls-verify=false), and the registry's credentials never reach the lookaside host."""
    env, trusted, _stranger, trusted_asc = keys
    reg = htpasswd_registry
    creds = f"{reg.username}:{reg.password}"
    push_image(reg, "plain/app", "v1", seed=41)
    staging = tmp_path / "www" / "sigs"
    home = tmp_path / "home"
    with https_lookaside(tmp_path / "www", tmp_path / "ca-only") as host:
        regd = write_registries_d(tmp_path / "registries.d", {"default-docker": {
            "lookaside": f"https://{host}/sigs", "lookaside-staging": f"file://{staging}"}})
        pushed = skopeo_run("--insecure-policy", "--registries.d", str(regd), "copy", *PLAIN, "--src-creds", creds,
                            "--dest-creds", creds, "--sign-by", trusted, reg.ref("plain/app", "v1"),
                            reg.ref("signed/app", "v1"), env=env)
        assert pushed.returncode == 0, pushed.stderr
        _Lookaside.seen.clear()  # skopeo read the source's (empty) lookaside without verifying TLS
        policy = write_policy(tmp_path / "policy.json", {"type": "signedBy", "keyType": "GPGKeys",
                                                         "keyPath": str(trusted_asc)})
        args = ("--registries.d", str(regd), "--policy", str(policy), "copy", "--src-tls-verify=false",
                "--src-creds", creds, reg.ref("signed/app", "v1"))
        user_env = {**env, "HOME": str(home)}
        untrusted = run_mirror(*args, f"dir:{tmp_path / 'untrusted'}", env=user_env, check=False)
        assert_one_line_error(untrusted, "certificate")
        assert not _Lookaside.seen  # the TLS handshake failed before any request
        cert_dir = home / ".config" / "containers" / "certs.d" / host
        cert_dir.mkdir(parents=True)
        (cert_dir / "ca.crt").write_bytes((tmp_path / "ca-only" / "ca.crt").read_bytes())
        run_mirror(*args, f"dir:{tmp_path / 'verified'}", env=user_env)
        signature = next(staging.glob("signed/app@sha256=*/signature-1"))
        assert (tmp_path / "verified" / "signature-1").read_bytes() == signature.read_bytes()
        paths = [path for path, _ in _Lookaside.seen]
        assert paths == [f"/sigs/signed/app@{signature.parent.name.split('@')[1]}/signature-1",
                         f"/sigs/signed/app@{signature.parent.name.split('@')[1]}/signature-2"]
        assert all("Authorization" not in headers and "authorization" not in headers
                   for _, headers in _Lookaside.seen)
        # Writing to a web lookaside is not possible without a staging directory (as skopeo says).
        no_staging = write_registries_d(tmp_path / "web-only.d", {"default-docker": {"lookaside": f"https://{host}/s"}})
        refused = run_mirror("--registries.d", str(no_staging), "--insecure-policy", "copy", "--dest-tls-verify=false",
                             "--dest-creds", creds, f"dir:{tmp_path / 'verified'}", reg.ref("copy/app", "v1"),
                             check=False)
        assert_one_line_error(refused, "lookaside-staging")


def test_sync_signs_every_image_and_standalone_sign_accepts_an_empty_manifest(
        registry: Registry, registry2: Registry, keys: tuple[dict[str, str], str, str, Path], tmp_path: Path) -> None:
    env, trusted, _stranger, trusted_asc = keys
    for tag, seed in (("v1", 51), ("v2", 52)):
        push_image(registry, "team/app", tag, seed=seed)
    sigs = tmp_path / "sigs"
    regd = write_registries_d(tmp_path / "registries.d", {"default-docker": {"lookaside": f"file://{sigs}"}})
    run_mirror("--registries.d", str(regd), "--insecure-policy", "sync", "--src", "docker", "--dest", "docker",
               *PLAIN, "--sign-by", trusted, f"{registry.host}/team/app", registry2.host, env=env)
    policy = write_policy(tmp_path / "policy.json", {"type": "signedBy", "keyType": "GPGKeys",
                                                     "keyPath": str(trusted_asc)})
    for tag in ("v1", "v2"):
        verified = skopeo_run("--registries.d", str(regd), "--policy", str(policy), "copy", *PLAIN,
                              registry2.ref("app", tag), f"dir:{tmp_path / tag}", env=env)
        assert verified.returncode == 0, verified.stderr
    first = {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in sigs.glob("app@sha256=*/signature-1")}
    assert len(first) == 2
    # A second signing sync does not skip the images it finds up to date: each is signed anew (the
    # source has no signatures, so the new one replaces signature-1, as skopeo's sync would).
    run_mirror("--registries.d", str(regd), "--insecure-policy", "sync", "--src", "docker", "--dest", "docker",
               *PLAIN, "--sign-by", trusted, f"{registry.host}/team/app", registry2.host, env=env)
    # (Written again: two signings in the same second may be byte-identical, so look at the file itself.)
    assert all((path.stat().st_ino, path.stat().st_mtime_ns) != stamp for path, stamp in first.items())
    assert not list(sigs.glob("app@sha256=*/signature-2"))

    # skopeo's own test suite probes signing support with an empty manifest written to /dev/null.
    (tmp_path / "pass").write_text("")
    probe = ("standalone-sign", "/dev/null", "busybox", trusted, "-o", "/dev/null")
    assert run_mirror(*probe, env=env).returncode == skopeo_run(*probe, env=env).returncode == 0
    run_mirror("standalone-sign", "/dev/null", "busybox", trusted, "-o", str(tmp_path / "empty.sig"), env=env)
    verified = skopeo_run("standalone-verify", "/dev/null", "busybox", trusted, str(tmp_path / "empty.sig"), env=env)
    assert verified.stdout == ("Signature verified, digest "
                               "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n")


def test_index_signatures_round_trip_through_the_lookaside_like_skopeo(
        registry: Registry, keys: tuple[dict[str, str], str, str, Path], tmp_path: Path) -> None:
    """``copy --all`` of a signed index: the index's and every instance's signatures go to the lookaside
    under their own digests and come back identical, whichever tool copies them out."""
    env, trusted, _stranger, _asc = keys
    index = push_index(registry, "multi/app", "v1", seed=61)
    source = tmp_path / "source"
    run_mirror("--insecure-policy", "copy", "--all", *PLAIN, registry.ref("multi/app", "v1"), f"dir:{source}")
    signed = [(source / "manifest.json", source / "signature-1")]
    signed += [(source / f"{c.digest.split(':')[1]}.manifest.json", source / f"{c.digest.split(':')[1]}.signature-1")
               for c in index.children]
    for manifest, signature in signed:
        done = skopeo_run("standalone-sign", "-o", str(signature), str(manifest), f"{registry.host}/multi/app:v1",
                          trusted, env=env)
        assert done.returncode == 0, done.stderr
    sigs = tmp_path / "sigs"
    regd = write_registries_d(tmp_path / "registries.d", {"default-docker": {"lookaside": f"file://{sigs}"}})
    run_mirror("--registries.d", str(regd), "--insecure-policy", "copy", "--all", *PLAIN, f"dir:{source}",
               registry.ref("signed/app", "v1"))
    for digest in (index.digest, *(c.digest for c in index.children)):
        assert (sigs / f"signed/app@sha256={digest.split(':')[1]}" / "signature-1").is_file()
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    pulled = skopeo_run("--registries.d", str(regd), "--insecure-policy", "copy", "--all", *PLAIN,
                        registry.ref("signed/app", "v1"), f"dir:{theirs}")
    assert pulled.returncode == 0, pulled.stderr
    run_mirror("--registries.d", str(regd), "--insecure-policy", "copy", "--all", *PLAIN,
               registry.ref("signed/app", "v1"), f"dir:{ours}")
    tree = {p.name: p.read_bytes() for p in source.iterdir()}
    assert {p.name: p.read_bytes() for p in theirs.iterdir()} == tree
    assert {p.name: p.read_bytes() for p in ours.iterdir()} == tree


@pytest.mark.anyio
async def test_a_missing_lookaside_is_looked_at_once_per_run(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """No signing anywhere (the usual case): the first image finds the lookaside root missing, every
    later one knows it without a look; a signature this run writes makes its directory looked at again."""
    from mirror.transports.registry import lookaside

    looks: list[str] = []
    real = lookaside._missing_ancestor
    monkeypatch.setattr(lookaside, "_missing_ancestor", lambda d: looks.append(d) or real(d))
    dirs = lookaside.MissingDirs()
    root = tmp_path / "sigstore"
    assert await dirs.missing(str(root / "team"))
    assert await dirs.missing(str(root / "other/deep"))
    assert looks == [str(root / "team")]  # the second one is under the missing root
    (root / "team" / "app@sha256=00").mkdir(parents=True)
    dirs.written(str(root / "team" / "app@sha256=00"))
    assert not await dirs.missing(str(root / "team"))
    assert not await dirs.missing(str(root / "team"))  # present: remembered too
    assert looks == [str(root / "team")] * 2
