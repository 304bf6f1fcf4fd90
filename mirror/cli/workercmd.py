"""``mirror worker``: flags → a worker serving the PostgreSQL queue until SIGTERM."""

from __future__ import annotations

import argparse
import os

from mirror.cli.commands import global_options, side_options, signature_policy
from mirror.cli.logsetup import configure_logging
from mirror.cli.start import run_loop
from mirror.config.load import load_sync_config
from mirror.config.settings import yaml_credentials
from mirror.distributed.pgstate import PgState
from mirror.distributed.schema import check_url
from mirror.distributed.worker import WorkerSettings, run_worker
from mirror.errors import UsageError
from mirror.runtime import open_runtime


def worker(args: argparse.Namespace) -> int:
    url = args.queue or os.environ.get("MIRROR_QUEUE")
    if not url:
        raise UsageError("mirror worker needs --queue postgresql://... (or $MIRROR_QUEUE)")
    check_url(url)
    if args.jobs < 1 or args.blob_jobs < 1:
        raise UsageError("--jobs and --blob-jobs must be at least 1")
    if args.lease < 1:
        raise UsageError("--lease must be at least 1s")
    options = global_options(args)
    configure_logging(options.debug, getattr(args, "log_format", None))
    config = load_sync_config(args.credentials_from) if args.credentials_from else None
    settings = WorkerSettings(
        url=url, jobs=args.jobs, blob_jobs=args.blob_jobs, lease=float(args.lease),
        src_side=side_options(args, "src-", args.authfile), dst_side=side_options(args, "dest-", args.authfile),
        dest_tls_given=args.dest_tls_verify is not None, secrets=yaml_credentials(config),
        policy=signature_policy(args))

    async def main() -> None:
        state = PgState.connect(url)
        try:
            async with open_runtime(options, state=state) as rt:
                await run_worker(rt, state, settings)
        finally:
            state.close()

    run_loop(main)
    return 0
