"""The memory backend forgets what has expired, as Redis forgets keys whose TTL ran out.

Nothing reads an idempotency answer or a budget again once it has expired, so only its size
shows that it is gone: these look at the store's private tables.
"""

from __future__ import annotations

from gateway.store.base import Charge, Idempotency, IdempotencyState, SubmitLimits
from gateway.store.memory import MemoryStore
from tests.store.conftest import FakeClock

DAY = 86400.0


def charge(token: str, day: int, start: float, cost: int = 0) -> Charge:
    """A charge to day ``day`` (0: the day that begins at ``start``) of one 30-day month."""
    return Charge(token, cost, f"day-{day}", "month", start + (day + 1) * DAY, start + 30 * DAY)


async def submit(store: MemoryStore, clock: FakeClock, key: str, ttl: float = 60) -> None:
    start = await store.begin_submit(
        "t",
        charge(key, 0, clock.now),
        SubmitLimits(),
        hold_until=clock.now,
        idempotency=Idempotency(key, "fp", ttl),
    )
    assert start.claim == IdempotencyState("new")


async def test_expired_idempotency_answers_are_forgotten(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    for n in range(1000):
        await submit(store, clock, f"old-{n}")
        await store.finish_idempotent("t", f"old-{n}", "fp", 200, b"x" * 1000, ttl=DAY)
        clock.advance(1)
    await submit(store, clock, "kept")  # claimed for a minute, then answered for a day
    clock.advance(30)
    await store.finish_idempotent("t", "kept", "fp", 200, b"kept", ttl=DAY)
    clock.advance(DAY - 30)  # every old answer has expired; "kept" has 30 s to go
    await submit(store, clock, "new")
    assert len(store._claims) == 2
    replay = await store.begin_submit(
        "t",
        charge("x", 0, clock.now),
        SubmitLimits(),
        hold_until=clock.now,
        idempotency=Idempotency("kept", "fp", 60),
    )
    assert replay.claim == IdempotencyState("done", 200, b"kept")


async def test_budgets_of_past_periods_are_forgotten(clock: FakeClock) -> None:
    """A day's budget is kept until two days after the day ends (for late refunds), as on
    Redis; the month's budget is kept all month."""
    store = MemoryStore(clock=clock)
    start = clock.now
    limits = SubmitLimits(video_seconds_per_day=10, video_seconds_per_month=1000)
    for day in range(30):
        clock.now = start + day * DAY + 1
        reserved = charge(f"tok-{day}", day, start, cost=5)
        decision = await store.begin_submit("t", reserved, limits, hold_until=clock.now)
        assert decision.decision is not None
        assert decision.decision.allowed
    assert len(store._budgets) == 4  # the month, today, and the two days before
    states, _ = await store.usage("t", limits, None, reserved)
    assert {s.name: s.remaining for s in states} == {
        "video_seconds_per_day": 5,
        "video_seconds_per_month": 1000 - 30 * 5,
    }
