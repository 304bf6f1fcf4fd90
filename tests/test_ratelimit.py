"""Per-registry limits (``mirror.http.ratelimit``): token bucket, connection cap, shared 429 cooldown.

The bucket and cooldown arithmetic is checked with an injected clock and sleep (no real waiting).
Everything else runs ``HttpClient`` endpoints in-process against a real registry, and measures what
the *server side* saw: arrival times from the registry's own JSON log (nanosecond timestamps), or
times recorded by :class:`RegistryProxy` fault actions (same process, same monotonic clock).
"""

from __future__ import annotations

import asyncio
import calendar
import email.utils
import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import aiohttp
import anyio
import pytest
from aiohttp import web
from support.images import OCI_MANIFEST, PushedImage, SeededImages, get_blob, push_image
from support.proxy import Fault, LoggedRequest, RegistryProxy, RequestInfo
from support.registry import Registry, wait_until
from yarl import URL

from mirror.errors import ConfigError, RateLimited
from mirror.http.client import Endpoint, HttpClient
from mirror.http.credentials import Credential
from mirror.http.ratelimit import RATE_LIMITED_RETRIES, HostLimiter, HostPolicy
from mirror.http.retry import RetryPolicy
from mirror.http.sender import AiohttpSender
from mirror.http.tls import TLSOptions

PLAIN = TLSOptions(verify=False)
ACCEPT = {"Accept": OCI_MANIFEST}


# ------------------------------------------------------------------------------------- helpers
class FakeTime:
    """An injectable clock: ``sleep`` moves time forward instead of waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        target = self.now + seconds
        await anyio.lowlevel.checkpoint()
        self.now = max(self.now, target)


def fake_limiter(policy: HostPolicy | None = None) -> tuple[HostLimiter, FakeTime]:
    fake = FakeTime()
    return HostLimiter("registry.test", policy, clock=fake.clock, sleep=fake.sleep), fake


@asynccontextmanager
async def http_client(policies: Mapping[str, HostPolicy] | None = None, *, user_agent: str = "mirror-tests",
                      retry: RetryPolicy | None = None) -> AsyncIterator[HttpClient]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100), auto_decompress=False) as session:
        yield HttpClient(AiohttpSender(session), policies=policies, user_agent=user_agent, retry=retry)


def endpoint(http: HttpClient, host: str) -> Endpoint:
    return http.endpoint(host, Credential(), PLAIN)


async def download(ep: Endpoint, repo: str, digest: str) -> bytes:
    async with ep.stream("GET", f"/v2/{repo}/blobs/{digest}") as resp:
        body = await resp.read()
    assert "sha256:" + hashlib.sha256(body).hexdigest() == digest
    return body


def peak_overlap(intervals: list[tuple[float, float]]) -> int:
    """The largest number of half-open intervals ``[start, end)`` covering one instant."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    current = peak = 0
    for _, step in events:  # at equal times ends (-1) sort before starts
        current += step
        peak = max(peak, current)
    return peak


def max_in_window(times: list[float], window: float) -> int:
    ordered = sorted(times)
    return max(sum(1 for t in ordered if start <= t < start + window) for start in ordered)


_LOG_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z$")
_GO_DURATION = re.compile(r"([0-9.]+)(ns|µs|us|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def registry_arrivals(reg: Registry, user_agent: str) -> list[tuple[float, str, str]]:
    """(arrival time, method, uri) of each request with this User-Agent, from the registry's JSON log.

    The log's ``time`` is when the response completed; minus ``http.response.duration`` it is when
    the request arrived (wall clock, nanosecond resolution).
    """
    out: list[tuple[float, str, str]] = []
    for line in reg.log_text().splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("http.request.useragent") != user_agent or "http.response.duration" not in entry:
            continue
        stamp = _LOG_TIME.match(entry["time"])
        assert stamp is not None, entry["time"]
        done = calendar.timegm(time.strptime(stamp.group(1), "%Y-%m-%dT%H:%M:%S")) + float(
            "0." + (stamp.group(2) or "0"))
        took = sum(float(n) * _UNITS[u] for n, u in _GO_DURATION.findall(entry["http.response.duration"]))
        out.append((done - took, entry["http.request.method"], entry["http.request.uri"]))
    return sorted(out)


def wait_for_arrivals(reg: Registry, user_agent: str, count: int) -> list[tuple[float, str, str]]:
    """The registry writes its log line after answering: poll (with a deadline) until all are there."""
    wait_until(lambda: len(registry_arrivals(reg, user_agent)) >= count, 10, "registry log lines")
    return registry_arrivals(reg, user_agent)


def proxy_log(proxy: RegistryProxy, kind: str, count: int) -> list[LoggedRequest]:
    """The proxy's log of ``kind`` requests once it holds ``count``: it logs a request only after its
    handler returns, which can be a moment after the client has read the whole response."""
    wait_until(lambda: sum(1 for r in proxy.requests if r.kind == kind) >= count, 10, f"{count} {kind} requests")
    return [r for r in proxy.requests if r.kind == kind]


@pytest.fixture
def many_layers(registry: Registry) -> PushedImage:
    """An image with 20 small, distinct layers on the per-test registry."""
    return push_image(registry, "many/layers", "v1", layer_count=20, layer_size=4096, seed=77)


class Recorder:
    """A fault action that notes each request's arrival on the proxy and lets it through."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.arrivals: list[tuple[float, str, str]] = []

    async def __call__(self, _request: web.Request, info: RequestInfo) -> None:
        with self._lock:
            self.arrivals.append((time.monotonic(), info.method, info.path))


class TooManyRequests:
    """A fault action answering 429 with a ``Retry-After`` made when it answers; notes the times."""

    def __init__(self, retry_after: str) -> None:
        self.retry_after = retry_after
        self.sent: list[float] = []

    async def __call__(self, _request: web.Request, _info: RequestInfo) -> web.StreamResponse:
        value = self.retry_after
        if value == "http-date":  # whole seconds: 3 s ahead is a cooldown of more than 2 s
            value = email.utils.formatdate(time.time() + 3, usegmt=True)
        self.sent.append(time.monotonic())
        body = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}'
        return web.Response(status=429, body=body, headers={"Retry-After": value},
                            content_type="application/json")


class SlowBlobBodies:
    """A fault action serving blob GETs from the registry with the body half sent, then a pause.

    ``held`` gets ``[arrival, just before the last byte]`` of each: during it the client has not
    read the whole body, so a limiter that holds the slot until release must count it in flight.
    """

    def __init__(self, upstream: Registry, pause: float = 0.2) -> None:
        self.upstream = upstream
        self.pause = pause
        self.held: list[tuple[float, float]] = []

    async def __call__(self, request: web.Request, _info: RequestInfo) -> web.StreamResponse:
        arrived = time.monotonic()
        async with aiohttp.ClientSession() as session, \
                session.get(self.upstream.url + request.raw_path, allow_redirects=False) as up:
            body = await up.read()
            if up.status != 200:
                return web.Response(status=up.status, body=body)
            headers = {k: up.headers[k] for k in ("Content-Type", "Docker-Content-Digest") if k in up.headers}
        resp = web.StreamResponse(status=200, headers=headers)
        resp.content_length = len(body)
        await resp.prepare(request)
        await resp.write(body[: len(body) // 2])
        await asyncio.sleep(self.pause)  # a slow registry (fault injection), not synchronisation
        self.held.append((arrived, time.monotonic()))
        await resp.write(body[len(body) // 2 :])
        await resp.write_eof()
        return resp


# ------------------------------------------------------------------ token bucket and cooldown
def test_policy_defaults_and_validation() -> None:
    assert HostPolicy(requests_per_second=2.5).bucket_size == 3
    assert HostPolicy(requests_per_second=0.5).bucket_size == 1
    assert HostPolicy(requests_per_second=20, burst=1).bucket_size == 1
    for bad in ({"requests_per_second": 0}, {"requests_per_second": float("nan")}, {"burst": 0},
                {"max_connections": 0}):
        with pytest.raises(ConfigError):
            HostPolicy(**bad)


@pytest.mark.anyio
async def test_bucket_lets_a_burst_through_then_the_steady_rate() -> None:
    limiter, fake = fake_limiter(HostPolicy(requests_per_second=10, burst=3))
    sent = []
    for _ in range(8):
        (await limiter.admit()).release()
        sent.append(fake.now)
    assert sent == pytest.approx([0, 0, 0, 0.1, 0.2, 0.3, 0.4, 0.5])
    fake.now += 60  # idle: the bucket refills, but to ``burst`` only
    start = fake.now
    for _ in range(5):
        (await limiter.admit()).release()
    assert fake.now - start == pytest.approx(0.2)
    assert limiter.requests == 13
    assert limiter.throttled_waits == 5 + 2
    assert limiter.total_wait_seconds == pytest.approx(0.1 * 7)  # each waiter waited one interval


@pytest.mark.anyio
async def test_waiters_are_served_in_arrival_order() -> None:
    limiter, fake = fake_limiter(HostPolicy(requests_per_second=4, burst=1))
    served: list[tuple[int, float]] = []

    async def worker(i: int) -> None:
        async with limiter.acquire():
            served.append((i, fake.now))

    async with anyio.create_task_group() as tg:
        for i in range(6):
            tg.start_soon(worker, i)
    assert [i for i, _ in served] == list(range(6))
    assert [t for _, t in served] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0, 1.25])


@pytest.mark.anyio
@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_429_blocks_every_later_request(form: str) -> None:
    limiter, fake = fake_limiter()
    permit = await limiter.admit()
    value = "30" if form == "seconds" else email.utils.formatdate(time.time() + 30, usegmt=True)
    permit.observe(429, {"Retry-After": value})
    permit.release()
    assert limiter.rate_limited_responses == 1
    assert 29 <= limiter.blocked_until <= 30  # an HTTP-date has whole seconds
    times: list[float] = []

    async def worker() -> None:
        async with limiter.acquire():
            times.append(fake.now)

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(worker)
    assert len(times) == 3 and min(times) >= limiter.blocked_until
    assert limiter.throttled_waits == 3


@pytest.mark.anyio
async def test_cooldown_without_retry_after_doubles_per_episode_and_resets() -> None:
    limiter, fake = fake_limiter()
    cooldowns = []
    for _ in range(7):
        async with limiter.acquire() as permit:  # admitted after the previous cooldown: a new 429
            permit.observe(429, {})
        cooldowns.append(limiter.blocked_until - fake.now)
    assert cooldowns == pytest.approx([2, 4, 8, 16, 32, 60, 60])

    async with limiter.acquire() as permit:
        permit.observe(200, {})
    first, second = await limiter.admit(), await limiter.admit()  # both in flight when the 429 comes
    first.observe(429, {})
    second.observe(429, {})  # same episode: not doubled
    assert limiter.blocked_until - fake.now == pytest.approx(2)
    first.release()
    second.release()
    async with limiter.acquire() as permit:
        assert fake.now == pytest.approx(limiter.blocked_until)
        permit.observe(429, {})  # sent after that cooldown began: doubled
    assert limiter.blocked_until - fake.now == pytest.approx(4)
    assert limiter.rate_limited_responses == 10


@pytest.mark.anyio
async def test_docker_hub_headers_are_recorded() -> None:
    limiter, _ = fake_limiter()
    assert limiter.stats()["hub_remaining"] is None
    async with limiter.acquire() as permit:
        permit.observe(200, {"RateLimit-Limit": "100;w=21600", "RateLimit-Remaining": "76;w=21600"})
    assert (limiter.hub_limit, limiter.hub_remaining, limiter.hub_window) == (100, 76, 21600)


@pytest.mark.anyio
async def test_connection_slot_is_held_until_release() -> None:
    limiter = HostLimiter("registry.test", HostPolicy(max_connections=1))
    first = await limiter.admit()
    got: list[str] = []

    async def second() -> None:
        async with limiter.acquire():
            got.append("second")

    async with anyio.create_task_group() as tg:
        tg.start_soon(second)
        await anyio.wait_all_tasks_blocked()
        assert got == []  # waiting for the slot
        streaming = await limiter.admit(hold_slot=False)  # an upload fed by the first: no slot, no wait
        streaming.release()
        first.release()
    assert got == ["second"]

    held = await limiter.admit()
    async with anyio.create_task_group() as tg:  # a waiter cancelled while queued must not keep a slot
        tg.start_soon(second)
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    held.release()
    with anyio.fail_after(5):
        async with limiter.acquire():
            pass
    assert got == ["second"]


@pytest.mark.anyio
async def test_cooldown_restarts_the_bucket_at_the_steady_rate() -> None:
    limiter, fake = fake_limiter(HostPolicy(requests_per_second=10, burst=5))
    async with limiter.acquire() as permit:
        permit.observe(429, {"Retry-After": "3"})
    sent = []
    for _ in range(3):
        (await limiter.admit()).release()
        sent.append(fake.now)
    assert sent == pytest.approx([3.0, 3.1, 3.2])  # no saved burst right after a 429


# ------------------------------------------------------------------------ against a registry
@pytest.mark.anyio
async def test_requests_per_second_paces_requests(seeded_images: SeededImages) -> None:
    reg, image = seeded_images.registry, seeded_images.alpine
    rate, burst, count = 20, 1, 60
    agent = f"mirror-ratelimit-{uuid.uuid4().hex}"
    started = time.monotonic()
    async with http_client({reg.host: HostPolicy(requests_per_second=rate, burst=burst)},
                           user_agent=agent) as http:
        ep = endpoint(http, reg.host)

        async def head() -> None:
            reply = await ep.fetch("HEAD", f"/v2/{image.repo}/manifests/{image.tag}", headers=ACCEPT)
            assert reply.headers["Docker-Content-Digest"] == image.digest

        async with anyio.create_task_group() as tg:
            for _ in range(count):
                tg.start_soon(head)
        elapsed = time.monotonic() - started
        limiter = http.limiter(reg.host)

    sent = count + 1  # and the /v2/ ping
    arrivals = wait_for_arrivals(reg, agent, sent)
    assert len(arrivals) == sent
    assert [m for _, m, _ in arrivals].count("HEAD") == count
    times = [t for t, _, _ in arrivals]
    assert max_in_window(times, 1.0) <= rate + burst
    assert times[-1] - times[0] >= (sent - burst) / rate - 0.05  # arrival jitter: a few ms
    assert elapsed >= (sent - burst) / rate
    assert limiter.requests == sent + 1  # and the https attempt of the ping, which a plain registry refuses
    assert limiter.throttled_waits >= sent - burst


@pytest.mark.anyio
async def test_max_connections_caps_requests_in_flight(registry: Registry, many_layers: PushedImage) -> None:
    slow = SlowBlobBodies(registry)
    with RegistryProxy(registry, faults=[Fault(Fault.match(kind="blob", method="GET"), slow, times=None)]) as proxy:

        async def run(policies: dict[str, HostPolicy]) -> tuple[int, int]:
            slow.held = []
            open_streams = peak = 0
            async with http_client(policies) as http:
                ep = endpoint(http, proxy.host)

                async def worker(digest: str) -> None:
                    nonlocal open_streams, peak
                    async with ep.stream("GET", f"/v2/{many_layers.repo}/blobs/{digest}") as resp:
                        open_streams += 1
                        peak = max(peak, open_streams)
                        body = await resp.read()
                        open_streams -= 1
                    assert "sha256:" + hashlib.sha256(body).hexdigest() == digest

                async with anyio.create_task_group() as tg:
                    for blob in many_layers.layers:
                        tg.start_soon(worker, blob.digest)
            assert len(slow.held) == 20
            return peak_overlap(slow.held), peak

        unlimited = await run({})
        limited = await run({proxy.host: HostPolicy(max_connections=2)})
    assert unlimited[0] >= 3 and unlimited[1] >= 3  # the workload does overlap without a cap
    assert limited == (2, 2)  # server side and client side


@pytest.mark.anyio
@pytest.mark.parametrize("retry_after", ["2", "http-date"])
async def test_429_pauses_all_workers_for_the_registry(registry: Registry, many_layers: PushedImage,
                                                        retry_after: str) -> None:
    recorder, refuse = Recorder(), TooManyRequests(retry_after)
    faults = [Fault(lambda _info: True, recorder, times=None),
              Fault(Fault.match(kind="blob", method="GET"), refuse, times=3)]
    slots = 4
    with RegistryProxy(registry, faults=faults) as proxy:
        async with http_client({proxy.host: HostPolicy(max_connections=slots)}) as http:
            ep = endpoint(http, proxy.host)
            async with anyio.create_task_group() as tg:
                for blob in many_layers.layers:
                    tg.start_soon(download, ep, many_layers.repo, blob.digest)
            limiter = http.limiter(proxy.host)
        blob_statuses = [r.status for r in proxy_log(proxy, "blob", 23)]

    assert sorted(blob_statuses) == [200] * 20 + [429] * 3
    assert limiter.rate_limited_responses == 3
    assert len(refuse.sent) == 3
    arrivals = [t for t, _, _ in recorder.arrivals]
    for refused in refuse.sent:
        # Only requests already admitted (one per other slot) may reach the registry in the cooldown.
        during = [t for t in arrivals if refused < t < refused + 2.0]
        assert len(during) <= slots - 1, (refused, sorted(t - refused for t in during))
    # Before the cooldown ended only the three refused and the one in the fourth slot got through.
    later = [t for t, method, path in recorder.arrivals if method == "GET" and "/blobs/" in path
             and t >= max(refuse.sent) + 2.0]
    assert len(later) >= len(blob_statuses) - 3 - (slots - 1)
    assert limiter.throttled_waits >= 1 and limiter.total_wait_seconds >= 1.0


@pytest.mark.anyio
async def test_consecutive_429s_on_one_request_are_retried(seeded_images: SeededImages) -> None:
    reg, image = seeded_images.registry, seeded_images.alpine
    refuse = TooManyRequests("2")
    manifest = Fault.match(kind="manifest", method="GET", path=f"/manifests/{image.tag}$")
    with RegistryProxy(reg, faults=[Fault(manifest, refuse, times=4)]) as proxy:
        async with http_client() as http:  # the default retry policy: 4 tries for other failures
            reply = await endpoint(http, proxy.host).fetch(
                "GET", f"/v2/{image.repo}/manifests/{image.tag}", headers=ACCEPT)
            limiter = http.limiter(proxy.host)
        statuses = [r.status for r in proxy_log(proxy, "manifest", 5)]
    assert reply.body == image.manifest
    assert statuses == [429, 429, 429, 429, 200]
    assert limiter.rate_limited_responses == 4
    assert all(later - earlier >= 2.0 for earlier, later in zip(refuse.sent, refuse.sent[1:], strict=False))


@pytest.mark.anyio
async def test_429_retry_budget_runs_out(seeded_images: SeededImages) -> None:
    reg, image = seeded_images.registry, seeded_images.alpine
    fast = RetryPolicy(base=0.001, cap=0.01)
    manifest = Fault.match(kind="manifest", method="GET")
    with RegistryProxy(reg, faults=[Fault(manifest, TooManyRequests("0"), times=None)]) as proxy:
        async with http_client(retry=fast) as http:
            with pytest.raises(RateLimited, match="HTTP 429"):
                await endpoint(http, proxy.host).fetch("GET", f"/v2/{image.repo}/manifests/{image.tag}",
                                                       headers=ACCEPT)
            assert http.limiter(proxy.host).rate_limited_responses == RATE_LIMITED_RETRIES + 1
        assert len(proxy_log(proxy, "manifest", RATE_LIMITED_RETRIES + 1)) == RATE_LIMITED_RETRIES + 1


@pytest.mark.anyio
async def test_redirects_to_other_hosts_are_not_limited(registry: Registry, many_layers: PushedImage) -> None:
    with RegistryProxy(registry, redirect_blobs=True) as proxy:
        async with http_client({proxy.host: HostPolicy(max_connections=1, requests_per_second=50)}) as http:
            ep = endpoint(http, proxy.host)
            async with anyio.create_task_group() as tg:
                for blob in many_layers.layers[:5]:
                    tg.start_soon(download, ep, many_layers.repo, blob.digest)
            limiter = http.limiter(proxy.host)
        redirected = proxy_log(proxy, "blob", 5)
        wait_until(lambda: len(proxy.blob_requests) >= 5, 10, "5 requests to the blob host")
        registry_side, cdn_side = proxy.requests, proxy.blob_requests
    assert [r.status for r in redirected] == [307] * 5
    assert len(cdn_side) == 5 and all(r.status == 200 for r in cdn_side)
    # The ping (and its refused https attempt) and the five 307s; not the CDN's GETs.
    assert limiter.requests == len(registry_side) + 1
    assert set(http.limiters) == {proxy.host}


@pytest.mark.anyio
async def test_upload_fed_by_a_read_of_the_same_registry_needs_no_second_slot(
        registry: Registry, many_layers: PushedImage) -> None:
    """A blob copied within one registry: the PATCH's body is a GET's body. With one connection slot,
    the PATCH holding it would wait forever for the GET; streamed-body requests take no slot."""
    blob, data = many_layers.layers[0], many_layers.layer_data[0]
    async with http_client({registry.host: HostPolicy(max_connections=1)}) as http:
        ep = endpoint(http, registry.host)

        async def source() -> AsyncIterator[bytes]:
            async with ep.stream("GET", f"/v2/{many_layers.repo}/blobs/{blob.digest}") as resp:
                async for chunk in resp.chunks():
                    yield chunk

        with anyio.fail_after(30):
            start = await ep.fetch("POST", "/v2/copied/blobs/uploads/", headers={"Content-Length": "0"},
                                   data=b"", ok=(202,))
            upload = start.url.join(URL(start.headers["Location"], encoded=True))
            patched = await ep.fetch("PATCH", upload, data=source(), ok=(202,),
                                     headers={"Content-Type": "application/octet-stream",
                                              "Content-Length": str(blob.size)})
            location = str(patched.url.join(URL(patched.headers["Location"], encoded=True)))
            final = URL(location + ("&" if "?" in location else "?") + f"digest={blob.digest}", encoded=True)
            await ep.fetch("PUT", final, headers={"Content-Length": "0"}, data=b"", ok=(201,))
        assert http.limiter(registry.host).requests >= 5
    assert get_blob(registry, "copied", blob.digest) == data
