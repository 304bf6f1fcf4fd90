"""``sync``: settings → planner → engine, and pruning afterwards.

The planner streams plain work units; this process's ``Resolver`` opens each one for the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from msgspec import Struct, field

from mirror.config.schema import Credentials
from mirror.config.settings import RegistrySettings
from mirror.core.reference import Repo, Tag
from mirror.engine.sync import ImageRecord, Producer, RunStats, Scheduler, SyncOptions
from mirror.errors import MirrorError
from mirror.http.ratelimit import HostPolicy
from mirror.ops.units import Resolver, SyncEndpoints
from mirror.plan.expand import Planner, PlanOptions, PruneCandidate
from mirror.plan.naming import Naming
from mirror.plan.retention import CreatedDates
from mirror.plan.shard import Shard
from mirror.runtime import Runtime
from mirror.signing.policy import Policy
from mirror.transports.side import SideOptions


def policies(settings: Mapping[str, RegistrySettings]) -> dict[str, HostPolicy]:
    """Per-registry request limits from the YAML ``rate-limit`` keys, by host."""
    out = {}
    for registry in settings.values():
        limit = registry.rate_limit
        if limit is not None:
            out[registry.name.split("/", 1)[0]] = HostPolicy(
                requests_per_second=limit.requests_per_second, burst=limit.burst,
                max_connections=limit.max_connections)
    return out


class SyncResult(Struct):
    stats: RunStats
    prune: list[PruneCandidate] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    registries: dict[str, dict[str, object]] = field(default_factory=dict)  # per-host limiter counters


class SyncRequest(Struct, frozen=True):
    naming: Naming
    src_side: SideOptions
    dst_side: SideOptions
    options: SyncOptions
    settings: Mapping[str, RegistrySettings]  # by YAML key, or one entry for the CLI source
    secrets: Mapping[str, Credentials] = field(default_factory=dict)  # YAML credentials the settings name
    delete_pruned: bool = False   # --prune=delete
    dest: str = "docker"          # docker | dir | oci
    policy: Policy | None = None  # the signature policy (None: --insecure-policy)
    shard: Shard | None = None    # --shard K/N: only the destination repositories this shard owns


Plan = Callable[[Planner], Producer]


async def sync(rt: Runtime, request: SyncRequest, plan: Plan, on_record: Callable[[ImageRecord], None],
               stats: RunStats, created: CreatedDates | None = None) -> SyncResult:
    """Run the units ``plan`` produces; prune (report or delete) what the planner found. ``created``:
    images' dates known from earlier runs (retention rules by date), else the run learns its own."""
    resolver = Resolver(rt, request.src_side, request.dst_side, request.secrets, request.policy)
    result = SyncResult(stats)

    def planned(n: int) -> None:
        stats.planned += n

    planner = Planner(SyncEndpoints(resolver), PlanOptions(request.naming, dest=request.dest, shard=request.shard),
                      request.settings, result.prune.append, planned, created=created)
    scheduler = Scheduler(request.options, rt.known_locations(), on_record, stats, opener=resolver.open,
                          choices=rt.state)
    await scheduler.run(plan(planner))
    if request.delete_pruned and not request.options.dry_run:
        for candidate in result.prune:
            await prune_repo(rt, request.dst_side, candidate, result)
    _limiter_report(rt, result)
    return result


def _limiter_report(rt: Runtime, result: SyncResult) -> None:
    """Throttling seen per registry, and Docker Hub's ``ratelimit-remaining`` when it was sent."""
    for host, limiter in rt.http.limiters.items():
        stats = limiter.stats()
        if stats.get("rate_limited_responses") or stats.get("throttled_waits") or stats.get("hub_remaining") \
                is not None:
            result.registries[host] = stats


async def prune_repo(rt: Runtime, side: SideOptions, candidate: PruneCandidate, result: SyncResult) -> None:
    """Delete pruned tags. A tag whose manifest another kept tag also uses is reported, not deleted
    (deleting by digest would remove the kept tag too)."""
    host, _, path = candidate.destination.partition("/")
    repo = Repo(host, path)
    lister = rt.registry.repo_source(repo, side)
    all_tags = [t async for t in lister.list_tags()]
    kept_digests = set()
    for tag in (t for t in all_tags if t not in candidate.tags):
        desc = await lister.head_manifest(Tag(tag))
        if desc is not None:
            kept_digests.add(desc.digest)
    destination = rt.registry.repo_destination(repo, side)
    for tag in candidate.tags:
        desc = await lister.head_manifest(Tag(tag))
        if desc is None or desc.digest in kept_digests:
            continue
        try:
            await destination.delete_manifest(desc.digest)
        except MirrorError as exc:
            raise MirrorError(f"pruning {candidate.destination}:{tag}: {exc}") from None
        result.pruned.append(f"{candidate.destination}:{tag}")
