"""Retry policy for idempotent upstream calls: capped exponential backoff and a retry budget.

The budget (a token bucket fed by first attempts and a small steady refill) caps retries at a
fraction of traffic, so an upstream outage is never multiplied by our retries.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ("RETRYABLE_STATUSES", "RetryBudget", "backoff_delay")

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


class RetryBudget:
    """Token bucket: each first attempt deposits ``ratio`` tokens, each retry withdraws one.

    A steady refill of ``min_per_second`` keeps retries possible at low traffic. The bucket
    starts full and holds at most ``cap`` tokens: a burst of failures can spend at most ``cap``
    retries, after which retries run at ``ratio`` of traffic plus ``min_per_second``.
    Not thread-safe; one per event loop (asyncio runs its methods without interleaving).
    """

    def __init__(
        self, *, ratio: float, min_per_second: float, clock: Callable[[], float], cap: float = 100.0
    ) -> None:
        self._ratio = ratio
        self._min_per_second = min_per_second
        self._clock = clock
        self._cap = cap
        self._tokens = cap
        self._updated = clock()

    def deposit(self) -> None:
        """Account for a first attempt."""
        self._refill()
        self._tokens = min(self._cap, self._tokens + self._ratio)

    def try_withdraw(self) -> bool:
        """Take one retry's worth of budget; ``False`` when the budget is spent."""
        self._refill()
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        self._tokens = min(self._cap, self._tokens + elapsed * self._min_per_second)


def backoff_delay(
    attempt: int, *, base: float, maximum: float, retry_after: str | None = None
) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): full jitter, capped.

    A numeric ``Retry-After`` from the upstream wins, capped at ``maximum`` as well.
    """
    if retry_after is not None:
        try:
            return min(maximum, max(0.0, float(retry_after)))
        except ValueError:
            pass
    return random.uniform(0.0, min(maximum, base * 2 ** (attempt - 1)))  # noqa: S311 - jitter, not crypto
