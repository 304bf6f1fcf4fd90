"""Masterminds/semver v3 semantics (as vendored by skopeo) for ``images-by-semver``."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirror.config.semver import Constraint, Version, parse_version
from mirror.errors import ConfigError


def check(constraint: str, version: str) -> bool:
    return Constraint.parse(constraint).check(Version.parse(version))


# --- versions ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3", "1.2.3"),
        ("v1.2.3", "1.2.3"),
        ("1.2", "1.2.0"),
        ("v1", "1.0.0"),
        ("3.12", "3.12.0"),
        ("1.2.3-beta.1+build.5", "1.2.3-beta.1+build.5"),
        ("1.2-5", "1.2.0-5"),
        ("1.2.3-0abc", "1.2.3-0abc"),  # alphanumeric identifiers may start with 0
        ("1.2.3+meta.01", "1.2.3+meta.01"),  # metadata may have leading zeros
        ("01.02.03", "1.2.3"),  # NewVersion coerces leading zeros (CoerceNewVersion = true)
        ("18446744073709551615.0.0", "18446744073709551615.0.0"),
    ],
)
def test_version_parse(text: str, expected: str) -> None:
    assert str(Version.parse(text)) == expected


@pytest.mark.parametrize(
    "text",
    ["latest", "", "V1.2.3", "1.2.3.4", "1.2.beta", "1.2.3-alpha.01", "1.2.3-", "1.2.3+", "1.2.3-a..b",
     " 1.2.3", "1.2.3\n", "\n1.2", "18446744073709551616.0.0", "1.2.3_1", "x" * 300, "1.2.3-" + "a" * 260],
)
def test_version_parse_rejects(text: str) -> None:
    assert parse_version(text) is None
    with pytest.raises(ConfigError):
        Version.parse(text)


def test_version_ordering_follows_semver_spec() -> None:
    ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
               "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1.0", "2.0.0", "10.0.0"]
    versions = [Version.parse(v) for v in ordered]
    assert sorted(reversed(versions)) == versions
    assert Version.parse("1.2.3+a") == Version.parse("1.2.3+b")
    assert hash(Version.parse("1.2.3+a")) == hash(Version.parse("1.2.3"))
    assert Version.parse("1.0.0-2") < Version.parse("1.0.0-10") < Version.parse("1.0.0-a")


# --- constraints: README examples and the equivalences it states ------------------------------

GRID = [
    "0.0.0", "0.0.1", "0.0.3", "0.0.4", "0.1.0", "0.2.0", "0.2.3", "0.2.9", "0.3.0", "0.9.9", "1.0.0",
    "1.1.9", "1.2.0", "1.2.2", "1.2.3", "1.2.4", "1.2.99", "1.3.0", "1.4.0", "1.4.5", "1.4.6", "1.5.0",
    "1.9.9", "2.0.0", "2.3.0", "2.3.4", "2.3.9", "2.4.0", "2.9.0", "3.0.0", "4.0.0", "4.2.2", "4.2.3",
    "4.5.0", "4.5.1", "4.6.0", "5.0.0", "1.2.3-beta.1", "1.3.0-rc.1", "2.0.0-alpha",
]

EQUIVALENT = [
    ("~1.2.3", ">= 1.2.3, < 1.3.0"),
    ("~1", ">= 1, < 2"),
    ("~2.3", ">= 2.3, < 2.4"),
    ("~1.2.x", ">= 1.2.0, < 1.3.0"),
    ("~1.x", ">= 1, < 2"),
    ("~>1.2.3", ">=1.2.3 <1.3.0"),
    ("^1.2.3", ">= 1.2.3, < 2.0.0"),
    ("^1.2.x", ">= 1.2.0, < 2.0.0"),
    ("^2.3", ">= 2.3, < 3"),
    ("^2.x", ">= 2.0.0, < 3"),
    ("^0.2.3", ">=0.2.3 <0.3.0"),
    ("^0.2", ">=0.2.0 <0.3.0"),
    ("^0.0.3", ">=0.0.3 <0.0.4"),
    ("^0.0", ">=0.0.0 <0.1.0"),
    ("^0", ">=0.0.0 <1.0.0"),
    ("1.2.x", ">= 1.2.0, < 1.3.0"),
    ("1.2.*", ">= 1.2.0, < 1.3.0"),
    (">= 1.2.x", ">= 1.2.0"),
    ("<= 2.x", "< 3"),
    ("*", ">= 0.0.0"),
    ("1.2 - 1.4.5", ">= 1.2 <= 1.4.5"),
    ("2.3.4 - 4.5", ">= 2.3.4 <= 4.5"),
    ("=> 1.2", ">= 1.2"),
    ("=< 1.2.3", "<= 1.2.3"),
    (">= 1.2 < 3.0.0 || >= 4.2.3", ">= 1.2, < 3.0.0 || >= 4.2.3"),
]


@pytest.mark.parametrize(("left", "right"), EQUIVALENT)
def test_readme_equivalences(left: str, right: str) -> None:
    a, b = Constraint.parse(left), Constraint.parse(right)
    for text in GRID:
        v = Version.parse(text)
        assert a.check(v) == b.check(v), (left, right, text)


@pytest.mark.parametrize(
    ("constraint", "version", "expected"),
    [
        (">= 1.2.3", "1.3", True),
        (">= 3.12.0", "3.12.0", True),
        (">= 3.12.0", "3.11.9", False),
        (">= 3.12.0", "4.0.0", True),
        (">= 3.12.0", "3.13.0-rc1", False),  # prereleases need a prerelease in the constraint
        (">= 3.12.0-0", "3.13.0-rc1", True),
        (">=1.2.3-beta.1", "1.2.3-beta.2", True),
        ("=2.0", "2.0.1", True),  # a partial version on = acts as a tilde range
        ("2.0.0", "2.0.1", False),
        ("!=4.1", "4.1.9", False),
        ("!=4.1", "5.1.0", True),
        ("!=4.x", "4.1.0", False),
        ("!=4.1-alpha", "4.1.0", True),
        (">11", "11.9.0", False),  # > with a wildcard minor means the next major
        (">11.1", "11.1.5", False),
        (">11.1", "11.2.0", True),
        ("<=11", "11.9.9", True),
        ("<=11", "12.0.0", False),
        ("<1.x", "1.1.1", False),
        ("<1.x", "0.9.0", True),
        ("~0.0.0", "7.0.0", True),
        ("~*", "2.1.1", True),
        ("^0.0.0", "1.2.3", False),
        ("^1.2.0", "1.2.1-alpha.1", False),
        ("^1.2.0-alpha.0", "1.2.1-alpha.1", True),
        ("~1.2.3-beta.2", "1.2.4-beta.2", True),
        ("*", "1.2.3-alpha.1", False),
        ("*-0", "1.2.3-alpha.1", True),
        (">= 1.0.0 <= 2.0.0-beta", "1.0.1-beta", True),
        (">= 1.0.0 <= 2.0.0-beta || > 3", "3.0.1-beta", False),
        (">= 1.2, < 3.0.0 || >= 4.2.3", "4.2.3", True),
        (">= 1.2, < 3.0.0 || >= 4.2.3", "3.5.0", False),
        (">=1.1, <2, !=1.2.3", "1.2.3", False),
        (">=1.1    <2    !=1.2.3 || >= 3", "3.0.0", True),
        ("v1.2.3", "1.2.3", True),
        ("1.0.0 - 2.0.0, <=2.0.0", "1.5.0", True),
        ("1.1-3", "4.3.2", False),  # no blanks around '-': a prerelease, not a range
    ],
)
def test_check_table(constraint: str, version: str, expected: bool) -> None:
    assert check(constraint, version) is expected


@pytest.mark.parametrize(
    "text",
    ["", "   ", "banana", ">= bar", "BAR >= 1.2.3", "12.3.4.1234", "12.3.34~ 1.2.3", "v1.2.3-beta.01", ">=1.0 ||",
     "|| 1.0", "1.2 - ", "1 - 2 - 3", ">== 1", "1|2", "~ >1", "1" * 600, "||".join(["1"] * 40),
     "99999999999999999999.0.0"],
)
def test_constraint_parse_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        Constraint.parse(text)


@pytest.mark.parametrize(
    ("text", "groups", "terms"),
    [(">= 1.1", 1, 1), (">40.50.60, < 50.70", 1, 2), ("2.0", 1, 1), ("v2.3.5-20161202202307-sha.e8fc5e5", 1, 1),
     (">= 1.2.3 < 2.0 || => 3.0 < 4", 2, 2), ("3 - 4 || => 3.0, < 4", 2, 2), ("12.3.34 ~1.2.3", 1, 2),
     ("1.0.0 - 2.0.0, <=2.0.0", 1, 3)],
)
def test_constraint_structure(text: str, groups: int, terms: int) -> None:
    c = Constraint.parse(text)
    assert len(c.groups) == groups
    assert len(c.groups[0]) == terms
    assert str(c) == text


@pytest.mark.parametrize(
    "text",
    ["1" + " " * 500 + "!", ("1 " * 255) + "!", ">=1.0, " * 60 + "!", "1.0 " * 120 + "!", "1.0.0-" + "a." * 250 + "!",
     "1" + " ," * 200 + "$"],
)
def test_pathological_constraints_fail_fast(text: str) -> None:
    start = time.monotonic()
    with pytest.raises(ConfigError):
        Constraint.parse(text[:512])
    assert time.monotonic() - start < 0.5


# --- properties ---------------------------------------------------------------------------------

_numbers = st.integers(min_value=0, max_value=2**64 - 1)
_ident = st.from_regex(r"[0-9A-Za-z-]{1,8}", fullmatch=True).filter(
    lambda s: not (s.isdigit() and len(s) > 1 and s[0] == "0"))
_versions = st.builds(
    lambda v, major, minor, patch, pre, meta: (
        f"{v}{major}" + (f".{minor}" if minor is not None else "")
        + (f".{patch}" if minor is not None and patch is not None else "")
        + (f"-{'.'.join(pre)}" if pre else "") + (f"+{'.'.join(meta)}" if meta else "")
    ),
    st.sampled_from(["", "v"]), _numbers, st.none() | _numbers, st.none() | _numbers,
    st.lists(_ident, max_size=3), st.lists(st.from_regex(r"[0-9A-Za-z-]{1,6}", fullmatch=True), max_size=2),
)
_constraint_chars = st.text(alphabet=" ,|-<>=!~^*xXv.0123456789+abc", max_size=40)


@settings(max_examples=400)
@given(st.one_of(st.text(max_size=60), _constraint_chars))
def test_constraint_parse_raises_only_config_error(text: str) -> None:
    try:
        c = Constraint.parse(text)
    except ConfigError:
        return
    c.check(Version(1, 2, 3))
    c.check(Version(0, 0, 0, "alpha"))


@settings(max_examples=300)
@given(st.text(max_size=40))
def test_version_parse_raises_only_config_error(text: str) -> None:
    try:
        Version.parse(text)
    except ConfigError:
        pass


@settings(max_examples=300)
@given(_versions)
def test_greater_equal_contains_release_itself(text: str) -> None:
    v = Version.parse(text)
    if not v.pre:
        assert Constraint.parse(f">={text}").check(v)
        assert Constraint.parse(f"<={text}").check(v)
        assert Constraint.parse(f"={text}").check(v)


@settings(max_examples=300)
@given(_versions)
def test_not_equal_never_contains_itself(text: str) -> None:
    assert not Constraint.parse(f"!={text}").check(Version.parse(text))


@settings(max_examples=200)
@given(_versions, _versions)
def test_compare_is_consistent(a_text: str, b_text: str) -> None:
    a, b = Version.parse(a_text), Version.parse(b_text)
    assert a.compare(b) == -b.compare(a)
    assert (a == b) == (a.compare(b) == 0)
    assert Version.parse(str(a)) == a
