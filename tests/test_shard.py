"""Static sharding (``sync --shard K/N``): planned through the fake registry, and end to end with the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from support.fakeimages import push_image as fake_push
from support.fakeimages import random_image
from support.fakeregistry import FakeRegistry
from support.fakesync import plan, yaml_config
from support.images import list_tags, push_image
from support.mirror_cli import assert_one_line_error, run_mirror
from support.registry import Registry

from mirror.config.schema import SyncConfig
from mirror.errors import UsageError
from mirror.plan.pairs import WorkUnit
from mirror.plan.shard import Shard, owner, parse_shard

REPOS = 40


async def _catalog(fake: FakeRegistry) -> SyncConfig:
    image = random_image(7)
    for r in range(REPOS):
        for tag in ("v1", "v2"):
            await fake_push(fake, "src.test", f"team/app{r:02d}", image, tag)
    return yaml_config("src.test:\n  images:\n" + "".join(f"    team/app{r:02d}: []\n" for r in range(REPOS)))


def _repo(unit: WorkUnit) -> str:
    return unit.dst.rsplit(":", 1)[0]


@pytest.mark.anyio
async def test_shards_partition_the_plan_by_destination_repository() -> None:
    fake = FakeRegistry()
    config = await _catalog(fake)
    whole, _ = await plan(fake, config, "dst.test/m")
    assert len(whole) == 2 * REPOS
    shards = [(await plan(fake, config, "dst.test/m", shard=Shard(k, 3)))[0] for k in range(3)]
    # The union is the unsharded plan, with no unit planned twice.
    union = sorted(u.to_json() for units in shards for u in units)
    assert union == sorted(u.to_json() for u in whole)
    # A repository's tags stay together, and every shard gets a share.
    owners = {_repo(u): k for k, units in enumerate(shards) for u in units}
    assert all(owners[_repo(u)] == k for k, units in enumerate(shards) for u in units)
    assert all(len(units) >= 4 for units in shards), [len(units) for units in shards]
    # A shard does not even list the source repositories it does not own.
    fake.log.clear()
    await plan(fake, config, "dst.test/m", shard=Shard(0, 3))
    listed = {e.path for e in fake.requests("tags", "GET", "src.test")}
    assert len(listed) == len(shards[0]) // 2


def test_adding_a_shard_moves_only_what_the_new_shard_wins() -> None:
    repos = [f"registry.example/team/app{i}" for i in range(1000)]
    before = {r: owner(r, 4) for r in repos}
    after = {r: owner(r, 5) for r in repos}
    moved = [r for r in repos if before[r] != after[r]]
    assert all(after[r] == 4 for r in moved)  # rendezvous: a repository only ever moves to the new shard
    assert 0.12 < len(moved) / len(repos) < 0.28, len(moved)  # about 1/5


def test_shard_flags() -> None:
    assert parse_shard("2/3", None, {}) == Shard(2, 3)
    assert parse_shard(None, 4, {"JOB_COMPLETION_INDEX": "3"}) == Shard(3, 4)
    assert parse_shard(None, None, {"JOB_COMPLETION_INDEX": "3"}) is None
    for text, count, env in (("3/3", None, {}), ("1", None, {}), ("-1/3", None, {}), ("a/b", None, {}),
                             ("0/0", None, {}), (None, 4, {}), (None, 4, {"JOB_COMPLETION_INDEX": "4"}),
                             ("0/2", 2, {})):
        with pytest.raises(UsageError):
            parse_shard(text, count, env)


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_three_shard_processes_sync_the_whole_catalog(registry: Registry, registry2: Registry, tmp_path: Path) -> None:
    for r in range(9):
        for tag in ("v1", "v2"):
            push_image(registry, f"team/svc{r}", tag, seed=r * 10 + len(tag))
    config = tmp_path / "sync.yaml"
    config.write_text(yaml.safe_dump({registry.host: {"tls-verify": False,
                                                      "images": {f"team/svc{r}": [] for r in range(9)}}}))
    base = ("sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false", str(config), f"{registry2.host}/m")
    run_mirror(*base, "--dry-run", "--report", str(tmp_path / "all.jsonl"))
    everything = sorted(str(r["destination"]) for r in _records(tmp_path / "all.jsonl"))
    assert len(everything) == 18
    seen: list[str] = []
    busy = 0
    for k in range(3):  # shard 2 through the Kubernetes Indexed Job variable, the others with --shard
        report = tmp_path / f"shard{k}.jsonl"
        digests = tmp_path / f"shard{k}.digests"
        flags = ["--shard-count", "3"] if k == 2 else ["--shard", f"{k}/3"]
        env = {**os.environ, "MIRROR_STATE": "none", "JOB_COMPLETION_INDEX": str(k)}
        run_mirror(*base, *flags, "--report", str(report), "--digestfile", str(digests), env=env)
        records = _records(report)
        # A shard may own none of 9 repositories (the hash covers the registry's random port): that is
        # still a valid (empty) sync; the union below is what must be whole.
        assert all(r["outcome"] == "copied" for r in records), records
        busy += bool(records)
        assert len(digests.read_text().splitlines()) == len(records)  # each shard's files are its own
        seen += [str(r["destination"]) for r in records]
    assert sorted(seen) == everything
    assert busy >= 2  # the work was shared (all in one shard: 3 x (1/3)^9 by chance)
    for r in range(9):
        assert sorted(list_tags(registry2, f"m/svc{r}")) == ["v1", "v2"]


def test_bad_shard_flags_are_one_line_errors(registry: Registry, tmp_path: Path) -> None:
    args = ("sync", "--src", "docker", "--dest", "docker", f"{registry.host}/a", f"{registry.host}/b")
    assert_one_line_error(run_mirror(*args, "--shard", "3/3", check=False), "shard index")
    env = {k: v for k, v in os.environ.items() if k != "JOB_COMPLETION_INDEX"}
    assert_one_line_error(run_mirror(*args, "--shard-count", "3", env=env, check=False), "JOB_COMPLETION_INDEX")
