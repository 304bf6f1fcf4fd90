"""Proof that the test bed is real: skopeo against real registries, real tokens, real faults."""

from __future__ import annotations

import base64
import gzip
import http.client
import io
import json
import re
import tarfile
import urllib.parse
from email.message import Message
from pathlib import Path

import jwt
import pytest
from support import run_skopeo, skopeo_inspect_raw
from support.images import (
    Client,
    RegistryError,
    SeededImages,
    get_manifest,
    list_tags,
    push_image,
    put_tags,
    sha256_digest,
)
from support.proxy import Fault, start_proxy
from support.registry import Registry
from support.tokenserver import TokenServer


def _http(
    method: str, url: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, Message, bytes]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.netloc, timeout=30)
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body, headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("dest_name", ["tls_registry", "htpasswd_registry", "token_registry"])
def test_copy_all_of_seeded_index_is_byte_identical(
    request: pytest.FixtureRequest, seeded_images: SeededImages, dest_name: str
) -> None:
    src = seeded_images.registry
    dest: Registry = request.getfixturevalue(dest_name)
    index = seeded_images.oci_index
    run_skopeo(
        "copy",
        "--all",
        *src.skopeo_args("--src-"),
        *dest.skopeo_args("--dest-"),
        src.ref("multi/oci", "latest"),
        dest.ref("mirrored/oci", "latest"),
    )
    assert skopeo_inspect_raw(dest.ref("mirrored/oci", "latest"), *dest.skopeo_args()) == index.manifest
    for child in index.children:
        raw = skopeo_inspect_raw(dest.ref("mirrored/oci", child.digest), *dest.skopeo_args())
        assert raw == child.manifest
        assert sha256_digest(raw) == child.digest
    # the stdlib client agrees, through whatever auth the registry uses
    body, media_type, digest = get_manifest(dest, "mirrored/oci", "latest")
    assert (body, media_type, digest) == (index.manifest, index.media_type, index.digest)
    if dest.auth == "token":
        ts = dest.token_server
        assert ts is not None
        pushes = [r for r in ts.requests if "repository:mirrored/oci:pull,push" in r.scopes]
        assert pushes and all(r.username == "alice" and r.status == 200 for r in pushes)


def test_tls_registry_is_really_tls(tls_registry: Registry) -> None:
    img = push_image(tls_registry, "tls/check", "v1", seed=5)
    assert tls_registry.url.startswith("https://")
    failed = run_skopeo("inspect", "--raw", tls_registry.ref("tls/check", "v1"), check=False)
    assert failed.returncode != 0
    assert re.search(r"x509|certificate", failed.stderr), failed.stderr
    assert (
        skopeo_inspect_raw(tls_registry.ref("tls/check", "v1"), *tls_registry.skopeo_args()) == img.manifest
    )
    # the certificate also covers the second host name
    alt = f"docker://{tls_registry.alt_host}/tls/check:v1"
    assert skopeo_inspect_raw(alt, *tls_registry.skopeo_args()) == img.manifest


def test_htpasswd_registry_checks_password(htpasswd_registry: Registry) -> None:
    push_image(htpasswd_registry, "private/app", "v1")
    ref = htpasswd_registry.ref("private/app", "v1")
    wrong = run_skopeo("inspect", "--raw", "--tls-verify=false", "--creds=alice:nope", ref, check=False)
    assert wrong.returncode != 0 and re.search(r"401|unauthorized", wrong.stderr, re.I), wrong.stderr
    anon = run_skopeo("inspect", "--raw", "--tls-verify=false", "--no-creds", ref, check=False)
    assert anon.returncode != 0
    statuses = htpasswd_registry.wait_for_access_log(
        lambda e: ("PUT", "/v2/private/app/manifests/v1", 201) in e and len(e) > 4
    )
    assert ("GET", "/v2/", 401) in statuses
    assert statuses.count(("GET", "/v2/private/app/manifests/v1", 401)) >= 2  # wrong password, anonymous


def test_token_registry_acl(
    token_registry: Registry, token_server: TokenServer, seeded_images: SeededImages
) -> None:
    private = push_image(token_registry, "team/app", "v1", seed=11)
    public = push_image(token_registry, "public/app", "v1", seed=12)
    token_server.clear_requests()
    src = seeded_images.registry
    push = run_skopeo(
        "copy",
        *src.skopeo_args("--src-"),
        "--dest-tls-verify=false",
        "--dest-no-creds",
        src.ref("app/docker", "v1"),
        token_registry.ref("anon/push", "v1"),
        check=False,
    )
    assert push.returncode != 0 and re.search(r"401|unauthorized|denied", push.stderr, re.I), push.stderr
    anon = ["--tls-verify=false", "--no-creds"]
    pull = run_skopeo("inspect", "--raw", *anon, token_registry.ref("team/app", "v1"), check=False)
    assert pull.returncode != 0
    assert skopeo_inspect_raw(token_registry.ref("public/app", "v1"), *anon) == public.manifest
    assert skopeo_inspect_raw(token_registry.ref("team/app", "v1"), *token_registry.skopeo_args()) == (
        private.manifest
    )
    anon_reqs = [r for r in token_server.requests if r.username is None]
    granted = {name: actions for r in anon_reqs for (_, name, actions) in r.granted}
    assert granted.get("team/app") == ()
    assert granted.get("public/app") == ("pull",)
    assert granted.get("anon/push") == ()
    assert token_server.scope_counts()["repository:team/app:pull"] >= 2  # anonymous + alice


def test_token_server_protocol(token_registry: Registry, token_server: TokenServer, tmp_path: Path) -> None:
    push_image(token_registry, "proto/app", "v1")
    svc = urllib.parse.quote(token_server.service)
    url = f"{token_server.url}?service={svc}&scope=repository:proto/app:pull&scope=repository:other:pull,push"
    basic = "Basic " + base64.b64encode(b"alice:wrong").decode()
    assert _http("GET", url, {"Authorization": basic})[0] == 401
    status, _, body = _http("GET", url)
    claims = jwt.decode(json.loads(body)["token"], options={"verify_signature": False})
    assert status == 200 and claims["aud"] == token_server.service and claims["sub"] == ""
    assert [a["actions"] for a in claims["access"]] == [[], []]

    form = {
        "grant_type": "password",
        "username": "alice",
        "password": "wonderland-secret-9",
        "service": token_server.service,
        "scope": "repository:proto/app:pull registry:catalog:*",
    }
    ctype = {"Content-Type": "application/x-www-form-urlencoded"}
    assert (
        _http("POST", token_server.url, ctype, urllib.parse.urlencode(form).encode())[0] == 400
    )  # no client_id
    form["client_id"] = "mirror-tests"
    status, _, body = _http("POST", token_server.url, ctype, urllib.parse.urlencode(form).encode())
    first = json.loads(body)
    assert status == 200 and first["access_token"] == first["token"] and first["refresh_token"]
    refresh = {
        "grant_type": "refresh_token",
        "refresh_token": first["refresh_token"],
        "client_id": "x",
        "service": token_server.service,
        "scope": "repository:proto/app:pull",
    }
    status, _, body = _http("POST", token_server.url, ctype, urllib.parse.urlencode(refresh).encode())
    assert status == 200
    access_token = json.loads(body)["access_token"]
    status, _, body = _http(
        "GET", f"{token_registry.url}/v2/proto/app/tags/list", {"Authorization": f"Bearer {access_token}"}
    )
    assert status == 200 and json.loads(body)["tags"] == ["v1"]
    # a token for another repository, or signed by an untrusted key, is refused by the registry
    other = token_server.issue_token("alice", [("repository", "other", ("pull",))])
    assert (
        _http("GET", f"{token_registry.url}/v2/proto/app/tags/list", {"Authorization": f"Bearer {other}"})[0]
        == 401
    )
    rogue = TokenServer(tmp_path / "rogue", service=token_server.service, issuer=token_server.issuer)
    forged = rogue.issue_token("alice", [("repository", "proto/app", ("pull",))])
    assert (
        _http("GET", f"{token_registry.url}/v2/proto/app/tags/list", {"Authorization": f"Bearer {forged}"})[0]
        == 401
    )
    grants = [r.grant_type for r in token_server.requests if r.method == "POST" and r.status == 200]
    assert grants == ["password", "refresh_token"]


def test_proxy_redirects_blobs_to_another_host_without_credentials(
    htpasswd_registry: Registry, tmp_path: Path
) -> None:
    img = push_image(htpasswd_registry, "redir/app", "v1", fmt="docker", seed=21, layer_count=3)
    with start_proxy(htpasswd_registry, redirect_blobs=True) as proxy:
        out = tmp_path / "out"
        run_skopeo("copy", *proxy.skopeo_args("--src-"), proxy.ref("redir/app", "v1"), f"dir:{out}")
        redirected = {
            r.path.rsplit("/", 1)[1] for r in proxy.requests if r.kind == "blob" and r.status == 307
        }
        blob_reqs = proxy.blob_requests
        manifest_reqs = [r for r in proxy.requests if r.kind == "manifest" and r.status == 200]
    expected = {img.config_digest, *(b.digest for b in img.layers)}
    assert redirected == expected
    assert {r.path.rsplit("/", 1)[1] for r in blob_reqs if r.status == 200} == expected
    assert all(r.header("host") == proxy.blob_url.removeprefix("http://") for r in blob_reqs)
    assert all(r.header("authorization") is None for r in blob_reqs)
    assert manifest_reqs and all(
        (r.header("authorization") or "").startswith("Basic ") for r in manifest_reqs
    )
    for blob, data in zip(img.layers, img.layer_data, strict=True):
        assert (out / blob.digest.split(":", 1)[1]).read_bytes() == data


def test_proxy_corrupt_blob_makes_skopeo_fail(seeded_images: SeededImages, registry2: Registry) -> None:
    img = seeded_images.docker_image
    bad = img.layers[1]
    with start_proxy(seeded_images.registry, corrupt_blob={bad.digest}) as proxy:
        status, headers, body = _http("GET", f"{proxy.url}/v2/app/docker/blobs/{bad.digest}")
        assert status == 200 and int(headers["Content-Length"]) == len(body) == bad.size
        diff = [i for i, (a, b) in enumerate(zip(body, img.layer_data[1], strict=True)) if a != b]
        assert len(diff) == 1
        status, headers, body = _http("HEAD", f"{proxy.url}/v2/app/docker/blobs/{bad.digest}")
        assert status == 200 and int(headers["Content-Length"]) == bad.size and body == b""
        failed = run_skopeo(
            "copy",
            *proxy.skopeo_args("--src-"),
            *registry2.skopeo_args("--dest-"),
            proxy.ref("app/docker", "v1"),
            registry2.ref("app/docker", "v1"),
            check=False,
        )
    assert failed.returncode != 0
    assert re.search(r"digest did not match", failed.stderr, re.I), failed.stderr
    assert bad.digest in failed.stderr
    with pytest.raises(RegistryError, match="404"):
        get_manifest(registry2, "app/docker", "v1")


def test_access_log_lists_skopeo_requests(seeded_images: SeededImages, registry: Registry) -> None:
    src, alpine = seeded_images.registry, seeded_images.alpine
    run_skopeo(
        "copy",
        *src.skopeo_args("--src-"),
        *registry.skopeo_args("--dest-"),
        src.ref("library/alpine", "3.19"),
        registry.ref("library/alpine", "3.19"),
    )
    manifest_put = ("PUT", "/v2/library/alpine/manifests/3.19", 201)
    entries = registry.wait_for_access_log(lambda e: manifest_put in e)
    uploaded = {
        urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)["digest"][0]
        for method, uri, status in entries
        if method == "PUT" and "/blobs/uploads/" in uri and status == 201
    }
    assert uploaded == {alpine.config_digest, *(b.digest for b in alpine.layers)}
    assert (
        sum(1 for m, uri, s in entries if m == "POST" and uri.endswith("/blobs/uploads/") and s == 202) == 4
    )
    src_entries = src.access_log_requests()
    assert ("GET", "/v2/library/alpine/manifests/3.19", 200) in src_entries


def test_pusher_content_is_real_and_paginates(registry: Registry, tmp_path: Path) -> None:
    img = push_image(
        registry,
        "arm/app",
        "v2",
        fmt="docker",
        arch="arm",
        variant="v7",
        labels={"k": "v"},
        env=["A=1"],
        layer_count=3,
    )
    config = json.loads(
        run_skopeo(
            "inspect", "--config", "--raw", *registry.skopeo_args(), registry.ref("arm/app", "v2")
        ).stdout
    )
    assert config == json.loads(img.config)
    assert (config["architecture"], config["variant"], config["config"]["Labels"]) == (
        "arm",
        "v7",
        {"k": "v"},
    )
    out = tmp_path / "decompressed"
    run_skopeo(
        "copy",
        "--dest-decompress",
        *registry.skopeo_args("--src-"),
        registry.ref("arm/app", "v2"),
        f"dir:{out}",
    )
    for data, diff_id in zip(img.layer_data, config["rootfs"]["diff_ids"], strict=True):
        tar_bytes = (out / diff_id.split(":", 1)[1]).read_bytes()
        assert tar_bytes == gzip.decompress(data)
        with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
            assert len(tar.getmembers()) == 1
    tags = put_tags(registry, "many/tags", 45)
    listed = json.loads(
        run_skopeo("list-tags", *registry.skopeo_args(), f"docker://{registry.host}/many/tags").stdout
    )
    assert sorted(listed["Tags"]) == tags == [f"t{i:03d}" for i in range(45)]
    assert sorted(list_tags(registry, "many/tags")) == tags
    # distribution 2.8 ignores n/last on tags/list; the proxy emulates pagination
    with start_proxy(registry, tags_page_size=10) as proxy:
        assert list_tags(proxy.registry, "many/tags", page_size=20) == tags
        pages = [r for r in proxy.requests if r.kind == "tags"]
        skopeo_tags = json.loads(
            run_skopeo("list-tags", *proxy.skopeo_args(), f"docker://{proxy.host}/many/tags").stdout
        )["Tags"]
        assert skopeo_tags == tags
    assert [(p.query, p.status) for p in pages] == [
        ("n=20", 200),
        ("last=t009&n=10", 200),
        ("last=t019&n=10", 200),
        ("last=t029&n=10", 200),
        ("last=t039&n=10", 200),
    ]


def test_proxy_fault_rule_and_token_passthrough(token_registry: Registry, token_server: TokenServer) -> None:
    img = push_image(token_registry, "faulty/app", "v1")
    token_server.clear_requests()
    fault = Fault.respond(Fault.match(kind="manifest", method="GET"), 503, times=1)
    with start_proxy(token_registry, faults=[fault]) as proxy:
        client = Client(proxy.registry)
        with pytest.raises(RegistryError, match="503"):
            client.get_manifest("faulty/app", "v1")
        assert client.get_manifest("faulty/app", "v1")[2] == img.digest
        assert skopeo_inspect_raw(proxy.ref("faulty/app", "v1"), *proxy.skopeo_args()) == img.manifest
        kinds = [(r.kind, r.status) for r in proxy.requests]
    assert fault.hits == 1
    assert ("manifest", 503) in kinds and ("token", 200) in kinds
    assert token_server.requests and all(r.username == "alice" for r in token_server.requests)
