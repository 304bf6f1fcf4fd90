"""A sync run's figures in Prometheus' exposition format, defined once here and served two ways:

* ``sync --metrics FILE``: written after the run, for node_exporter's textfile collector (a nightly
  cron sync becomes alertable: failures, bytes, duration, throttling). The file is written to a
  temporary name and renamed (``files.atomic_write_sync``), so the collector never reads half a file.
* ``sync --interval/--schedule --listen ADDR``: ``GET /metrics`` (``mirror.cli.serve``), the last
  finished run's figures plus the service's own (runs by outcome, a run in progress, the next slot).

Both are rendered by prometheus_client from the same metric families.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from msgspec import Struct, field

from mirror.engine.sync import RunStats
from mirror.errors import MirrorError
from mirror.transports.local import files

if TYPE_CHECKING:  # prometheus_client (with http.server and wsgiref) is imported by what renders metrics
    from prometheus_client.core import Metric


class RunFigures(Struct, frozen=True):
    """What one finished (or stopped) run measured."""

    copied: int = 0
    skipped: int = 0
    failed: int = 0
    blobs_uploaded: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    bytes_sent: int = 0
    duration: float = 0.0
    success: bool = False
    dry_run: bool = False
    ended_at: float = 0.0  # Unix time
    rate_limited: Mapping[str, float] = field(default_factory=dict)  # 429 answers by registry

    @classmethod
    def of(cls, stats: RunStats, registries: Mapping[str, Mapping[str, object]], dry_run: bool, success: bool,
           now: float | None = None) -> RunFigures:
        return cls(copied=stats.copied, skipped=stats.skipped, failed=stats.failed,
                   blobs_uploaded=stats.blobs_uploaded, blobs_mounted=stats.blobs_mounted,
                   blobs_present=stats.blobs_skipped, bytes_sent=stats.bytes_sent,
                   duration=round(time.monotonic() - stats.started, 3), success=success, dry_run=dry_run,
                   ended_at=round(time.time() if now is None else now, 3),
                   rate_limited={host: float(str(c.get("rate_limited_responses", 0)))
                                 for host, c in sorted(registries.items())})


def run_families(run: RunFigures) -> list[Metric]:
    """The figures of ``--metrics`` (the last run)."""
    from prometheus_client.core import GaugeMetricFamily

    images = GaugeMetricFamily("mirror_sync_images", "Images handled by the last sync run, by outcome.",
                               labels=["outcome"])
    for outcome, value in (("copied", run.copied), ("skipped", run.skipped), ("failed", run.failed)):
        images.add_metric([outcome], value)
    blobs = GaugeMetricFamily("mirror_sync_blobs", "Blobs of the last sync run, by outcome.", labels=["outcome"])
    for outcome, value in (("uploaded", run.blobs_uploaded), ("mounted", run.blobs_mounted),
                           ("present", run.blobs_present)):
        blobs.add_metric([outcome], value)
    limited = GaugeMetricFamily("mirror_registry_rate_limited_responses",
                                "HTTP 429 answers per registry in the last run.", labels=["registry"])
    for host, answers in run.rate_limited.items():
        limited.add_metric([host], answers)
    return [
        images, blobs,
        GaugeMetricFamily("mirror_sync_sent_bytes", "Bytes sent to destinations by the last sync run.",
                          value=run.bytes_sent),
        GaugeMetricFamily("mirror_sync_duration_seconds", "Wall time of the last sync run.", value=run.duration),
        GaugeMetricFamily("mirror_sync_success", "1 if the last sync run finished with no failed image, else 0.",
                          value=int(run.success)),
        GaugeMetricFamily("mirror_sync_dry_run", "1 if the last sync run was a dry run.", value=int(run.dry_run)),
        GaugeMetricFamily("mirror_sync_last_run_timestamp_seconds", "When the last sync run ended (Unix time).",
                          value=run.ended_at),
        limited,
    ]


def service_families(runs: Mapping[str, int], running: bool, next_run: float | None) -> list[Metric]:
    """The long-running mode's own figures: runs so far by outcome, a run in progress, the next slot."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    total = CounterMetricFamily("mirror_sync_runs", "Sync runs since the service started, by outcome.",
                                labels=["outcome"])
    for outcome in ("success", "failed"):
        total.add_metric([outcome], runs.get(outcome, 0))
    out: list[Metric] = [total, GaugeMetricFamily("mirror_sync_running", "1 while a sync run is in progress.",
                                                  value=int(running))]
    if next_run is not None:
        out.append(GaugeMetricFamily("mirror_sync_next_run_timestamp_seconds",
                                     "When the next sync run is due (Unix time).", value=next_run))
    return out


class _Families:
    """A prometheus_client collector of fixed families."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def exposition(families: Iterable[Metric]) -> bytes:
    """``families`` in the Prometheus text format (what ``generate_latest`` writes)."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)


def render(stats: RunStats, registries: Mapping[str, Mapping[str, object]], dry_run: bool, success: bool,
           now: float | None = None) -> str:
    """The ``--metrics`` file for a run that just ended."""
    return exposition(run_families(RunFigures.of(stats, registries, dry_run, success, now))).decode()


def write(path: str, text: str) -> None:
    try:
        files.atomic_write_sync(Path(path), text.encode())
    except OSError as exc:
        raise MirrorError(f"writing metrics {path}: {exc.strerror or exc}") from None
