"""The PostgreSQL schema: procrastinate's tables and functions, and mirror's own tables.

``ensure_schema`` creates whatever is missing, under an advisory lock, so a coordinator and any
number of workers may start at once against an empty database. Progress is plain SQL over
``mirror_runs`` and ``mirror_units`` (README "Running on many machines"); ``mirror_progress`` is a
view of it per run.
"""

from __future__ import annotations

from typing import Any

import psycopg

from mirror.errors import ConfigError

SCHEMA_VERSION = 1
_LOCK = 0x6D6972726F72  # "mirror": serialises schema creation between processes

MIRROR_SCHEMA = """
CREATE TABLE IF NOT EXISTS mirror_schema (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS mirror_uploads (
    registry text NOT NULL, repo text NOT NULL, digest text NOT NULL,
    location text NOT NULL, "offset" bigint NOT NULL, chunk_size bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (registry, repo, digest));
CREATE TABLE IF NOT EXISTS mirror_blob_locations (
    registry text NOT NULL, digest text NOT NULL, repo text NOT NULL,
    verified_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (registry, digest, repo));
CREATE TABLE IF NOT EXISTS mirror_index_choices (
    digest text NOT NULL, selector text NOT NULL, chosen text NOT NULL,
    PRIMARY KEY (digest, selector));
CREATE TABLE IF NOT EXISTS mirror_cooldowns (
    host text PRIMARY KEY, until timestamptz NOT NULL);
CREATE TABLE IF NOT EXISTS mirror_runs (
    id text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    state text NOT NULL DEFAULT 'planning',  -- planning | running | done | failed
    planned integer NOT NULL DEFAULT 0,
    options jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS mirror_units (
    run_id text NOT NULL REFERENCES mirror_runs (id) ON DELETE CASCADE,
    seq integer NOT NULL,
    unit jsonb NOT NULL,
    source text NOT NULL,
    destination text NOT NULL,
    status text NOT NULL DEFAULT 'queued',   -- queued | running | done | failed
    attempts integer NOT NULL DEFAULT 0,
    worker text,
    outcome text,                            -- copied | skipped | failed
    reason text,
    digest text,
    record jsonb,
    reported boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq));
CREATE INDEX IF NOT EXISTS mirror_units_unreported ON mirror_units (run_id)
    WHERE status IN ('done', 'failed') AND NOT reported;
CREATE OR REPLACE VIEW mirror_progress AS
SELECT r.id AS run_id, r.state, r.created_at, r.finished_at, r.planned,
       count(u.seq) FILTER (WHERE u.status = 'done') AS done,
       count(u.seq) FILTER (WHERE u.status = 'failed') AS failed,
       count(u.seq) FILTER (WHERE u.status = 'running') AS running,
       count(u.seq) FILTER (WHERE u.status = 'queued') AS queued,
       coalesce(sum((u.record ->> 'bytes')::bigint), 0) AS bytes_sent
  FROM mirror_runs r LEFT JOIN mirror_units u ON u.run_id = r.id
 GROUP BY r.id;
"""


def check_url(url: str) -> str:
    """A ``postgresql://`` or ``postgres://`` URL (libpq's URI form), else a one-line error."""
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"--queue: expected a postgresql:// URL, got {redact(url)!r}")
    return url


def redact(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    userinfo, _, host = rest.partition("@")
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}" if ":" in userinfo else url


def queue_error(url: str, exc: BaseException) -> ConfigError:
    """psycopg's (often multi-line) message as one line, without the password."""
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return ConfigError(f"queue {redact(url)}: {first}")


async def ensure_schema(url: str, procrastinate_schema: str) -> None:
    """Create procrastinate's schema (if its jobs table is missing) and mirror's tables."""
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK,))
            try:
                row = await _one(conn, "SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
                if not row[0]:
                    async with conn.transaction():
                        await conn.execute(procrastinate_schema.encode())
                async with conn.transaction():
                    await conn.execute(MIRROR_SCHEMA.encode())
                    version = await _one(conn, "SELECT max(version) FROM mirror_schema")
                    if version[0] is None:
                        await conn.execute("INSERT INTO mirror_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
                    elif int(version[0]) > SCHEMA_VERSION:
                        raise ConfigError(f"queue {redact(url)} has mirror schema {version[0]}, newer than this "
                                          f"mirror understands ({SCHEMA_VERSION})")
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK,))
    except psycopg.Error as exc:
        raise queue_error(url, exc) from None


async def _one(conn: psycopg.AsyncConnection[Any], sql: str) -> tuple[Any, ...]:
    cur = await conn.execute(sql)
    row = await cur.fetchone()
    assert row is not None
    return tuple(row)
