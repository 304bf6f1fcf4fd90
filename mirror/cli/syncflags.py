"""``mirror sync`` flags of the selection rules and of the long-running mode, and their checks.

Selection: ``--include-tag-regex`` / ``--exclude-tag-regex`` (``--src docker``; the YAML has its own
keys), ``--keep-latest N`` / ``--keep-latest-by`` / ``--newer-than`` (``--src docker`` and
``--src yaml``, where the YAML's keys refine them per registry and repository).

Long-running mode: ``--interval`` or ``--schedule``, and ``--listen`` (see ``mirror.cli.service``).
"""

from __future__ import annotations

import argparse

from mirror.cli.flags import duration
from mirror.errors import ConfigError, UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: mirror --help does not need it
if TYPE_CHECKING:
    from typing import Any

# mirror.config (its values, RE2) is imported by the functions that need it: ``mirror --help`` needs none.


def add_flags(group: argparse._ArgumentGroup) -> None:
    from mirror.config.retention import BY

    group.add_argument("--include-tag-regex", action="append", default=[], metavar="RE",
                       help="--src docker: copy only tags matching RE (RE2, searched; repeatable: any matches)")
    group.add_argument("--exclude-tag-regex", action="append", default=[], metavar="RE",
                       help="--src docker: leave out tags matching RE (repeatable)")
    group.add_argument("--keep-latest", type=_count, metavar="N",
                       help="copy only the N latest of the selected tags of each repository")
    group.add_argument("--keep-latest-by", choices=BY, metavar="semver|created",
                       help="order for --keep-latest: semantic version (default; other tags left out) or "
                            "the image's creation date")
    group.add_argument("--newer-than", type=_age, metavar="AGE",
                       help="copy only images created less than AGE ago (e.g. 90d, 12h, 2w)")
    group.add_argument("--interval", type=_interval, metavar="DURATION",
                       help="keep running: a sync every DURATION (e.g. 6h), never two at once")
    group.add_argument("--schedule", metavar="CRON",
                       help='keep running: a sync at each slot of a 5-field cron expression (e.g. "0 3 * * *", '
                            "local time)")
    group.add_argument("--listen", metavar="HOST:PORT",
                       help="with --interval/--schedule: serve /metrics and /healthz over HTTP on HOST:PORT")


def _count(text: str) -> int:
    from mirror.config.retention import MAX_KEEP

    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_KEEP:
        raise argparse.ArgumentTypeError(f"invalid count {text!r} (an integer from 1 to {MAX_KEEP})")
    return value


def _age(text: str) -> float:
    from mirror.config.retention import parse_age

    try:
        return parse_age(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.message.removeprefix("newer-than: ")) from None


def _interval(text: str) -> float:
    value = duration(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"invalid interval {text!r} (a positive duration, e.g. 6h)")
    return value


def scheduled(args: argparse.Namespace) -> bool:
    """Whether this is the long-running mode; checks the mode's flags."""
    if args.interval is not None and args.schedule is not None:
        raise UsageError("--interval and --schedule are mutually exclusive")
    if args.listen and args.interval is None and args.schedule is None:
        raise UsageError("--listen needs --interval or --schedule (it serves a long-running sync)")
    return args.interval is not None or args.schedule is not None


def selection(args: argparse.Namespace, explicit: bool) -> dict[str, Any]:
    """``SyncFlags`` fields for the selection flags, checked against the source kind."""
    from mirror.config.retention import Retention

    filters = bool(args.include_tag_regex or args.exclude_tag_regex)
    rules = args.keep_latest is not None or args.newer_than is not None
    if filters and args.src != "docker":
        raise UsageError("--include-tag-regex and --exclude-tag-regex apply to --src docker "
                         "(in a sync YAML: images-by-tag-regex, exclude-tags)")
    if rules and args.src not in ("docker", "yaml"):
        raise UsageError(f"--keep-latest and --newer-than apply to --src docker and --src yaml, not --src {args.src}")
    if (filters or rules) and explicit:
        raise UsageError("tag filters and --keep-latest/--newer-than need a repository, not one tag or digest")
    if args.keep_latest_by is not None and args.keep_latest is None:
        raise UsageError("--keep-latest-by needs --keep-latest")
    from mirror.config.filters import compile_regex  # RE2 and the YAML schema: not for --help

    for flag, patterns in (("--include-tag-regex", args.include_tag_regex),
                           ("--exclude-tag-regex", args.exclude_tag_regex)):
        for pattern in patterns:
            compile_regex(pattern, flag)
    return {"retention": Retention(args.keep_latest, args.keep_latest_by, args.newer_than),
            "include_regex": tuple(args.include_tag_regex), "exclude_regex": tuple(args.exclude_tag_regex)}
