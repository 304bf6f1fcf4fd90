"""Secrets and transport security, end to end against real registries.

Already proven in ``test_auth.py`` (not repeated here): ``--debug`` output of copy/inspect holds no
password, Basic value or token (``test_debug_output_never_contains_secrets``); credentials are not
forwarded on a blob redirect to another host (``test_credentials_not_sent_to_redirect_host``); auth
files written by ``mirror login`` are 0600 in a 0700 directory (``test_login_logout_htpasswd_...``,
also ``test_credentials.py::test_store_creates_private_file_and_dirs``); a registry whose certificate
the system does not trust (a throw-away CA, as a self-signed one) is refused without ``--cert-dir``
or ``--tls-verify=false``, naming both, before anything is written (``test_tls_with_private_ca``).

Here: a whole ``mirror sync`` with YAML credentials, ``--debug --log-format json --report`` and a
state file, grepped for every secret; credentials never go over plain HTTP unless
``--tls-verify=false`` (to the registry or to its token realm); credentials go to the token realm on
another host but never to the registry as Basic; a ``Link`` header naming another host gets no
credentials.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from support.images import push_image
from support.mirror_cli import assert_one_line_error, run_mirror
from support.proxy import Fault, RegistryProxy, RequestInfo
from support.registry import Registry, start_registry
from support.tokenserver import TokenServer

USER, PASSWORD = "alice", "wonderland-secret-9"  # conftest: htpasswd_registry and token_server
CREDS = f"{USER}:{PASSWORD}"
BASIC = base64.b64encode(CREDS.encode()).decode()


def _env(tmp_path: Path) -> dict[str, str]:
    """A private HOME and XDG_RUNTIME_DIR: no auth file or certs.d of the machine takes part."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_AUTH", "DOCKER_CONFIG", "XDG_"))}
    home, runtime = tmp_path / "home", tmp_path / "run"
    home.mkdir(exist_ok=True)
    runtime.mkdir(mode=0o700, exist_ok=True)
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(runtime))
    return env


def _secrets(token_server: TokenServer) -> list[str]:
    issued = token_server.issued
    assert issued, "the run fetched bearer tokens"
    # Each token whole, and its signature alone (a JWT's header and claims are not secret by themselves).
    return [PASSWORD, BASIC, *issued, *(t.rsplit(".", 1)[-1] for t in issued)]


def test_full_sync_with_yaml_credentials_leaks_no_secret(
        tmp_path: Path, token_registry: Registry, token_server: TokenServer, htpasswd_registry: Registry) -> None:
    """Source: a token registry with YAML credentials; destination: Basic auth from --dest-creds."""
    for tag in ("v1", "v2"):
        push_image(token_registry, "secret/app", tag, seed=40 + len(tag) + int(tag[1]))
    config = {token_registry.host: {"images": {"secret/app": []}, "tls-verify": False,
                                    "credentials": {"username": USER, "password": PASSWORD}}}
    sync_yaml = tmp_path / "sync.yaml"
    sync_yaml.write_text(yaml.safe_dump(config))
    report, state = tmp_path / "report.jsonl", tmp_path / "state.sqlite"
    token_server.clear_requests()
    proc = run_mirror("sync", "--debug", "--log-format", "json", "--src", "yaml", "--dest", "docker",
                      "--dest-tls-verify=false", "--dest-creds", CREDS, "--report", str(report), "--state", str(state),
                      str(sync_yaml), f"{htpasswd_registry.host}/mirror", env=_env(tmp_path))
    records = [json.loads(line) for line in report.read_text().splitlines()]
    assert sorted(r["outcome"] for r in records) == ["copied", "copied"]
    assert "http_request" in proc.stderr  # --debug really logged the traffic
    assert any(r.username == USER and r.status == 200 for r in token_server.requests)  # YAML creds were used

    outputs = {"stdout": proc.stdout.encode(), "stderr": proc.stderr.encode(), "report": report.read_bytes()}
    for path in tmp_path.glob("state.sqlite*"):  # the database and any -wal/-journal beside it
        outputs[path.name] = path.read_bytes()
    assert "state.sqlite" in outputs
    for secret in _secrets(token_server):
        for name, data in outputs.items():
            assert secret.encode() not in data, f"a secret ({secret[:4]}...) leaked into {name}"


@pytest.fixture
def plain_registry(htpasswd_registry: Registry) -> Iterator[RegistryProxy]:
    """The proxy in front of a Basic-auth registry: a registry reachable only over plain HTTP."""
    push_image(htpasswd_registry, "plain/app", "v1", seed=44)
    with RegistryProxy(htpasswd_registry) as proxy:
        yield proxy


def test_no_credentials_over_plain_http_by_default(tmp_path: Path, plain_registry: RegistryProxy,
                                                  seeded_registry: Registry, htpasswd_registry: Registry) -> None:
    env = _env(tmp_path)
    proxy = plain_registry
    ref = proxy.ref("plain/app", "v1")
    before = len(htpasswd_registry.access_log_requests())
    sync_yaml = tmp_path / "sync.yaml"
    sync_yaml.write_text(yaml.safe_dump({proxy.host: {"images": {"plain/app": ["v1"]},
                                                      "credentials": {"username": USER, "password": PASSWORD}}}))
    attempts = [
        run_mirror("inspect", "--creds", CREDS, ref, env=env, check=False),
        run_mirror("copy", "--src-tls-verify=false", "--dest-creds", CREDS,
                   seeded_registry.ref("library/alpine", "3.19"), proxy.ref("plain/copied", "v1"), env=env,
                   check=False),
        run_mirror("sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false", str(sync_yaml),
                   f"{seeded_registry.host}/never", env=env, check=False),
        run_mirror("login", "-u", USER, "-p", PASSWORD, proxy.host, env=env, check=False),
    ]
    for proc in attempts:
        line = assert_one_line_error(proc)
        assert "tls" in line.lower() or "https" in line.lower(), line
        assert PASSWORD not in proc.stderr and BASIC not in proc.stderr
    # What the server received: no HTTP request at all (a TLS handshake is not one), so no Authorization;
    # and nothing reached the registry behind it.
    assert proxy.requests == []
    assert len(htpasswd_registry.access_log_requests()) == before

    # With --tls-verify=false the same credentials do go over plain HTTP, as asked.
    out = run_mirror("inspect", "--raw", "--tls-verify=false", "--creds", CREDS, ref, env=env)
    assert json.loads(out.stdout)["schemaVersion"] == 2
    assert any(r.header("authorization") == f"Basic {BASIC}" for r in proxy.requests)


def test_no_credentials_to_a_plain_http_token_realm_of_a_tls_registry(
        tmp_path: Path, token_server: TokenServer) -> None:
    """A TLS registry whose token realm is http:// — the Basic credentials would cross in clear text."""
    env = _env(tmp_path)
    with start_registry(tmp_path / "tls-token", tls=True, token=token_server) as reg:
        push_image(reg, "realm/app", "v1", seed=45)
        token_server.clear_requests()
        proc = run_mirror("inspect", "--raw", "--cert-dir", str(reg.cert_dir), "--creds", CREDS,
                          reg.ref("realm/app", "v1"), env=env, check=False)
        assert_one_line_error(proc, "plain HTTP", "--tls-verify=false")
        assert token_server.requests == []  # not even asked: the credentials never left

        out = run_mirror("inspect", "--raw", "--tls-verify=false", "--creds", CREDS, reg.ref("realm/app", "v1"),
                         env=env)
        assert json.loads(out.stdout)["schemaVersion"] == 2
        assert [r.username for r in token_server.requests if r.status == 200] == [USER]


class _DirectRealmProxy(RegistryProxy):
    """Leaves the bearer realm alone: the token server stays on its own host:port (another origin),
    while every registry request goes through the proxy and is logged with its headers."""

    def _rewrite_challenge(self, value: str) -> str:
        return value


def test_credentials_go_to_the_token_realm_on_another_host_never_to_the_registry(
        tmp_path: Path, token_registry: Registry, token_server: TokenServer, seeded_registry: Registry) -> None:
    env = _env(tmp_path)
    push_image(token_registry, "realm/app", "v1", seed=46)
    token_server.clear_requests()
    with _DirectRealmProxy(token_registry) as proxy:
        assert token_server.url.split("/")[2] != proxy.host  # the realm is on another origin
        run_mirror("inspect", "--raw", "--tls-verify=false", "--creds", CREDS, proxy.ref("realm/app", "v1"), env=env)
        run_mirror("copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--dest-creds", CREDS,
                   seeded_registry.ref("library/alpine", "3.19"), proxy.ref("realm/copy", "v1"), env=env)
        sent = [r.header("authorization") for r in proxy.requests]
    assert [r for r in token_server.requests if r.username == USER and r.status == 200]
    assert any(s and s.startswith("Bearer ") for s in sent)
    assert not [s for s in sent if s and not s.startswith("Bearer ")], "Basic credentials reached the registry"
    assert all(BASIC not in (s or "") and PASSWORD not in (s or "") for s in sent)


def test_link_header_to_another_host_gets_no_credentials(tmp_path: Path, htpasswd_registry: Registry) -> None:
    """A registry's next-page link pointing elsewhere: the request goes out without Authorization."""
    env = _env(tmp_path)
    push_image(htpasswd_registry, "link/app", "v1", seed=47)
    with RegistryProxy(htpasswd_registry) as proxy:
        elsewhere = f"{proxy.blob_url}/v2/link/app/tags/list?page=2"  # another host name and port, logged

        async def first_page(_req: web.Request, _info: RequestInfo) -> web.StreamResponse:
            return web.json_response({"tags": ["v1"]}, headers={"Link": f'<{elsewhere}>; rel="next"'})

        proxy.faults = [Fault(Fault.match(kind="tags"), first_page, times=None)]
        proc = run_mirror("list-tags", "--tls-verify=false", "--creds", CREDS, f"docker://{proxy.host}/link/app",
                          env=env, check=False)
        registry_requests = proxy.requests
        elsewhere_requests = proxy.blob_requests
    assert_one_line_error(proc)
    assert [r.header("authorization") for r in registry_requests if r.kind == "tags"] == [f"Basic {BASIC}"]
    assert len(elsewhere_requests) >= 1, "the next page was requested from the other host"
    assert all(r.header("authorization") is None for r in elsewhere_requests), elsewhere_requests
