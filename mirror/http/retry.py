"""The one retry policy: which failures are retried, and how long to wait between attempts."""

from __future__ import annotations

import random
from dataclasses import dataclass

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``attempts`` tries in total; full-jitter exponential backoff from ``base`` up to ``cap``.

    ``fixed_delay`` (skopeo's ``--retry-delay``) replaces the exponential schedule when set.
    ``Retry-After`` from the server always wins when it is longer than the computed wait.
    """

    attempts: int = 4
    base: float = 0.25
    cap: float = 30.0
    fixed_delay: float | None = None

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before try number ``attempt + 1`` (``attempt`` counts from 1)."""
        if self.fixed_delay is not None:
            wait = self.fixed_delay
        else:
            wait = random.uniform(self.base, min(self.cap, self.base * (2 ** attempt)))
        if retry_after is not None:
            wait = max(wait, min(retry_after, 3600.0))
        return wait

    def should_retry_status(self, method: str, status: int, resendable: bool, repeatable: bool = False) -> bool:
        """``repeatable``: a request that is safe to repeat though its method is not idempotent."""
        return status in RETRY_STATUSES and (method in IDEMPOTENT or repeatable) and resendable
