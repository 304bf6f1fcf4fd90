"""``sync``'s lines in skopeo's words and shape, which scripts grep for.

skopeo logs through logrus to stderr: ``time="…" level=info msg="Would have copied image ref 1/2"
from="docker://…" to="docker://…"`` for each image of a ``--dry-run`` (after ``level=warning
msg="Running in dry-run mode"``), then ``Would have synced N images from M sources`` (without
``--dry-run``: ``Synced N images from M sources``). N counts the images, M the source repositories
that had any (skopeo counts a repository once per YAML key naming it; mirror copies it once, so counts
it once).

mirror's dry run compares with the destination where skopeo's lists every image, so an image already
there reads ``Would have skipped image ref 1/2 (up to date)``; it still counts in N, as a real run
would leave it synced. A dry run's lines, the warning first, are printed when the comparison ends
(after the progress display), grouped by source repository and sorted, so the listing is the same
whatever order the parallel comparisons finished in; a run that fails before any image prints none.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator

from msgspec import Struct, field

from mirror.engine.sync import ImageRecord

_PLAIN = re.compile(r"^[A-Za-z0-9\-._/@^+]+$")  # what logrus prints without quotes
_LOCAL = ("dir:", "oci:")


def logrus(level: str, msg: str, **fields: str) -> str:
    """One line in logrus's text format (fields after ``msg``, sorted by key, as logrus sorts them)."""
    now = dt.datetime.now().astimezone()
    stamp = now.isoformat(timespec="seconds").replace("+00:00", "Z")
    parts = [f"time={_quote(stamp)}", f"level={level}", f"msg={_quote(msg)}"]
    parts += [f"{key}={_quote(value)}" for key, value in sorted(fields.items())]
    return " ".join(parts)


def _quote(value: str) -> str:
    return value if _PLAIN.match(value) else json.dumps(value, ensure_ascii=False)


def image_name(name: str) -> str:
    """A record's name as skopeo prints it: ``docker://host/repo:tag``, or ``dir:…`` / ``oci:…``."""
    return name if name.startswith(_LOCAL) else f"docker://{name}"


def source_repository(name: str) -> str:
    """What skopeo counts as one source: the repository of a registry image; a local sync source is one."""
    if name.startswith(_LOCAL):
        return "local"
    repo = name.split("@", 1)[0]
    slash = repo.rfind("/")
    colon = repo.rfind(":")
    return repo[:colon] if colon > slash else repo


class SyncLog(Struct):
    """The run's images by source repository (counted always; kept only for a dry run's listing)."""

    dry_run: bool
    images: int = 0
    sources: set[str] = field(default_factory=set)
    listing: dict[str, list[tuple[str, str, str, str]]] = field(default_factory=dict)

    def add(self, record: ImageRecord) -> None:
        repo = source_repository(record.source)
        if record.outcome != "failed":
            self.images += 1
            self.sources.add(repo)
        if self.dry_run:
            item = (image_name(record.source), image_name(record.destination), record.outcome, record.reason)
            self.listing.setdefault(repo, []).append(item)

    def lines(self) -> Iterator[str]:
        """A dry run's lines, then the closing count (a real run: the count only)."""
        if self.dry_run:
            yield logrus("warning", "Running in dry-run mode")
        for repo in sorted(self.listing):
            items = sorted(self.listing[repo])
            for i, (src, dst, outcome, reason) in enumerate(items, 1):
                if outcome == "failed":
                    yield logrus("error", f"Error copying ref {json.dumps(src)}", error=reason)
                elif outcome == "skipped":
                    yield logrus("info", f"Would have skipped image ref {i}/{len(items)} (up to date)", **{
                        "from": src, "to": dst})
                else:
                    yield logrus("info", f"Would have copied image ref {i}/{len(items)}", **{"from": src, "to": dst})
        verb = "Would have synced" if self.dry_run else "Synced"
        yield logrus("info", f"{verb} {self.images} images from {len(self.sources)} sources")
