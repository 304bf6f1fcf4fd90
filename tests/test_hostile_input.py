"""Hostile and malformed input: every parser of untrusted text gives a value or a ``MirrorError``.

Pure parsers are driven by hypothesis (bounded: ``EXAMPLES`` per property, with a deadline, so the
file stays fast) and by a corpus of known-bad inputs. Never another exception, never a hang: large
adversarial inputs are timed. ``tests/test_headers.py`` already proves that the header parsers
raise nothing but ``RegistryError`` on arbitrary text; here they get the invariants of what they
return and the hostile cases that reach the network code.

End to end, the real CLI meets a real registry behind ``RegistryProxy`` whose ``Fault`` rules serve
hostile manifests (including a digest "cycle" and ten nested indexes), tag lists (including next-page
links that loop), token responses, ``WWW-Authenticate`` challenges and resumed-blob ``Content-Range``
headers: it exits non-zero with one line on stderr and no traceback, and the destination registry's
access log shows no manifest PUT.

Layout and archive files belong to the local transports (tested with them); auth files get a corpus here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.images import push_image, push_index
from support.mirror_cli import assert_one_line_error, run_mirror
from support.proxy import Fault, RegistryProxy, RequestInfo
from support.registry import Registry
from support.tokenserver import TokenServer
from yarl import URL

from mirror.config.load import parse_sync_config
from mirror.config.schema import SyncConfig
from mirror.core import manifest as manifest_mod
from mirror.core import mediatype as mt
from mirror.core.digest import Digest
from mirror.core.manifest import MAX_MANIFEST_SIZE, Manifest
from mirror.core.reference import Reference, parse_docker, parse_image_name
from mirror.errors import ConfigError, InvalidReference, ManifestError, MirrorError, RegistryError, Unauthorized
from mirror.http.auth import Token, TokenCache
from mirror.http.credentials import Credential
from mirror.http.headers import Challenge, parse_content_range, parse_link_next, parse_upload_range

EXAMPLES = 100
PROPERTY = settings(max_examples=EXAMPLES, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
PLAIN = "--tls-verify=false"
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def _outcome(parse: Callable[[], Any]) -> Any:
    """``parse()``'s value, or the MirrorError it raised; any other exception fails the test."""
    try:
        return parse()
    except MirrorError as exc:
        assert str(exc) and "\n" not in str(exc), repr(str(exc))
        return exc


def _timed(parse: Callable[[], Any], limit: float = 2.0) -> Any:
    start = time.perf_counter()
    result = _outcome(parse)
    assert time.perf_counter() - start < limit, "parser too slow on adversarial input"
    return result


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


# ------------------------------------------------------------------------------------ references
REF_PIECES = ["docker://", "docker:", "oci:", "dir:", "//", "/", ":", "@", "sha256:", "1" * 64, "A", "a", "z9",
              "localhost", "127.0.0.1", "[::1]", ":5000", "-", "_", "__", ".", "..", "latest", " ", "\x00", "é",
              "library", "UPPER", "x" * 130]
ref_like = st.lists(st.sampled_from(REF_PIECES), max_size=12).map("".join)


def _check_reference(text: str) -> None:
    result = _outcome(lambda: parse_image_name(text))
    if isinstance(result, MirrorError):
        assert isinstance(result, InvalidReference)
        return
    transport, ref = result
    assert transport == "docker" and isinstance(ref, Reference)
    assert (ref.tag is None) != (ref.digest is None)
    assert parse_docker(str(ref)) == ref  # what we print reads back as the same reference
    assert len(str(ref.repo)) <= 255


@PROPERTY
@given(st.text(max_size=300))
def test_image_names_arbitrary_text(text: str) -> None:
    _check_reference(text)


@PROPERTY
@given(ref_like)
def test_image_names_reference_like(text: str) -> None:
    _check_reference(text)
    _check_reference("docker://" + text)


@pytest.mark.parametrize("text", [
    "docker://", "docker:///", "docker://a@", "docker://a:", "docker://a:b:c", "docker://a@sha256:zz",
    "docker://a:t@" + D1, "docker://" + "1" * 64, "docker://A/B", "docker://host:99999999999999999999/a",
    "docker://" + "a/" * 200 + "a", "docker://" + "a" * 100_000, "docker://" + "a-" * 50_000 + "!",
    "docker://" + "a." * 50_000 + "/x", "docker://a:" + "t" * 129, "docker://a@md5:" + "1" * 32,
    "docker://a@sha256:" + "A" * 64, "nope://a", "a", "", "oci-archive:/x", "docker-daemon:a",
])
def test_image_name_corpus(text: str) -> None:
    assert isinstance(_timed(lambda: parse_image_name(text)), InvalidReference)


# ------------------------------------------------------------------------------------- manifests
def _image(**override: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": D1, "size": 10},
        "layers": [{"mediaType": LAYER, "digest": D2, "size": 20}],
    }
    data.update(override)
    return data


def _index(children: list[Any], media_type: str = mt.OCI_INDEX) -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": media_type, "manifests": children}


def _layer(**override: Any) -> dict[str, Any]:
    return {"mediaType": LAYER, "digest": D2, "size": 20, **override}


def _b(data: Any) -> bytes:
    return json.dumps(data).encode()


def _schema1_signed(protected_header: bytes) -> bytes:
    protected = base64.urlsafe_b64encode(protected_header).decode()
    return _b({"schemaVersion": 1, "fsLayers": [{"blobSum": D1}], "signatures": [{"protected": protected}]})


def _digest(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def test_the_valid_base_cases_parse() -> None:
    image = manifest_mod.parse(_b(_image()))
    assert [str(d.digest) for d in image.blobs()] == [D1, D2]
    index = manifest_mod.parse(_b(_index([{"mediaType": mt.OCI_MANIFEST, "digest": D1, "size": 3}])))
    assert index.is_index and index.manifests[0].size == 3


NESTED = b"[" * 100_000 + b"]" * 100_000
MANIFEST_CORPUS: list[tuple[str, bytes, str | None, str]] = [
    ("empty", b"", None, "not valid JSON"),
    ("not json", b"<html>nope</html>", mt.OCI_MANIFEST, "not valid JSON"),
    ("array", b"[]", None, "not a JSON object"),
    ("null", b"null", None, "not a JSON object"),
    ("deeply nested array", NESTED, None, "nested too deeply"),
    ("deeply nested object", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, None, "nested too deeply"),
    ("over 4 MiB", _b(_image(annotations={"x": "y" * MAX_MANIFEST_SIZE})), None, "byte limit"),
    ("invalid UTF-8", b'{"mediaType": "\xff"}', None, "not valid JSON"),
    ("huge integer", b'{"schemaVersion": ' + b"9" * 5000 + b"}", None, "not valid JSON"),
    ("wrong media type in body", _b(_image(mediaType="text/html")), None, "unsupported manifest media type"),
    ("wrong Content-Type", _b({k: v for k, v in _image().items() if k != "mediaType"}), "image/png",
     "unsupported manifest media type"),
    ("Content-Type disagrees with body", _b(_image()), mt.OCI_INDEX, "disagrees with Content-Type"),
    ("config media type as Content-Type", _b({"schemaVersion": 2}), mt.OCI_CONFIG, "unsupported"),
    ("schemaVersion 3", _b(_image(schemaVersion=3)), None, "schemaVersion"),
    ("schemaVersion string", _b(_image(schemaVersion="2")), None, "schemaVersion"),
    ("no layers", _b({k: v for k, v in _image().items() if k != "layers"}), None, "no layers list"),
    ("layers not a list", _b(_image(layers={"a": 1})), None, "no layers list"),
    ("no config", _b({k: v for k, v in _image().items() if k != "config"}), None, "config is not an object"),
    ("layer not an object", _b(_image(layers=["sha256:x"])), None, "layers[0] is not an object"),
    ("negative size", _b(_image(layers=[_layer(size=-1)])), None, "invalid size"),
    ("huge size", _b(_image(layers=[_layer(size=2**62)])), None, "invalid size"),
    ("size over int64", _b(_image(layers=[_layer(size=2**80)])), None, "invalid size"),
    ("size infinite", _b(_image(layers=[_layer()])).replace(b'"size": 20', b'"size": 1e400'), None, "invalid size"),
    ("size NaN", _b(_image(layers=[_layer()])).replace(b'"size": 20', b'"size": NaN'), None, "invalid size"),
    ("size string", _b(_image(layers=[_layer(size="20")])), None, "invalid size"),
    ("size float", _b(_image(layers=[_layer(size=2.5)])), None, "invalid size"),
    ("size bool", _b(_image(layers=[_layer(size=True)])), None, "invalid size"),
    ("size missing", _b(_image(layers=[{"mediaType": LAYER, "digest": D2}])), None, "invalid size"),
    ("digest missing", _b(_image(layers=[{"mediaType": LAYER, "size": 1}])), None, "has no digest"),
    ("digest not a string", _b(_image(layers=[_layer(digest=5)])), None, "has no digest"),
    ("digest garbage", _b(_image(layers=[_layer(digest="sha256:xyz")])), None, "invalid"),
    ("digest short", _b(_image(layers=[_layer(digest="sha256:" + "a" * 63)])), None, "invalid"),
    ("digest uppercase", _b(_image(layers=[_layer(digest="sha256:" + "A" * 64)])), None, "invalid"),
    ("digest md5", _b(_image(layers=[_layer(digest="md5:" + "a" * 32)])), None, "unsupported digest algorithm"),
    ("digest path traversal", _b(_image(layers=[_layer(digest="sha256:../../etc/passwd")])), None, "invalid"),
    ("mediaType not a string", _b(_image(layers=[_layer(mediaType=7)])), None, "non-string mediaType"),
    ("urls not strings", _b(_image(layers=[_layer(urls=[1])])), None, "invalid urls"),
    ("annotations a list", _b(_image(layers=[_layer(annotations=["a"])])), None, "invalid annotations"),
    ("subject not an object", _b(_image(subject="x")), None, "subject is not an object"),
    ("index manifests null", _b(_index(None)), None, "no manifests list"),  # type: ignore[arg-type]
    ("index child a number", _b(_index([1])), None, "manifests[0] is not an object"),
    ("index child platform a string", _b(_index([{"mediaType": mt.OCI_MANIFEST, "digest": D1, "size": 1,
                                                   "platform": "linux/amd64"}])), None, "platform is not an object"),
    ("index child platform without os", _b(_index([{"mediaType": mt.OCI_MANIFEST, "digest": D1, "size": 1,
                                                     "platform": {"architecture": 5}}])), None, "lacks os"),
    ("index child negative size", _b(_index([{"mediaType": mt.OCI_MANIFEST, "digest": D1, "size": -5}])), None,
     "invalid size"),
    ("schema1 without fsLayers", _b({"schemaVersion": 1, "name": "a"}), mt.DOCKER_V1, "no fsLayers"),
    ("schema1 bad blobSum", _b({"schemaVersion": 1, "fsLayers": [{"blobSum": "x"}]}), mt.DOCKER_V1, "invalid"),
    ("schema1 formatLength infinite", _schema1_signed(b'{"formatLength": Infinity, "formatTail": ""}'),
     mt.DOCKER_V1_SIGNED, "malformed schema1 signature"),
    ("schema1 formatLength negative", _schema1_signed(b'{"formatLength": -1, "formatTail": ""}'),
     mt.DOCKER_V1_SIGNED, "malformed schema1 signature"),
    ("schema1 protected not base64", _b({"schemaVersion": 1, "fsLayers": [], "signatures": [{"protected": "é"}]}),
     mt.DOCKER_V1_SIGNED, "malformed schema1 signature"),
    ("schema1 protected deeply nested", _schema1_signed(NESTED), mt.DOCKER_V1_SIGNED, "malformed schema1 signature"),
]


@pytest.mark.parametrize(("raw", "content_type", "needle"), [c[1:] for c in MANIFEST_CORPUS],
                         ids=[c[0] for c in MANIFEST_CORPUS])
def test_manifest_corpus(raw: bytes, content_type: str | None, needle: str) -> None:
    result = _timed(lambda: manifest_mod.parse(raw, content_type))
    assert isinstance(result, ManifestError), result
    assert needle.lower() in str(result).lower()
    assert len(str(result)) < 600  # a hostile manifest cannot make the error message huge


def test_index_that_names_itself_is_a_digest_mismatch() -> None:
    """A digest cycle cannot be built (a manifest cannot contain its own hash), so an index "whose
    child is itself" is a registry serving the index under the child's digest: refused, no loop."""
    index = _b(_index([{"mediaType": mt.OCI_INDEX, "digest": D1, "size": 100}]))
    result = _outcome(lambda: manifest_mod.parse(index, mt.OCI_INDEX, Digest.parse(D1)))
    assert isinstance(result, ManifestError) and "digest mismatch" in str(result)


def _check_manifest(raw: bytes, content_type: str | None) -> None:
    result = _outcome(lambda: manifest_mod.parse(raw, content_type))
    if isinstance(result, MirrorError):
        assert isinstance(result, ManifestError), repr(result)
        return
    assert isinstance(result, Manifest) and mt.is_manifest(result.media_type)
    assert result.digest == Digest.of(raw) or result.media_type == mt.DOCKER_V1_SIGNED
    for desc in (*result.blobs(), *result.manifests):
        assert 0 <= desc.size <= 1 << 40 and len(desc.digest.hex) in (64, 128)


@PROPERTY
@given(json_values, st.sampled_from([None, *mt.ALL_MANIFESTS, "application/json", "text/html"]))
def test_manifests_random_json(value: Any, content_type: str | None) -> None:
    _check_manifest(json.dumps(value).encode(), content_type)


@PROPERTY
@given(st.binary(max_size=300))
def test_manifests_random_bytes(raw: bytes) -> None:
    _check_manifest(raw, None)


PATHS = [("schemaVersion",), ("mediaType",), ("config",), ("config", "size"), ("config", "digest"),
         ("config", "mediaType"), ("layers",), ("layers", 0), ("layers", 0, "size"), ("layers", 0, "digest"),
         ("layers", 0, "urls"), ("layers", 0, "annotations"), ("layers", 0, "platform"), ("subject",)]


@st.composite
def mutated_manifests(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A valid image or index manifest with one field replaced by a random JSON value, or removed."""
    data: Any = draw(st.sampled_from([_image(), _index([_layer(mediaType=mt.OCI_MANIFEST)])]))
    media_type = data["mediaType"]
    path = list(draw(st.sampled_from(PATHS)))
    if media_type == mt.OCI_INDEX:
        if path[0] == "config":
            path = ["manifests", 0, *path[1:]]
        elif path[0] == "layers":
            path[0] = "manifests"
    parent = data
    for key in path[:-1]:
        parent = parent.get(key) if isinstance(parent, dict) else parent[key]
    if draw(st.booleans()):
        parent.pop(path[-1], None) if isinstance(parent, dict) else parent.pop()
    else:
        parent[path[-1]] = draw(json_values)
    content_type = draw(st.sampled_from([None, media_type, mt.DOCKER_MANIFEST, mt.DOCKER_LIST]))
    return json.dumps(data).encode(), content_type


@PROPERTY
@given(mutated_manifests())
def test_manifests_mutated(case: tuple[bytes, str | None]) -> None:
    _check_manifest(*case)


# -------------------------------------------------------------------------------------- sync YAML
VALID_YAML = """\
registry.example.com:
  images:
    busybox: []
    app/web: ["1.0", "sha256:1111111111111111111111111111111111111111111111111111111111111111"]
  images-by-tag-regex:
    nginx: ^1\\.2[0-9]
  images-by-semver:
    lib/semver: ">= 1.2.0, < 2.0.0"
  credentials: {username: alice, password: s3cret}
  tls-verify: false
  rate-limit: {requests-per-second: 5, burst: 10}
  chunk-size: 16MiB
  platforms: [linux/amd64]
  exclude-tags: ['-rc']
quay.io:
  catalog: {prefixes: [team/], tags: '^v'}
"""
YAML_PIECES = [":", " ", "\n", "  ", "- ", "[", "]", "{", "}", ",", "'", '"', "&a ", "*a", "<<: ", "!!int ", "!!float ",
               "!!timestamp ", "!!binary ", "!!python/object ", "? ", "---\n", "...\n", "#", "|", ">", "~", "null",
               "yes", "1e999", "9" * 5000, ".nan", "\t", "\x00", "\ufeff", "é", "images", "tls-verify",
               "chunk-size", "rate-limit", "burst", "credentials", "password", "catalog", "platforms"]


def _check_yaml(text: str) -> None:
    result = _timed(lambda: parse_sync_config(text, "sync.yaml"), limit=5.0)
    if isinstance(result, MirrorError):
        assert isinstance(result, ConfigError) and str(result).startswith("sync.yaml: "), repr(result)
        return
    assert isinstance(result, SyncConfig)


def test_the_valid_yaml_parses() -> None:
    config = parse_sync_config(VALID_YAML, "sync.yaml")
    assert [r.name for r in config.registries] == ["registry.example.com", "quay.io"]


@PROPERTY
@given(st.text(max_size=300))
def test_yaml_arbitrary_text(text: str) -> None:
    _check_yaml(text)


@PROPERTY
@given(json_values)
def test_yaml_random_documents(value: Any) -> None:
    _check_yaml(yaml.safe_dump(value))
    _check_yaml(yaml.safe_dump({"registry.example.com": value}))
    _check_yaml(yaml.safe_dump({"registry.example.com": {"images": value}}))


@PROPERTY
@given(st.data())
def test_yaml_mutations_of_a_valid_file(data: st.DataObject) -> None:
    text = VALID_YAML
    for _ in range(data.draw(st.integers(1, 4))):
        start = data.draw(st.integers(0, len(text)))
        end = data.draw(st.integers(start, min(len(text), start + 20)))
        text = text[:start] + data.draw(st.sampled_from(["", *YAML_PIECES])) + text[end:]
    _check_yaml(text)


BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))
YAML_CORPUS = [
    "q.io:\n  rate-limit: {burst: !!int abc}\n",
    "q.io:\n  rate-limit: {requests-per-second: !!float abc}\n",
    "q.io:\n  rate-limit: {burst: !!timestamp 2020-99-99}\n",
    "q.io:\n  rate-limit: {burst: " + "9" * 5000 + "}\n",
    "q.io:\n  chunk-size: " + "9" * 5000 + "\n",
    "q.io:\n  chunk-size: " + "9" * 5000 + "GiB\n",
    "q.io:\n  chunk-size: !!int zz\n",
    "q.io:\n  chunk-size: !!binary '!!!'\n",
    "q.io:\n  chunk-size: !!python/object:os.system x\n",
    "q.io:\n  images: !!python/name:os.system\n",
    "q.io: " + "[" * 5_000 + "]" * 5_000 + "\n",
    "q.io: " + "{a: " * 5_000 + "1" + "}" * 5_000 + "\n",
    "a: &x\n  <<: *x\n",
    BOMB,
    "q.io:\n  images: " + BOMB.replace("\n", "\n  ").replace("a: &a", "x: &a", 1),
    "q.io:\n  images: {a: [*undefined]}\n",
    "q.io:\n\timages: {}\n",
    "q.io:\n  images: {a: []}\n---\nq.io: {}\n",
    "\x00", "\ufeff\ufeff", "%YAML 9.9\n--- a\n", "!!binary 'aGk='\n", "? [a]\n: 1\n", "- - - -\n",
]


@pytest.mark.parametrize("text", YAML_CORPUS, ids=range(len(YAML_CORPUS)))
def test_yaml_corpus(text: str) -> None:
    result = _timed(lambda: parse_sync_config(text, "sync.yaml"), limit=5.0)
    assert isinstance(result, ConfigError), result


# -------------------------------------------------------------------------------- token responses
REALM = URL("https://auth.example.com/token")


def _check_token(status: int, body: bytes) -> None:
    before = time.monotonic()
    result = _outcome(lambda: TokenCache._parse(status, body, REALM))
    if isinstance(result, MirrorError):
        assert isinstance(result, RegistryError), repr(result)
        return
    assert status == 200 and isinstance(result, Token)
    assert result.value.isascii() and result.value.isprintable() and " " not in result.value
    assert result.expires_at >= before + 60  # never a token that expires at once (or in the past)


@PROPERTY
@given(st.fixed_dictionaries({}, optional={"token": json_values, "access_token": json_values,
                                           "expires_in": json_values, "refresh_token": json_values,
                                           "issued_at": json_values}))
def test_token_responses_random_fields(data: dict[str, Any]) -> None:
    _check_token(200, json.dumps(data).encode())


@PROPERTY
@given(st.binary(max_size=200), st.sampled_from([200, 201, 204, 301, 400, 401, 403, 404, 500]))
def test_token_responses_random_bodies(body: bytes, status: int) -> None:
    _check_token(status, body)


@pytest.mark.parametrize(("body", "needle"), [
    (b"", "not valid JSON"),
    (b"<html>token</html>", "not valid JSON"),
    (b"[" * 100_000, "not valid JSON"),
    (b'{"token": "' + b"a" * (1 << 20) + b'"}', "too large"),
    (b"[]", "not a JSON object"),
    (b'"tok"', "not a JSON object"),
    (b"{}", "no token"),
    (b'{"token": null}', "no token"),
    (b'{"token": 5}', "no token"),
    (b'{"token": ""}', "no token"),
    (b'{"token": ["a"]}', "no token"),
    (b'{"access_token": {"a": 1}}', "no token"),
    (b'{"token": "abc\\r\\nX-Injected: 1"}', "malformed token"),
    (b'{"token": "two words"}', "malformed token"),
    (b'{"token": "caf\\u00e9"}', "malformed token"),
])
def test_token_response_corpus(body: bytes, needle: str) -> None:
    result = _timed(lambda: TokenCache._parse(200, body, REALM))
    assert isinstance(result, RegistryError) and needle in str(result), result


@pytest.mark.parametrize("expires", ["-5", "0", '"3600"', "null", "true", "1e999", "-1e999", "NaN", "[]"])
def test_token_expiry_is_sane(expires: str) -> None:
    before = time.monotonic()
    token = TokenCache._parse(200, b'{"token": "t0k", "expires_in": %s}' % expires.encode(), REALM)
    assert token.value == "t0k"
    assert before + 60 <= token.expires_at <= time.monotonic() + 86_400  # at least a minute, at most a day


# ----------------------------------------------------------------------------- WWW-Authenticate
@pytest.mark.parametrize("realm", ["", "ftp://auth.example/token", "http://[::1", "http://h:99999/t", "https://",
                                   "javascript:alert(1)", "/relative/token", "\x00", "http://", "h" * 10_000])
@pytest.mark.anyio
async def test_unusable_token_realms_are_refused_before_any_request(realm: str) -> None:
    header = f'Bearer realm="{realm}",service="s",scope="repository:a:pull"'
    from mirror.http.headers import parse_www_authenticate
    [challenge] = parse_www_authenticate(header)
    cache = TokenCache(_no_token_call, Credential("alice", "pw"))
    with pytest.raises(Unauthorized, match=r"realm|not an http"):
        await cache.get(challenge, ("repository:a:pull",))


@pytest.mark.anyio
async def test_credentials_never_go_to_a_plain_http_realm_unless_allowed() -> None:
    challenge = Challenge("bearer", {"realm": "http://127.0.0.1:9/token", "service": "s"})
    for cred in (Credential("alice", "pw"), Credential(identity_token="refresh")):
        cache = TokenCache(_no_token_call, cred)
        with pytest.raises(Unauthorized, match=r"plain HTTP.*--tls-verify=false"):
            await cache.get(challenge, ())


async def _no_token_call(method: str, url: URL, headers: Mapping[str, str], body: bytes | None) -> tuple[int, bytes]:
    raise AssertionError(f"no token request may be sent here ({method} {url.host})")


# --------------------------------------------------------------------------- Link, Range headers
LINK_PIECES = ["<", ">", ";", ",", " ", 'rel="next"', "rel=next", "http://", "https://", "ftp://", "//", "/v2/x",
               "?n=1", "&last=a", "h", ":99999", ":0", ":443", "[::1", "[::1]", "%zz", "\x00", "é", "#f", "@"]


@PROPERTY
@given(st.lists(st.sampled_from(LINK_PIECES), max_size=16).map("".join))
def test_link_next_gives_a_requestable_url_or_an_error(value: str) -> None:
    result = _outcome(lambda: parse_link_next(value, "https://r.example/v2/x/tags/list?n=10"))
    if isinstance(result, MirrorError):
        assert isinstance(result, RegistryError)
        return
    if result is not None:
        url = URL(result, encoded=True)  # what list_tags requests next
        assert url.scheme in ("http", "https") and url.host and url.port is not None


@pytest.mark.parametrize("value", ["<http://h:99999/x>; rel=next", "<http://[::1/x>; rel=next",
                                   '<https://:443/x>; rel="next"', "<ftp://h/x>; rel=next", "<>; rel=next",
                                   "<http://h/x; rel=next"])
def test_unusable_link_corpus(value: str) -> None:
    assert isinstance(_timed(lambda: parse_link_next(value, "https://r.example/v2/x")), RegistryError)


NUMBER = st.one_of(st.integers(-5, 2**70).map(str), st.sampled_from(["", "*", "-", "1e3", "0x10", "٣", " 1"]))


@PROPERTY
@given(NUMBER, NUMBER, NUMBER, st.sampled_from(["bytes ", "bytes=", "", "BYTES ", "items "]))
def test_content_range_invariants(first: str, last: str, total: str, unit: str) -> None:
    result = _outcome(lambda: parse_content_range(f"{unit}{first}-{last}/{total}"))
    if not isinstance(result, MirrorError):
        a, b, size = result
        assert 0 <= a <= b and (size is None or b < size)


@PROPERTY
@given(NUMBER, NUMBER, st.sampled_from(["bytes=", "", "bytes ", "=" ]), st.booleans())
def test_upload_range_invariants(first: str, last: str, unit: str, zero_empty: bool) -> None:
    result = _outcome(lambda: parse_upload_range(f"{unit}{first}-{last}", zero_zero_means_empty=zero_empty))
    if not isinstance(result, MirrorError):
        assert result is None or result >= 0


# ================================================================================ end to end
def _respond(body: bytes, content_type: str = "application/json",
             headers: dict[str, str] | None = None) -> Callable[[web.Request, RequestInfo], Any]:
    async def action(_req: web.Request, _info: RequestInfo) -> web.StreamResponse:
        return web.Response(body=body, headers={"Content-Type": content_type, **(headers or {})})
    return action


def _manifest_response(body: bytes, content_type: str) -> web.Response:
    return web.Response(body=body, headers={"Content-Type": content_type, "Docker-Content-Digest": _digest(body)})


def _manifest_puts(reg: Registry) -> list[tuple[str, str, int]]:
    return [r for r in reg.access_log_requests() if r[0] == "PUT" and "/manifests/" in r[1]]


def _nested_indexes(levels: int, leaf: str) -> dict[str, bytes]:
    """``levels`` OCI indexes, each the only child of the one above; the innermost points at ``leaf``.
    Keyed by digest; the outermost is under key ``"top"`` too."""
    served: dict[str, bytes] = {}
    child, child_type, size = leaf, mt.OCI_MANIFEST, 100
    raw = b""
    for _ in range(levels):
        raw = _b(_index([{"mediaType": child_type, "digest": child, "size": size,
                          "platform": {"os": "linux", "architecture": "amd64"}}]))
        child, child_type, size = _digest(raw), mt.OCI_INDEX, len(raw)
        served[child] = raw
    served["top"] = raw
    return served


def test_cli_refuses_hostile_manifests_and_publishes_nothing(registry: Registry, registry2: Registry) -> None:
    image = push_image(registry, "hostile/app", "v1", seed=5)
    good = json.loads(image.manifest)
    nested = _nested_indexes(10, image.digest)
    self_index = _b(_index([{"mediaType": mt.OCI_INDEX, "digest": image.digest, "size": len(image.manifest),
                             "platform": {"os": "linux", "architecture": "amd64"}}]))
    cases: list[tuple[str, bytes, str, tuple[str, ...], tuple[str, ...]]] = [
        ("not json", b"<html>500 internal</html>", mt.OCI_MANIFEST, (), ("not valid JSON",)),
        ("deeply nested", NESTED, mt.OCI_MANIFEST, (), ("nested too deeply",)),
        ("negative size", _b({**good, "layers": [{**good["layers"][0], "size": -1}]}), mt.OCI_MANIFEST, (),
         ("invalid size",)),
        ("bad digest", _b({**good, "config": {**good["config"], "digest": "sha256:../../x"}}), mt.OCI_MANIFEST, (),
         ("invalid",)),
        ("wrong media type", _b({**good, "mediaType": "application/vnd.evil+json"}), "application/vnd.evil+json", (),
         ("unsupported manifest media type",)),
        # HEAD says "list", so the engine asks for the list by digest and gets an image: refused either way.
        ("type disagrees", image.manifest, mt.DOCKER_LIST, (), ("manifest",)),
        ("over 4 MiB", b" " * (MAX_MANIFEST_SIZE + 10) + image.manifest, mt.OCI_MANIFEST, (), ("larger than",)),
        # The index's child is served as the index itself (a "digest cycle"): the digest check stops it.
        ("child is itself", self_index, mt.OCI_INDEX, ("--all",), ("digest mismatch",)),
        ("10 nested indexes", nested["top"], mt.OCI_INDEX, ("--all",), ("nested index",)),
        ("10 nested indexes, system platform", nested["top"], mt.OCI_INDEX, ("--override-arch", "amd64"), ("index",)),
    ]
    with RegistryProxy(registry) as proxy:
        for name, body, content_type, flags, needles in cases:
            async def serve(_req: web.Request, info: RequestInfo, body: bytes = body, content_type: str = content_type,
                            name: str = name) -> web.StreamResponse | None:
                if info.reference == "v1":
                    return _manifest_response(body, content_type)
                if info.reference in nested:
                    return _manifest_response(nested[info.reference], mt.OCI_INDEX)
                if info.reference == image.digest and name == "child is itself":
                    return _manifest_response(self_index, mt.OCI_INDEX)
                return None

            proxy.faults = [Fault(Fault.match(kind="manifest"), serve, times=None)]  # GET and HEAD
            proc = run_mirror("copy", "--src-tls-verify=false", "--dest-tls-verify=false", *flags,
                              proxy.ref("hostile/app", "v1"), registry2.ref("hostile/app", "v1"), check=False)
            print("case:", name)
            line = assert_one_line_error(proc, *needles)
            assert "internal error" not in line, (name, line)
        served = [r for r in proxy.requests if r.kind == "manifest"]
    assert len(served) < 20 * len(cases), "bounded number of manifest requests (no endless recursion)"
    assert _manifest_puts(registry2) == []


def test_cli_refuses_hostile_tag_lists(registry: Registry, registry2: Registry) -> None:
    push_image(registry, "tags/app", "v1", seed=6)
    tags_path = "/v2/tags/app/tags/list"
    with RegistryProxy(registry) as proxy:
        def list_tags(body: bytes, headers: dict[str, str] | None = None) -> Any:
            proxy.faults = [Fault(Fault.match(kind="tags"), _respond(body, headers=headers), times=None)]
            return run_mirror("list-tags", PLAIN, f"docker://{proxy.host}/tags/app", check=False, timeout=60)

        ok = list_tags(b'{"name": "tags/app", "tags": null}')
        assert ok.returncode == 0 and json.loads(ok.stdout)["Tags"] == []
        ok = list_tags(b'{"name": "tags/app", "tags": [1, null, "v1", {"a": 1}, ["v2"]]}')
        assert ok.returncode == 0 and json.loads(ok.stdout)["Tags"] == ["v1"]  # only strings are tags
        for body, needle in [(b"<html>", "not JSON"), (b"[" * 100_000, "not JSON"), (b'["v1"]', "not a JSON object"),
                             (b'{"tags": "v1"}', "malformed tag list"), (b'{"tags": {"v1": 1}}', "malformed")]:
            assert_one_line_error(list_tags(body), needle)

        # A next link to the same page, and a two-page loop: each must stop with an error.
        before = len(proxy.requests)
        loop = list_tags(b'{"tags": ["v1"]}', {"Link": f'<{tags_path}>; rel="next"'})
        assert_one_line_error(loop, "loops back")
        assert len([r for r in proxy.requests[before:] if r.kind == "tags"]) == 1  # the loop is seen, not followed

        async def two_pages(req: web.Request, _info: RequestInfo) -> web.StreamResponse:
            other = tags_path if req.query_string else f"{tags_path}?page=2"
            return web.json_response({"tags": [f"v{len(req.query_string)}"]},
                                     headers={"Link": f'<{other}>; rel="next"'})
        proxy.faults = [Fault(Fault.match(kind="tags"), two_pages, times=None)]
        assert_one_line_error(run_mirror("list-tags", PLAIN, f"docker://{proxy.host}/tags/app", check=False,
                                         timeout=60), "loops back")
        assert_one_line_error(list_tags(b'{"tags": []}', {"Link": "<http://[::1/x>; rel=next"}), "Link")

        # sync lists the tags first: a hostile list stops it before anything is written.
        proxy.faults = [Fault(Fault.match(kind="tags"), _respond(b'{"tags": ["v1"]}', headers={
            "Link": f'<{tags_path}>; rel="next"'}), times=None)]
        proc = run_mirror("sync", "--src", "docker", "--dest", "docker", "--src-tls-verify=false",
                          "--dest-tls-verify=false", f"{proxy.host}/tags/app", f"{registry2.host}/m",
                          check=False, timeout=60)
        assert_one_line_error(proc, "loops back")
    assert _manifest_puts(registry2) == []


def test_cli_refuses_hostile_token_responses(tmp_path: Path, seeded_registry: Registry,
                                             token_registry: Registry, token_server: TokenServer) -> None:
    password = token_registry.password
    assert password
    src = seeded_registry.ref("library/alpine", "3.19")
    with RegistryProxy(token_registry) as proxy:
        cases = [(b"<html>", "not valid JSON"), (b'{"token": 5}', "no token"), (b"[]", "not a JSON object"),
                 (b'{"token": "a\\r\\nX-Evil: 1"}', "malformed token"),
                 (b'{"token": "' + b"t" * (1 << 20) + b'"}', "too large")]
        for body, needle in cases:
            proxy.faults = [Fault(Fault.match(kind="token"), _respond(body), times=None)]
            proc = run_mirror("copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--dest-creds",
                              f"{token_registry.username}:{password}", src, proxy.ref("tok/app", "v1"), check=False)
            assert_one_line_error(proc, needle)
            assert password not in proc.stderr + proc.stdout
        assert [r for r in proxy.requests if r.kind == "token"], "the hostile token endpoint was asked"
    assert _manifest_puts(token_registry) == []
    assert token_server.issued == []  # every token request was answered by the fault, never upstream


def test_cli_index_digest_cycle_and_nesting_in_sync(registry: Registry, registry2: Registry) -> None:
    """A real nested index pushed to a real registry: sync --all refuses it cleanly."""
    index = push_index(registry, "nest/app", "inner", seed=12)
    outer = _b(_index([{"mediaType": mt.OCI_INDEX, "digest": index.digest, "size": len(index.manifest)}]))
    from support.images import Client
    Client(registry).put_manifest("nest/app", "outer", outer, mt.OCI_INDEX)
    proc = run_mirror("sync", "--src", "docker", "--dest", "docker", "--src-tls-verify=false",
                      "--dest-tls-verify=false", "--all", f"{registry.host}/nest/app:outer", f"{registry2.host}/m",
                      check=False, timeout=60)
    assert_one_line_error(proc, "nested index")
    assert [r for r in _manifest_puts(registry2) if r[1].endswith("/outer")] == []


# ------------------------------------------------------------------------------------ auth files
@pytest.mark.parametrize("content", [b"[" * 100_000, b"\xff\xfe", b"{", b"[]", b'{"auths": ' + b"[" * 50_000])
def test_hostile_auth_files(tmp_path: Path, content: bytes) -> None:
    from mirror.http.credentials import load_auth_json
    path = tmp_path / "auth.json"
    path.write_bytes(content)
    result = _timed(lambda: load_auth_json(path))
    assert isinstance(result, ConfigError) and str(path) in str(result), result


def test_cli_refuses_hostile_challenges(registry: Registry) -> None:
    push_image(registry, "chal/app", "v1", seed=7)
    challenges = [('Bearer realm="http://[::1",service="x"', "realm"), ('Bearer realm="ftp://evil/token"', "realm"),
                  ("Bearer", "realm"), ("Negotiate abc==, NTLM", "401"), ("garbage ,,= ==,\"unterminated", "401"),
                  ('Basic realm="x"' + ", a=b" * 1000, "401")]
    with RegistryProxy(registry) as proxy:
        for challenge, needle in challenges:
            proxy.faults = [Fault.respond(Fault.match(kind="ping"), 401, times=None,
                                          headers={"WWW-Authenticate": challenge}),
                            Fault.respond(Fault.match(kind="manifest"), 401, times=None,
                                          headers={"WWW-Authenticate": challenge})]
            proc = run_mirror("inspect", "--raw", PLAIN, "--creds", "alice:pw-123456", proxy.ref("chal/app", "v1"),
                              check=False, timeout=60)
            line = assert_one_line_error(proc, needle)
            assert "internal error" not in line and "pw-123456" not in proc.stderr, line


@pytest.mark.parametrize("content_range", ["bytes 0-5/3", "chunks 1-2/3", None, "elsewhere"])
def test_cli_refuses_a_hostile_content_range_on_blob_resume(registry: Registry, registry2: Registry,
                                                            content_range: str | None) -> None:
    """The first read of a layer breaks half way; the resumed read (``Range: bytes=N-``) is answered
    206 with a Content-Range that is malformed, inconsistent, or starts elsewhere (or is missing)."""
    image = push_image(registry, "range/app", "v1", seed=8, layer_count=1, layer_size=256 * 1024)
    layer = image.layer_data[0]
    calls: list[str | None] = []

    async def hostile(req: web.Request, info: RequestInfo) -> web.StreamResponse:
        calls.append(info.headers.get("range"))
        if len(calls) == 1:  # a body cut in the middle
            resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            resp.content_length = len(layer)
            await resp.prepare(req)
            await resp.write(layer[: len(layer) // 2])
            assert req.transport is not None
            req.transport.close()
            return resp
        value = content_range
        if value == "elsewhere":  # well-formed, but not the offset asked for
            value = f"bytes 10-{len(layer) - 1}/{len(layer)}"
        headers = {"Content-Range": value} if value else {}
        return web.Response(status=206, body=layer[10:], headers=headers)

    with RegistryProxy(registry) as proxy:
        proxy.faults = [Fault(Fault.match(kind="blob", method="GET", path=image.layers[0].digest), hostile, times=None)]
        proc = run_mirror("copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--retry-times", "0",
                          proxy.ref("range/app", "v1"), registry2.ref("range/app", "v1"), check=False, timeout=60)
    line = assert_one_line_error(proc)
    assert "internal error" not in line, line
    assert len(calls) >= 2 and calls[1] is not None and calls[1].startswith("bytes="), calls  # it did resume
    assert "content-range" in line.lower(), line
    assert _manifest_puts(registry2) == []
