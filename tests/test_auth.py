"""Auth and TLS end to end: the real ``mirror`` CLI against real registries (private-CA TLS, htpasswd, token).

Credentials come from flags, from auth files written by ``mirror login``, from an OAuth2 refresh token and
from a credential helper program; skopeo is the oracle for what was written and for the auth file format.
Every subprocess runs with ``HOME`` and ``XDG_RUNTIME_DIR`` in a temporary directory, so nothing from the
machine's own auth files or certs.d can help or hurt.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from support.images import SeededImages, push_image
from support.mirror_cli import assert_one_line_error, run_mirror
from support.proxy import RegistryProxy
from support.registry import Registry
from support.tokenserver import TokenServer

Skopeo = Callable[..., subprocess.CompletedProcess[str]]
InspectRaw = Callable[..., bytes]
USER, PASSWORD = "alice", "wonderland-secret-9"  # conftest: htpasswd_registry and token_server
CREDS = f"{USER}:{PASSWORD}"
PLAIN = "--tls-verify=false"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The process environment with a private HOME and XDG_RUNTIME_DIR and no auth-file overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_AUTH", "DOCKER_CONFIG", "XDG_"))}
    home, runtime = tmp_path / "home", tmp_path / "run"
    home.mkdir(exist_ok=True)
    runtime.mkdir(mode=0o700, exist_ok=True)
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(runtime), **extra)
    return env


def _copy(src: str, dst: str, *flags: str, env: dict[str, str], check: bool = True,
          ) -> subprocess.CompletedProcess[str]:
    return run_mirror("copy", "--src-tls-verify=false", *flags, src, dst, env=env, check=check)


def _raw(proc: subprocess.CompletedProcess[str]) -> bytes:
    return proc.stdout.encode()


def _assert_no_secret(proc: subprocess.CompletedProcess[str], *secrets: str) -> None:
    for secret in secrets:
        assert secret not in proc.stdout and secret not in proc.stderr, f"secret leaked: {secret[:6]}..."


def _token_get(ts: TokenServer, scope: str, creds: str | None = CREDS) -> str:
    query = urllib.parse.urlencode({"service": ts.service, "scope": scope})
    req = urllib.request.Request(f"{ts.url}?{query}")
    if creds is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(creds.encode()).decode())
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(json.loads(resp.read())["token"])


def _refresh_token(ts: TokenServer) -> str:
    form = {"grant_type": "password", "username": USER, "password": PASSWORD, "service": ts.service,
            "client_id": "mirror-tests", "access_type": "offline", "scope": ""}
    req = urllib.request.Request(ts.url, urllib.parse.urlencode(form).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(json.loads(resp.read())["refresh_token"])


# --------------------------------------------------------------------------------------------- TLS
def test_tls_with_private_ca(seeded_images: SeededImages, tls_registry: Registry, inspect_raw: InspectRaw,
                             tmp_path: Path) -> None:
    env = _env(tmp_path)
    image = seeded_images.alpine
    src = seeded_images.registry.ref(image.repo, image.tag or "")
    cert_dir = str(tls_registry.cert_dir)

    _copy(src, tls_registry.ref("tls/app", "v1"), "--dest-cert-dir", cert_dir, env=env)
    assert inspect_raw(tls_registry.ref("tls/app", "v1"), f"--cert-dir={cert_dir}") == image.manifest

    # An unknown CA: one line, naming the problem and both ways out; nothing was written.
    proc = _copy(src, tls_registry.ref("tls/app", "unverified"), env=env, check=False)
    line = assert_one_line_error(proc, "--cert-dir", "--tls-verify")
    assert "certificate" in line.lower() or "tls" in line.lower(), line
    assert not [r for r in tls_registry.access_log_requests() if "/manifests/unverified" in r[1]]

    _copy(src, tls_registry.ref("tls/app", "v2"), "--dest-tls-verify=false", env=env)
    assert ("PUT", "/v2/tls/app/manifests/v2", 201) in tls_registry.access_log_requests()

    # certs.d under $HOME is honoured with no flag, for copy and inspect.
    certs_d = Path(env["HOME"]) / ".config" / "containers" / "certs.d" / tls_registry.host
    certs_d.mkdir(parents=True)
    (certs_d / "ca.crt").write_bytes((Path(cert_dir) / "ca.crt").read_bytes())
    _copy(src, tls_registry.ref("tls/app", "v3"), env=env)
    assert _raw(run_mirror("inspect", "--raw", tls_registry.ref("tls/app", "v3"), env=env)) == image.manifest


# ---------------------------------------------------------------------------------------- htpasswd
def test_htpasswd_basic_auth_from_flags(seeded_images: SeededImages, htpasswd_registry: Registry,
                                        inspect_raw: InspectRaw, tmp_path: Path) -> None:
    env = _env(tmp_path)
    image = seeded_images.docker_image
    src = seeded_images.registry.ref(image.repo, image.tag or "")
    reg = htpasswd_registry
    auth = (PLAIN, f"--creds={CREDS}")

    _copy(src, reg.ref("basic/app", "v1"), "--dest-tls-verify=false", "--dest-creds", CREDS, env=env)
    assert inspect_raw(reg.ref("basic/app", "v1"), *auth) == image.manifest
    _copy(src, reg.ref("basic/app", "v2"), "--dest-tls-verify=false", "--dest-username", USER,
          "--dest-password", PASSWORD, env=env)
    assert ("PUT", "/v2/basic/app/manifests/v2", 201) in reg.access_log_requests()

    wrong = "not-the-password-31337"
    proc = _copy(src, reg.ref("basic/app", "v3"), "--dest-tls-verify=false", "--dest-creds", f"{USER}:{wrong}",
                 env=env, check=False)
    assert_one_line_error(proc, "401", "unauthorized", "refused the credentials")
    _assert_no_secret(proc, wrong, base64.b64encode(f"{USER}:{wrong}".encode()).decode())

    # Even --debug (logs and a traceback) shows neither the password nor the Basic value.
    proc = run_mirror("inspect", PLAIN, "--password", wrong, "--username", USER, "--debug", reg.ref("basic/app", "v1"),
                      env=env, check=False)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "http_request" in proc.stderr
    _assert_no_secret(proc, wrong, base64.b64encode(f"{USER}:{wrong}".encode()).decode())

    proc = _copy(src, reg.ref("basic/app", "v4"), "--dest-tls-verify=false", env=env, check=False)
    assert_one_line_error(proc, "authentication required", "no credentials")
    puts = [r for r in reg.access_log_requests() if r[0] == "PUT" and "/manifests/" in r[1]]
    assert [uri.rsplit("/", 1)[1] for _, uri, _ in puts] == ["v1", "v2"], puts


# ------------------------------------------------------------------------------------------- login
def test_login_logout_htpasswd_and_skopeo_reads_the_file(
        seeded_images: SeededImages, htpasswd_registry: Registry, skopeo: Skopeo, tmp_path: Path) -> None:
    env = _env(tmp_path)
    reg = htpasswd_registry
    image = push_image(reg, "login/app", "v1", seed=31)
    ref = reg.ref("login/app", "v1")
    explicit = tmp_path / "explicit" / "auth.json"

    # A wrong password is refused by the registry and nothing is written.
    proc = run_mirror("login", PLAIN, "-u", USER, "-p", "wrong-password-77", "--authfile", str(explicit),
                      reg.host, env=env, check=False)
    assert_one_line_error(proc, "401", "unauthorized")
    assert "wrong-password-77" not in proc.stderr
    assert not explicit.exists()

    # --authfile with -u/-p.
    out = run_mirror("login", PLAIN, "-u", USER, "-p", PASSWORD, "--authfile", str(explicit), reg.host, env=env)
    assert "Login Succeeded" in out.stdout
    entry = json.loads(explicit.read_text())["auths"][reg.host]
    assert base64.b64decode(entry["auth"]).decode() == CREDS
    assert stat.S_IMODE(explicit.stat().st_mode) == 0o600
    skopeo_out = skopeo("inspect", "--raw", PLAIN, "--authfile", str(explicit), ref).stdout
    assert skopeo_out.encode() == image.manifest

    # $REGISTRY_AUTH_FILE with --password-stdin; copy then needs no flag at all.
    from_env = tmp_path / "from-env.json"
    env_file = dict(env, REGISTRY_AUTH_FILE=str(from_env))
    run_mirror("login", PLAIN, "-u", USER, "--password-stdin", reg.host, env=env_file, input=PASSWORD + "\n")
    assert base64.b64decode(json.loads(from_env.read_text())["auths"][reg.host]["auth"]).decode() == CREDS
    assert stat.S_IMODE(from_env.stat().st_mode) == 0o600
    src = seeded_images.registry.ref(seeded_images.docker_image.repo, seeded_images.docker_image.tag or "")
    _copy(src, reg.ref("login/copied", "v1"), "--dest-tls-verify=false", env=env_file)
    assert skopeo("inspect", "--raw", PLAIN, "--authfile", str(from_env), reg.ref("login/copied", "v1")
                  ).stdout.encode() == seeded_images.docker_image.manifest

    # Default: ${XDG_RUNTIME_DIR}/containers/auth.json, created 0600.
    default = Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json"
    run_mirror("login", PLAIN, "-u", USER, "-p", PASSWORD, reg.host, env=env)
    assert stat.S_IMODE(default.stat().st_mode) == 0o600
    assert stat.S_IMODE(default.parent.stat().st_mode) == 0o700
    assert _raw(run_mirror("inspect", PLAIN, "--raw", ref, env=env)) == image.manifest
    assert run_mirror("login", "--get-login", reg.host, env=env).stdout.strip() == USER
    assert skopeo("inspect", "--raw", PLAIN, "--authfile", str(default), ref).stdout.encode() == image.manifest

    run_mirror("logout", reg.host, env=env)
    assert reg.host not in json.loads(default.read_text()).get("auths", {})
    assert_one_line_error(run_mirror("inspect", PLAIN, "--raw", ref, env=env, check=False),
                          "authentication required")

    # logout --all empties the file login wrote through $REGISTRY_AUTH_FILE.
    run_mirror("logout", "--all", env=env_file)
    assert json.loads(from_env.read_text())["auths"] == {}
    assert_one_line_error(run_mirror("inspect", PLAIN, "--raw", ref, env=env_file, check=False),
                          "authentication required")


def test_login_to_token_registry(seeded_images: SeededImages, token_registry: Registry, token_server: TokenServer,
                                 inspect_raw: InspectRaw, tmp_path: Path) -> None:
    env = _env(tmp_path)
    reg = token_registry
    default = Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json"
    proc = run_mirror("login", PLAIN, "-u", USER, "-p", "bad-pass-42", reg.host, env=env, check=False)
    assert_one_line_error(proc, "invalid username/password")
    assert "bad-pass-42" not in proc.stderr
    assert not default.exists()
    assert any(r.status == 401 and r.username is None for r in token_server.requests)

    run_mirror("login", PLAIN, "-u", USER, "--password-stdin", reg.host, env=env, input=PASSWORD)
    assert stat.S_IMODE(default.stat().st_mode) == 0o600
    image = seeded_images.alpine
    src = seeded_images.registry.ref(image.repo, image.tag or "")
    _copy(src, reg.ref("tok/login", "v1"), "--dest-tls-verify=false", env=env)
    assert inspect_raw(reg.ref("tok/login", "v1"), *reg.skopeo_args()) == image.manifest
    assert run_mirror("login", "--get-login", reg.host, env=env).stdout.strip() == USER
    run_mirror("logout", reg.host, env=env)
    assert_one_line_error(run_mirror("inspect", PLAIN, "--raw", reg.ref("tok/login", "v1"), env=env,
                                     check=False), "401")


# ------------------------------------------------------------------------------------------- token
def test_token_auth_scopes_cache_and_anonymous_access(
        seeded_images: SeededImages, token_registry: Registry, token_server: TokenServer,
        inspect_raw: InspectRaw, tmp_path: Path) -> None:
    env = _env(tmp_path)
    reg = token_registry
    index = seeded_images.oci_index
    src = seeded_images.registry.ref(index.repo, index.tag or "")
    token_server.clear_requests()

    _copy(src, reg.ref("team/app", "v1"), "--all", "--dest-tls-verify=false", "--dest-creds", CREDS, env=env)
    assert inspect_raw(reg.ref("team/app", "v1"), *reg.skopeo_args()) == index.manifest
    ok = [r for r in token_server.requests if r.status == 200]
    assert ok and all(r.username == USER and r.service == token_server.service for r in ok)
    scope_sets = [tuple(sorted(r.scopes)) for r in ok]
    assert ("repository:team/app:pull,push",) in scope_sets, scope_sets
    # One token per distinct scope set for the whole copy: cached and shared by parallel blob uploads.
    assert len(scope_sets) == len(set(scope_sets)), scope_sets
    granted = {(name, actions) for r in ok for (_, name, actions) in r.granted}
    assert ("team/app", ("pull", "push")) in granted

    # Anonymous push: the token server grants nothing, the registry refuses; nothing is written.
    image = seeded_images.docker_image
    docker_src = seeded_images.registry.ref(image.repo, image.tag or "")
    token_server.clear_requests()
    proc = _copy(docker_src, reg.ref("anon/app", "v1"), "--dest-tls-verify=false", "--dest-no-creds", env=env,
                 check=False)
    assert_one_line_error(proc, "401", "authentication required")
    assert not [r for r in reg.access_log_requests() if r[0] == "PUT" and "/anon/app/" in r[1]]
    anonymous = [(r.username, r.scopes, r.granted) for r in token_server.requests]
    # Asked once: a second token for the same scopes would grant the same nothing.
    assert anonymous == [(None, ("repository:anon/app:pull,push",), (("repository", "anon/app", ()),))]

    # Anonymous pull of public/...: push one with creds, then read and copy it out with no credentials.
    _copy(docker_src, reg.ref("public/app", "v1"), "--dest-tls-verify=false", "--dest-creds", CREDS, env=env)
    anon = (PLAIN, "--no-creds")
    assert _raw(run_mirror("inspect", "--raw", *anon, reg.ref("public/app", "v1"), env=env)) == image.manifest
    # ...but the private repository stays private.
    assert_one_line_error(run_mirror("inspect", "--raw", *anon, reg.ref("team/app", "v1"), env=env, check=False),
                          "401")

    # --registry-token: a token we fetched ourselves; the registry checks its scope.
    token = _token_get(token_server, "repository:team/app:pull")
    out = run_mirror("inspect", PLAIN, "--registry-token", token, "--format", "{{.Digest}}",
                     reg.ref("team/app", "v1"), env=env)
    assert out.stdout.strip() == index.digest
    wrong_scope = _token_get(token_server, "repository:other/app:pull")
    proc = run_mirror("inspect", PLAIN, "--raw", "--registry-token", wrong_scope, reg.ref("team/app", "v1"),
                      env=env, check=False)
    assert_one_line_error(proc, "401")
    _assert_no_secret(proc, wrong_scope)


def test_oauth2_refresh_token_from_auth_file(seeded_images: SeededImages, token_registry: Registry,
                                             token_server: TokenServer, inspect_raw: InspectRaw,
                                             tmp_path: Path) -> None:
    env = _env(tmp_path)
    reg = token_registry
    refresh = _refresh_token(token_server)
    authfile = tmp_path / "identity.json"
    authfile.write_text(json.dumps({"auths": {reg.host: {"identitytoken": refresh}}}))
    token_server.clear_requests()

    image = seeded_images.alpine
    src = seeded_images.registry.ref(image.repo, image.tag or "")
    proc = _copy(src, reg.ref("oauth/app", "v1"), "--dest-tls-verify=false", "--authfile", str(authfile), env=env)
    _assert_no_secret(proc, refresh)
    out = run_mirror("inspect", PLAIN, "--raw", "--authfile", str(authfile), reg.ref("oauth/app", "v1"), env=env)
    assert _raw(out) == image.manifest
    requests = token_server.requests  # before skopeo's own (password) token requests below
    assert inspect_raw(reg.ref("oauth/app", "v1"), *reg.skopeo_args()) == image.manifest

    posts = [r for r in requests if r.method == "POST" and r.grant_type == "refresh_token" and r.status == 200]
    assert posts and all(r.username == USER and r.client_id for r in posts)
    assert ("repository:oauth/app:pull,push",) in {tuple(r.scopes) for r in posts}
    assert ("repository:oauth/app:pull",) in {tuple(r.scopes) for r in posts}
    assert not [r for r in requests if r.method == "GET"], requests  # the refresh token did all the work


# ----------------------------------------------------------------------------------- cred helper
HELPER = """#!{python}
import json, sys
server = sys.stdin.read().strip()
with open({log!r}, "a") as log:
    log.write(" ".join(sys.argv[1:]) + " " + server + "\\n")
if sys.argv[1:] != ["get"] or server != {host!r}:
    print("credentials not found in native keychain")
    sys.exit(1)
print(json.dumps({{"ServerURL": server, "Username": {user!r}, "Secret": {secret!r}}}))
"""


def test_credential_helper(seeded_images: SeededImages, htpasswd_registry: Registry, inspect_raw: InspectRaw,
                           tmp_path: Path) -> None:
    reg = htpasswd_registry
    bin_dir, log = tmp_path / "bin", tmp_path / "helper.log"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-mirrortest"
    helper.write_text(HELPER.format(python=sys.executable, log=str(log), host=reg.host, user=USER, secret=PASSWORD))
    helper.chmod(0o755)
    env = _env(tmp_path, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    config = {"credHelpers": {reg.host: "mirrortest"}}
    docker_config = Path(env["HOME"]) / ".docker" / "config.json"
    docker_config.parent.mkdir(parents=True)
    docker_config.write_text(json.dumps(config))

    image = seeded_images.docker_image
    src = seeded_images.registry.ref(image.repo, image.tag or "")
    proc = _copy(src, reg.ref("helper/app", "v1"), "--dest-tls-verify=false", env=env)
    _assert_no_secret(proc, PASSWORD)
    assert inspect_raw(reg.ref("helper/app", "v1"), *reg.skopeo_args()) == image.manifest
    assert log.read_text().splitlines()[0] == f"get {reg.host}"

    # The same through --authfile, and without the helper on PATH it is a clear error.
    authfile = tmp_path / "helper-auth.json"
    authfile.write_text(json.dumps(config))
    out = run_mirror("inspect", PLAIN, "--raw", "--authfile", str(authfile), reg.ref("helper/app", "v1"),
                     env=_env(tmp_path, PATH=env["PATH"]))
    assert _raw(out) == image.manifest
    proc = run_mirror("inspect", PLAIN, "--raw", "--authfile", str(authfile), reg.ref("helper/app", "v1"),
                      env=_env(tmp_path, PATH=os.environ.get("PATH", "")), check=False)
    assert_one_line_error(proc, "docker-credential-mirrortest")


# ------------------------------------------------------------------------------------------ leaks
def test_debug_output_never_contains_secrets(seeded_images: SeededImages, htpasswd_registry: Registry,
                                             token_registry: Registry, token_server: TokenServer,
                                             tmp_path: Path) -> None:
    env = _env(tmp_path)
    image = seeded_images.alpine
    src = seeded_images.registry.ref(image.repo, image.tag or "")
    basic = base64.b64encode(CREDS.encode()).decode()
    outputs = []
    for reg in (htpasswd_registry, token_registry):
        proc = _copy(src, reg.ref("leak/app", "v1"), "--debug", "--dest-tls-verify=false", "--dest-creds", CREDS,
                     env=env)
        outputs.append(proc)
        proc = run_mirror("inspect", "--debug", PLAIN, "--creds", CREDS, reg.ref("leak/app", "v1"), env=env)
        outputs.append(proc)
    issued = token_server.issued
    assert len(issued) >= 2
    for proc in outputs:
        assert "http_request" in proc.stderr  # --debug really logged the HTTP traffic
        _assert_no_secret(proc, PASSWORD, basic, *issued)
        for token in issued:  # not even a recognisable piece of a JWT (its signature)
            assert token.rsplit(".", 1)[-1] not in proc.stderr


# -------------------------------------------------------------------------------------- redirects
def test_credentials_not_sent_to_redirect_host(htpasswd_registry: Registry, registry2: Registry,
                                               inspect_raw: InspectRaw, tmp_path: Path) -> None:
    env = _env(tmp_path)
    image = push_image(htpasswd_registry, "redir/app", "v1", fmt="docker", seed=23, layer_count=3)
    with RegistryProxy(htpasswd_registry, redirect_blobs=True) as proxy:
        run_mirror("copy", "--src-tls-verify=false", "--src-creds", CREDS, "--dest-tls-verify=false",
                   proxy.ref("redir/app", "v1"), registry2.ref("redir/app", "v1"), env=env)
        redirected = {r.path.rsplit("/", 1)[1] for r in proxy.requests if r.kind == "blob" and r.status == 307}
        blob_requests = proxy.blob_requests
        manifest_requests = [r for r in proxy.requests if r.kind == "manifest" and r.status == 200]
    expected = {image.config_digest, *(layer.digest for layer in image.layers)}
    assert redirected == expected
    assert {r.path.rsplit("/", 1)[1] for r in blob_requests if r.status == 200} == expected
    assert all(r.header("host") == proxy.blob_url.removeprefix("http://") for r in blob_requests)
    assert all(r.header("authorization") is None for r in blob_requests), blob_requests
    assert manifest_requests and all((r.header("authorization") or "").startswith("Basic ") for r in manifest_requests)
    assert inspect_raw(registry2.ref("redir/app", "v1"), PLAIN) == image.manifest
