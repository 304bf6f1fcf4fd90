"""Credential lookup (skopeo / containers-auth.json order), credential helpers and auth-file writes."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirror.errors import ConfigError, CredentialError, MirrorError
from mirror.http import authfile
from mirror.http.credentials import (
    ANONYMOUS,
    AuthFile,
    Credential,
    CredentialOptions,
    auth_file_paths,
    lookup_keys,
    normalize_auth_key,
    parse_creds,
    resolve_credential,
    run_credential_helper,
)

NO_OPTS = CredentialOptions()
SKOPEO = shutil.which("skopeo")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def entry(user: str, password: str) -> dict[str, str]:
    return {"auth": b64(f"{user}:{password}")}


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


class Box:
    """A fake HOME / XDG layout with an env mapping pointing at it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.runtime = root / "run"
        self.bin = root / "bin"
        for d in (self.home, self.runtime, self.bin):
            d.mkdir(parents=True)
        self.env: dict[str, str] = {
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": str(self.runtime),
            "PATH": f"{self.bin}{os.pathsep}/usr/bin{os.pathsep}/bin",
        }

    @property
    def runtime_file(self) -> Path:
        return self.runtime / "containers" / "auth.json"

    @property
    def config_file(self) -> Path:
        return self.home / ".config" / "containers" / "auth.json"

    @property
    def docker_file(self) -> Path:
        return self.home / ".docker" / "config.json"

    @property
    def legacy_file(self) -> Path:
        return self.home / ".dockercfg"

    def auths(self, path: Path, auths: dict[str, Any], **extra: Any) -> Path:
        return write_json(path, {"auths": auths, **extra})

    def helper(self, name: str, body: str) -> None:
        """An executable ``docker-credential-<name>`` Python script; ``server`` holds its stdin."""
        script = self.bin / f"docker-credential-{name}"
        script.write_text(
            f"#!{sys.executable}\nimport json, sys, time\n"
            "assert sys.argv[1:] == ['get'], sys.argv\nserver = sys.stdin.read().strip()\n" + body
        )
        script.chmod(0o755)

    def resolve(self, host: str, repo: str | None = None, opts: CredentialOptions = NO_OPTS) -> Credential:
        return anyio.run(partial(resolve_credential, host, repo, opts, self.env))


@pytest.fixture
def box(tmp_path: Path) -> Box:
    return Box(tmp_path)


# --- Credential and options values -------------------------------------------------------------


def test_credential_repr_redacts_secrets() -> None:
    cred = Credential(username="alice", password="hunter2")
    assert repr(cred) == "Credential(username='alice', password=<redacted>)"
    assert str(cred) == repr(cred)
    tok = Credential(identity_token="refresh-abc", registry_token="bearer-xyz")
    assert "refresh-abc" not in repr(tok) and "bearer-xyz" not in repr(tok)
    assert repr(tok) == "Credential(identity_token=<redacted>, registry_token=<redacted>)"
    assert repr(ANONYMOUS) == "Credential(<anonymous>)"


def test_is_anonymous() -> None:
    assert Credential().is_anonymous
    assert not Credential(username="u").is_anonymous
    assert not Credential(identity_token="t").is_anonymous
    assert not Credential(registry_token="t").is_anonymous


def test_options_repr_redacts() -> None:
    opts = CredentialOptions(creds="bob:s3cret", registry_token="tok-123", authfile="/a.json")
    text = repr(opts)
    assert "s3cret" not in text and "tok-123" not in text
    assert "bob" in text and "/a.json" in text
    assert "pw-9" not in str(CredentialOptions(username="u", password="pw-9"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("alice:pw", ("alice", "pw")), ("a:b:c", ("a", "b:c")), ("alice:", ("alice", ""))],
)
def test_parse_creds(text: str, expected: tuple[str, str]) -> None:
    assert parse_creds(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "credentials can't be empty"),
        (":pw", "username can't be empty"),
        ("alice", "password missing in --creds; use USER:PASSWORD"),
    ],
)
def test_parse_creds_errors(text: str, message: str) -> None:
    with pytest.raises(CredentialError) as info:
        parse_creds(text)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"creds": "a:b", "no_creds": True}, "creds and no-creds cannot be specified at the same time"),
        (
            {"username": "a", "password": "b", "no_creds": True},
            "username and no-creds cannot be specified at the same time",
        ),
        ({"creds": "a:b", "username": "a"}, "creds and username cannot be specified at the same time"),
        ({"username": "a"}, "password must be specified when username is specified"),
        ({"password": "b"}, "username must be specified when password is specified"),
        ({"creds": "a:b", "password": "b"}, "username must be specified when password is specified"),
        ({"password": "b", "no_creds": True}, "username must be specified when password is specified"),
        (
            {"registry_token": "t", "no_creds": True},
            "registry-token and no-creds cannot be specified at the same time",
        ),
    ],
)
def test_option_conflicts(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        CredentialOptions(**kwargs)
    assert str(info.value) == message
    assert "\n" not in message


def test_creds_without_password_is_a_credential_error() -> None:
    with pytest.raises(CredentialError, match="password missing"):
        CredentialOptions(creds="alice")


# --- Search path -------------------------------------------------------------------------------


def test_default_paths_in_order(box: Box) -> None:
    assert auth_file_paths(None, box.env) == (
        AuthFile(box.runtime_file),
        AuthFile(box.config_file),
        AuthFile(box.docker_file),
        AuthFile(box.legacy_file, legacy=True),
    )


def test_paths_without_xdg_runtime_dir_use_run_containers_uid(box: Box) -> None:
    del box.env["XDG_RUNTIME_DIR"]
    paths = auth_file_paths(None, box.env)
    assert paths[0] == AuthFile(Path(f"/run/containers/{os.getuid()}/auth.json"))


def test_paths_honour_xdg_config_home_and_docker_config(box: Box) -> None:
    box.env["XDG_CONFIG_HOME"] = str(box.root / "cfg")
    box.env["DOCKER_CONFIG"] = str(box.root / "dock")
    paths = [p.path for p in auth_file_paths(None, box.env)]
    assert paths[1] == box.root / "cfg" / "containers" / "auth.json"
    assert paths[2] == box.root / "dock" / "config.json"
    assert paths[3] == box.legacy_file


def test_explicit_authfile_is_the_only_file(box: Box) -> None:
    box.env["REGISTRY_AUTH_FILE"] = str(box.root / "env.json")
    assert auth_file_paths(None, box.env) == (AuthFile(box.root / "env.json"),)
    assert auth_file_paths(str(box.root / "flag.json"), box.env) == (AuthFile(box.root / "flag.json"),)
    box.env["REGISTRY_AUTH_FILE"] = ""
    assert len(auth_file_paths(None, box.env)) == 4


# --- Lookup order across files ------------------------------------------------------------------


def test_first_file_with_credentials_wins(box: Box) -> None:
    files = [box.runtime_file, box.config_file, box.docker_file]
    for i, path in enumerate(files):
        box.auths(path, {"quay.io": entry(f"user{i}", f"pw{i}")})
    write_json(box.legacy_file, {"quay.io": entry("user3", "pw3")})
    for i, path in enumerate([*files, box.legacy_file]):
        assert box.resolve("quay.io", "ns/repo") == Credential(username=f"user{i}", password=f"pw{i}")
        path.unlink()
    assert box.resolve("quay.io", "ns/repo") == ANONYMOUS


def test_file_without_match_falls_through(box: Box) -> None:
    box.auths(box.runtime_file, {"other.io": entry("x", "y")})
    box.auths(box.docker_file, {"quay.io": entry("docker", "pw")})
    assert box.resolve("quay.io", None).username == "docker"


def test_docker_config_env_replaces_home_docker(box: Box) -> None:
    box.auths(box.docker_file, {"quay.io": entry("home", "pw")})
    box.auths(box.root / "dock" / "config.json", {"quay.io": entry("env", "pw")})
    assert box.resolve("quay.io").username == "home"
    box.env["DOCKER_CONFIG"] = str(box.root / "dock")
    assert box.resolve("quay.io").username == "env"


def test_xdg_config_home_replaces_dot_config(box: Box) -> None:
    box.auths(box.config_file, {"quay.io": entry("dotconfig", "pw")})
    box.env["XDG_CONFIG_HOME"] = str(box.root / "cfg")
    assert box.resolve("quay.io") == ANONYMOUS
    box.auths(box.root / "cfg" / "containers" / "auth.json", {"quay.io": entry("xdg", "pw")})
    assert box.resolve("quay.io").username == "xdg"


@pytest.mark.parametrize("via", ["flag", "env"])
def test_authfile_means_only_that_file(box: Box, via: str) -> None:
    box.auths(box.runtime_file, {"quay.io": entry("default", "pw")})
    chosen = box.auths(box.root / "chosen.json", {"other.io": entry("chosen", "pw")})
    opts = NO_OPTS
    if via == "flag":
        opts = CredentialOptions(authfile=str(chosen))
    else:
        box.env["REGISTRY_AUTH_FILE"] = str(chosen)
    assert box.resolve("quay.io", opts=opts) == ANONYMOUS
    assert box.resolve("other.io", opts=opts).username == "chosen"


def test_missing_authfile_is_anonymous(box: Box) -> None:
    box.auths(box.runtime_file, {"quay.io": entry("default", "pw")})
    opts = CredentialOptions(authfile=str(box.root / "nope.json"))
    assert box.resolve("quay.io", opts=opts) == ANONYMOUS


def test_missing_xdg_runtime_dir_is_skipped(box: Box) -> None:
    box.env["XDG_RUNTIME_DIR"] = str(box.root / "does-not-exist")
    box.auths(box.docker_file, {"quay.io": entry("docker", "pw")})
    assert box.resolve("quay.io").username == "docker"


# --- Flags --------------------------------------------------------------------------------------


def test_flags_override_files(box: Box) -> None:
    box.auths(box.runtime_file, {"quay.io": entry("file", "pw")})
    assert box.resolve("quay.io", opts=CredentialOptions(creds="flag:secret")) == Credential("flag", "secret")
    both = CredentialOptions(username="u", password="p")
    assert box.resolve("quay.io", opts=both) == Credential("u", "p")
    tok = CredentialOptions(registry_token="bearer")
    assert box.resolve("quay.io", opts=tok) == Credential(registry_token="bearer")
    assert box.resolve("quay.io", opts=CredentialOptions(no_creds=True)) == ANONYMOUS
    mixed = CredentialOptions(creds="a:b", registry_token="t")
    assert box.resolve("quay.io", opts=mixed) == Credential("a", "b", registry_token="t")


def test_empty_username_and_password_flags_still_override(box: Box) -> None:
    box.auths(box.runtime_file, {"quay.io": entry("file", "pw")})
    opts = CredentialOptions(username="", password="")
    assert box.resolve("quay.io", opts=opts) == ANONYMOUS


# --- Keys inside a file -------------------------------------------------------------------------


def test_lookup_keys() -> None:
    assert lookup_keys("quay.io", "a/b/c") == ("quay.io/a/b/c", "quay.io/a/b", "quay.io/a", "quay.io")
    assert lookup_keys("quay.io", None) == ("quay.io",)
    assert lookup_keys("localhost:5000", "/x/") == ("localhost:5000/x", "localhost:5000")


def test_most_specific_key_wins(box: Box) -> None:
    box.auths(
        box.runtime_file,
        {
            "quay.io": entry("host", "pw"),
            "quay.io/ns": entry("ns", "pw"),
            "quay.io/ns/repo": entry("repo", "pw"),
        },
    )
    assert box.resolve("quay.io", "ns/repo").username == "repo"
    assert box.resolve("quay.io", "ns/other").username == "ns"
    assert box.resolve("quay.io", "elsewhere/x").username == "host"
    assert box.resolve("quay.io", None).username == "host"


def test_namespace_key_never_matches_other_namespaces(box: Box) -> None:
    box.auths(box.runtime_file, {"quay.io/ns": entry("ns", "pw")})
    assert box.resolve("quay.io", "other/repo") == ANONYMOUS
    assert box.resolve("quay.io", None) == ANONYMOUS


def test_empty_entry_is_skipped(box: Box) -> None:
    box.auths(box.runtime_file, {"quay.io/ns": {}, "quay.io": entry("host", "pw")})
    assert box.resolve("quay.io", "ns/repo").username == "host"
    box.auths(box.runtime_file, {"quay.io": {}})
    box.auths(box.docker_file, {"quay.io": entry("docker", "pw")})
    assert box.resolve("quay.io", "ns/repo").username == "docker"


def test_colonless_auth_is_skipped(box: Box) -> None:
    box.auths(box.runtime_file, {"quay.io": {"auth": b64("no-colon")}})
    assert box.resolve("quay.io") == ANONYMOUS


def test_identity_token(box: Box) -> None:
    box.auths(box.runtime_file, {"quay.io": {"auth": b64("u:p"), "identitytoken": "refresh"}})
    assert box.resolve("quay.io") == Credential("u", "p", identity_token="refresh")
    box.auths(box.runtime_file, {"quay.io": {"identitytoken": "refresh"}})
    assert box.resolve("quay.io") == Credential(identity_token="refresh")


def test_password_nul_padding_is_trimmed(box: Box) -> None:
    box.auths(box.runtime_file, {"quay.io": {"auth": b64("u:p\x00\x00")}})
    assert box.resolve("quay.io").password == "p"


@pytest.mark.parametrize(
    ("key", "normalized"),
    [
        ("https://index.docker.io/v1/", "index.docker.io"),
        ("docker.io", "index.docker.io"),
        ("registry-1.docker.io", "index.docker.io"),
        ("http://quay.io/v2/", "quay.io"),
        ("https://localhost:5000", "localhost:5000"),
        ("quay.io/ns", "quay.io/ns"),
    ],
)
def test_normalize_auth_key(key: str, normalized: str) -> None:
    assert normalize_auth_key(key) == normalized


def test_legacy_normalization_drops_paths() -> None:
    assert normalize_auth_key("quay.io/v1/", legacy=True) == "quay.io"


@pytest.mark.parametrize("file_key", ["https://index.docker.io/v1/", "index.docker.io", "docker.io"])
@pytest.mark.parametrize("host", ["docker.io", "index.docker.io", "registry-1.docker.io"])
def test_docker_hub_aliases(box: Box, file_key: str, host: str) -> None:
    box.auths(box.docker_file, {file_key: entry("hub", "pw")})
    assert box.resolve(host, "library/busybox") == Credential("hub", "pw")


def test_hub_namespace_keys_use_docker_io(box: Box) -> None:
    box.auths(box.runtime_file, {"docker.io/library": entry("lib", "pw"), "docker.io": entry("hub", "pw")})
    assert box.resolve("registry-1.docker.io", "library/busybox").username == "lib"
    assert box.resolve("docker.io", "someone/app").username == "hub"


def test_url_keys_match_their_host(box: Box) -> None:
    box.auths(box.docker_file, {"https://quay.io/v2/": entry("url", "pw")})
    assert box.resolve("quay.io", "ns/repo").username == "url"


def test_exact_key_beats_normalized_key(box: Box) -> None:
    box.auths(box.runtime_file, {"https://quay.io": entry("url", "pw"), "quay.io": entry("exact", "pw")})
    assert box.resolve("quay.io").username == "exact"


def test_legacy_dockercfg(box: Box) -> None:
    write_json(
        box.legacy_file,
        {
            "https://index.docker.io/v1/": {"auth": b64("legacy:pw"), "email": "a@b.c"},
            "quay.io/ns": entry("ignored-ns", "pw"),
        },
    )
    assert box.resolve("docker.io", "library/busybox") == Credential("legacy", "pw")
    # Legacy files have no namespaced keys: "quay.io/ns" normalises to the whole registry.
    assert box.resolve("quay.io", "other/repo").username == "ignored-ns"


def test_invalid_json_names_the_file(box: Box) -> None:
    box.runtime_file.parent.mkdir(parents=True)
    box.runtime_file.write_text("{not json")
    with pytest.raises(ConfigError) as info:
        box.resolve("quay.io")
    assert str(box.runtime_file) in str(info.value)
    box.runtime_file.write_text("")
    with pytest.raises(ConfigError, match="not valid JSON"):
        box.resolve("quay.io")
    box.runtime_file.write_text("[]")
    with pytest.raises(ConfigError, match="not a JSON object"):
        box.resolve("quay.io")


def test_invalid_structures_are_config_errors(box: Box) -> None:
    box.auths(box.runtime_file, {"quay.io": "nope"})
    with pytest.raises(ConfigError, match=r"'quay\.io' is not a JSON object"):
        box.resolve("quay.io")
    write_json(box.runtime_file, {"auths": []})
    with pytest.raises(ConfigError, match="'auths' is not a JSON object"):
        box.resolve("quay.io")
    box.auths(box.runtime_file, {"quay.io": {"auth": "!!!not base64"}})
    with pytest.raises(ConfigError, match="invalid base64"):
        box.resolve("quay.io")


def test_unreadable_file_is_config_error(box: Box) -> None:
    box.runtime_file.parent.mkdir(parents=True)
    box.runtime_file.mkdir()  # A directory where the file should be.
    with pytest.raises(ConfigError, match=str(box.runtime_file)):
        box.resolve("quay.io")


# --- Credential helpers -------------------------------------------------------------------------

HELPER_OK = 'print(json.dumps({"ServerURL": server, "Username": "helper-" + server, "Secret": "s3"}))\n'
HELPER_TOKEN = 'print(json.dumps({"ServerURL": server, "Username": "<token>", "Secret": "refresh"}))\n'
HELPER_NOT_FOUND = 'print("credentials not found in native keychain")\nsys.exit(1)\n'
HELPER_FAIL = 'print("keychain locked", file=sys.stderr)\nsys.exit(3)\n'
HELPER_GARBAGE = 'print("not json at all")\n'
HELPER_SLOW = "time.sleep(30)\n"


def test_cred_helper_returns_credentials(box: Box) -> None:
    box.helper("mirrortest", HELPER_OK)
    box.auths(box.runtime_file, {"quay.io": entry("file", "pw")}, credHelpers={"quay.io": "mirrortest"})
    # The helper wins over auths in the same file and gets the host on stdin.
    assert box.resolve("quay.io", "ns/repo") == Credential("helper-quay.io", "s3")


def test_cred_helper_token_user_means_identity_token(box: Box) -> None:
    box.helper("mirrortoken", HELPER_TOKEN)
    box.auths(box.runtime_file, {}, credHelpers={"quay.io": "mirrortoken"})
    assert box.resolve("quay.io") == Credential(identity_token="refresh")


def test_cred_helper_not_found_moves_to_next_file(box: Box) -> None:
    box.helper("mirrornotfound", HELPER_NOT_FOUND)
    box.auths(
        box.runtime_file, {"quay.io": entry("same-file", "pw")}, credHelpers={"quay.io": "mirrornotfound"}
    )
    assert box.resolve("quay.io") == ANONYMOUS
    box.auths(box.docker_file, {"quay.io": entry("docker", "pw")})
    assert box.resolve("quay.io").username == "docker"


def test_cred_helper_only_for_its_host(box: Box) -> None:
    box.helper("mirrortest", HELPER_OK)
    box.auths(box.runtime_file, {"other.io": entry("o", "pw")}, credHelpers={"quay.io": "mirrortest"})
    assert box.resolve("other.io").username == "o"


def test_cred_helper_for_docker_hub_alias_key(box: Box) -> None:
    box.helper("mirrortest", HELPER_OK)
    box.auths(box.docker_file, {}, credHelpers={"https://index.docker.io/v1/": "mirrortest"})
    assert box.resolve("registry-1.docker.io").username == "helper-https://index.docker.io/v1/"


@pytest.mark.parametrize(
    ("name", "body", "match"),
    [
        (
            "mirrorfail",
            HELPER_FAIL,
            r"docker-credential-mirrorfail failed for quay.io \(exit 3\): keychain locked",
        ),
        ("mirrorgarbage", HELPER_GARBAGE, "returned invalid JSON"),
        ("mirrormissing", None, "docker-credential-mirrormissing not found in PATH"),
    ],
)
def test_cred_helper_failures(box: Box, name: str, body: str | None, match: str) -> None:
    if body is not None:
        box.helper(name, body)
    box.auths(box.runtime_file, {}, credHelpers={"quay.io": name})
    with pytest.raises(CredentialError, match=match):
        box.resolve("quay.io")


def test_cred_helper_timeout(box: Box) -> None:
    box.helper("mirrorslow", HELPER_SLOW)
    with pytest.raises(CredentialError, match=r"timed out after 0\.5s"):
        anyio.run(partial(run_credential_helper, "mirrorslow", "quay.io", box.env, helper_timeout=0.5))


def test_cred_helper_name_cannot_escape(box: Box) -> None:
    box.auths(box.runtime_file, {}, credHelpers={"quay.io": "../../bin/sh"})
    with pytest.raises(ConfigError, match="invalid credential helper name"):
        box.resolve("quay.io")


# --- authfile: login / logout -------------------------------------------------------------------


def test_default_auth_path(box: Box) -> None:
    assert authfile.default_auth_path(None, box.env) == box.runtime_file
    assert authfile.default_auth_path("/x/a.json", box.env) == Path("/x/a.json")
    box.env["REGISTRY_AUTH_FILE"] = "/y/b.json"
    assert authfile.default_auth_path(None, box.env) == Path("/y/b.json")
    assert authfile.default_auth_path("/x/a.json", box.env) == Path("/x/a.json")
    del box.env["REGISTRY_AUTH_FILE"], box.env["XDG_RUNTIME_DIR"]
    assert authfile.default_auth_path(None, box.env) == Path(f"/run/containers/{os.getuid()}/auth.json")
    box.env["XDG_RUNTIME_DIR"] = str(box.root / "missing")
    with pytest.raises(ConfigError, match="XDG_RUNTIME_DIR"):
        authfile.default_auth_path(None, box.env)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_store_creates_private_file_and_dirs(box: Box) -> None:
    path = box.root / "new" / "deeper" / "auth.json"
    authfile.store(path, "quay.io", "alice", "pw:with:colons")
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700 and mode(path.parent.parent) == 0o700
    data = json.loads(path.read_text())
    assert data == {"auths": {"quay.io": {"auth": b64("alice:pw:with:colons")}}}
    assert os.listdir(path.parent) == ["auth.json"]
    opts = CredentialOptions(authfile=str(path))
    assert box.resolve("quay.io", opts=opts) == Credential("alice", "pw:with:colons")


def test_store_preserves_other_content_and_tightens_mode(box: Box) -> None:
    path = box.auths(
        box.runtime_file,
        {"other.io": {"auth": b64("o:p"), "identitytoken": "t"}, "quay.io": {"identitytoken": "old"}},
        credsStore="desktop",
        credHelpers={"gcr.io": "gcloud"},
        HttpHeaders={"User-Agent": "x"},
    )
    path.chmod(0o644)
    authfile.store(path, "quay.io", "alice", "new")
    assert mode(path) == 0o600
    data = json.loads(path.read_text())
    assert data["credsStore"] == "desktop" and data["HttpHeaders"] == {"User-Agent": "x"}
    assert data["credHelpers"] == {"gcr.io": "gcloud"}
    assert data["auths"]["other.io"] == {"auth": b64("o:p"), "identitytoken": "t"}
    assert data["auths"]["quay.io"] == {"auth": b64("alice:new")}
    assert sorted(os.listdir(path.parent)) == ["auth.json"]


@pytest.mark.parametrize(
    ("key", "stored"),
    [
        ("docker.io", "docker.io"),
        ("index.docker.io", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("https://index.docker.io/v1/", "docker.io"),
        ("https://quay.io/v2/", "quay.io"),
        ("quay.io/ns/repo", "quay.io/ns/repo"),
        ("localhost:5000", "localhost:5000"),
        ("index.docker.io/library", "docker.io/library"),
    ],
)
def test_store_key_normalisation(box: Box, key: str, stored: str) -> None:
    authfile.store(box.runtime_file, key, "u", "p")
    assert list(json.loads(box.runtime_file.read_text())["auths"]) == [stored]


@pytest.mark.parametrize("key", ["quay.io/ns/repo:tag", "quay.io/repo@sha256:abc", "", "https://"])
def test_store_rejects_bad_keys(box: Box, key: str) -> None:
    with pytest.raises(CredentialError, match="invalid registry key"):
        authfile.store(box.runtime_file, key, "u", "p")


def test_store_rejects_bad_usernames(box: Box) -> None:
    with pytest.raises(CredentialError, match="can't be empty"):
        authfile.store(box.runtime_file, "quay.io", "", "p")
    with pytest.raises(CredentialError, match="must not contain ':'"):
        authfile.store(box.runtime_file, "quay.io", "a:b", "p")
    assert not box.runtime_file.exists()


def test_store_refuses_cred_helper_keys(box: Box) -> None:
    box.auths(box.runtime_file, {}, credHelpers={"quay.io": "secretservice"})
    with pytest.raises(CredentialError, match="credential helper"):
        authfile.store(box.runtime_file, "quay.io", "u", "p")


def test_store_failure_leaves_file_and_no_temp(box: Box, monkeypatch: pytest.MonkeyPatch) -> None:
    path = box.auths(box.runtime_file, {"quay.io": entry("old", "pw")})
    before = path.read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(CredentialError) as info:
        authfile.store(path, "quay.io", "new", "topsecret-pw")
    assert str(path) in str(info.value) and "topsecret-pw" not in str(info.value)
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["auth.json"]


def test_store_invalid_existing_json_is_config_error(box: Box) -> None:
    box.runtime_file.parent.mkdir(parents=True)
    box.runtime_file.write_text("{")
    with pytest.raises(ConfigError, match=str(box.runtime_file)):
        authfile.store(box.runtime_file, "quay.io", "u", "p")
    assert box.runtime_file.read_text() == "{"


def test_remove(box: Box) -> None:
    path = box.runtime_file
    assert authfile.remove(path, "quay.io") is False  # No file.
    authfile.store(path, "quay.io", "a", "b")
    authfile.store(path, "docker.io", "c", "d")
    path.chmod(0o640)
    assert authfile.remove(path, "https://quay.io") is True
    assert authfile.remove(path, "quay.io") is False
    assert mode(path) == 0o600
    assert json.loads(path.read_text())["auths"] == {"docker.io": {"auth": b64("c:d")}}
    assert authfile.remove(path, "index.docker.io") is True
    assert json.loads(path.read_text()) == {"auths": {}}
    assert os.listdir(path.parent) == ["auth.json"]


def test_remove_all(box: Box) -> None:
    path = box.auths(box.runtime_file, {"a.io": entry("a", "b")}, credHelpers={"gcr.io": "gcloud"})
    authfile.remove_all(path)
    assert json.loads(path.read_text()) == {"auths": {}, "credHelpers": {"gcr.io": "gcloud"}}
    assert mode(path) == 0o600
    missing = box.root / "none" / "auth.json"
    authfile.remove_all(missing)
    assert not missing.exists() and not missing.parent.exists()


def test_get_login(box: Box) -> None:
    assert authfile.get_login("quay.io", None, box.env) is None
    box.auths(box.docker_file, {"https://index.docker.io/v1/": entry("hubuser", "pw")})
    assert authfile.get_login("docker.io", None, box.env) == "hubuser"
    authfile.store(authfile.default_auth_path(None, box.env), "quay.io/ns", "nsuser", "pw")
    assert authfile.get_login("quay.io/ns/repo", None, box.env) == "nsuser"
    assert authfile.get_login("quay.io", None, box.env) is None
    other = box.root / "other.json"
    authfile.store(other, "quay.io", "fileuser", "pw")
    assert authfile.get_login("quay.io", str(other), box.env) == "fileuser"
    assert authfile.get_login("docker.io", str(other), box.env) is None
    box.auths(box.config_file, {"tok.io": {"identitytoken": "t"}})
    assert authfile.get_login("tok.io", None, box.env) is None


# --- Secrets never leak into messages -----------------------------------------------------------

SECRETS = st.text(min_size=1, max_size=40).map(lambda s: "pw-" + s)


def error_text(action: Callable[[], object]) -> str:
    try:
        action()
    except MirrorError as exc:
        return f"{exc} {exc!r} {exc.args}"
    raise AssertionError("no error raised")


@settings(max_examples=60, deadline=None)
@given(password=SECRETS)
def test_secrets_absent_from_option_errors_and_reprs(password: str) -> None:
    cases: list[Callable[[], object]] = [
        lambda: parse_creds(":" + password),
        lambda: CredentialOptions(creds="u:" + password, username="x", password=password),
        lambda: CredentialOptions(creds="u:" + password, no_creds=True),
        lambda: CredentialOptions(password=password),
        lambda: CredentialOptions(username="u", password=password, no_creds=True),
        lambda: CredentialOptions(registry_token=password, no_creds=True),
    ]
    for case in cases:
        assert password not in error_text(case)
    for value in (
        Credential("u", password),
        Credential(identity_token=password),
        Credential(registry_token=password),
        CredentialOptions(creds="u:" + password),
        CredentialOptions(username="u", password=password, registry_token=password),
    ):
        assert password not in repr(value) and password not in str(value)


@settings(max_examples=40, deadline=None)
@given(password=SECRETS)
def test_secrets_absent_from_file_errors(password: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        box = Box(Path(tmp))
        bad_auth = b64("u:" + password) + "!"
        box.auths(box.runtime_file, {"quay.io": {"auth": bad_auth}})
        text = error_text(lambda: box.resolve("quay.io"))
        assert password not in text and bad_auth not in text
        box.runtime_file.write_text('{"auths": {"quay.io": {"auth": "' + password)  # Truncated JSON.
        assert password not in error_text(lambda: box.resolve("quay.io"))
        assert password not in error_text(lambda: authfile.store(box.runtime_file, "q.io", "a:b", password))
        for key in (f"https://u:{password}@quay.io", f"quay.io/x:{password}"):
            assert password not in error_text(partial(authfile.store, box.runtime_file, key, "u", "p"))


# --- Interoperability with the real skopeo ------------------------------------------------------

needs_skopeo = pytest.mark.skipif(SKOPEO is None, reason="skopeo not installed")


def skopeo_get_login(box: Box, key: str, *flags: str) -> str | None:
    assert SKOPEO is not None
    proc = subprocess.run(
        [SKOPEO, "login", "--get-login", *flags, key],
        capture_output=True,
        text=True,
        env=box.env,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


@needs_skopeo
def test_get_login_agrees_with_skopeo(box: Box) -> None:
    box.helper("mirrortest", HELPER_OK)
    box.auths(
        box.docker_file,
        {
            "https://index.docker.io/v1/": entry("hub", "pw"),
            "quay.io": entry("host", "pw"),
            "https://example.com/v2/": entry("ex", "pw"),
            "foo.io": {},
            "foo.io/x": entry("foo", "pw"),
        },
        credHelpers={"helped.io": "mirrortest"},
    )
    box.auths(box.config_file, {"quay.io/ns": entry("ns", "pw")})
    write_json(box.legacy_file, {"https://legacy.io/v1/": entry("legacy", "pw")})
    authfile.store(authfile.default_auth_path(None, box.env), "runtime.io", "runtime", "pw")
    keys = [
        "docker.io",
        "index.docker.io",
        "registry-1.docker.io",
        "quay.io",
        "quay.io/ns/repo",
        "quay.io/other",
        "example.com",
        "foo.io",
        "foo.io/x/y",
        "helped.io",
        "legacy.io",
        "runtime.io",
        "unknown.io",
    ]
    for key in keys:
        assert authfile.get_login(key, None, box.env) == skopeo_get_login(box, key), key
    only = str(box.docker_file)
    for key in ("quay.io/ns/repo", "runtime.io", "docker.io"):
        assert authfile.get_login(key, only, box.env) == skopeo_get_login(box, key, "--authfile", only), key
