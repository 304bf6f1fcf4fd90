"""YAML tag regexes are RE2, as skopeo's (Go ``regexp``): same syntax accepted and refused, same
unanchored search, linear-time matching."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from support.images import Client, push_image
from support.registry import Registry

from mirror.config.filters import compile_regex, select_tags
from mirror.config.load import parse_sync_config
from mirror.config.schema import RepoSpec
from mirror.errors import ConfigError

Skopeo = Callable[..., subprocess.CompletedProcess[str]]
PATHOLOGICAL = "(a+)+$"
VICTIM = "a" * 40 + "b"  # Python's backtracking re needs ~2**40 steps to say "no match"


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        (r"\pL", "é", True),  # Unicode classes: Go has them
        (r"^\pL+$", "v1", False),
        (r"\p{Greek}", "α", True),
        (r"^[[:^alpha:]]+$", "123", True),  # negated POSIX class
        (r"(?U)^a+", "aaa", True),  # ungreedy flag
        (r"\Qv1.0\E$", "v1.0", True),  # quoted literal
        (r"\Qv1.0\E$", "v1x0", False),
        (r"^\x{41}", "A", True),
        (r"\d", "٣", False),  # \d is ASCII in Go
        (r"rc", "v2.1.0-rc1", True),  # unanchored: a search, as MatchString
        (r"^1\.13\.[12]-alpine-perl$", "1.13.2-alpine-perl", True),
        (r"x{,2}", "x{,2}", True),  # not a repeat in Go: a literal
    ],
)
def test_accepted_as_go_does(pattern: str, text: str, matches: bool) -> None:
    assert bool(compile_regex(pattern, "where").search(text)) is matches


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(?=x)", "look-ahead is not supported"),
        ("(?!x)", "look-ahead is not supported"),
        ("(?<=a)b", "look-behind is not supported"),
        ("(?<!a)b", "look-behind is not supported"),
        (r"(a)\1", "backreferences are not supported"),
        (r"(?P<n>a)\k<n>", "backreferences are not supported"),
        ("(?>a)", "invalid perl operator"),
        ("a*+", "bad repetition operator"),
        (r"a\Z", r"invalid escape sequence: \Z"),
        ("a{1001}", "invalid repetition size"),
        (r"\C", r"invalid escape sequence: \C"),  # RE2 C++ knows \C, Go does not
        ("(?x) a", "invalid perl operator"),
        ("[v", "missing ]"),
    ],
)
def test_refused_as_go_does_with_a_clear_error(pattern: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_regex(pattern, "q.io.images-by-tag-regex.a")
    message = str(caught.value)
    assert message.startswith(f"q.io.images-by-tag-regex.a: invalid regular expression {pattern!r}: "), message
    assert reason in message and "\n" not in message, message


@pytest.mark.timeout(30)
def test_pathological_pattern_answers_at_once() -> None:
    """No timing assertion: a backtracking engine would run for ages and pytest-timeout would fail the test."""
    assert compile_regex(PATHOLOGICAL).search(VICTIM) is None
    assert compile_regex(PATHOLOGICAL).search("a" * 40) is not None
    tags = [VICTIM, "aaa", "v1"]
    assert select_tags(tags, RepoSpec("r", regex=PATHOLOGICAL)) == ["aaa"]
    assert select_tags(tags, RepoSpec("r", all_tags=True, exclude=(PATHOLOGICAL,))) == [VICTIM, "v1"]


@pytest.mark.parametrize(
    ("yaml", "where"),
    [
        ("q.io:\n  images-by-tag-regex: {app: '(?=v)'}\n", "q.io.images-by-tag-regex.app"),
        ("q.io:\n  images: {app: []}\n  exclude-tags: ['(?<!v)1']\n", "q.io.exclude-tags[0]"),
        ("q.io:\n  catalog: {exclude: ['(?!team)']}\n", "q.io.catalog.exclude[0]"),
        ("q.io:\n  catalog: {tags: '(a)\\1'}\n", "q.io.catalog.tags"),
    ],
)
def test_yaml_names_the_key_of_a_refused_regex(yaml: str, where: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_sync_config(yaml, "sync.yaml")
    message = str(caught.value)
    assert message.startswith(f"sync.yaml: {where}: invalid regular expression"), message
    assert "not supported" in message and "\n" not in message, message


def test_yaml_accepts_go_syntax() -> None:
    config = parse_sync_config("q.io:\n  images-by-tag-regex: {app: '^\\pL+-[[:^alpha:]]+$'}\n", "sync.yaml")
    spec = config.registries[0].repos[0]
    assert select_tags(["latest-1", "v1", "edge-2", "x-y"], spec) == ["latest-1", "edge-2"]


ORACLE_TAGS = ["v1", "va", "1b", "latest", "Edge", "v1.0"]


@pytest.mark.parametrize("pattern", [r"^\pL+$", r"(?U)^v.+", r"^[[:^alpha:]]", r"(?i)^LATEST$", r"\Qv1.\E",
                                     r"^v\d$", "(?=x)", r"\C", r"(a)\1", "a{1001}"])
def test_skopeo_selects_and_refuses_the_same(pattern: str, registry: Registry, skopeo: Skopeo, tmp_path: Path) -> None:
    """skopeo (Go's regexp) as the oracle: the tags its sync selects, or its refusal of the pattern."""
    client = Client(registry)
    image = push_image(registry, "team/app", ORACLE_TAGS[0], layer_count=1, layer_size=256, client=client)
    for tag in ORACLE_TAGS[1:]:
        client.put_manifest("team/app", tag, image.manifest, image.media_type)
    config = tmp_path / "sync.yml"
    config.write_text(f"{registry.host}:\n  tls-verify: false\n  images-by-tag-regex:\n    team/app: '{pattern}'\n")
    out = tmp_path / "out"
    proc = skopeo("sync", "--src", "yaml", "--dest", "dir", str(config), str(out))
    copied = sorted(p.name.removeprefix("app:") for p in out.iterdir()) if out.exists() else []  # out/app:TAG
    if "Error parsing regex" in proc.stderr:  # skopeo logs and skips the entry
        with pytest.raises(ConfigError, match="invalid regular expression"):
            compile_regex(pattern, "where")
        assert copied == []
    else:
        assert copied == sorted(select_tags(ORACLE_TAGS, RepoSpec("team/app", regex=pattern)))
        assert copied  # each accepted pattern selects something, so agreement is not vacuous
