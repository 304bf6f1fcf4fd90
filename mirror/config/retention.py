"""Retention rules: ``keep-latest`` and ``newer-than``, from the sync YAML and the command line.

A rule narrows the tags the other keys selected (``images``, regexes, semver ranges, excludes):

* ``newer-than AGE``: only images whose config ``created`` lies less than AGE before the run;
* ``keep-latest N``: then only the N latest of what is left, by semantic version (``by: semver``,
  the default: tags that are not versions are left out) or by the config's ``created``
  (``by: created``).

Tags listed by name and digests are always kept; ``sha256-<hex>[.sig|.att|.sbom]`` tags are never
ranked (they follow their images with ``digest-tags``). A rule is set at three levels, each field
refining the one before: the command line, the registry's YAML entry, the repository's entry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from msgspec import Struct

from mirror.errors import ConfigError

BY = ("semver", "created")
MAX_KEEP = 1_000_000
_AGE_PART = re.compile(r"(\d+(?:\.\d+)?)(s|m|h|d|w)")
_AGE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


class Retention(Struct, frozen=True):
    """A retention rule; ``None`` fields are unset (the level below decides)."""

    keep_latest: int | None = None
    by: str | None = None            # "semver" | "created"; None: semver
    newer_than: float | None = None  # seconds

    @property
    def active(self) -> bool:
        return self.keep_latest is not None or self.newer_than is not None

    @property
    def order(self) -> str:
        return self.by or "semver"

    @property
    def needs_created(self) -> bool:
        """Whether applying the rule reads images' ``created`` (a manifest and config fetch per new digest)."""
        return self.newer_than is not None or (self.keep_latest is not None and self.order == "created")

    def refined(self, other: Retention | None) -> Retention:
        """This rule with ``other``'s set fields taking precedence."""
        if other is None:
            return self
        return Retention(
            keep_latest=self.keep_latest if other.keep_latest is None else other.keep_latest,
            by=self.by if other.by is None else other.by,
            newer_than=self.newer_than if other.newer_than is None else other.newer_than,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"keep_latest": self.keep_latest, "by": self.by, "newer_than": self.newer_than}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Retention:
        if not data:
            return cls()
        try:
            return checked(cls(**data))
        except TypeError as exc:
            raise ConfigError(f"invalid retention rule: {exc}") from None


def checked(rule: Retention, where: str = "retention") -> Retention:
    """``rule`` when its values make sense; a one-line ConfigError otherwise."""
    if rule.keep_latest is not None and not (isinstance(rule.keep_latest, int) and 1 <= rule.keep_latest <= MAX_KEEP):
        raise ConfigError(f"{where}: keep-latest must be an integer from 1 to {MAX_KEEP}")
    if rule.by is not None and rule.by not in BY:
        raise ConfigError(f"{where}: keep-latest by must be one of {', '.join(BY)}, got {str(rule.by)[:40]!r}")
    if rule.newer_than is not None and not rule.newer_than > 0:
        raise ConfigError(f"{where}: newer-than must be a positive age")
    return rule


def parse_age(text: str, where: str = "newer-than") -> float:
    """An age like ``90d``, ``12h``, ``2w``, ``1d12h``, ``30m`` or ``45s`` (weeks, days, hours,
    minutes, seconds; parts add up), in seconds."""
    value = text.strip()
    pos, total = 0, 0.0
    for match in _AGE_PART.finditer(value):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _AGE_UNITS[match.group(2)]
        pos = match.end()
    if not value or pos != len(value) or total <= 0:
        raise ConfigError(f"{where}: invalid age {text[:40]!r} (expected e.g. 90d, 12h, 2w, 1d12h)")
    return total
