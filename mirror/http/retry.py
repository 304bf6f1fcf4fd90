"""The one retry policy and the one retry loop of the HTTP client.

Every request the client sends goes through :func:`retrying`: requests to registries (their ping
included) and to token servers alike, so ``--retry-times`` means the same everywhere and retries never
multiply (nothing above the client retries a request again; see ``RetryPolicy``).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Container, Mapping
from typing import Protocol, TypeVar

import anyio
from msgspec import Struct

from mirror.errors import TransientError
from mirror.http.headers import parse_retry_after
from mirror.http.ratelimit import RATE_LIMITED_RETRIES
from mirror.log import get_logger

log = get_logger("mirror.http")

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class RetryPolicy(Struct, frozen=True):
    """``attempts`` tries in total; full-jitter exponential backoff from ``base`` up to ``cap``.

    ``--retry-times N`` gives ``attempts = max(4, N + 1)`` (``runtime.open_runtime``): N retries of each
    request, but never fewer than the default robustness of 4 tries. It applies per request, to
    connection errors, timeouts, broken bodies and 408/5xx; 429s have their own budget,
    ``rate_limited`` retries, because the host's limiter already paused every request to that host.
    ``fixed_delay`` (skopeo's ``--retry-delay``) replaces the exponential schedule when set.
    ``Retry-After`` from the server always wins when it is longer than the computed wait.
    """

    attempts: int = 4
    base: float = 0.25
    cap: float = 30.0
    fixed_delay: float | None = None
    rate_limited: int = RATE_LIMITED_RETRIES

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before try number ``attempt + 1`` (``attempt`` counts from 1)."""
        if self.fixed_delay is not None:
            wait = self.fixed_delay
        else:
            wait = random.uniform(self.base, min(self.cap, self.base * (2 ** attempt)))
        if retry_after is not None:
            wait = max(wait, min(retry_after, 3600.0))
        return wait


def may_retry(method: str, resendable: bool, repeatable: bool = False) -> bool:
    """Whether a request may be sent again at all: idempotent (or declared ``repeatable``, such as a
    POST that opens an upload session) and with a body that can be sent again."""
    return (method in IDEMPOTENT or repeatable) and resendable


class Exhausted(TransientError):
    """A transient failure that has already been through the retry loop: a loop it reaches (a token
    fetch fails inside a request's try) passes it on without retrying, so tries never multiply."""


class Answer(Protocol):
    """What the loop needs of a response."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def release(self) -> None: ...


A = TypeVar("A", bound=Answer)


async def retrying(policy: RetryPolicy, method: str, attempt: Callable[[], Awaitable[A]], *,
                   ok: Container[int], retryable: bool, what: str = "") -> A:
    """Call ``attempt`` until it gives a response that is ``ok`` or not worth retrying.

    ``attempt`` sends the request once (and may read the body: a body that breaks raises
    ``TransientError``, which is retried like a failed connection). A retryable status that is out of
    tries is returned to the caller, which maps it to an error. ``retryable``: see :func:`may_retry`.
    """
    failures = 0  # connection errors and retryable statuses but 429: ``policy.attempts`` tries in all
    throttled = 0  # 429s: their own budget
    while True:
        try:
            resp = await attempt()
        except Exhausted:
            raise
        except TransientError as exc:
            failures += 1
            if not retryable or failures >= policy.attempts:
                raise
            log.debug("http_retry", method=method, what=what, error=str(exc), attempt=failures)
            await anyio.sleep(policy.delay(failures))
            continue
        if resp.status in ok or not retryable or resp.status not in RETRY_STATUSES:
            return resp
        if resp.status == 429:
            throttled += 1
            again, tries = throttled <= policy.rate_limited, throttled
        else:
            failures += 1
            again, tries = failures < policy.attempts, failures
        if not again:
            return resp
        wait = policy.delay(tries, parse_retry_after(resp.headers.get("Retry-After")))
        log.debug("http_retry", method=method, what=what, status=resp.status, wait=round(wait, 2))
        resp.release()
        await anyio.sleep(wait)
