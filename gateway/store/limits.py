"""The arithmetic of limits, shared by both backends (the Lua scripts mirror it line for line).

Rates use GCRA over a 60 s window in integer microseconds, so a burst of exactly ``limit``
requests passes and float rounding can never admit or refuse one request too many. Budgets are
counters per UTC period; concurrency is a set of slots that expire.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.store.base import (
    MAX_CONCURRENT_JOBS,
    READS_PER_MINUTE,
    SUBMITS_PER_MINUTE,
    VIDEO_SECONDS_PER_DAY,
    VIDEO_SECONDS_PER_MONTH,
    Charge,
    Decision,
    LimitState,
    SubmitLimits,
)

__all__ = (
    "WINDOW_US",
    "RateResult",
    "budget_state",
    "decide_submit",
    "rate_peek",
    "rate_take",
    "to_us",
    "usage_states",
)

WINDOW_US = 60_000_000


def to_us(seconds: float) -> int:
    """Unix seconds to integer microseconds (exact in a double, which Lua numbers are)."""
    return int(seconds * 1_000_000)


@dataclass(frozen=True, slots=True)
class RateResult:
    allowed: bool
    tat: int  # the theoretical arrival time to store (unchanged when refused)
    remaining: int
    reset_after_us: int
    retry_after_us: int


def rate_take(tat: int | None, now: int, limit: int) -> RateResult:
    """GCRA: admit one request at ``now`` (µs) against ``limit`` per minute, or refuse."""
    interval = WINDOW_US // limit
    base = max(tat if tat is not None else now, now)
    new_tat = base + interval
    if new_tat - now > WINDOW_US:
        wait = new_tat - now - WINDOW_US
        return RateResult(False, base, 0, wait, wait)
    remaining = (WINDOW_US - (new_tat - now)) // interval
    reset_after = 0 if remaining > 0 else new_tat + interval - WINDOW_US - now
    return RateResult(True, new_tat, remaining, reset_after, 0)


def rate_peek(tat: int | None, now: int, limit: int) -> tuple[int, int]:
    """``(remaining, reset_after_us)`` of a rate without consuming it."""
    interval = WINDOW_US // limit
    base = max(tat if tat is not None else now, now)
    remaining = (WINDOW_US - (base - now)) // interval
    reset_after = 0 if remaining > 0 else base + interval - WINDOW_US - now
    return remaining, reset_after


def budget_state(name: str, limit: int, used: int, now: float, ends_at: float) -> LimitState:
    return LimitState(name, limit, max(0, limit - used), max(0.0, ends_at - now))


def decide_submit(
    *,
    limits: SubmitLimits,
    charge: Charge,
    now: float,
    rate: RateResult | None,
    slots_in_use: int,
    day_used: int,
    month_used: int,
) -> Decision:
    """The submit decision from the current counters; both backends (and begin_submit.lua) agree.

    Limits are checked in a fixed order and the first violated one is named; the states show
    each limit as it would stand after the reservation, or as it stands when refused.
    """
    states: list[LimitState] = []
    violated: str | None = None
    retry_after: float | None = None
    if limits.submits_per_minute is not None and rate is not None:
        states.append(
            LimitState(
                SUBMITS_PER_MINUTE,
                limits.submits_per_minute,
                rate.remaining,
                rate.reset_after_us / 1e6,
            )
        )
        if not rate.allowed:
            violated, retry_after = SUBMITS_PER_MINUTE, rate.retry_after_us / 1e6
    if limits.max_concurrent_jobs is not None:
        fits = slots_in_use < limits.max_concurrent_jobs
        left = limits.max_concurrent_jobs - slots_in_use - (1 if fits else 0)
        states.append(LimitState(MAX_CONCURRENT_JOBS, limits.max_concurrent_jobs, left, 0.0))
        if not fits and violated is None:
            violated = MAX_CONCURRENT_JOBS
    for name, limit, used, ends_at in (
        (VIDEO_SECONDS_PER_DAY, limits.video_seconds_per_day, day_used, charge.day_ends_at),
        (VIDEO_SECONDS_PER_MONTH, limits.video_seconds_per_month, month_used, charge.month_ends_at),
    ):
        if limit is None:
            continue
        fits = used + charge.cost <= limit
        states.append(budget_state(name, limit, used + (charge.cost if fits else 0), now, ends_at))
        if not fits and violated is None:
            violated, retry_after = name, max(0.0, ends_at - now)
    if violated is not None:
        return Decision(False, tuple(states), violated, retry_after)
    return Decision(True, tuple(states))


def usage_states(
    *,
    limits: SubmitLimits,
    reads_per_minute: int | None,
    charge: Charge,
    now: float,
    submit_tat: int | None,
    read_tat: int | None,
    slots_in_use: int,
    day_used: int,
    month_used: int,
) -> tuple[LimitState, ...]:
    """Every configured limit as it stands, consuming nothing (``/v1/usage``)."""
    states: list[LimitState] = []
    for name, limit, tat in (
        (SUBMITS_PER_MINUTE, limits.submits_per_minute, submit_tat),
        (READS_PER_MINUTE, reads_per_minute, read_tat),
    ):
        if limit is not None:
            remaining, reset_us = rate_peek(tat, to_us(now), limit)
            states.append(LimitState(name, limit, remaining, reset_us / 1e6))
    if limits.max_concurrent_jobs is not None:
        left = max(0, limits.max_concurrent_jobs - slots_in_use)
        states.append(LimitState(MAX_CONCURRENT_JOBS, limits.max_concurrent_jobs, left, 0.0))
    for name, limit, used, ends_at in (
        (VIDEO_SECONDS_PER_DAY, limits.video_seconds_per_day, day_used, charge.day_ends_at),
        (VIDEO_SECONDS_PER_MONTH, limits.video_seconds_per_month, month_used, charge.month_ends_at),
    ):
        if limit is not None:
            states.append(budget_state(name, limit, used, now, ends_at))
    return tuple(states)
