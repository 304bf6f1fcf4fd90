"""One size syntax (binary units) for ``--chunk-size``, ``MIRROR_CHUNK_SIZE``/``MIRROR_CHUNK_THRESHOLD``
and the sync YAML's ``chunk-size``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from support.mirror_cli import assert_one_line_error, run_mirror

from mirror.cli.main import build_parser
from mirror.config.load import parse_sync_config
from mirror.errors import ConfigError, UsageError
from mirror.transports.registry.uploadopts import resume_settings

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

SPELLINGS = [
    ("65536", 65536), ("4096B", 4096), ("64k", 64 * KiB), ("64K", 64 * KiB), ("64kb", 64 * KiB), ("64KiB", 64 * KiB),
    ("16M", 16 * MiB), ("16m", 16 * MiB), ("16MB", 16 * MiB), ("16mb", 16 * MiB), ("16MiB", 16 * MiB),
    ("16 MiB", 16 * MiB), ("1.5MiB", 3 * MiB // 2), ("1G", GiB), ("1GB", GiB), ("1gib", GiB),
]
GARBAGE = ["lots", "16 parsecs", "MiB", "16MiBs", "1e6", "-4", "16Mi B", "1.2.3k", "16TB"]


def _cli(text: str) -> int:
    args = build_parser().parse_args(["copy", f"--chunk-size={text}", "dir:/a", "dir:/b"])
    return int(args.chunk_size)


def _env_chunk(text: str) -> int:
    return resume_settings({"HOME": "/h", "MIRROR_CHUNK_SIZE": text}).uploads.chunk_size


def _env_threshold(text: str) -> int:
    return resume_settings({"HOME": "/h", "MIRROR_CHUNK_THRESHOLD": text}).uploads.threshold


def _yaml(text: str) -> int:
    size = parse_sync_config(f"q.io:\n  chunk-size: {text}\n", "sync.yaml").registries[0].chunk_size
    assert size is not None
    return size


READERS: dict[str, Callable[[str], int]] = {
    "cli": _cli, "env-chunk": _env_chunk, "env-threshold": _env_threshold, "yaml": _yaml}


@pytest.mark.parametrize(("text", "expected"), SPELLINGS)
def test_every_reader_agrees(text: str, expected: int) -> None:
    """``16M`` (any case, with or without B/iB) is 16 MiB on the CLI, in the environment and in YAML."""
    assert {name: read(text) for name, read in READERS.items()} == {name: expected for name in READERS}


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("text", GARBAGE)
def test_garbage_is_one_line_naming_the_setting(reader: str, text: str) -> None:
    setting = {"cli": "--chunk-size", "env-chunk": "MIRROR_CHUNK_SIZE", "env-threshold": "MIRROR_CHUNK_THRESHOLD",
               "yaml": "q.io.chunk-size"}[reader]
    with pytest.raises(UsageError) as caught:
        READERS[reader](text)
    message = str(caught.value)
    assert setting in message and "invalid size" in message and "\n" not in message, message


def test_chunk_size_range_is_the_same_everywhere() -> None:
    for reader in (_cli, _env_chunk, _yaml):
        assert reader("1K") == KiB and reader("1G") == GiB
        for outside in ("1023", "1025M"):
            with pytest.raises(UsageError, match="out of range"):
                reader(outside)


def test_yaml_int_and_float_forms() -> None:
    assert _yaml("1_048_576") == MiB and _yaml("65536.0") == 65536 and _yaml("'64k'") == 64 * KiB
    with pytest.raises(ConfigError, match=r"q\.io\.chunk-size: invalid size .* \(line 2\)"):
        _yaml("64 kilo")


def test_cli_bad_size_is_one_line_error(tmp_path: Path) -> None:
    proc = run_mirror("copy", "--chunk-size", "16 parsecs", f"dir:{tmp_path}/a", f"dir:{tmp_path}/b", check=False)
    assert_one_line_error(proc, "--chunk-size", "invalid size")


def test_env_bad_size_is_one_line_error(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MIRROR_CHUNK_SIZE": "16 parsecs"}
    proc = run_mirror("copy", f"dir:{tmp_path}/a", f"dir:{tmp_path}/b", env=env, check=False)
    assert_one_line_error(proc, "MIRROR_CHUNK_SIZE", "invalid size")
