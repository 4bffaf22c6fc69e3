"""The arithmetic of limits, shared by both backends (the Lua scripts mirror it line for line).

Rates use GCRA over a 60 s window, exact for every limit below ``TAT_SCALE``: a burst of exactly
``limit`` passes and a steady stream gets exactly ``limit`` a minute. The emission interval,
60e6 / limit µs, is rarely whole, and rounding it down admits one request too many (9,999 a
minute would admit 10,000). So a theoretical arrival time (TAT) is kept as whole microseconds
plus a remainder in 1/limit µs: every step is integer arithmetic on numbers below 2**53, which
Lua's doubles hold exactly, where scaling an absolute time (~1.8e15 µs) by the limit would not.
Budgets are counters per UTC period; concurrency is a set of slots that expire.

A TAT is stored as one integer, ``-(µs * TAT_SCALE + remainder)``: one integer so redis-py reads
it with ``int()``, negative so a replica still running the previous release (which stored plain
µs) reads it as long past and admits, rather than as far ahead and refusing every request for a
minute. A non-negative stored value is that previous release's TAT, in whole µs, and is read as
exactly that, so a rolling deploy keeps the keys it finds.
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
    "TAT_SCALE",
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
TAT_SCALE = 10_000_000  # the remainder's share of a stored TAT: room for limits below 10**7


def to_us(seconds: float) -> int:
    """Unix seconds to integer microseconds (exact in a double, which Lua numbers are)."""
    return int(seconds * 1_000_000)


@dataclass(frozen=True, slots=True)
class RateResult:
    allowed: bool
    tat: int  # the stored TAT to write when allowed (when refused, the current one)
    remaining: int
    reset_after_us: int
    retry_after_us: int


def rate_take(tat: int | None, now: int, limit: int) -> RateResult:
    """GCRA: admit one request at ``now`` (µs) against ``limit`` per minute, or refuse.

    ``tat`` is the stored TAT (``None``: none yet).
    """
    us, rem = _tat_parts(tat, now, limit)
    step_us, step_rem = divmod(WINDOW_US, limit)
    next_us, next_rem = us + step_us, rem + step_rem
    if next_rem >= limit:
        next_us, next_rem = next_us + 1, next_rem - limit
    ahead = next_us - now  # the new TAT is ahead + next_rem / limit µs from now
    if ahead > WINDOW_US or (ahead == WINDOW_US and next_rem > 0):
        wait = ahead - WINDOW_US + (1 if next_rem > 0 else 0)  # rounded up to the µs
        return RateResult(False, _stored_tat(us, rem), 0, wait, wait)
    remaining, reset_after = _room(ahead * limit + next_rem, limit)
    return RateResult(True, _stored_tat(next_us, next_rem), remaining, reset_after, 0)


def rate_peek(tat: int | None, now: int, limit: int) -> tuple[int, int]:
    """``(remaining, reset_after_us)`` of a rate without consuming it."""
    us, rem = _tat_parts(tat, now, limit)
    return _room((us - now) * limit + rem, limit)


def _room(backlog: int, limit: int) -> tuple[int, int]:
    """``(remaining, reset_after_us)`` when the TAT is ``backlog`` 1/limit µs ahead of now.

    A request passes while the TAT after it is at most a window ahead, and each adds 60e6
    (one interval) to the backlog. ``remaining`` is never negative, even when a replica whose
    clock runs behind sees a TAT more than a window ahead.
    """
    remaining = max(0, WINDOW_US * limit - backlog) // WINDOW_US
    if remaining > 0:
        return remaining, 0
    return 0, -(-(backlog + WINDOW_US - WINDOW_US * limit) // limit)  # rounded up to the µs


def _tat_parts(stored: int | None, now: int, limit: int) -> tuple[int, int]:
    """A stored TAT as ``(µs, remainder in 1/limit µs)``, but never earlier than ``now``."""
    if stored is None:
        return now, 0
    us, rem = divmod(-stored, TAT_SCALE) if stored < 0 else (stored, 0)
    if rem >= limit:  # stored under a higher limit (the config changed): round up to the µs
        us, rem = us + 1, 0
    return (now, 0) if us < now else (us, rem)


def _stored_tat(us: int, rem: int) -> int:
    return -(us * TAT_SCALE + rem)


def budget_state(name: str, limit: int, used: int, now: float, ends_at: float) -> LimitState:
    return LimitState(name, limit, max(0, limit - used), max(0.0, ends_at - now), used)


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
        left = max(0, limits.max_concurrent_jobs - slots_in_use - (1 if fits else 0))
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
        cap = limits.max_concurrent_jobs
        states.append(
            LimitState(MAX_CONCURRENT_JOBS, cap, max(0, cap - slots_in_use), 0.0, slots_in_use)
        )
    for name, limit, used, ends_at in (
        (VIDEO_SECONDS_PER_DAY, limits.video_seconds_per_day, day_used, charge.day_ends_at),
        (VIDEO_SECONDS_PER_MONTH, limits.video_seconds_per_month, month_used, charge.month_ends_at),
    ):
        if limit is not None:
            states.append(budget_state(name, limit, used, now, ends_at))
    return tuple(states)
