"""The procrastinate app both sides share: one task, ``mirror.sync_unit``, on the ``mirror`` queue."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import procrastinate
from psycopg_pool import AsyncConnectionPool

from mirror.distributed.schema import check_url, ensure_schema

TASK = "mirror.sync_unit"
QUEUE = "mirror"
#: Retries procrastinate may make of a unit that asked for one; mirror's own budget
#: (``RunOptions.max_attempts``) decides first, so this only caps it.
MAX_TASK_ATTEMPTS = 50


def build_app(url: str) -> procrastinate.App:
    return procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=check_url(url)))


@asynccontextmanager
async def open_queue(url: str, pool_size: int = 4) -> AsyncIterator[tuple[procrastinate.App, AsyncConnectionPool]]:
    """The app (schema created if missing) and a pool for mirror's own tables."""
    app = build_app(url)
    await ensure_schema(url, app.schema_manager.get_schema())
    async with app.open_async(), AsyncConnectionPool(url, min_size=1, max_size=pool_size,
                                                     kwargs={"autocommit": True}, open=False) as pool:
        yield app, pool
