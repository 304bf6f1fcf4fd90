"""``mirror sync``: arguments → plan + engine → progress, report, summary, exit code."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import IO

from msgspec import Struct

from mirror.cli import metrics, render, signflags, syncflags
from mirror.cli.commands import global_options, run, side_options, signature_policy
from mirror.cli.reformatflags import reformat, refuse_with_referrers
from mirror.cli.skopeolog import SyncLog
from mirror.config.load import load_sync_config
from mirror.config.schema import SyncConfig
from mirror.config.settings import RegistrySettings, SyncFlags, resolve_settings, yaml_credentials
from mirror.core.descriptor import Platform
from mirror.core.reference import Reference, parse_docker
from mirror.engine.image import CopyOptions, MultiArch
from mirror.engine.sync import ImageRecord, RunStats, SyncOptions
from mirror.errors import UsageError
from mirror.ops import sync as sync_ops
from mirror.plan.naming import Naming
from mirror.plan.retention import CreatedDates
from mirror.plan.shard import parse_shard
from mirror.runtime import Runtime
from mirror.transports.local import files

#: Exit status when --keep-going finished but some images failed (0: all synced, 1: fatal error).
EXIT_PARTIAL = 3


def _platforms(values: list[str]) -> tuple[Platform, ...]:
    out = []
    for value in values:
        parts = value.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(f"invalid --platform {value!r}, expected OS/ARCH[/VARIANT]")
        out.append(Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else None))
    return tuple(out)


def _check(args: argparse.Namespace) -> None:
    if args.src in ("dir", "oci") and args.dest != "docker":
        raise UsageError(f"sync from {args.src} to {args.dest} is not supported (only to docker)")
    if args.jobs < 1 or args.blob_jobs < 1:
        raise UsageError("--jobs and --blob-jobs must be at least 1")


def _check_referrers(args: argparse.Namespace, settings: dict[str, RegistrySettings]) -> None:
    """Referrers live in registries only; a type filter must filter something."""
    copying = [s for s in settings.values() if s.referrers]
    if args.referrers_artifact_type and not copying:
        raise UsageError("--referrers-artifact-type needs --referrers (or referrers: true in the YAML file)")
    if copying and (args.src in ("dir", "oci") or args.dest != "docker"):
        raise UsageError(f"--referrers is not supported for sync from {args.src} to {args.dest}: only docker:// "
                         "registries list and store OCI referrers")


class Prepared(Struct, frozen=True):
    """One run's inputs, read from the arguments (and the sync YAML, read again for every run)."""

    request: sync_ops.SyncRequest
    plan: sync_ops.Plan

    @property
    def dry_run(self) -> bool:
        return self.request.options.dry_run


def prepare(args: argparse.Namespace) -> Prepared:
    """Arguments (and the YAML file) → what a run needs; every problem is a one-line UsageError/ConfigError."""
    options = global_options(args)
    config = load_sync_config(args.source) if args.src == "yaml" else None
    platforms = _platforms(args.platform)
    signers, _identity = signflags.signers(args)
    if signers and args.queue:
        raise UsageError("signing (--sign-by*) is not supported with --queue: sign with a sync in one process")
    sync_options = SyncOptions(
        jobs=args.jobs, blob_jobs=args.blob_jobs, keep_going=bool(args.keep_going), dry_run=bool(args.dry_run),
        copy=CopyOptions(multi_arch=MultiArch.ALL if args.all else MultiArch.SYSTEM, platform=options.platform,
                         platforms=platforms, remove_signatures=bool(args.remove_signatures), signers=signers,
                         reformat=reformat(args, args.dest)))
    src_side = side_options(args, "src-", args.authfile)
    reference = parse_docker(args.source.removeprefix("docker://")) if args.src == "docker" else None
    flags = SyncFlags(tls_verify=src_side.tls.verify, cert_dir=src_side.tls.cert_dir, chunk_size=options.chunk_size,
                      assume_immutable=bool(args.assume_immutable_tags), prune=args.prune != "off",
                      digest_tags=bool(args.digest_tags), referrers=bool(args.referrers),
                      referrers_artifact_types=tuple(dict.fromkeys(args.referrers_artifact_type)),
                      **syncflags.selection(args, _explicit(args)))
    settings = resolve_settings(config, flags, reference.repo.registry if reference is not None else "")
    _check_referrers(args, settings)
    refuse_with_referrers(sync_options.copy.reformat, any(s.referrers for s in settings.values()))
    request = sync_ops.SyncRequest(
        naming=Naming(args.destination.removeprefix("docker://"), bool(args.scoped), args.append_suffix),
        src_side=src_side, dst_side=side_options(args, "dest-", args.authfile), options=sync_options,
        settings=settings, secrets=yaml_credentials(config), delete_pruned=args.prune == "delete", dest=args.dest,
        policy=signature_policy(args), shard=parse_shard(args.shard, args.shard_count, os.environ))
    return Prepared(request, _plan(args, config, reference))


def sync(args: argparse.Namespace) -> int:
    _check(args)
    if syncflags.scheduled(args):
        from mirror.cli.service import serve  # the long-running mode: an HTTP endpoint, a scheduler

        return serve(args)
    prepared = prepare(args)
    stats = RunStats()
    with RunOutputs(args, prepared.dry_run, stats, quiet=bool(args.quiet)) as outputs:
        with render.SyncDisplay(stats, enabled=not args.quiet):
            outputs.result = run(args, body(args, prepared, outputs.sink, stats),
                                 policies=sync_ops.policies(prepared.request.settings))
        result = outputs.result
    for line in prune_lines(args, result):
        print(line)
    if prepared.dry_run or not args.quiet:
        for line in outputs.sink.log.lines():  # skopeo's listing (a dry run) and its closing count
            print(line, file=sys.stderr)
    if not args.quiet:
        for host, counters in result.registries.items():
            hub = counters.get("hub_remaining")
            print(f"registry {host}: {counters.get('rate_limited_responses', 0)} rate-limited responses, "
                  f"{counters.get('throttled_waits', 0)} throttled waits"
                  + (f", Docker Hub pulls remaining: {hub}" if hub is not None else ""), file=sys.stderr)
        print(summary(stats, prepared.dry_run), file=sys.stderr)
    return EXIT_PARTIAL if stats.failed else 0


def prune_lines(args: argparse.Namespace, result: sync_ops.SyncResult) -> list[str]:
    """``would prune NAME`` / ``pruned NAME`` for every destination tag prune found."""
    out = []
    for candidate in result.prune:
        verb = "pruned" if args.prune == "delete" and not args.dry_run else "would prune"
        for tag in candidate.tags:
            name = f"{candidate.destination}:{tag}"
            if verb == "would prune" or name in result.pruned:
                out.append(f"{verb} {name}")
    return out


class RunOutputs:
    """A run's files: ``--report`` (one JSON line per image), ``--digestfile`` (published when the run
    ends) and ``--metrics`` (written when the run ends, even on an error; set ``result`` on success)."""

    def __init__(self, args: argparse.Namespace, dry_run: bool, stats: RunStats, quiet: bool) -> None:
        self.args, self.dry_run, self.stats, self.quiet = args, dry_run, stats, quiet
        self.result: sync_ops.SyncResult | None = None
        self._stack = contextlib.ExitStack()
        self.sink = _RecordSink(None, None, SyncLog(dry_run), quiet=quiet)

    def __enter__(self) -> RunOutputs:
        args, stack = self.args, self._stack
        try:
            report = stack.enter_context(open(args.report, "w", encoding="utf-8")) if args.report else None
            # --digestfile lines stream to a temp file (memory stays flat), renamed into place when the run ends.
            digests = stack.enter_context(files.atomic_file_sync(Path(args.digestfile))) if args.digestfile else None
        except BaseException:
            stack.close()
            raise
        self.sink = _RecordSink(report, digests, SyncLog(self.dry_run), quiet=self.quiet)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self._stack.__exit__(exc_type, exc, tb)
        finally:
            if self.args.metrics:
                metrics.write(self.args.metrics, metrics.exposition(metrics.run_families(self.figures())).decode())

    def figures(self) -> metrics.RunFigures:
        result = self.result
        return metrics.RunFigures.of(self.stats, result.registries if result else {}, self.dry_run,
                                     success=result is not None and not self.stats.failed)


def _explicit(args: argparse.Namespace) -> bool:
    """``--src docker`` names one image (a tag or digest), not a whole repository."""
    last = args.source.removeprefix("docker://").rsplit("/", 1)[-1]
    return args.src == "docker" and ("@" in last or ":" in last)


def body(args: argparse.Namespace, prepared: Prepared, sink: Callable[[ImageRecord], None], stats: RunStats,
         created: CreatedDates | None = None) -> Callable[[Runtime], Awaitable[sync_ops.SyncResult]]:
    """The run in this process, or (``--queue``) planned into PostgreSQL for ``mirror worker``s.
    ``created``: images' dates already known (a long-running process keeps them from run to run)."""
    request, plan = prepared.request, prepared.plan
    if not args.queue:
        return lambda rt: sync_ops.sync(rt, request, plan, sink, stats, created=created)
    from mirror.distributed.coordinator import queue_sync  # the PostgreSQL client, only when asked for

    return lambda rt: queue_sync(rt, request, plan, sink, stats, args.queue, args.max_attempts)


def _plan(args: argparse.Namespace, config: SyncConfig | None, reference: Reference | None) -> sync_ops.Plan:
    """What the planner expands: the YAML file, one docker repository (or image), a directory tree or
    an OCI layout."""
    if config is not None:
        return lambda planner: lambda send: planner.yaml(config, send)
    if reference is not None:
        explicit = _explicit(args)
        return lambda planner: lambda send: planner.docker(reference, explicit, send)
    if args.src == "oci":
        return lambda planner: lambda send: planner.layout(args.source, send)
    return lambda planner: lambda send: planner.directory(args.source, send)


class _RecordSink:
    def __init__(self, report: IO[str] | None, digests: IO[bytes] | None, log: SyncLog, quiet: bool) -> None:
        self.report = report
        self.digests = digests
        self.log = log
        self.quiet = quiet

    def __call__(self, record: ImageRecord) -> None:
        if self.report is not None:
            self.report.write(json.dumps(record_json(record)) + "\n")
            self.report.flush()
        if self.digests is not None and record.digest and record.outcome in ("copied", "skipped"):
            self.digests.write(f"{record.digest} {record.destination}\n".encode())
        self.log.add(record)
        if record.outcome == "failed" and not self.quiet and not self.log.dry_run:
            print(f"failed {record.source} -> {record.destination}: {record.reason}", file=sys.stderr, flush=True)


def record_json(record: ImageRecord) -> dict[str, object]:
    return {"source": record.source, "destination": record.destination, "digest": record.digest,
            "outcome": record.outcome, "reason": record.reason, "bytes": record.bytes,
            "blobs": {"uploaded": record.blobs_uploaded, "mounted": record.blobs_mounted,
                      "skipped": record.blobs_skipped},
            "duration": record.duration}


def summary(stats: RunStats, dry_run: bool) -> str:
    elapsed = time.monotonic() - stats.started
    verb = "compared" if dry_run else "synced"
    return (f"{verb} {stats.done} images in {elapsed:.1f}s: {stats.copied} {'to copy' if dry_run else 'copied'}, "
            f"{stats.skipped} up to date, {stats.failed} failed; {render.human_bytes(stats.bytes_sent)} sent; "
            f"blobs {stats.blobs_uploaded} uploaded, {stats.blobs_mounted} mounted, {stats.blobs_skipped} present")
