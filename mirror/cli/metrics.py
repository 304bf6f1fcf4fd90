"""``sync --metrics FILE``: the run's figures in Prometheus' text format, for node_exporter's textfile
collector (a nightly cron sync becomes alertable: failures, bytes, duration, throttling).

The file is written to a temporary name and renamed (``files.atomic_write_sync``), so the collector
never reads half a file.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from mirror.engine.sync import RunStats
from mirror.errors import MirrorError
from mirror.transports.local import files


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(stats: RunStats, registries: Mapping[str, Mapping[str, object]], dry_run: bool, success: bool,
           now: float | None = None) -> str:
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{label_text}}} {value:g}" if label_text else f"{name} {value:g}")

    metric("mirror_sync_images", "gauge", "Images handled by the last sync run, by outcome.",
           [({"outcome": "copied"}, stats.copied), ({"outcome": "skipped"}, stats.skipped),
            ({"outcome": "failed"}, stats.failed)])
    metric("mirror_sync_blobs", "gauge", "Blobs of the last sync run, by outcome.",
           [({"outcome": "uploaded"}, stats.blobs_uploaded), ({"outcome": "mounted"}, stats.blobs_mounted),
            ({"outcome": "present"}, stats.blobs_skipped)])
    metric("mirror_sync_sent_bytes", "gauge", "Bytes sent to destinations by the last sync run.",
           [({}, stats.bytes_sent)])
    metric("mirror_sync_duration_seconds", "gauge", "Wall time of the last sync run.",
           [({}, round(time.monotonic() - stats.started, 3))])
    metric("mirror_sync_success", "gauge", "1 if the last sync run finished with no failed image, else 0.",
           [({}, int(success))])
    metric("mirror_sync_dry_run", "gauge", "1 if the last sync run was a dry run.", [({}, int(dry_run))])
    metric("mirror_sync_last_run_timestamp_seconds", "gauge", "When the last sync run ended (Unix time).",
           [({}, round(time.time() if now is None else now, 3))])
    throttled = [(host, counters) for host, counters in sorted(registries.items())]
    metric("mirror_registry_rate_limited_responses", "gauge", "HTTP 429 answers per registry in the last run.",
           [({"registry": host}, float(str(c.get("rate_limited_responses", 0)))) for host, c in throttled])
    return "\n".join(lines) + "\n"


def write(path: str, text: str) -> None:
    try:
        files.atomic_write_sync(Path(path), text.encode())
    except OSError as exc:
        raise MirrorError(f"writing metrics {path}: {exc.strerror or exc}") from None
