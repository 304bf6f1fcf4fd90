"""Per-registry request limits: a token bucket, a connection cap and a shared 429 cooldown.

One :class:`HostLimiter` per registry host, owned by the ``HttpClient`` and shared by every endpoint
(credential, TLS setting) that talks to that host. Each request to the host is admitted by it:

1. a connection slot (``max_connections``), held until the response is released, body included;
2. then, in arrival order (one FIFO lock; only its head sleeps, for a computed time):
   the host's cooldown, if a 429 set one, and a token of the bucket (``requests_per_second``, ``burst``).

A 429 sets ``blocked_until`` (``Retry-After`` as seconds or an HTTP-date; without one 2 s, doubling
per further 429 up to 60 s), which every later request to the host waits for, so one 429 pauses all
workers for that registry. After a cooldown the bucket restarts with a single token, at the steady rate.

Retries are not done here: the client's one retry loop still decides and sleeps; this module only
decides when a request may be *sent*. ``RATE_LIMITED_RETRIES`` is the retry budget the client gives 429s.

Requests whose body is produced while they are sent (a blob upload fed by a read from another
request) are admitted without a connection slot: holding one while waiting for a read that needs
another could deadlock a copy within one registry. They still take a token and honour the cooldown.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
from msgspec import Struct

from mirror.errors import ConfigError
from mirror.http.headers import parse_ratelimit, parse_retry_after
from mirror.log import get_logger

log = get_logger("mirror.http")

RATE_LIMITED_RETRIES = 8
"""How many times the client retries a request answered 429 (apart from its other retry budget)."""
DEFAULT_COOLDOWN = 2.0
MAX_DEFAULT_COOLDOWN = 60.0
_EPSILON = 1e-9

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]


class HostPolicy(Struct, frozen=True):
    """Limits for one registry host. ``None`` means no limit of that kind.

    ``burst`` (requests that may go at once after idling) defaults to ``max(1, ceil(requests_per_second))``.
    ``max_connections`` caps requests in flight, each counted until its response body is released.
    """

    requests_per_second: float | None = None
    burst: int | None = None
    max_connections: int | None = None

    def __post_init__(self) -> None:
        rps = self.requests_per_second
        if rps is not None and not (rps > 0 and math.isfinite(rps)):
            raise ConfigError(f"rate limit: requests-per-second must be a positive number, not {rps!r}")
        if self.burst is not None and self.burst < 1:
            raise ConfigError(f"rate limit: burst must be at least 1, not {self.burst!r}")
        if self.max_connections is not None and self.max_connections < 1:
            raise ConfigError(f"rate limit: max-connections must be at least 1, not {self.max_connections!r}")

    @property
    def bucket_size(self) -> int:
        if self.burst is not None:
            return self.burst
        return max(1, math.ceil(self.requests_per_second or 1))


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved. Pure: the caller passes the time."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = now

    def take(self, now: float) -> float:
        """Take a token and return 0, or return the seconds until one can be taken (taking nothing)."""
        if now < self._stamp:  # restarted for a time still to come
            return self._stamp - now
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens + _EPSILON >= 1.0:
            self._tokens = max(0.0, self._tokens - 1.0)
            return 0.0
        return (1.0 - self._tokens) / self.rate

    def restart(self, at: float) -> None:
        """From ``at`` on: one token, then the steady rate (no saved burst after a cooldown)."""
        if at >= self._stamp:
            self._stamp = at
            self._tokens = min(1.0, float(self.burst))


class Permit:
    """Leave to send one request; ``release()`` it when the response is released (idempotent)."""

    __slots__ = ("_borrower", "_limiter", "sent_at")

    def __init__(self, limiter: HostLimiter, borrower: object | None, sent_at: float) -> None:
        self._limiter = limiter
        self._borrower = borrower
        self.sent_at = sent_at

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """Tell the limiter what the host answered (429 cooldown, Docker Hub rate-limit headers)."""
        self._limiter.observe(status, headers, sent_at=self.sent_at)

    def release(self) -> None:
        borrower, self._borrower = self._borrower, None
        if borrower is not None:
            self._limiter._release_slot(borrower)


class HostLimiter:
    """Admits requests to one registry host (see the module documentation)."""

    def __init__(self, host: str, policy: HostPolicy | None = None, *, clock: Clock = time.monotonic,
                 sleep: Sleep = anyio.sleep) -> None:
        self.host = host
        self.policy = policy or HostPolicy()
        self._clock = clock
        self._sleep = sleep
        rps = self.policy.requests_per_second
        self._bucket = TokenBucket(rps, self.policy.bucket_size, clock()) if rps else None
        self._slots = anyio.CapacityLimiter(self.policy.max_connections) if self.policy.max_connections else None
        self._queue = anyio.Lock()
        self.blocked_until = 0.0  # on ``clock``
        self._cooldown_started = -math.inf
        self._streak = 0  # 429s in a row without Retry-After, for the doubling default cooldown
        self.hub_remaining: int | None = None
        self.hub_limit: int | None = None
        self.hub_window: int | None = None
        self.requests = 0
        self.throttled_waits = 0
        self.rate_limited_responses = 0
        self.total_wait_seconds = 0.0

    # -- admission ------------------------------------------------------------------------------
    @asynccontextmanager
    async def acquire(self, *, hold_slot: bool = True) -> AsyncIterator[Permit]:
        """``async with limiter.acquire() as permit:`` around one request, its body read inside."""
        permit = await self.admit(hold_slot=hold_slot)
        try:
            yield permit
        finally:
            permit.release()

    async def admit(self, *, hold_slot: bool = True) -> Permit:
        """Wait until a request may be sent; the caller must ``release()`` the permit.

        ``hold_slot=False`` for a request whose body is fed by another request while it is sent.
        """
        start = self._clock()
        waited = False
        slots = self._slots if hold_slot else None
        borrower = object()  # one per request: a task may hold several (a blob read feeding an upload)
        if slots is not None:
            try:
                slots.acquire_on_behalf_of_nowait(borrower)
            except anyio.WouldBlock:
                waited = True
                await slots.acquire_on_behalf_of(borrower)
        try:
            waited = await self._pace() or waited
        except BaseException:
            if slots is not None:
                slots.release_on_behalf_of(borrower)
            raise
        now = self._clock()
        self.requests += 1
        if waited:
            self.throttled_waits += 1
            self.total_wait_seconds += max(0.0, now - start)
        return Permit(self, borrower if slots is not None else None, now)

    async def _pace(self) -> bool:
        """Wait for the cooldown and a token, in arrival order; whether any waiting was done."""
        if self._bucket is None and not self._queue.locked() and self.blocked_until <= self._clock():
            return False  # the common case of a host without limits: no queue
        waited = self._queue.locked()
        async with self._queue:
            while True:
                now = self._clock()
                delay = self.blocked_until - now
                if delay <= 0:
                    delay = self._bucket.take(now) if self._bucket is not None else 0.0
                    if delay <= 0:
                        return waited
                waited = True
                await self._sleep(delay)

    def _release_slot(self, borrower: object) -> None:
        if self._slots is not None:
            self._slots.release_on_behalf_of(borrower)

    # -- feedback -------------------------------------------------------------------------------
    def observe(self, status: int, headers: Mapping[str, str], *, sent_at: float | None = None) -> None:
        """Learn from a response: a 429 starts (or extends) the host's cooldown; record Hub limits.

        ``sent_at`` (the permit's time) tells a 429 to a request sent before the current cooldown
        began (same episode: no doubling) from a fresh one.
        """
        remaining = parse_ratelimit(_header(headers, "ratelimit-remaining"))
        if remaining is not None:
            self.hub_remaining = remaining[0]
        limit = parse_ratelimit(_header(headers, "ratelimit-limit"))
        if limit is not None:
            self.hub_limit, self.hub_window = limit
        fresh = sent_at is None or sent_at > self._cooldown_started
        if status != 429:
            if fresh:
                self._streak = 0
            return
        self.rate_limited_responses += 1
        now = self._clock()
        wait = parse_retry_after(_header(headers, "Retry-After"))
        if wait is None:
            if fresh or self._streak == 0:
                self._streak += 1
            wait = min(MAX_DEFAULT_COOLDOWN, DEFAULT_COOLDOWN * 2 ** (self._streak - 1))
        until = now + wait
        if until > self.blocked_until:
            self.blocked_until = until
            self._cooldown_started = now
            if self._bucket is not None:
                self._bucket.restart(until)
            log.info("rate_limited", host=self.host, cooldown=round(wait, 2),
                     hub_remaining=self.hub_remaining)

    def hold_for(self, seconds: float) -> None:
        """Hold requests to this host for ``seconds`` (a cooldown another process was told of)."""
        until = self._clock() + seconds
        if until > self.blocked_until:
            self.blocked_until = until
            if self._bucket is not None:
                self._bucket.restart(until)

    def cooldown_remaining(self) -> float:
        return max(0.0, self.blocked_until - self._clock())

    def stats(self) -> dict[str, Any]:
        """Counters for reporting."""
        return {"host": self.host, "requests": self.requests, "throttled_waits": self.throttled_waits,
                "rate_limited_responses": self.rate_limited_responses,
                "total_wait_seconds": round(self.total_wait_seconds, 3), "hub_remaining": self.hub_remaining,
                "hub_limit": self.hub_limit}


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header from aiohttp's case-insensitive headers, or from a plain mapping in any case."""
    value = headers.get(name)
    if value is None and not hasattr(headers, "getall"):
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value
