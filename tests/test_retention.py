"""Retention rules (``keep-latest``, ``newer-than``): how they are read, refined and carried, and what
applying them costs. The planner runs over the fake registry (``support.fakeregistry``) so its request
log shows every manifest and config fetched; the real-registry flows are in ``test_selection.py``."""

from __future__ import annotations

from datetime import UTC, datetime

import anyio
import pytest
from support.fakeimages import fake_runtime, push_image, random_image
from support.fakeregistry import FakeRegistry
from support.fakesync import SIDE, push_index, yaml_config

from mirror.config.retention import Retention, parse_age
from mirror.config.settings import RegistrySettings, SyncFlags, resolve_settings, yaml_credentials
from mirror.errors import ConfigError
from mirror.ops.units import Resolver, SyncEndpoints
from mirror.plan.expand import Planner, PlanOptions, PruneCandidate
from mirror.plan.naming import Naming
from mirror.plan.pairs import WorkUnit
from mirror.plan.retention import CreatedDates, created_dates, parse_created

DAY = 86400.0
NOW = datetime(2025, 6, 1, tzinfo=UTC).timestamp()


def _ago(days: float) -> str:
    return datetime.fromtimestamp(NOW - days * DAY, UTC).strftime("%Y-%m-%dT%H:%M:%S.123456789Z")


def test_rules_are_read_refined_and_carried_as_plain_data() -> None:
    config = yaml_config("""
        src.test:
          keep-latest: {count: 5, by: created}
          newer-than: 90d
          images:
            app: []
            web: []
            db: []
          images-keep-latest:
            web: 2
          images-newer-than:
            db: 1w2d
    """)
    (registry,) = config.registries
    assert registry.retention == Retention(keep_latest=5, by="created", newer_than=90 * DAY)
    specs = {spec.path: spec.retention for spec in registry.repos}
    assert specs == {"app": None, "web": Retention(keep_latest=2), "db": Retention(newer_than=9 * DAY)}
    # The command line is the lowest level: the registry's keys win, a repository's win over both.
    settings = resolve_settings(config, SyncFlags(retention=Retention(keep_latest=9, newer_than=DAY)))["src.test"]
    assert settings.retention == Retention(keep_latest=5, by="created", newer_than=90 * DAY)
    assert settings.retention.refined(specs["web"]) == Retention(keep_latest=2, by="created", newer_than=90 * DAY)
    cli = resolve_settings(None, SyncFlags(retention=Retention(keep_latest=3), include_regex=("^v",),
                                           exclude_regex=("rc",)), "src.test")["src.test"]
    for value in (settings, cli):  # settings travel in queued work units: JSON and back, unchanged
        unit = WorkUnit(src="docker://src.test/app:v1", dst="docker://dst.test/app:v1", settings=value)
        assert WorkUnit.from_json(unit.to_json()) == unit
        assert RegistrySettings.from_dict(value.to_dict()) == value


@pytest.mark.parametrize(("text", "error"), [
    ("keep-latest: 0", "q.io.keep-latest: expected an integer from 1 to 1000000, got '0' (line 3)"),
    ("keep-latest: {by: created}", "q.io.keep-latest: count is required"),
    ("keep-latest: {count: 2, by: size}", "q.io.keep-latest.by: expected one of semver, created, got 'size'"),
    ("keep-latest: {count: 2, order: x}", "q.io.keep-latest.order: unknown key"),
    ("newer-than: 90x", "q.io.newer-than: invalid age '90x' (expected e.g. 90d"),
    ("newer-than: 0d", "q.io.newer-than: invalid age '0d'"),
    ("images-keep-latest: {other: 2}", "q.io.images-keep-latest.other: repository not listed"),
    ("images-newer-than: {app: [1]}", "q.io.images-newer-than.app: expected a string, got a list"),
])
def test_bad_rules_are_one_line_errors(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        yaml_config(f"q.io:\n  images: {{app: []}}\n  {text}\n")
    assert str(caught.value).startswith(f"sync.yaml: {error}"), str(caught.value)
    assert "\n" not in str(caught.value)


def test_ages_and_created_dates() -> None:
    assert parse_age("90d") == 90 * DAY and parse_age("1d12h") == 1.5 * DAY and parse_age("2w") == 14 * DAY
    assert parse_age("30m") == 1800 and parse_age("1.5h") == 5400
    for bad in ("", "d", "90", "9 d", "-1d", "1y"):
        with pytest.raises(ConfigError):
            parse_age(bad)
    assert parse_created(b'{"created":"2024-01-02T03:04:05.123456789Z"}') == datetime(
        2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC).timestamp()
    assert parse_created(b'{"created":"2024-01-02T05:04:05+02:00"}') == datetime(
        2024, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    for unknown in (b"{}", b'{"created":""}', b'{"created":"yesterday"}', b"[1]", b"not json", b'{"created":5}'):
        assert parse_created(unknown) is None


async def _plan(fake: FakeRegistry, text: str, cache: CreatedDates) -> tuple[list[str], list[PruneCandidate]]:
    config = yaml_config(text)
    prune: list[PruneCandidate] = []
    send, receive = anyio.create_memory_object_stream[WorkUnit](1000)
    async with fake_runtime(fake) as rt:
        planner = Planner(SyncEndpoints(Resolver(rt, SIDE, SIDE, yaml_credentials(config))),
                          PlanOptions(Naming("dst.test/m")), resolve_settings(config, SyncFlags()), prune.append,
                          created=cache, clock=lambda: NOW)
        async with send:
            await planner.yaml(config, send)
    async with receive:
        return sorted([unit.src_name async for unit in receive]), prune


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_created_is_read_for_candidates_only_once_per_digest() -> None:
    fake = FakeRegistry()
    images = {days: random_image(int(days), created=_ago(days)) for days in (1, 5, 20, 40, 200)}
    tags = {"v1.0": 200, "v1.1": 40, "v1.2": 20, "v2.0": 5, "latest": 1, "edge": 1, "v2.1-rc": 1}
    for tag, days in tags.items():
        await push_image(fake, "src.test", "app", images[days], tag)
    undated = random_image(7, created=None)
    await push_image(fake, "src.test", "app", undated, "undated")
    await push_image(fake, "src.test", "app", random_image(8), f"sha256-{images[5].digest[7:]}.sig")
    # An index: its date is its first platform image's (an attestation manifest, unknown/unknown, is skipped).
    await push_index(fake, "src.test", "multi", [(random_image(9, created=_ago(400)), "unknown/unknown"),
                                                 (random_image(10, created=_ago(3)), "linux/amd64"),
                                                 (random_image(11, created=_ago(500)), "linux/arm64")], tag="v3")
    await push_image(fake, "src.test", "multi", random_image(12, created=_ago(60)), "v2")
    await push_image(fake, "src.test", "sem", random_image(13), "1.0")
    for tag in ("1.2", "1.10", "v1.9", "nightly"):
        await push_image(fake, "src.test", "sem", random_image(14), tag)
    await push_image(fake, "dst.test", "m/app", images[200], "v1.0")  # aged out: pruned
    text = """
        src.test:
          prune: true
          exclude-tags: ['-rc$']
          images:
            app: [v1.0]
            multi: []
            sem: []
          images-by-tag-regex:
            app: '.'
          images-keep-latest:
            app: {count: 2, by: created}
            sem: 2
          images-newer-than:
            app: 30d
            multi: 30d
    """
    cache = created_dates()
    planned, prune = await _plan(fake, text, cache)
    # app: v1.0 is named (always kept); of the rest (the -rc excluded, the digest tag never ranked), those
    # newer than 30 days or of unknown age (undated), the 2 latest by date (undated ranks last; latest and
    # edge are one image: ties go by name).
    # multi: v3 is 3 days old (its amd64 image), v2 60 days. sem: the 2 highest versions.
    assert planned == ["src.test/app:edge", "src.test/app:latest", "src.test/app:v1.0", "src.test/multi:v3",
                       "src.test/sem:1.10", "src.test/sem:v1.9"]
    assert prune == []  # v1.0 is named, so kept
    configs = [e for e in fake.requests("blob", "GET", "src.test")]
    # One config per digest among app's candidates (1, 5, 20, 40 days; "latest" and "edge" share one;
    # the undated one) and multi's two: never v1.0's (named), the -rc's, the digest tag's, or sem's.
    assert len(configs) == 7, [e.path for e in configs]
    assert not [e for e in configs if "/sem/" in e.path]
    # A second plan with the same cache (as ``sync --interval`` keeps it) costs HEADs only.
    mark = len(fake.log)
    assert (await _plan(fake, text, cache))[0] == planned
    assert [e.path for e in fake.log[mark:] if e.method == "GET" and e.kind in ("blob", "manifest")] == []
    # No longer named, v1.0 is a candidate like the others (it costs one more config): 200 days old, left
    # out, and pruned.
    again, prune = await _plan(fake, text.replace("app: [v1.0]", "app: [latest]"), cache)
    assert "src.test/app:v1.0" not in again
    assert prune == [PruneCandidate("dst.test/m/app", ("v1.0",))]
