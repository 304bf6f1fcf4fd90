"""Byte sizes as people write them: the one parser behind ``--chunk-size``, ``MIRROR_CHUNK_SIZE``,
``MIRROR_CHUNK_THRESHOLD`` and the sync YAML's ``chunk-size``.

Units are binary and case-insensitive everywhere: a plain number (or ``B``) is bytes,
``K``/``KB``/``KiB`` are 1024, ``M``/``MB``/``MiB`` 1024², ``G``/``GB``/``GiB`` 1024³. So ``16M``,
``16MB`` and ``16MiB`` are all 16,777,216 bytes. A decimal fraction is allowed before a unit
(``1.5MiB``) and rounded down to whole bytes.
"""

from __future__ import annotations

import re
from decimal import Decimal

from mirror.errors import ConfigError

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
CHUNK_SIZE_MIN = KiB
CHUNK_SIZE_MAX = GiB

_SIZE_RE = re.compile(r"\s*([0-9]{1,30}(?:\.[0-9]{1,30})?)\s*([a-z]{0,3})\s*", re.IGNORECASE)
_UNITS = {
    "": 1, "b": 1,
    "k": KiB, "kb": KiB, "ki": KiB, "kib": KiB,
    "m": MiB, "mb": MiB, "mi": MiB, "mib": MiB,
    "g": GiB, "gb": GiB, "gi": GiB, "gib": GiB,
}
EXPECTED = "expected bytes or a number with K, M or G, binary: 16M = 16MiB = 16777216"


class SizeError(ConfigError):
    """A size that does not parse or is out of range; the message names the setting.

    ``problem`` is the message without the setting, for callers that name it themselves (the YAML
    loader prefixes the file, the key path and the line).
    """

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


def format_size(size: int) -> str:
    """``16777216`` -> ``16MiB``; sizes that are not whole KiB/MiB/GiB stay in bytes."""
    for unit, name in ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit}{name}"
    return f"{size} bytes"


def parse_size(value: int | str, setting: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    """Bytes from ``value`` (an int, or text like ``16M``, ``512 KiB``, ``1.5GB``), checked against
    ``minimum``..``maximum`` (inclusive); :class:`SizeError` naming ``setting`` otherwise."""
    size = _bytes(value, setting)
    if size < minimum or (maximum is not None and size > maximum):
        shown = f"{size} bytes" if size < 1 << 64 else "the size"
        limits = f"{format_size(minimum)} to {format_size(maximum)}" if maximum is not None \
            else f"at least {format_size(minimum)}"
        raise SizeError(setting, f"{shown} is out of range ({limits})")
    return size


def _bytes(value: int | str, setting: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise SizeError(setting, f"invalid size {value!r} ({EXPECTED})")
    if isinstance(value, int):
        if value < 0:
            raise SizeError(setting, f"invalid size {value}: negative")
        return value
    found = _SIZE_RE.fullmatch(value)
    unit = _UNITS.get(found.group(2).lower()) if found else None
    if found is None or unit is None:
        raise SizeError(setting, f"invalid size {value[:40]!r} ({EXPECTED})")
    return int(Decimal(found.group(1)) * unit)
