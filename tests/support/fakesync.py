"""The sync path (YAML → settings → Planner → Scheduler) over the fake registry, for fast unit tests.

API::

    config = yaml_config('''src.test/a: {images: {app: [v1]}}''')   # parsed and validated as a file would be
    units, prune = await plan(fake, config, "dst.test/m")             # the planner's WorkUnits and prune candidates
        # (``shard=Shard(k, n)``: only that shard's share)
    run = await sync_run(fake, config, "dst.test/m", options=SyncOptions(keep_going=True),
                         uploads=UploadOptions(...), delete_pruned=True)
    run.records, run.stats, run.result.prune, run.result.pruned
    raw = await push_index(fake, "src.test", "repo", [(image, "linux/amd64"), ...], tag="v1")
    commits(fake, host), committed_digests(fake, host), mounts(fake, host), patches(fake, host, repo)
        # the request log, by purpose: blob bytes committed, mounts, PATCHes into one repository

Each call opens its own ``fake_runtime`` (a fresh run: nothing remembered from an earlier one except
what the fake registry stores).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio
from yarl import URL

from mirror.config.load import parse_sync_config
from mirror.config.schema import SyncConfig
from mirror.config.settings import SyncFlags, resolve_settings, yaml_credentials
from mirror.engine.sync import ImageRecord, RunStats, SyncOptions
from mirror.http.seam import Request
from mirror.ops import sync as sync_ops
from mirror.ops.units import Resolver, SyncEndpoints
from mirror.plan.expand import Planner, PlanOptions, PruneCandidate
from mirror.plan.naming import Naming
from mirror.plan.pairs import WorkUnit
from mirror.plan.shard import Shard
from mirror.transports.registry.uploadopts import UploadOptions
from mirror.transports.side import SideOptions

from .fakeimages import FakeImage, fake_runtime, push_image
from .fakeregistry import FakeRegistry, Logged

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SIDE = SideOptions()


def yaml_config(text: str) -> SyncConfig:
    return parse_sync_config(textwrap.dedent(text), "sync.yaml")


async def plan(fake: FakeRegistry, config: SyncConfig, destination: str, flags: SyncFlags | None = None,
               shard: Shard | None = None) -> tuple[list[WorkUnit], list[PruneCandidate]]:
    """Run the planner alone (listings through the fake); every unit it sends, and the prune candidates."""
    settings = resolve_settings(config, flags or SyncFlags())
    prune: list[PruneCandidate] = []
    send, receive = anyio.create_memory_object_stream[WorkUnit](1000)
    async with fake_runtime(fake) as rt:
        planner = Planner(SyncEndpoints(Resolver(rt, SIDE, SIDE, yaml_credentials(config))),
                          PlanOptions(Naming(destination), shard=shard), settings, prune.append)
        async with send:
            await planner.yaml(config, send)
    async with receive:
        units = [unit async for unit in receive]
    return units, prune


@dataclass
class SyncRun:
    result: sync_ops.SyncResult
    records: list[ImageRecord] = field(default_factory=list)

    @property
    def stats(self) -> RunStats:
        return self.result.stats

    def outcomes(self) -> dict[str, str]:
        return {r.destination: r.outcome for r in self.records}


async def sync_run(fake: FakeRegistry, config: SyncConfig, destination: str, *,
                   options: SyncOptions | None = None, flags: SyncFlags | None = None,
                   uploads: UploadOptions | None = None, delete_pruned: bool = False,
                   records: list[ImageRecord] | None = None) -> SyncRun:
    """``mirror sync --src yaml`` as ``ops.sync`` runs it, with a fresh runtime over ``fake``.
    ``records``: where records go as they come (still there when the run raises)."""
    got: list[ImageRecord] = [] if records is None else records
    request = sync_ops.SyncRequest(
        naming=Naming(destination), src_side=SIDE, dst_side=SIDE, options=options or SyncOptions(jobs=4),
        settings=resolve_settings(config, flags or SyncFlags()), secrets=yaml_credentials(config),
        delete_pruned=delete_pruned)
    async with fake_runtime(fake, uploads=uploads) as rt:
        result = await sync_ops.sync(rt, request, lambda planner: lambda send: planner.yaml(config, send),
                                     got.append, RunStats())
    return SyncRun(result, got)


async def push_index(fake: FakeRegistry, host: str, repo: str, children: Sequence[tuple[FakeImage, str]],
                     tag: str) -> bytes:
    """Push ``children`` by digest and an OCI index of them (``os/arch[/variant]`` each) under ``tag``."""
    entries = []
    for image, platform in children:
        await push_image(fake, host, repo, image)
        os_, arch, *variant = platform.split("/")
        entries.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": image.digest,
                        "size": len(image.manifest),
                        "platform": {"os": os_, "architecture": arch, **({"variant": variant[0]} if variant else {})}})
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, indent=1).encode()
    logged = len(fake.log)
    resp = await fake.send(Request("PUT", URL(f"https://{host}/v2/{repo}/manifests/{tag}"),
                                   {"Authorization": "Bearer admin", "Content-Type": OCI_INDEX}, raw))
    assert resp.status == 201, resp.status
    del fake.log[logged:]
    return raw


def commits(fake: FakeRegistry, host: str) -> list[Logged]:
    """Requests that closed an upload with the blob's bytes (monolithic PUT/POST ``?digest=``, 201)."""
    return [e for e in fake.requests("upload", host=host)
            if e.method in ("PUT", "POST") and "digest=" in e.query and "mount=" not in e.query and e.status == 201]


def committed_digests(fake: FakeRegistry, host: str) -> list[str]:
    return sorted(dict(p.split("=", 1) for p in e.query.split("&"))["digest"] for e in commits(fake, host))


def mounts(fake: FakeRegistry, host: str) -> list[Logged]:
    return [e for e in fake.requests("upload", "POST", host) if "mount=" in e.query]


def patches(fake: FakeRegistry, host: str, repo: str) -> list[Logged]:
    return [e for e in fake.requests("upload", "PATCH", host) if e.path.startswith(f"/v2/{repo}/blobs/uploads/")]
