"""Tests for mirror.http.headers: registry-protocol header parsing."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirror.errors import RegistryError
from mirror.http.headers import (
    MAX_RETRY_AFTER,
    Challenge,
    parse_content_range,
    parse_link_next,
    parse_ratelimit,
    parse_retry_after,
    parse_upload_range,
    parse_www_authenticate,
    strip_media_type,
)

# ------------------------------------------------------------------------------------ WWW-Authenticate


def test_docker_hub_bearer_challenge() -> None:
    value = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/alpine:pull"'
    )
    [challenge] = parse_www_authenticate(value)
    assert challenge.scheme == "bearer"
    assert challenge.realm == "https://auth.docker.io/token"
    assert challenge.service == "registry.docker.io"
    assert challenge.scopes == ("repository:library/alpine:pull",)
    assert challenge.error is None
    assert dict(challenge.params) == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/alpine:pull",
    }


def test_distribution_basic_challenge() -> None:
    assert parse_www_authenticate('Basic realm="Registry Realm"') == [Challenge("basic", {"realm": "Registry Realm"})]


def test_insufficient_scope_with_several_scopes() -> None:
    value = (
        'Bearer realm="https://ghcr.io/token",service="ghcr.io",'
        'scope="repository:org/dst:pull,push repository:org/src:pull",error="insufficient_scope"'
    )
    [challenge] = parse_www_authenticate(value)
    assert challenge.error == "insufficient_scope"
    assert challenge.scopes == ("repository:org/dst:pull,push", "repository:org/src:pull")


def test_ecr_basic_challenge_and_host_port_scope() -> None:
    [ecr] = parse_www_authenticate(
        'Basic realm="https://123456789012.dkr.ecr.eu-west-1.amazonaws.com/",service="ecr.amazonaws.com"'
    )
    assert (ecr.scheme, ecr.service) == ("basic", "ecr.amazonaws.com")
    [local] = parse_www_authenticate(
        'Bearer realm="http://localhost:5001/auth",scope="repository:localhost:5000/a:pull"'
    )
    assert local.scopes == ("repository:localhost:5000/a:pull",)


def test_several_challenges_in_one_header() -> None:
    value = (
        'Negotiate, Basic realm="r1", Bearer realm="https://a/token", service="svc", NTLM abc/+==, Digest qop="auth"'
    )
    challenges = parse_www_authenticate(value)
    assert [c.scheme for c in challenges] == ["negotiate", "basic", "bearer", "ntlm", "digest"]
    assert challenges[1].realm == "r1"
    assert dict(challenges[2].params) == {"realm": "https://a/token", "service": "svc"}
    assert challenges[3].token68 == "abc/+=="
    assert challenges[4].params["qop"] == "auth"


def test_case_escapes_bare_tokens_and_whitespace() -> None:
    [challenge] = parse_www_authenticate('BEARER  Realm = "a \\"quoted\\" \\\\ realm" ,SERVICE=registry.example:443 ')
    assert challenge.scheme == "bearer"
    assert challenge.realm == 'a "quoted" \\ realm'
    assert challenge.service == "registry.example:443"


def test_quoted_commas_do_not_split() -> None:
    [challenge] = parse_www_authenticate('Bearer realm="https://a/token?x=1,2",scope="repository:a:pull,push"')
    assert challenge.realm == "https://a/token?x=1,2"
    assert challenge.scopes == ("repository:a:pull,push",)


@pytest.mark.parametrize("value", ["", "   ", ",,,", '"garbage"', "=x", '=,"'])
def test_garbage_challenges_give_nothing(value: str) -> None:
    assert parse_www_authenticate(value) == []


def test_malformed_parts_are_skipped() -> None:
    challenges = parse_www_authenticate(
        'realm="orphan", Bearer realm="https://a/token", service=, (junk), x="unterminated'
    )
    assert challenges[0] == Challenge("bearer", {"realm": "https://a/token", "x": "unterminated"})


def test_challenge_is_an_immutable_value() -> None:
    challenge = Challenge("Bearer", {"Realm": "r"})
    assert challenge.scheme == "bearer" and dict(challenge.params) == {"realm": "r"}
    assert challenge == Challenge("bearer", {"realm": "r"})
    assert hash(challenge) == hash(Challenge("bearer", {"realm": "r"}))
    assert Challenge("basic").scopes == ()
    with pytest.raises(AttributeError):
        challenge.scheme = "basic"  # type: ignore[misc]
    with pytest.raises(TypeError):
        challenge.params["realm"] = "x"  # type: ignore[index]


# ------------------------------------------------------------------------------------------------ Link


def test_relative_link_from_distribution_keeps_the_query() -> None:
    base = "https://registry.example:5000/v2/_catalog?n=100"
    assert parse_link_next('</v2/_catalog?last=b&n=100>; rel="next"', base) == (
        "https://registry.example:5000/v2/_catalog?last=b&n=100"
    )


def test_link_query_is_not_requoted() -> None:
    base = "https://r.example/v2/a/tags/list?n=2"
    link = '</v2/a/tags/list?last=v1%2B1&n=2&x=%2F>; rel="next"'
    assert parse_link_next(link, base) == "https://r.example/v2/a/tags/list?last=v1%2B1&n=2&x=%2F"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('<https://other.example/v2/x?last=1>; rel="next"', "https://other.example/v2/x?last=1"),
        ("</v2/x?last=1>; rel=next", "https://r.example/v2/x?last=1"),
        ('</v2/x?last=1>; REL="Next"', "https://r.example/v2/x?last=1"),
        ('</first>; rel="first", </v2/n>; rel="next"', "https://r.example/v2/n"),
        ('</v2/n>; title="a, b"; rel="prev next"', "https://r.example/v2/n"),
        ("<page2>; rel=next", "https://r.example/v2/page2"),
        ('</v2/x>; rel="prev"', None),
        ("", None),
        (None, None),
        ("garbage", None),
    ],
)
def test_link_next(value: str | None, expected: str | None) -> None:
    assert parse_link_next(value, "https://r.example/v2/x") == expected


@pytest.mark.parametrize(
    "value",
    ['<javascript:alert(1)>; rel="next"', '<>; rel="next"', '</v2/x?last=a; rel="next"', "<http://[::1/x>; rel=next"],
)
def test_unusable_next_link_is_a_registry_error(value: str) -> None:
    with pytest.raises(RegistryError):
        parse_link_next(value, "https://r.example/v2/x")


# ---------------------------------------------------------------------------------------------- ranges


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0-99", 100), ("bytes=0-99", 100), ("BYTES=0-1023", 1024), (" 0-5 ", 6), (None, None), ("", None), ("0-0", 0)],
)
def test_upload_range(value: str | None, expected: int | None) -> None:
    assert parse_upload_range(value) == expected


def test_upload_range_zero_zero_is_ambiguous() -> None:
    assert parse_upload_range("0-0") == 0
    assert parse_upload_range("0-0", zero_zero_means_empty=True) == 0
    assert parse_upload_range("0-0", zero_zero_means_empty=False) == 1
    assert parse_upload_range("0-1", zero_zero_means_empty=False) == 2


@pytest.mark.parametrize("value", ["0-", "-5", "abc", "5-10", "0-5-6", "bytes 0-5", "0-5/10", "9-3", "0-" + "9" * 30])
def test_malformed_upload_range(value: str) -> None:
    with pytest.raises(RegistryError):
        parse_upload_range(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes 0-99/1000", (0, 99, 1000)),
        ("bytes 100-199/*", (100, 199, None)),
        ("Bytes 5-5/6", (5, 5, 6)),
        ("  bytes  10-19/20 ", (10, 19, 20)),
    ],
)
def test_content_range(value: str, expected: tuple[int, int, int | None]) -> None:
    assert parse_content_range(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "bytes */1000",
        "0-99/1000",
        "bytes=0-99/1000",
        "bytes 99-0/1000",
        "bytes 0-99/50",
        "bytes 0-99",
        "items 0-1/2",
    ],
)
def test_malformed_content_range(value: str) -> None:
    with pytest.raises(RegistryError):
        parse_content_range(value)


# ----------------------------------------------------------------------------------------- Retry-After

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("1.5", 1.5),
        ("86400", MAX_RETRY_AFTER),
        ("Sat, 01 Mar 2025 12:00:30 GMT", 30.0),
        ("Sat, 01 Mar 2025 11:00:00 GMT", 0.0),  # in the past
        ("Sun, 02 Mar 2025 12:00:00 GMT", MAX_RETRY_AFTER),
        ("Saturday, 01-Mar-25 12:01:00 GMT", 60.0),  # RFC 850
        ("Sat Mar  1 12:00:10 2025", 10.0),  # asctime
        ("Sat, 01 Mar 2025 13:00:05 +0100", 5.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1e3", None),
        ("Sat, 32 Mar 2025 12:00:00 GMT", None),
    ],
)
def test_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_retry_after_naive_now_and_default_now() -> None:
    assert parse_retry_after("Sat, 01 Mar 2025 12:00:30 GMT", now=NOW.replace(tzinfo=None)) == 30.0
    soon = (datetime.now(UTC) + timedelta(seconds=100)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    delay = parse_retry_after(soon)
    assert delay is not None and 90 <= delay <= 100


# ------------------------------------------------------------------------------------ rate limit, type


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("100;w=21600", (100, 21600)),
        ("20;w=21600", (20, 21600)),
        (" 0 ; w=60 ", (0, 60)),
        ("7", (7, None)),
        ("5;foo=bar;W=30", (5, 30)),
        ("10, 10;w=1", (10, None)),
        ("10;w=1, 20;w=2", (10, 1)),
        (None, None),
        ("", None),
        ("unlimited", None),
        ("-1;w=5", None),
    ],
)
def test_ratelimit(value: str | None, expected: tuple[int, int | None] | None) -> None:
    assert parse_ratelimit(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.manifest.v1+json"),
        (" Application/JSON; charset=utf-8", "application/json"),
        (
            "application/vnd.docker.distribution.manifest.v1+prettyjws ;x=y",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
        ),
        ("", None),
        ("  ;charset=utf-8", None),
        (None, None),
    ],
)
def test_strip_media_type(value: str | None, expected: str | None) -> None:
    assert strip_media_type(value) == expected


# ------------------------------------------------------------------------------------------- robustness

PARSERS: list[Callable[[str], object]] = [
    parse_www_authenticate,
    lambda v: parse_link_next(v, "https://r.example/v2/x/tags/list?n=10"),
    parse_upload_range,
    lambda v: parse_upload_range(v, zero_zero_means_empty=False),
    parse_content_range,
    lambda v: parse_retry_after(v, now=NOW),
    parse_ratelimit,
    strip_media_type,
]
HEADER_PIECES = [*'abBr=-,;"\\ \t<>/:*0123456789eGMT\x00é', "bytes ", "bytes=", "rel=next", "Bearer ", "realm="]
HEADERISH = st.lists(st.sampled_from(HEADER_PIECES), max_size=40).map("".join)


def _only_registry_errors(value: str) -> None:
    for parse in PARSERS:
        try:
            parse(value)
        except RegistryError:
            pass


@given(st.text())
def test_parsers_never_raise_other_errors_on_arbitrary_text(value: str) -> None:
    _only_registry_errors(value)


@given(HEADERISH)
def test_parsers_never_raise_other_errors_on_header_like_text(value: str) -> None:
    _only_registry_errors(value)


@given(st.text())
def test_www_authenticate_never_raises(value: str) -> None:
    assert all(isinstance(c, Challenge) for c in parse_www_authenticate(value))


@pytest.mark.parametrize(
    "value",
    [
        '"\\' * 50_000,
        "a=" * 50_000,
        "Bearer " + ", ".join(f'k{i}="v{i}"' for i in range(20_000)),
        "<" * 50_000,
        "<x>;" * 50_000,
        "9" * 100_000,
        "bytes=0-" + "1" * 100_000,
        "Sat, " + "0" * 100_000,
    ],
)
def test_large_adversarial_input_is_fast(value: str) -> None:
    start = time.perf_counter()
    _only_registry_errors(value)
    assert time.perf_counter() - start < 2.0
