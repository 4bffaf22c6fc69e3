"""A circuit breaker: when the upstream keeps failing, fail fast instead of piling on.

Closed: calls go through; ``threshold`` consecutive failures (transport errors, 429 and 5xx
answers, except a submit's 500: see the client) open it. Open: calls fail at once, for
``cooldown`` seconds. Then half-open: one probe goes through; its success closes the circuit,
its failure opens it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from gateway import metrics

__all__ = ("CircuitBreaker",)

_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}
_log = structlog.get_logger("gateway.upstream")


class CircuitBreaker:
    """Per-process breaker around every upstream call."""

    def __init__(self, *, threshold: int, cooldown: float, clock: Callable[[], float]) -> None:
        self._threshold = threshold
        self._cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        metrics.UPSTREAM_CIRCUIT_STATE.set(0)

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self._cooldown:
            return "half_open"
        return "open"

    def wait_before_call(self) -> float | None:
        """``None`` to go ahead, or the seconds left before the upstream may be tried again."""
        state = self.state
        if state == "closed":
            return None
        if state == "half_open" and not self._probing:
            self._probing = True
            self._publish()
            return None
        opened = self._opened_at if self._opened_at is not None else self._clock()
        return max(1.0, self._cooldown - (self._clock() - opened))

    def record(self, *, ok: bool) -> None:
        self._probing = False
        was_open = self._opened_at is not None
        if ok:
            self._failures = 0
            self._opened_at = None
            if was_open:
                _log.warning("upstream_circuit_closed")
        else:
            self._failures += 1
            if self._opened_at is not None or self._failures >= self._threshold:
                self._opened_at = self._clock()
                self._publish_when_cooled_down()
                if not was_open:
                    _log.warning(
                        "upstream_circuit_opened",
                        failures=self._failures,
                        cooldown_seconds=self._cooldown,
                    )
        self._publish()

    def _publish(self) -> None:
        """The gauge says "open" while calls are refused, a probe's wait included (it may last
        the whole read timeout): as half-open, an alert on "open" was false for most of an
        outage of a hanging upstream. Half-open means the next call goes through."""
        state = "open" if self._probing else self.state
        metrics.UPSTREAM_CIRCUIT_STATE.set(_STATE_VALUES[state])

    def _publish_when_cooled_down(self) -> None:
        """Show half-open once the cooldown ends, call or no call: an alert on "open" must
        clear when nothing is being refused any more, however quiet the traffic."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): the next call publishes
            return
        loop.call_later(self._cooldown + 0.01, self._publish)  # loop timers may fire 1 ms early
