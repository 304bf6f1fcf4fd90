"""dir: signatures (``signature-N``, ``<hex>.signature-N``): carried as skopeo carries them, real GPG
signatures made by skopeo, verified by skopeo after mirror copied them."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.gpg import GpgHome
from support.gpg import gpg_home as make_gpg_home
from support.images import SeededImages
from support.mirror_cli import assert_one_line_error, run_mirror

Skopeo = Callable[..., subprocess.CompletedProcess[str]]
PLAIN = "--src-tls-verify=false"


@pytest.fixture
def gpg_home(tmp_path: Path) -> Iterator[tuple[dict[str, str], str]]:
    """A throw-away GnuPG home with one passphrase-less signing key: (environment, fingerprint)."""
    home = make_gpg_home(tmp_path / "gnupg")
    yield home.env, home.new_key("mirror-test@example.com")
    home.close()


def _tree(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in root.iterdir()}


def test_signed_dir_copies_keep_signatures_skopeo_verifies_them(
        seeded_images: SeededImages, skopeo: Skopeo, gpg_home: tuple[dict[str, str], str], tmp_path: Path) -> None:
    env, fingerprint = gpg_home
    image = seeded_images.alpine
    signed = tmp_path / "signed"
    identity = f"{seeded_images.registry.host}/{image.repo}:{image.tag}"
    subprocess.run(["skopeo", "--insecure-policy", "copy", PLAIN, "--sign-by", fingerprint, "--sign-identity", identity,
                    seeded_images.registry.ref(image.repo, image.tag or ""), f"dir:{signed}"],
                   env=env, check=True, capture_output=True)
    signature = (signed / "signature-1").read_bytes()
    ours = tmp_path / "ours"
    run_mirror("copy", f"dir:{signed}", f"dir:{ours}")
    # What mirror wrote is the same tree skopeo writes for the same copy, signature included...
    skopeo("copy", f"dir:{signed}", f"dir:{tmp_path / 'theirs'}")
    assert _tree(ours) == _tree(tmp_path / "theirs") == _tree(signed)
    # ...and the signature still verifies against the manifest mirror wrote.
    verified = subprocess.run(["skopeo", "standalone-verify", str(ours / "manifest.json"), identity, fingerprint,
                               str(ours / "signature-1")], env=env, check=True, capture_output=True, text=True)
    assert image.digest in verified.stdout
    # Destinations that cannot store signatures refuse a signed image before writing anything,
    # unless --remove-signatures drops them (skopeo's rule).
    layout = tmp_path / "layout"
    refused = run_mirror("copy", f"dir:{signed}", f"oci:{layout}:v1", check=False)
    assert_one_line_error(refused, "Can not copy signatures")
    assert not layout.exists() or not (layout / "index.json").exists()
    run_mirror("copy", "--remove-signatures", f"dir:{signed}", f"oci:{layout}:v1")
    run_mirror("copy", "--remove-signatures", f"dir:{signed}", f"dir:{tmp_path / 'unsigned'}")
    assert not (tmp_path / "unsigned" / "signature-1").exists()
    assert (tmp_path / "unsigned" / "manifest.json").read_bytes() == image.manifest
    assert signature == (ours / "signature-1").read_bytes()


def test_index_signatures_follow_their_instances(seeded_images: SeededImages, skopeo: Skopeo,
                                                 gpg_home: tuple[dict[str, str], str], tmp_path: Path) -> None:
    env, fingerprint = gpg_home
    index = seeded_images.oci_index
    source = tmp_path / "index"
    run_mirror("copy", "--all", PLAIN, seeded_images.registry.ref(index.repo, index.tag or ""), f"dir:{source}")

    def sign(manifest: Path, identity: str, out: Path) -> bytes:
        subprocess.run(["skopeo", "standalone-sign", "-o", str(out), str(manifest), identity, fingerprint],
                       env=env, check=True, capture_output=True)
        return out.read_bytes()

    top = [sign(source / "manifest.json", f"example.com/multi:{n}", source / f"signature-{n}") for n in (1, 2)]
    amd64 = next(c for c in index.children if c.platform[1] == "amd64")
    instance = {}
    for child in index.children:
        hex_ = child.digest.split(":")[1]
        instance[child.digest] = sign(source / f"{hex_}.manifest.json", "example.com/multi:one",
                                      source / f"{hex_}.signature-1")
    for flags, name in ((["--all"], "all"), ([], "system"), (["--multi-arch", "index-only"], "index-only")):
        run_mirror("copy", "--override-arch", "amd64", *flags, f"dir:{source}", f"dir:{tmp_path / ('ours-' + name)}")
        skopeo("--override-arch", "amd64", "copy", *flags, f"dir:{source}", f"dir:{tmp_path / ('theirs-' + name)}")
        assert _tree(tmp_path / f"ours-{name}") == _tree(tmp_path / f"theirs-{name}"), name
    # One platform: the chosen instance's signature becomes the copy's own signature-1.
    assert (tmp_path / "ours-system" / "signature-1").read_bytes() == instance[amd64.digest]
    assert (tmp_path / "ours-all" / "signature-2").read_bytes() == top[1]
    assert (tmp_path / "ours-index-only" / "signature-1").read_bytes() == top[0]


def test_standalone_sign_and_verify_interoperate_with_skopeo(
        seeded_images: SeededImages, gpg_home: tuple[dict[str, str], str], tmp_path: Path) -> None:
    env, fingerprint = gpg_home
    image = seeded_images.docker_image
    manifest = tmp_path / "manifest.json"
    manifest.write_bytes(image.manifest)
    identity = "registry.example.com/app/docker:v1"

    def tool(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_mirror(*args, env=env, check=check)

    def skopeo_env(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["skopeo", *args], env=env, capture_output=True, text=True, check=check)

    ours, theirs = tmp_path / "ours.sig", tmp_path / "theirs.sig"
    tool("standalone-sign", "-o", str(ours), str(manifest), identity, fingerprint)
    skopeo_env("standalone-sign", "-o", str(theirs), str(manifest), identity, fingerprint)
    expected = f"Signature verified, digest {image.digest}\n"
    for signature in (ours, theirs):
        assert tool("standalone-verify", str(manifest), identity, fingerprint, str(signature)).stdout == expected
        assert skopeo_env("standalone-verify", str(manifest), identity, fingerprint, str(signature)).stdout \
            == expected
    # The reference is compared normalised, as containers/image does.
    short = tool("standalone-verify", str(manifest), "registry.example.com/app/docker:v1", fingerprint, str(theirs))
    assert short.stdout == expected
    # Everything a verifier must refuse, each with one line and a non-zero exit.
    tampered = tmp_path / "tampered.json"
    tampered.write_bytes(image.manifest.replace(b"\"schemaVersion\": 2", b"\"schemaVersion\":2 "))
    assert tampered.read_bytes() != image.manifest
    stranger = tmp_path / "stranger"
    stranger.mkdir(mode=0o700)
    stranger_env = {**env, "GNUPGHOME": str(stranger)}
    cases = [
        (("standalone-verify", str(manifest), "registry.example.com/app/docker:v2", fingerprint, str(ours)),
         "does not match"),
        (("standalone-verify", str(manifest), identity, "0" * 40, str(ours)), "does not match expected fingerprint"),
        (("standalone-verify", str(tampered), identity, fingerprint, str(ours)), "does not match the manifest"),
        (("standalone-verify", str(manifest), identity, fingerprint, str(manifest)), "invalid signature"),
        (("standalone-sign", "-o", str(tmp_path / "x.sig"), str(manifest), "Bad::Ref", fingerprint),
         "invalid docker reference"),
        (("standalone-sign", "-o", str(tmp_path / "x.sig"), str(manifest), identity, "0" * 40), "signing with key"),
        (("standalone-sign", str(manifest), identity, fingerprint), "--output"),
    ]
    for args, message in cases:
        assert_one_line_error(tool(*args, check=False), message)
    unknown_key = run_mirror("standalone-verify", str(manifest), identity, fingerprint, str(ours), env=stranger_env,
                             check=False)
    assert_one_line_error(unknown_key, "invalid signature")
    assert not (tmp_path / "x.sig").exists()
    # A passphrase-protected key signs non-interactively with --passphrase-file.
    locked = GpgHome(env).new_key("locked@example.com", passphrase="s3cret")
    (tmp_path / "pass").write_text("s3cret\n")
    tool("standalone-sign", "--passphrase-file", str(tmp_path / "pass"), "-o", str(tmp_path / "locked.sig"),
         str(manifest), identity, locked)
    assert skopeo_env("standalone-verify", str(manifest), identity, locked, str(tmp_path / "locked.sig")).stdout \
        == expected
