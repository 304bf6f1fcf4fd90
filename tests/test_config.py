"""The sync YAML: skopeo's format read as skopeo reads it, mirror's extensions, and every error."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirror.config.filters import compile_regex, parse_platform, platform_matches, select_tags
from mirror.config.load import load_sync_config, parse_sync_config
from mirror.config.schema import Catalog, Credentials, RateLimit, RegistryConfig, RepoSpec, SyncConfig
from mirror.core.size import parse_size
from mirror.errors import ConfigError

DIGEST = "sha256:0000000000000000000000000000000011111111111111111111111111111111"

SKOPEO_DOCS_EXAMPLE = f"""\
registry.example.com:
    images:
        busybox: []
        redis:
            - "1.0"
            - "2.0"
            - "{DIGEST}"
    images-by-tag-regex:
        nginx: ^1\\.13\\.[12]-alpine-perl$
    images-by-semver:
        alpine: ">= 3.12.0"
    credentials:
        username: john
        password: this is a secret
    tls-verify: true
    cert-dir: /home/john/certs
quay.io:
    tls-verify: false
    images:
        coreos/etcd:
            - latest
"""

# skopeo-guide.md section 10.4, verbatim (one-space indentation, a docker.io entry).
SKOPEO_GUIDE_EXAMPLE = """\
192.168.10.80:5000:
 images:
   busybox: [stable]
   redis:
     - "latest"
     - "7.0.5"
 credentials:
     username: registryuser
     password: registryuserpassword
 tls-verify: true
 cert-dir: /etc/containers/certs.d/192.168.10.80:5000

docker.io:
 tls-verify: false
 images:
   httpd:
     - "latest"

quay.io:
 tls-verify: false
 images:
   coreos/etcd:
     - latest
"""


def parse(text: str) -> SyncConfig:
    return parse_sync_config(textwrap.dedent(text), "sync.yaml")


def one(text: str) -> RegistryConfig:
    config = parse(text)
    assert len(config.registries) == 1
    return config.registries[0]


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("sync.yaml: ")
    return message


# --- skopeo's own examples --------------------------------------------------------------------

def test_skopeo_docs_example() -> None:
    config = parse(SKOPEO_DOCS_EXAMPLE)
    assert config == SyncConfig(
        registries=(
            RegistryConfig(
                name="registry.example.com",
                repos=(
                    RepoSpec("busybox", all_tags=True),
                    RepoSpec("redis", tags=("1.0", "2.0", DIGEST)),
                    RepoSpec("nginx", regex=r"^1\.13\.[12]-alpine-perl$"),
                    RepoSpec("alpine", semver=">= 3.12.0"),
                ),
                credentials=Credentials("john", "this is a secret"),
                tls_verify=True,
                cert_dir="/home/john/certs",
                cert_dir_set=True,
            ),
            RegistryConfig(name="quay.io", repos=(RepoSpec("coreos/etcd", tags=("latest",)),), tls_verify=False),
        ),
        source="sync.yaml",
    )


def test_skopeo_guide_example(tmp_path: Path) -> None:
    path = tmp_path / "skopeo-sync.yml"
    path.write_text(SKOPEO_GUIDE_EXAMPLE)
    config = load_sync_config(path)
    assert config.source == str(path)
    first, hub, quay = config.registries
    assert first == RegistryConfig(
        name="192.168.10.80:5000",
        repos=(RepoSpec("busybox", tags=("stable",)), RepoSpec("redis", tags=("latest", "7.0.5"))),
        credentials=Credentials("registryuser", "registryuserpassword"),
        tls_verify=True,
        cert_dir="/etc/containers/certs.d/192.168.10.80:5000",
        cert_dir_set=True,
    )
    assert hub == RegistryConfig("docker.io", (RepoSpec("library/httpd", tags=("latest",)),), tls_verify=False)
    assert quay == RegistryConfig("quay.io", (RepoSpec("coreos/etcd", tags=("latest",)),), tls_verify=False)


def test_repo_under_three_keys_is_one_spec() -> None:
    reg = one("""\
        registry.example.com:
          images:
            alpine: [edge, "sha256:0000000000000000000000000000000011111111111111111111111111111111"]
          images-by-tag-regex:
            alpine: ^3\\.1[0-9]$
          images-by-semver:
            alpine: ~3.19
    """)
    assert reg.repos == (RepoSpec("alpine", tags=("edge", DIGEST), regex=r"^3\.1[0-9]$", semver="~3.19"),)
    available = ["3.10", "3.19.1", "3.20.0", "edge", "latest", "3.19.2-rc1"]
    assert select_tags(available, reg.repos[0]) == ["3.10", "3.19.1", "edge", DIGEST]


def test_hub_names_are_normalised_and_merged() -> None:
    reg = one("""\
        docker.io:
          images:
            busybox: [latest]
          images-by-tag-regex:
            library/busybox: ^1\\.
    """)
    assert reg.repos == (RepoSpec("library/busybox", tags=("latest",), regex=r"^1\."),)


def test_registry_key_with_namespace_keeps_paths_relative() -> None:
    reg = one("""\
        registry.example.com:5000/team:
          images:
            app: [v1]
    """)
    assert reg.name == "registry.example.com:5000/team"
    assert reg.repos == (RepoSpec("app", tags=("v1",)),)


# --- read as yaml.v3 reads it -----------------------------------------------------------------

def test_scalars_keep_their_source_text() -> None:
    reg = one("""\
        registry.example.com:
          images:
            app: [1.10, 7, 1.0, 010, true, 2024-01-01]
          credentials: {username: 12345, password: 0x1F}
    """)
    assert reg.repos[0].tags == ("1.10", "7", "1.0", "010", "true", "2024-01-01")
    assert reg.credentials == Credentials("12345", "0x1F")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("True", True), ("FALSE", False), ("yes", True), ('"yes"', True), ("'off'", False),
     ("y", True), ("N", False), ("on", True), ("~", None), ("", None)],
)
def test_booleans_as_yaml_v3_decodes_them(value: str, expected: bool | None) -> None:
    assert one(f"quay.io:\n  tls-verify: {value}\n").tls_verify is expected


def test_nulls() -> None:
    reg = one("""\
        registry.example.com:
          images:
            a:
            b: [~]
            c: [~, v1]
          images-by-tag-regex:
            d:
          cert-dir:
          credentials:
    """)
    assert reg.repos == (RepoSpec("a", all_tags=True), RepoSpec("b", all_tags=True), RepoSpec("c", tags=("v1",)),
                         RepoSpec("d", regex=""))
    assert reg.cert_dir is None and not reg.cert_dir_set
    assert reg.credentials is None
    assert one("quay.io:\n").repos == ()
    assert one("quay.io:\n  credentials: {username: '', password: ''}\n").credentials is None


def test_cert_dir_presence_is_recorded() -> None:
    assert one("quay.io:\n  cert-dir: ''\n").cert_dir_set
    assert not one("quay.io:\n  tls-verify: true\n").cert_dir_set


def test_anchors_and_merge_keys() -> None:
    config = parse("""\
        a.example.com: &common
          tls-verify: false
          credentials: {username: u, password: p}
          images: {app: [v1]}
        b.example.com:
          <<: *common
          images: {other: [v2]}
    """)
    a, b = config.registries
    assert b.tls_verify is False and b.credentials == Credentials("u", "p")
    aliased = parse("""\
        a.example.com: &a
          tls-verify: false
        b.example.com: &b
          <<: *a
          tls-verify: true
        c.example.com: *b
    """)
    assert [r.tls_verify for r in aliased.registries] == [False, True, True]
    assert b.repos == (RepoSpec("other", tags=("v2",)),)
    assert a.repos == (RepoSpec("app", tags=("v1",)),)


def test_duplicate_tags_are_dropped_keeping_order() -> None:
    assert one("q.io:\n  images:\n    a: [v2, v1, v2]\n").repos[0].tags == ("v2", "v1")


def test_trailing_empty_document_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(b"\xef\xbb\xbfquay.io:\n  images: {a: [v1]}\n---\n")
    assert load_sync_config(path).registries[0].repos == (RepoSpec("a", tags=("v1",)),)


# --- extensions ----------------------------------------------------------------------------------

def test_every_extension_key() -> None:
    reg = one("""\
        registry.example.com:
          images:
            app: [v1]
            tools/cli: []
          images-by-semver:
            web: ">=2"
          exclude-tags: ['-rc', '^sha256-']
          images-exclude-tags:
            app: ['-debug$', '-rc']
          destinations:
            tools/cli: mirror/cli
          platforms: [linux/amd64, linux/arm64/v8, Linux/AMD64, linux/x86_64]
          rate-limit: {requests-per-second: 2.5, burst: 5, max-connections: 4}
          chunk-size: 16MiB
          catalog:
            prefixes: [team/]
            exclude: ['^team/old-']
            tags: ^v[0-9]
          assume-immutable-tags: true
          prune: true
    """)
    assert reg.repos == (
        RepoSpec("app", tags=("v1",), exclude=("-rc", "^sha256-", "-debug$")),
        RepoSpec("tools/cli", all_tags=True, exclude=("-rc", "^sha256-"), destination="mirror/cli"),
        RepoSpec("web", semver=">=2", exclude=("-rc", "^sha256-")),
    )
    assert reg.exclude_tags == ("-rc", "^sha256-")
    assert reg.platforms == ("linux/amd64", "linux/arm64/v8")
    assert reg.rate_limit == RateLimit(2.5, 5, 4)
    assert reg.chunk_size == 16 * 1024 * 1024
    assert reg.catalog == Catalog(("team/",), ("^team/old-",), "^v[0-9]")
    assert reg.assume_immutable_tags and reg.prune


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", Catalog()), ("false", None), ("{}", Catalog()), ("{tags: ^v}", Catalog(tags="^v"))],
)
def test_catalog_forms(value: str, expected: Catalog | None) -> None:
    assert one(f"registry.example.com:\n  catalog: {value}\n").catalog == expected


def test_rate_limit_partial_and_int_rps() -> None:
    assert one("q.io:\n  rate-limit: {requests-per-second: 3}\n").rate_limit == RateLimit(3.0)
    assert one("q.io:\n  rate-limit: {}\n").rate_limit == RateLimit()


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1024, 1024), ("1KiB", 1024), ("5MB", 5 << 20), ("16MiB", 16 << 20), ("1.5 MiB", 1572864), ("2k", 2048),
     ("1gib", 1 << 30), (" 4096 ", 4096), ("100b", 100), (0, 0)],
)
def test_parse_size(value: int | str, expected: int) -> None:
    assert parse_size(value, "chunk-size") == expected


@pytest.mark.parametrize("value", ["", "MiB", "1 parsec", "-5", "1e6", "1.2.3k", True, -1, 1.5])
def test_parse_size_rejects(value: object) -> None:
    with pytest.raises(ConfigError):
        parse_size(value, "chunk-size")  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "expected"), [("1024", 1024), ("1_048_576", 1 << 20), ("'64KiB'", 65536),
                                                 ("1GiB", 1 << 30), ("65536.0", 65536)])
def test_chunk_size_forms(value: str, expected: int) -> None:
    assert one(f"q.io:\n  chunk-size: {value}\n").chunk_size == expected


# --- errors --------------------------------------------------------------------------------------

ERRORS = [
    # (yaml, substrings the message must contain)
    ("registry.example.com:\n  imagez: {a: []}\n",
     ["registry.example.com.imagez: unknown key (expected one of: images, images-by-tag-regex,", "did you mean images?",
      "(line 2)"]),
    ("q.io:\n  credentials: {username: u, pasword: p}\n", ["q.io.credentials.pasword: unknown key", "identitytoken"]),
    ("q.io:\n  rate-limit: {rps: 1}\n", ["q.io.rate-limit.rps: unknown key"]),
    ("q.io:\n  catalog: {prefix: [a/]}\n", ["q.io.catalog.prefix: unknown key", "did you mean prefixes?"]),
    ("q.io:\n  images: [a, b]\n", ["q.io.images: expected a mapping, got a list"]),
    ("q.io:\n  images: {a: latest}\n", ["q.io.images.a: expected a list of tags or digests ([] for all tags)"]),
    ("q.io:\n  images: {a: [{x: y}]}\n", ["q.io.images.a[0]: expected a string, got a mapping"]),
    ("q.io:\n  images: {a: [v1, [v2]]}\n", ["q.io.images.a[1]: expected a string, got a list"]),
    ("q.io:\n  tls-verify: \"true\"\n", ["q.io.tls-verify: expected true or false, got 'true' (remove the quotes)"]),
    ("q.io:\n  tls-verify: maybe\n", ["q.io.tls-verify: expected true or false, got 'maybe'"]),
    ("q.io:\n  tls-verify: 1\n", ["q.io.tls-verify: expected true or false"]),
    ("q.io:\n  prune: [true]\n", ["q.io.prune: expected true or false, got a list"]),
    ("q.io:\n  images-by-tag-regex: {a: '(?=v)'}\n", ["q.io.images-by-tag-regex.a:", "look-ahead is not supported"]),
    ("q.io:\n  images-by-tag-regex: {a: '(?<!v)1'}\n", ["look-behind is not supported"]),
    ("q.io:\n  images-by-tag-regex: {a: '(a)\\1'}\n", ["backreferences are not supported"]),
    ("q.io:\n  images-by-tag-regex: {a: '[v'}\n", ["q.io.images-by-tag-regex.a: invalid regular expression '[v'"]),
    ("q.io:\n  images-by-tag-regex: {a: [x, y]}\n", ["q.io.images-by-tag-regex.a: expected a string, got a list"]),
    ("q.io:\n  images-by-semver: {a: '>= banana'}\n", ["q.io.images-by-semver.a: improper constraint"]),
    ("q.io:\n  images-by-semver: {a: ''}\n", ["q.io.images-by-semver.a: improper constraint"]),
    ("q.io:\n  images-by-semver: {a: ~}\n", ["q.io.images-by-semver.a: improper constraint"]),
    ("q.io:\n  images: {a: ['sha256:abc']}\n", ["q.io.images.a[0]: invalid sha256 digest"]),
    ("q.io:\n  images: {a: ['md5:abc']}\n", ["q.io.images.a[0]: unsupported digest algorithm"]),
    ("q.io:\n  images: {a: ['-bad']}\n", ["q.io.images.a[0]: invalid tag '-bad'"]),
    ("q.io:\n  images: {a: ['has space']}\n", ["invalid tag 'has space'"]),
    ("q.io:\n  images: {a: ['" + "x" * 129 + "']}\n", ["invalid tag"]),
    ("q.io:\n  images: {BusyBox: []}\n", ["q.io.images.BusyBox: invalid repository 'BusyBox': must be lowercase"]),
    ("q.io:\n  images: {'busybox:latest': []}\n", ["invalid repository 'busybox:latest'", "tags go in the list"]),
    ("q.io:\n  images: {'a//b': []}\n", ["q.io.images.a//b: invalid repository"]),
    ("q.io:\n  images: {'': []}\n", ["invalid repository ''"]),
    ("docker.io:\n  images:\n    busybox: [a]\n    library/busybox: [b]\n", ["same repository as 'busybox' in images"]),
    ("- q.io\n", ["sync.yaml: (top level): expected a mapping of source registries to settings, got a list"]),
    ("just a string\n", ["(top level): expected a mapping"]),
    ("q.io: [a]\n", ["q.io: expected a mapping of registry settings, got a list"]),
    ("q.io: yes\n", ["q.io: expected a mapping of registry settings"]),
    ("q.io:\n  images: {a: []}\nq.io:\n  images: {b: []}\n", ["sync.yaml: q.io: duplicate key (first at line 1)"]),
    ("q.io:\n  images: {a: [], a: [v1]}\n", ["q.io.images.a: duplicate key"]),
    ("q.io:\n  images:\n  - a\n    b: c\n", ["YAML syntax error at line"]),
    ("q.io:\n\timages: {}\n", ["YAML syntax error at line 2, column 1"]),
    ("q.io: {images: {a: [v1]}\n", ["YAML syntax error"]),
    ("q.io: {}\n---\nquay.io: {}\n", ["a second YAML document at line 3"]),
    ("q.io:\n  images: *nowhere\n", ["YAML syntax error", "undefined alias"]),
    ("? [a, b]\n: x\n", ["keys must be strings"]),
    ("https://quay.io:\n  images: {a: []}\n", ["https://quay.io: a registry name takes no scheme"]),
    ("myregistry:\n  images: {a: []}\n", ["'myregistry' is not a registry host", "docker.io/myregistry"]),
    ("'bad_host.io':\n  images: {a: []}\n", ["bad_host.io: not a registry host"]),
    ("q.io:\n  exclude-tags: -rc\n", ["q.io.exclude-tags: expected a list of regular expressions"]),
    ("q.io:\n  exclude-tags: ['(?!x)']\n", ["q.io.exclude-tags[0]:", "look-ahead"]),
    ("q.io:\n  images: {a: []}\n  images-exclude-tags: {b: [x]}\n",
     ["q.io.images-exclude-tags.b: repository not listed under images"]),
    ("q.io:\n  images: {a: []}\n  images-exclude-tags: {a: ['(?<=x)']}\n", ["q.io.images-exclude-tags.a[0]:"]),
    ("q.io:\n  images: {a: []}\n  destinations: {a: 'Bad/Name'}\n", ["q.io.destinations.a: invalid destination"]),
    ("q.io:\n  images: {a: [], b: []}\n  destinations: {a: x/y, b: x/y}\n", ["q.io.destinations.b:", "already used"]),
    ("q.io:\n  images: {a: []}\n  destinations: {c: x}\n", ["q.io.destinations.c: repository not listed"]),
    ("q.io:\n  platforms: [linux]\n", ["q.io.platforms[0]: invalid platform 'linux'"]),
    ("q.io:\n  platforms: []\n", ["q.io.platforms: empty list"]),
    ("q.io:\n  platforms: linux/amd64\n", ["q.io.platforms: expected a list of platforms"]),
    ("q.io:\n  rate-limit: {requests-per-second: 0}\n", ["q.io.rate-limit.requests-per-second: must be a number"]),
    ("q.io:\n  rate-limit: {requests-per-second: fast}\n", ["requests-per-second: expected a number, got 'fast'"]),
    ("q.io:\n  rate-limit: {requests-per-second: .inf}\n", ["requests-per-second: must be a number greater than 0"]),
    ("q.io:\n  rate-limit: {burst: 0}\n", ["q.io.rate-limit.burst: must be an integer of at least 1"]),
    ("q.io:\n  rate-limit: {burst: 1.5}\n", ["q.io.rate-limit.burst: expected an integer"]),
    ("q.io:\n  rate-limit: {max-connections: true}\n", ["q.io.rate-limit.max-connections: expected an integer"]),
    ("q.io:\n  rate-limit: 5\n", ["q.io.rate-limit: expected a mapping"]),
    ("q.io:\n  chunk-size: 100\n", ["q.io.chunk-size: 100 bytes is out of range"]),
    ("q.io:\n  chunk-size: 2GiB\n", ["q.io.chunk-size:", "out of range"]),
    ("q.io:\n  chunk-size: 16 parsecs\n", ["q.io.chunk-size: invalid size"]),
    ("q.io:\n  chunk-size: [1]\n", ["q.io.chunk-size: expected a size"]),
    ("q.io:\n  catalog: please\n", ["q.io.catalog: expected true or false"]),
    ("q.io:\n  catalog: {prefixes: ['Team/']}\n", ["q.io.catalog.prefixes[0]: invalid repository prefix"]),
    ("q.io:\n  catalog: {exclude: ['(?=a)']}\n", ["q.io.catalog.exclude[0]:"]),
    ("q.io:\n  catalog: {tags: '(?!a)'}\n", ["q.io.catalog.tags:"]),
    ("q.io/ns:\n  catalog: true\n", ["q.io/ns.catalog: not supported on a registry key with a namespace"]),
    ("'':\n  images: {a: []}\n", ["sync.yaml: (top level): empty registry name"]),
    ("q.io:\n  credentials: secret-ish\n", ["q.io.credentials: expected a mapping, got a value"]),
]


@pytest.mark.parametrize(("text", "needles"), ERRORS)
def test_errors_name_file_and_path(text: str, needles: list[str]) -> None:
    message = error(text)
    for needle in needles:
        assert needle in message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "~\n", "null\n"])
def test_empty_file(text: str) -> None:
    assert "sync.yaml: empty file" in error(text)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read"):
        load_sync_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_sync_config(tmp_path)
    (tmp_path / "latin1.yaml").write_bytes(b"q.io:\n  images: {caf\xe9: []}\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_sync_config(tmp_path / "latin1.yaml")
    (tmp_path / "nul.yaml").write_bytes(b"q.io:\n  images: {a\x00: []}\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_sync_config(tmp_path / "nul.yaml")


def test_recursive_merge_is_an_error_not_a_crash() -> None:
    message = error("a: &x\n  <<: *x\n")
    assert "sync.yaml:" in message


# --- passwords --------------------------------------------------------------------------------------

_secrets = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cn", "Zl", "Zp")), min_size=6, max_size=30).map(
    lambda s: "Sx!" + s)
_SHAPES = [
    "q.io:\n  credentials:\n    username: u\n    password: {pw}\n  images: {{a: [v1]}}\n",
    "q.io:\n  credentials:\n    password: {pw}\n    pasword: {pw}\n",
    "q.io:\n  credentials:\n    password: {pw}\n    identitytoken: {pw}\n  tls-verify: nope\n",
    "q.io:\n  credentials:\n    username: [{pw}]\n    password: {pw}\n",
    "q.io:\n  credentials:\n    password: {{nested: {pw}}}\n",
    "q.io:\n  credentials: {pw}\n",
    "q.io:\n  credentials: [{pw}]\n",
    "q.io:\n  credentials:\n    password: {pw}\n    password: {pw}\n",
    "q.io:\n  credentials:\n    password: {pw}\n  images: {{a: ['-x']}}\n",
    "q.io:\n  credentials: {{username: u, password: {pw}}}\n  images: {{a: [v1]}}\n  bogus: 1\n",
]


@settings(max_examples=150)
@given(_secrets, st.sampled_from(_SHAPES))
def test_passwords_never_in_messages_or_reprs(secret: str, shape: str) -> None:
    text = shape.format(pw=json.dumps(secret, ensure_ascii=False))
    try:
        config = parse_sync_config(text, "sync.yaml")
    except ConfigError as exc:
        assert secret not in str(exc)
        assert secret not in repr(exc)
        return
    assert secret not in repr(config)
    assert secret not in str(config)
    creds = config.registries[0].credentials
    assert creds is not None and creds.password == secret
    assert secret not in repr(creds)


def test_credentials_repr_redacts() -> None:
    creds = Credentials("john", "hunter2", "tok-123")
    assert "hunter2" not in repr(creds) and "tok-123" not in f"{creds}"
    assert "john" in repr(creds)


# --- select_tags ------------------------------------------------------------------------------------

LISTING = ["latest", "1.0", "1.1", "v2.0.0", "v2.1.0-rc1", "2.1.0", "3", "edge-rc", "1.0", "not a tag", "alpine3.19"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (RepoSpec("r", all_tags=True), ["latest", "1.0", "1.1", "v2.0.0", "v2.1.0-rc1", "2.1.0", "3", "edge-rc",
                                        "alpine3.19"]),
        (RepoSpec("r", tags=("1.1", "latest")), ["latest", "1.1"]),
        (RepoSpec("r", tags=("gone", DIGEST, "1.0")), ["1.0", "gone", DIGEST]),
        (RepoSpec("r", regex=r"^1\."), ["1.0", "1.1"]),
        (RepoSpec("r", regex="rc"), ["v2.1.0-rc1", "edge-rc"]),  # search, not fullmatch
        (RepoSpec("r", regex=""), ["latest", "1.0", "1.1", "v2.0.0", "v2.1.0-rc1", "2.1.0", "3", "edge-rc",
                                   "alpine3.19"]),
        (RepoSpec("r", semver=">= 2"), ["v2.0.0", "2.1.0", "3"]),  # non-semver tags skipped, rc excluded
        (RepoSpec("r", semver=">= 2.1.0-0"), ["v2.1.0-rc1", "2.1.0", "3"]),
        (RepoSpec("r", tags=("latest",), regex="^1", semver="^3"), ["latest", "1.0", "1.1", "3"]),
        (RepoSpec("r", all_tags=True, exclude=("rc", "^alpine")), ["latest", "1.0", "1.1", "v2.0.0", "2.1.0", "3"]),
        (RepoSpec("r", tags=("edge-rc", DIGEST), exclude=("rc", "sha")), [DIGEST]),
        (RepoSpec("r", tags=("x",), exclude=("x",)), []),
        (RepoSpec("r"), []),
    ],
)
def test_select_tags(spec: RepoSpec, expected: list[str]) -> None:
    assert select_tags(LISTING, spec) == expected


def test_select_tags_without_listing_keeps_explicit_order() -> None:
    spec = RepoSpec("r", tags=("b", DIGEST, "a", "b"))
    assert select_tags([], spec) == ["b", DIGEST, "a"]
    assert select_tags(iter(["a", "c"]), spec) == ["a", "b", DIGEST]


# --- regex dialect and platforms --------------------------------------------------------------------

@pytest.mark.parametrize(
    ("pattern", "tag", "matches"),
    [
        (r"^1\.13\.[12]-alpine-perl$", "1.13.2-alpine-perl", True),
        (r"^1\.13\.[12]-alpine-perl$", "1.13.3-alpine-perl", False),
        (r"[[:digit:]]+\z", "v12", True),
        (r"^[[:alpha:]]+$", "abc1", False),
        (r"^(?<major>\d+)\.", "10.1", True),
        (r"(?i)^LATEST$", "latest", True),
        (r"x{,2}", "x{,2}", True),  # a literal in Go
        (r"x{,2}", "xx", False),
        (r"\d", "٣", False),  # Go's \d is ASCII
        (r"[a&&b]", "&", True),
    ],
)
def test_compile_regex_go_dialect(pattern: str, tag: str, matches: bool) -> None:
    assert bool(compile_regex(pattern).search(tag)) is matches


@pytest.mark.parametrize(
    "pattern",
    ["(?=a)", "(?!a)", "(?<=a)b", "(?<!a)b", r"(a)\1", "(?P<n>a)(?P=n)", r"(?<n>a)\k<n>", "(?>a)", "a*+", "a++",
     "a?+", "(?(1)a|b)", "(?#c)", r"a\Z", "(?x) a", "[[:nope:]]", "a{1001}", "(", "\\", r"\C"],
)
def test_compile_regex_refuses(pattern: str) -> None:
    with pytest.raises(ConfigError, match=r"^where: invalid regular expression"):
        compile_regex(pattern, "where")


@pytest.mark.parametrize(
    ("platforms", "os", "arch", "variant", "expected"),
    [
        ((), "linux", "s390x", None, True),
        (("linux/amd64",), "linux", "amd64", None, True),
        (("linux/amd64",), "linux", "arm64", None, False),
        (("linux/arm64",), "linux", "arm64", "v8", True),
        (("linux/arm64/v8",), "linux", "arm64", None, True),
        (("linux/arm/v7",), "linux", "arm", "v6", False),
        (("linux/arm",), "linux", "arm", "v6", True),
        (("windows/amd64", "linux/arm/v7"), "linux", "arm", "v7", True),
        (("linux/amd64",), "windows", "amd64", None, False),
    ],
)
def test_platform_matches(platforms: tuple[str, ...], os: str, arch: str, variant: str | None, expected: bool) -> None:
    assert platform_matches(platforms, os, arch, variant) is expected


def test_parse_platform_canonicalises() -> None:
    assert str(parse_platform("Linux/X86_64")) == "linux/amd64"
    assert str(parse_platform("linux/aarch64")) == "linux/arm64"
    assert str(parse_platform("linux/armhf")) == "linux/arm/v7"
    with pytest.raises(ValueError):
        parse_platform("linux/amd64/v2/extra")
