"""Crash safety: ``mirror sync`` SIGKILLed five times at random points (seeded), then run to completion.

Uses the machinery of ``scripts/crash.py`` on a small catalog (4 repositories x 3 tags, indexes, one
24 MiB blob uploaded in 4 MiB chunks). After every kill no destination tag may point at a manifest
whose children or blobs are missing and the state file must pass ``PRAGMA integrity_check``; the
final run must succeed and verify completely, with the bytes sent over all runs within 1.5x of the
catalog's unique bytes. Kills here land between chunks (``mid-blob``): a kill while a chunk's bytes
stream into distribution 2.8 costs the whole blob (``scripts/crash`` measures that case too).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from support.mirror_cli import ROOT
from support.registry import start_registry

sys.path.insert(0, str(ROOT / "scripts"))

from chaos import seed_catalog
from crash import RESUMABLE_POINTS, crash_run


@pytest.mark.parametrize("seed", [3])
def test_sigkill_at_random_points_then_complete(tmp_path: Path, seed: int) -> None:
    with start_registry(tmp_path / "src") as src, start_registry(tmp_path / "dst") as dst:
        catalog = seed_catalog(src, 4, 3, 24, layer_kib=64)
        env = dict(os.environ, MIRROR_CHUNK_THRESHOLD="8M")
        report = crash_run(tmp_path, src, dst, catalog, kills=5, seed=seed, extra=["--chunk-size=4M"], env=env,
                           timeout=60, points=RESUMABLE_POINTS, chunk=4 << 20)
    summary = "\n".join(report.lines())
    assert len(report.kills) == 5, summary
    assert report.tags_checked > 0, summary
    assert not report.dangling, summary + "\n" + "\n".join(report.dangling)
    assert not report.integrity_failures, summary + "\n" + "\n".join(report.integrity_failures)
    assert report.final_rc == 0, summary + "\n" + "\n".join(report.failed)
    assert report.verified == report.images and not report.failed and report.corrupt == 0, summary
    assert report.ratio <= 1.5, summary
