"""Per-registry YAML settings stay with their registry, and work units are plain data.

The YAML below names the same real registry twice, as ``HOST/a`` and ``HOST/b`` (skopeo accepts a
namespace in a key): two source "registries" whose settings differ. Each test checks that a
setting written under one key acts on that key's images and on nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import yaml
from support.images import Client, list_tags, make_layer, push_image
from support.mirror_cli import ROOT, run_mirror
from support.registry import Registry

from mirror.config.load import load_sync_config
from mirror.config.settings import SyncFlags, resolve_settings, yaml_credentials
from mirror.http.tls import TLSOptions
from mirror.ops.units import Resolver, SyncEndpoints
from mirror.plan.expand import Planner, PlanOptions
from mirror.plan.naming import Naming
from mirror.plan.pairs import WorkUnit
from mirror.runtime import GlobalOptions, open_runtime
from mirror.transports.side import SideOptions


def _write(tmp_path: Path, config: dict[str, object]) -> Path:
    path = tmp_path / "sync.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _dest_digest(reg: Registry, repo: str, tag: str) -> str:
    _raw, _media, digest = Client(reg).get_manifest(repo, tag)
    return digest


def test_assume_immutable_tags_applies_only_to_its_registry(registry: Registry, registry2: Registry,
                                                             tmp_path: Path) -> None:
    push_image(registry, "a/one", "v1", seed=11)
    push_image(registry, "b/two", "v1", seed=12)
    config = {f"{registry.host}/a": {"tls-verify": False, "assume-immutable-tags": True, "images": {"one": ["v1"]}},
              f"{registry.host}/b": {"tls-verify": False, "images": {"two": ["v1"]}}}
    path = _write(tmp_path, config)
    args = ("sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false", str(path), f"{registry2.host}/m")
    run_mirror(*args)
    first_one, first_two = _dest_digest(registry2, "m/one", "v1"), _dest_digest(registry2, "m/two", "v1")
    # Both tags move at the source.
    moved_one = push_image(registry, "a/one", "v1", seed=21)
    moved_two = push_image(registry, "b/two", "v1", seed=22)
    run_mirror(*args)
    assert _dest_digest(registry2, "m/one", "v1") == first_one != moved_one.digest  # assumed immutable: kept
    assert _dest_digest(registry2, "m/two", "v1") == moved_two.digest != first_two  # compared: updated


def test_prune_applies_only_to_its_registry(registry: Registry, registry2: Registry, tmp_path: Path) -> None:
    push_image(registry, "a/one", "v1", seed=31)
    push_image(registry, "b/two", "v1", seed=32)
    push_image(registry2, "m/one", "stale", seed=33)
    push_image(registry2, "m/two", "stale", seed=34)
    config = {f"{registry.host}/a": {"tls-verify": False, "prune": True, "images": {"one": []}},
              f"{registry.host}/b": {"tls-verify": False, "images": {"two": []}}}
    out = run_mirror("sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false",
                     str(_write(tmp_path, config)), f"{registry2.host}/m")
    pruned = [line for line in out.stdout.splitlines() if "prune" in line]
    assert pruned == [f"would prune {registry2.host}/m/one:stale"], out.stdout
    assert sorted(list_tags(registry2, "m/two")) == ["stale", "v1"]


def test_chunk_size_applies_only_to_its_registry(registry: Registry, registry2: Registry, tmp_path: Path) -> None:
    size = 3 * (1 << 20) + 100_000  # chunked (threshold 1 MiB below): 4 chunks of 1 MiB, or 1 of the default
    push_image(registry, "a/one", "v1", layers=[make_layer(41, size)])
    push_image(registry, "b/two", "v1", layers=[make_layer(42, size)])
    config = {f"{registry.host}/a": {"tls-verify": False, "chunk-size": "1M", "images": {"one": ["v1"]}},
              f"{registry.host}/b": {"tls-verify": False, "images": {"two": ["v1"]}}}
    env = {**os.environ, "MIRROR_CHUNK_THRESHOLD": "1M", "MIRROR_STATE": "none"}
    run_mirror("sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false",
               str(_write(tmp_path, config)), f"{registry2.host}/m", env=env)
    patches = [uri for method, uri, status in registry2.access_log_requests() if method == "PATCH" and status < 300]
    assert sum("/m/one/blobs/uploads/" in uri for uri in patches) == 4, patches
    assert sum("/m/two/blobs/uploads/" in uri for uri in patches) == 1, patches


_RUN_UNITS = textwrap.dedent("""
    import sys, anyio, structlog
    from mirror.config.schema import Credentials
    from mirror.engine.sync import Scheduler, SyncOptions
    from mirror.http.tls import TLSOptions
    from mirror.ops.units import Resolver
    from mirror.plan.pairs import WorkUnit
    from mirror.runtime import GlobalOptions, open_runtime
    from mirror.transports.side import SideOptions

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

    async def main() -> None:
        units = [WorkUnit.from_json(line) for line in sys.stdin.read().splitlines()]
        secrets = {sys.argv[1]: Credentials(username=sys.argv[2], password=sys.argv[3])}
        async with open_runtime(GlobalOptions(state="none")) as rt:
            side = SideOptions(tls=TLSOptions(verify=False))
            resolver = Resolver(rt, side, side, secrets)
            scheduler = Scheduler(SyncOptions(), opener=resolver.open)
            for unit in units:
                record = await scheduler.sync_one(unit)
                print(record.outcome, record.destination, record.digest)

    anyio.run(main, backend="asyncio")
""")


async def _plan_units(config_path: Path, destination: str) -> list[str]:
    """Plan a YAML sync in this process and return its work units as JSON lines."""
    config = load_sync_config(str(config_path))
    settings = resolve_settings(config, SyncFlags(tls_verify=False))
    side = SideOptions(tls=TLSOptions(verify=False))
    send, receive = anyio.create_memory_object_stream[WorkUnit](100)
    async with open_runtime(GlobalOptions(state="none")) as rt:
        planner = Planner(SyncEndpoints(Resolver(rt, side, side, yaml_credentials(config))),
                          PlanOptions(Naming(destination)), settings)
        async with send:
            await planner.yaml(config, send)
        return [unit.to_json() async for unit in receive]


def test_work_units_round_trip_through_json_into_another_process(
        htpasswd_registry: Registry, registry2: Registry, tmp_path: Path) -> None:
    src = htpasswd_registry
    assert src.username is not None and src.password is not None
    pushed = [push_image(src, "team/app", tag, seed=50 + i) for i, tag in enumerate(("v1", "v2"))]
    config = {src.host: {"tls-verify": False, "chunk-size": "2M", "platforms": ["linux/amd64"],
                         "credentials": {"username": src.username, "password": src.password},
                         "images": {"team/app": ["v1", "v2"]}}}
    lines = anyio.run(_plan_units, _write(tmp_path, config), f"{registry2.host}/m")
    assert len(lines) == 2
    dump = "\n".join(lines)
    assert src.password not in dump  # credentials are named, never carried
    first = json.loads(lines[0])
    assert first["settings"]["credentials"] == src.host and first["settings"]["chunk_size"] == 2 << 20
    assert first["src"] == f"docker://{src.host}/team/app:v1"
    assert first["dst"] == f"docker://{registry2.host}/m/app:v1"
    proc = subprocess.run([sys.executable, "-c", _RUN_UNITS, src.host, src.username, src.password], input=dump,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    outcomes = proc.stdout.splitlines()
    assert outcomes == [f"copied {registry2.host}/m/app:{tag} {image.digest}"
                        for tag, image in zip(("v1", "v2"), pushed, strict=True)], proc.stdout
    assert _dest_digest(registry2, "m/app", "v2") == pushed[1].digest
