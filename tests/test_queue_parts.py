"""The distributed mode's parts against a real PostgreSQL (the session's throw-away cluster): the
cross-worker blob gate, shared state, shared 429 cooldowns, and the command line's errors."""

from __future__ import annotations

import anyio
import psycopg
import pytest
from support.mirror_cli import assert_one_line_error, run_mirror
from support.registry import Registry, free_port

from mirror.core.digest import Digest
from mirror.distributed.app import build_app
from mirror.distributed.gate import open_gate
from mirror.distributed.pgstate import PgState, exchange_cooldowns
from mirror.distributed.schema import ensure_schema
from mirror.http.ratelimit import HostLimiter
from mirror.state import UploadRecord

D1 = Digest.parse("sha256:" + "1" * 64)
D2 = Digest.parse("sha256:" + "2" * 64)


async def _waiting_locks(url: str) -> int:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _until_waiting(url: str, n: int) -> None:
    """Poll pg_locks (a condition, under the caller's deadline) until ``n`` advisory locks wait."""
    for _ in range(10_000):
        if await _waiting_locks(url) == n:
            return
        await anyio.sleep(0.02)


@pytest.mark.anyio
async def test_gate_admits_one_uploader_per_registry_and_digest(queue_url: str) -> None:
    order: list[str] = []
    async with open_gate(queue_url, 2) as a, open_gate(queue_url, 2) as b:
        held = a.hold("reg.example:5000", D1)
        await held.__aenter__()

        async def other() -> None:
            async with b.hold("reg.example:5000", D1):
                order.append("b uploads")

        async with anyio.create_task_group() as tg:
            tg.start_soon(other)
            with anyio.fail_after(10):
                await _until_waiting(queue_url, 1)  # b is queued in PostgreSQL behind a
                async with b.hold("reg.example:5000", D2):  # another blob is not held up
                    order.append("b uploads another blob")
                async with b.hold("other.example", D1):  # nor the same blob for another registry
                    order.append("b uploads to another registry")
            order.append("a done")
            await held.__aexit__(None, None, None)
    assert order == ["b uploads another blob", "b uploads to another registry", "a done", "b uploads"]


async def _state(url: str) -> PgState:
    await ensure_schema(url, build_app(url).schema_manager.get_schema())
    return PgState.connect(url)


@pytest.mark.anyio
async def test_shared_state_keeps_sessions_and_locations_for_every_worker(queue_url: str) -> None:
    one, two = await _state(queue_url), await _state(queue_url)
    try:
        one.save_upload(UploadRecord("reg", "a/b", str(D1), "http://reg/v2/a/b/blobs/uploads/u1?_state=x", 8, 4))
        found = two.get_upload("reg", "a/b", str(D1))
        assert found is not None and (found.location, found.offset, found.chunk_size) == (
            "http://reg/v2/a/b/blobs/uploads/u1?_state=x", 8, 4)
        one.drop_upload("reg", "a/b", str(D1))
        assert two.get_upload("reg", "a/b", str(D1)) is None

        one.record_blob("reg", "a/b", str(D2))
        one.record_blob("reg", "c/d", str(D2))
        assert sorted(two.known_repos("reg", str(D2))) == ["a/b", "c/d"]
        assert two.verified_since("reg", "a/b", str(D2), 0.0)
        assert not two.verified_since("reg", "a/b", str(D2), 4102444800.0)  # not after 2100
        two.forget_blob("reg", "a/b", str(D2))
        assert one.known_repos("reg", str(D2)) == ["c/d"]

        assert two.index_choice(str(D1), "instance linux/amd64//") is None
        one.remember_index_choice(str(D1), "instance linux/amd64//", str(D2))
        one.remember_index_choice(str(D1), "instance linux/amd64//", str(D2))  # again: no conflict
        assert two.index_choice(str(D1), "instance linux/amd64//") == str(D2)
        assert two.index_choice(str(D1), "instance linux/arm64/v8/") is None
    finally:
        one.close()
        two.close()


class _Limiters:
    def __init__(self) -> None:
        self._by_host: dict[str, HostLimiter] = {}

    @property
    def limiters(self) -> dict[str, HostLimiter]:
        return dict(self._by_host)

    def limiter(self, host: str) -> HostLimiter:
        return self._by_host.setdefault(host, HostLimiter(host))


@pytest.mark.anyio
async def test_a_429_cooldown_is_shared_by_every_worker(queue_url: str) -> None:
    one, two = await _state(queue_url), await _state(queue_url)
    first, second = _Limiters(), _Limiters()
    try:
        first.limiter("reg.example").observe(429, {"Retry-After": "30"})
        exchange_cooldowns(one, first, {})
        assert second.limiter("reg.example").cooldown_remaining() == 0
        exchange_cooldowns(two, second, {})
        assert 25 < second.limiter("reg.example").cooldown_remaining() <= 30
        assert second.limiter("other.example").cooldown_remaining() == 0
    finally:
        one.close()
        two.close()


def test_queue_errors_are_one_line(tmp_path: object, registry: Registry) -> None:
    sync = ("sync", "--src", "docker", "--dest", "docker", "--src-tls-verify=false", "--dest-tls-verify=false",
            f"{registry.host}/lib/app", registry.host)
    assert_one_line_error(run_mirror(*sync, "--queue", "mysql://db/x", check=False), "postgresql://")
    closed = f"postgresql://mirror:hunter2@127.0.0.1:{free_port()}/x"
    line = assert_one_line_error(run_mirror(*sync, "--queue", closed, check=False), "queue", "127.0.0.1")
    assert "hunter2" not in line
    assert_one_line_error(run_mirror(*sync, "--dry-run", "--queue", closed, check=False), "--dry-run")
    assert_one_line_error(run_mirror("worker", check=False, env={"MIRROR_QUEUE": ""}), "--queue")
    line = assert_one_line_error(run_mirror("worker", "--queue", closed, check=False), "queue")
    assert "hunter2" not in line
