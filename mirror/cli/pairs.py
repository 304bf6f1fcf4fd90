"""``mirror copy --pairs FILE|-``: a shell loop of ``skopeo copy``s as one process.

The file holds one ``SOURCE-IMAGE DESTINATION-IMAGE`` pair a line (shell-style words: quote a name
holding spaces; blank lines and ``#`` comments are ignored). It is read and checked whole before
anything is copied: a malformed line is a one-line error naming its line number. Every ``copy``
flag applies to every pair. Output: one line per pair as it ends, ``ok SOURCE DESTINATION`` on
stdout (not with ``--quiet``) or ``failed SOURCE DESTINATION: REASON`` on stderr; ``--report FILE``
gets one JSON record per pair (sync's fields, plus ``line`` and ``exit_status``, skopeo's exit code
for that copy: 0, 2 image missing, 1 other); ``--digestfile FILE`` one ``DIGEST DESTINATION`` line
per pair copied, as sync's. Exit status: 0 when every pair was copied (or was up to date), 3 when
some failed and others did not (as ``sync --keep-going``), and when all failed their common status
(2: every source image was missing) or else 1.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import IO

from mirror.cli.commands import copy_setup, run
from mirror.cli.synccmd import EXIT_PARTIAL, record_json
from mirror.errors import MirrorError, UsageError
from mirror.ops import copy as copy_ops
from mirror.ops.pairs import CopyPair, PairResult, PairsRun
from mirror.ops.pairs import copy_pairs as run_pairs
from mirror.transports.local import files

DEFAULT_JOBS = 8


def read_pairs(path: str) -> list[CopyPair]:
    """Every pair of ``path`` (``-``: stdin), checked; UsageError naming the first bad line."""
    where = "stdin" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--pairs {where}: {getattr(exc, 'strerror', None) or exc}") from None
    pairs: list[CopyPair] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise UsageError(f"--pairs {where}: line {number}: {exc}") from None
        if not words:
            continue
        if len(words) != 2:
            raise UsageError(f"--pairs {where}: line {number}: expected 'SOURCE-IMAGE DESTINATION-IMAGE', "
                             f"got {len(words)} word{'s' if len(words) != 1 else ''}")
        try:
            src, dst = copy_ops.parse_name(words[0]), copy_ops.parse_name(words[1])
        except MirrorError as exc:
            raise UsageError(f"--pairs {where}: line {number}: {exc}") from None
        if str(dst) in seen:
            raise UsageError(f"--pairs {where}: line {number}: destination {words[1]} already on line {seen[str(dst)]}")
        seen[str(dst)] = number
        pairs.append(CopyPair(number, words[0], words[1], src, dst))
    if not pairs:
        raise UsageError(f"--pairs {where}: no 'SOURCE-IMAGE DESTINATION-IMAGE' lines")
    return pairs


def _check(args: argparse.Namespace, pairs: list[CopyPair]) -> None:
    if args.source is not None:
        raise UsageError("--pairs reads the images from its file: no SOURCE-IMAGE or DESTINATION-IMAGE arguments")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if args.sign_identity:
        raise UsageError("--sign-identity names one image: it cannot be used with --pairs")
    if args.additional_tag:
        bad = next((p for p in pairs if p.dst.transport != "docker-archive"), None)
        if bad is not None:
            raise UsageError(f"--additional-tag is only supported for docker-archive destinations (line {bad.line})")


def exit_status(results: list[PairResult]) -> int:
    failed = {r.status for r in results if r.status}
    if not failed:
        return 0
    if len([r for r in results if r.status]) < len(results):
        return EXIT_PARTIAL
    return failed.pop() if len(failed) == 1 else 1


def copy_pairs(args: argparse.Namespace) -> int:
    pairs = read_pairs(args.pairs)
    _check(args, pairs)
    setup = copy_setup(args)
    by_transport = {t: setup.options(t) for t in sorted({p.dst.transport for p in pairs})}
    jobs = args.jobs or DEFAULT_JOBS
    plan = PairsRun(setup.src_side, setup.dst_side, lambda name: by_transport[name.transport], jobs=jobs,
                    blob_jobs=max(args.image_parallel_copies, 2 * jobs), policy=setup.policy,
                    referrers=setup.referrers)
    results: list[PairResult] = []
    with ExitStack() as stack:
        report = stack.enter_context(open(args.report, "w", encoding="utf-8")) if args.report else None
        digests = stack.enter_context(files.atomic_file_sync(Path(args.digestfile))) if args.digestfile else None

        def done(result: PairResult) -> None:
            results.append(result)
            _output(result, report, digests, bool(args.quiet))

        run(args, lambda rt: run_pairs(rt, plan, pairs, done))
    if not args.quiet:
        copied = sum(1 for r in results if r.record.outcome == "copied")
        skipped = sum(1 for r in results if r.record.outcome == "skipped")
        print(f"{len(results)} pairs: {copied} copied, {skipped} up to date, "
              f"{len(results) - copied - skipped} failed", file=sys.stderr)
    return exit_status(results)


def _output(result: PairResult, report: IO[str] | None, digests: IO[bytes] | None, quiet: bool) -> None:
    pair, record = result.pair, result.record
    if result.status:
        print(f"failed {pair.source} {pair.destination}: {record.reason}", file=sys.stderr, flush=True)
    elif not quiet:
        print(f"ok {pair.source} {pair.destination}", flush=True)
    if report is not None:
        report.write(json.dumps({"line": pair.line, **record_json(record), "exit_status": result.status}) + "\n")
        report.flush()
    if digests is not None and not result.status and record.digest:
        digests.write(f"{record.digest} {record.destination}\n".encode())
