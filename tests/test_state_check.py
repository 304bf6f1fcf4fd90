"""When the state file is checked whole (``PRAGMA quick_check``): not on every open, which every
``mirror copy`` would pay (about 2 ms per MB of state), but when the last user did not close the
file cleanly (its WAL is left) or a process met damage in it (``<name>.check``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from mirror.state import StateError, StateStore

PAGE = 4096  # SQLite's default page size, which the state file uses


def _filled(path: Path) -> None:
    with StateStore.open(path) as state:
        for i in range(1500):
            state.record_blob("reg.example", f"repo{i % 7}", f"sha256:{i:064x}")
    assert not os.path.exists(f"{path}-wal")  # a clean close leaves no WAL: the next open is the fast one
    assert path.stat().st_size > 16 * PAGE


def _damage_after(path: Path, pages: int) -> None:
    """Overwrite every page after the first ``pages`` (header, schema and the small tables survive)."""
    data = bytearray(path.read_bytes())
    data[pages * PAGE:] = b"\xa5" * (len(data) - pages * PAGE)
    path.write_bytes(bytes(data))


def _resets(logs: list[dict[str, object]]) -> int:
    return sum(1 for event in logs if event["event"] == "state_reset")


def test_damage_in_a_cleanly_closed_file_is_reported_once_then_reset(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    _filled(path)
    _damage_after(path, 3)
    with capture_logs() as logs, StateStore.open(path) as state:  # header and schema are fine: no full check
        with pytest.raises(StateError) as failed:
            state.known_repos("reg.example", f"sha256:{5:064x}")
    assert _resets(logs) == 0
    message = str(failed.value)
    assert "\n" not in message and "malformed" in message and "on the next run" in message
    assert (tmp_path / "state.sqlite.check").exists()

    with capture_logs() as logs, StateStore.open(path) as state:  # the marker asks for the full check
        assert state.known_repos("reg.example", f"sha256:{5:064x}") == []
        state.record_blob("reg.example", "repo0", f"sha256:{5:064x}")
    assert _resets(logs) == 1 and not (tmp_path / "state.sqlite.check").exists()
    with StateStore.open(path, on_corrupt="error") as state:  # the fresh file is sound
        assert state.known_repos("reg.example", f"sha256:{5:064x}") == ["repo0"]


def test_a_wal_left_by_a_killed_process_makes_the_open_check_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    _filled(path)
    # Another process commits into the WAL and dies without closing (as a SIGKILL would leave it).
    script = ("import os, sqlite3, sys; conn = sqlite3.connect(sys.argv[1]); conn.execute('PRAGMA journal_mode=WAL'); "
              "conn.execute('INSERT INTO schema_version (version) VALUES (1)'); conn.commit(); os._exit(0)")
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, timeout=60)
    assert os.path.getsize(f"{path}-wal") > 0
    _damage_after(path, 3)
    with capture_logs() as logs, StateStore.open(path) as state:  # found at open, not by a later query
        assert _resets(logs) == 1
        assert state.known_repos("reg.example", f"sha256:{5:064x}") == []
