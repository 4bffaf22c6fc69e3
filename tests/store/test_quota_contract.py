"""The quota half of the store contract, against both backends, under a fake clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.store import Store
from gateway.store.base import (
    Charge,
    Decision,
    Idempotency,
    IdempotencyState,
    LimitState,
    Settlement,
    SubmitLimits,
    SubmitStart,
)
from tests.store.conftest import FakeClock

DAY_END_IN = 10_000.0
NO_LIMITS = SubmitLimits()


def charge(clock: FakeClock, token: str, cost: int = 5, day: str = "2026-11-23") -> Charge:
    return Charge(
        token=token,
        cost=cost,
        day=day,
        month=day[:7],
        day_ends_at=clock.now + DAY_END_IN,
        month_ends_at=clock.now + 20 * DAY_END_IN,
    )


async def reserve(
    store: Store, tenant: str, cost: Charge, limits: SubmitLimits, *, hold_until: float
) -> Decision:
    """``begin_submit`` without an Idempotency-Key: just the reservation."""
    start = await store.begin_submit(tenant, cost, limits, hold_until=hold_until)
    assert start.decision is not None  # only a key that is not new skips the reservation
    return start.decision


async def reserve_many(
    store: Store, clock: FakeClock, limits: SubmitLimits, n: int, cost: int = 5
) -> list[bool]:
    decisions = await asyncio.gather(
        *(
            reserve(store, "t", charge(clock, f"tok{i}", cost), limits, hold_until=clock.now + 600)
            for i in range(n)
        )
    )
    return [d.allowed for d in decisions]


async def test_no_limits_always_allows(store: Store, clock: FakeClock) -> None:
    decision = await reserve(
        store, "t", charge(clock, "a"), SubmitLimits(), hold_until=clock.now + 1
    )
    assert decision.allowed
    assert decision.limits == ()


@pytest.mark.parametrize(
    ("limits", "expected", "violated"),
    [
        (SubmitLimits(max_concurrent_jobs=7), 7, "max_concurrent_jobs"),
        (SubmitLimits(submits_per_minute=10), 10, "submits_per_minute"),
        (SubmitLimits(video_seconds_per_day=50), 10, "video_seconds_per_day"),
        (SubmitLimits(video_seconds_per_month=35), 7, "video_seconds_per_month"),
    ],
)
async def test_concurrent_reservations_accept_exactly_the_limit(
    store: Store, clock: FakeClock, limits: SubmitLimits, expected: int, violated: str
) -> None:
    allowed = await reserve_many(store, clock, limits, 40)
    assert allowed.count(True) == expected
    refused = await reserve(store, "t", charge(clock, "late"), limits, hold_until=clock.now + 1)
    assert not refused.allowed
    assert refused.violated == violated


async def test_a_refusal_reserves_nothing(store: Store, clock: FakeClock) -> None:
    limits = SubmitLimits(submits_per_minute=10, max_concurrent_jobs=10, video_seconds_per_day=10)
    first = await reserve(
        store, "t", charge(clock, "a", cost=10), limits, hold_until=clock.now + 60
    )
    assert first.allowed
    refused = await reserve(
        store, "t", charge(clock, "b", cost=1), limits, hold_until=clock.now + 60
    )
    assert refused.violated == "video_seconds_per_day"
    assert refused.retry_after == pytest.approx(DAY_END_IN)
    states, in_use = await store.usage("t", limits, None, charge(clock, "x"))
    assert in_use == 1
    assert {s.name: s.remaining for s in states} == {
        "submits_per_minute": 9,
        "max_concurrent_jobs": 9,
        "video_seconds_per_day": 0,
    }


async def test_first_violated_limit_is_named(store: Store, clock: FakeClock) -> None:
    limits = SubmitLimits(submits_per_minute=1, max_concurrent_jobs=1, video_seconds_per_day=5)
    assert (
        await reserve(store, "t", charge(clock, "a"), limits, hold_until=clock.now + 60)
    ).allowed
    refused = await reserve(store, "t", charge(clock, "b"), limits, hold_until=clock.now + 60)
    assert refused.violated == "submits_per_minute"
    assert refused.retry_after == pytest.approx(60.0)


async def test_rate_refills_continuously(store: Store, clock: FakeClock) -> None:
    limits = SubmitLimits(submits_per_minute=10)
    assert (await reserve_many(store, clock, limits, 10)).count(True) == 10
    refused = await reserve(store, "t", charge(clock, "x"), limits, hold_until=clock.now + 1)
    assert refused.retry_after == pytest.approx(6.0)
    clock.advance(5.999)
    assert not (
        await reserve(store, "t", charge(clock, "y"), limits, hold_until=clock.now + 1)
    ).allowed
    clock.advance(0.001)
    allowed = await reserve(store, "t", charge(clock, "z"), limits, hold_until=clock.now + 1)
    assert allowed.allowed
    assert allowed.limits[0].remaining == 0
    assert allowed.limits[0].reset_after == pytest.approx(6.0)


async def test_slots_expire_at_hold_until(store: Store, clock: FakeClock) -> None:
    limits = SubmitLimits(max_concurrent_jobs=1)
    assert (
        await reserve(store, "t", charge(clock, "a"), limits, hold_until=clock.now + 30)
    ).allowed
    assert not (
        await reserve(store, "t", charge(clock, "b"), limits, hold_until=clock.now + 30)
    ).allowed
    clock.advance(30)
    assert (
        await reserve(store, "t", charge(clock, "c"), limits, hold_until=clock.now + 30)
    ).allowed


async def test_release_refunds_once_and_keeps_the_rate(store: Store, clock: FakeClock) -> None:
    limits = SubmitLimits(submits_per_minute=5, max_concurrent_jobs=1, video_seconds_per_day=5)
    reserved = charge(clock, "a")
    assert (await reserve(store, "t", reserved, limits, hold_until=clock.now + 60)).allowed
    assert await store.release("t", reserved) is True
    assert await store.release("t", reserved) is False
    states, in_use = await store.usage("t", limits, None, reserved)
    assert in_use == 0
    assert {s.name: s.remaining for s in states} == {
        "submits_per_minute": 4,
        "max_concurrent_jobs": 1,
        "video_seconds_per_day": 5,
    }


async def test_budgets_are_per_period(store: Store, clock: FakeClock) -> None:
    limits = SubmitLimits(video_seconds_per_day=5)
    today = charge(clock, "a", day="2026-11-23")
    assert (await reserve(store, "t", today, limits, hold_until=clock.now + 1)).allowed
    assert not (
        await reserve(store, "t", charge(clock, "b"), limits, hold_until=clock.now + 1)
    ).allowed
    tomorrow = charge(clock, "c", day="2026-11-24")
    assert (await reserve(store, "t", tomorrow, limits, hold_until=clock.now + 1)).allowed


async def test_tenants_do_not_share_limits(store: Store, clock: FakeClock) -> None:
    limits = SubmitLimits(max_concurrent_jobs=1)
    assert (
        await reserve(store, "a", charge(clock, "x"), limits, hold_until=clock.now + 60)
    ).allowed
    assert (
        await reserve(store, "b", charge(clock, "x"), limits, hold_until=clock.now + 60)
    ).allowed


async def charged_job(
    store: Store, clock: FakeClock, request_id: str, limits: SubmitLimits
) -> Charge:
    reserved = charge(clock, f"token-{request_id}")
    assert (await reserve(store, "t", reserved, limits, hold_until=clock.now + 60)).allowed
    await store.add_job("t", request_id, "m", b"{}", charge=reserved, deadline=clock.now + 3600)
    return reserved


async def due_ids(store: Store, *, before: float) -> list[str]:
    """The ids of the jobs the reconciler would read, checked last before ``before``."""
    due = await store.jobs_to_reconcile(checked_before=before, limit=10)
    return [request_id for _, request_id, _ in due]


async def test_settle_refund_happens_exactly_once(store: Store, clock: FakeClock) -> None:
    limits = SubmitLimits(max_concurrent_jobs=1, video_seconds_per_day=5)
    reserved = await charged_job(store, clock, "r1", limits)
    clock.advance(120)  # past hold_until: the job's deadline holds the slot now
    states, in_use = await store.usage("t", limits, None, reserved)
    assert in_use == 1
    settlements = await asyncio.gather(*(store.settle("t", "r1", refund=True) for _ in range(20)))
    done = [s for s in settlements if s is not None]
    assert len(done) == 1
    assert (done[0].cost, done[0].refunded) == (5, 5)
    states, in_use = await store.usage("t", limits, None, reserved)
    assert in_use == 0
    assert {s.name: s.remaining for s in states}["video_seconds_per_day"] == 5


async def test_settle_success_keeps_the_charge(store: Store, clock: FakeClock) -> None:
    limits = SubmitLimits(max_concurrent_jobs=1, video_seconds_per_day=5)
    reserved = await charged_job(store, clock, "r1", limits)
    settled = await store.settle("t", "r1", refund=False)
    assert settled is not None
    assert settled.refunded == 0
    states, in_use = await store.usage("t", limits, None, reserved)
    assert in_use == 0
    assert {s.name: s.remaining for s in states}["video_seconds_per_day"] == 0
    assert await store.settle("t", "r1", refund=True) is None


async def test_an_expired_job_that_succeeds_after_all_is_charged_again_once(
    store: Store, clock: FakeClock
) -> None:
    limits = SubmitLimits(max_concurrent_jobs=1, video_seconds_per_day=5)
    reserved = await charged_job(store, clock, "r1", limits)
    expired = await store.settle("t", "r1", refund=True, expired=True)
    assert expired == Settlement(5, 5)
    assert await store.settle("t", "r1", refund=True, expired=True) is None
    states, in_use = await store.usage("t", limits, None, reserved)
    assert (in_use, {s.name: s.used for s in states}["video_seconds_per_day"]) == (0, 0)
    assert await due_ids(store, before=clock.now + 1) == ["r1"]  # still watched
    late = await asyncio.gather(*(store.settle("t", "r1", refund=False) for _ in range(10)))
    assert [s for s in late if s is not None] == [Settlement(5, 0, late=True)]
    states, in_use = await store.usage("t", limits, None, reserved)
    assert (in_use, {s.name: s.used for s in states}["video_seconds_per_day"]) == (0, 5)
    assert await due_ids(store, before=clock.now + 1) == []


async def test_an_expired_job_that_fails_after_all_is_closed_without_a_second_refund(
    store: Store, clock: FakeClock
) -> None:
    limits = SubmitLimits(video_seconds_per_day=50)
    reserved = await charged_job(store, clock, "r1", limits)
    await charged_job(store, clock, "r2", limits)  # its 5 s stay charged
    assert await store.settle("t", "r1", refund=True, expired=True) is not None
    assert await store.settle("t", "r1", refund=True) is None
    assert await store.settle("t", "r1", refund=False) is None  # closed for good
    states, _ = await store.usage("t", limits, None, reserved)
    assert {s.name: s.used for s in states}["video_seconds_per_day"] == 5
    assert await due_ids(store, before=clock.now + 1) == ["r2"]


async def test_a_deferred_check_keeps_a_job_from_the_reconciler_that_much_longer(
    store: Store, clock: FakeClock
) -> None:
    await charged_job(store, clock, "r1", SubmitLimits())
    await store.mark_checked("t", "r1", defer=600)
    assert await due_ids(store, before=clock.now + 599) == []
    assert await due_ids(store, before=clock.now + 601) == ["r1"]


async def test_a_settled_job_recorded_again_is_not_reconciled(
    store: Store, clock: FakeClock
) -> None:
    """A job carries one charge: a second one is ignored, and does not list it again."""
    await charged_job(store, clock, "r1", SubmitLimits())
    assert await store.settle("t", "r1", refund=False) is not None
    await store.add_job("t", "r1", "m", b"{}", charge=charge(clock, "again"), deadline=clock.now)
    assert await store.jobs_to_reconcile(checked_before=clock.now + 1, limit=10) == []
    assert await store.settle("t", "r1", refund=True) is None


async def test_nothing_to_settle(store: Store, clock: FakeClock) -> None:
    assert await store.settle("t", "unknown", refund=True) is None
    await store.add_job("t", "uncharged", "m", b"{}")
    assert await store.settle("t", "uncharged", refund=True) is None
    await charged_job(store, clock, "r1", SubmitLimits())
    assert await store.settle("other", "r1", refund=True) is None


async def test_reads_are_rate_limited_exactly(store: Store, clock: FakeClock) -> None:
    results = await asyncio.gather(*(store.take_read("t", 30) for _ in range(50)))
    assert [d.allowed for d in results].count(True) == 30
    refused = next(d for d in results if not d.allowed)
    assert refused.violated == "reads_per_minute"
    assert refused.retry_after == pytest.approx(2.0)
    clock.advance(2)
    assert (await store.take_read("t", 30)).allowed


@pytest.mark.parametrize("limit", [7768, 9999])
async def test_reads_admit_exactly_the_limit_each_minute(
    store: Store, clock: FakeClock, limit: int
) -> None:
    """60e6 / limit µs is not whole here; rounding it down would let one read more through."""
    for _ in range(2):
        results = await asyncio.gather(*(store.take_read("t", limit) for _ in range(limit + 20)))
        assert [d.allowed for d in results].count(True) == limit
        clock.advance(60)


async def test_a_burst_of_submits_admits_exactly_the_limit(store: Store, clock: FakeClock) -> None:
    limits = SubmitLimits(submits_per_minute=7768)
    decisions = await asyncio.gather(
        *(
            reserve(store, "t", charge(clock, f"tok{i}", 0), limits, hold_until=clock.now)
            for i in range(7768 + 20)
        )
    )
    assert [d.allowed for d in decisions].count(True) == 7768


async def test_a_clock_behind_the_rate_shows_no_negative_room(
    store: Store, clock: FakeClock
) -> None:
    """A replica whose clock runs behind can find a TAT more than a window ahead of its now."""
    assert all([(await store.take_read("t", 10)).allowed for _ in range(10)])
    clock.advance(-120)  # the TAT is now 180 s ahead, and a read passes once it is 54 s ahead
    states, _ = await store.usage("t", NO_LIMITS, 10, charge(clock, "x"))
    assert states == (LimitState("reads_per_minute", 10, 0, 126.0),)


async def test_usage_consumes_nothing(store: Store, clock: FakeClock) -> None:
    limits = SubmitLimits(submits_per_minute=2)
    for _ in range(3):
        states, _ = await store.usage("t", limits, 10, charge(clock, "x"))
        assert {s.name: s.remaining for s in states} == {
            "submits_per_minute": 2,
            "reads_per_minute": 10,
        }
    await store.take_read("t", 10)
    states, _ = await store.usage("t", limits, 10, charge(clock, "x"))
    assert {s.name: s.remaining for s in states}["reads_per_minute"] == 9


async def test_a_lowered_limit_shows_the_use_above_it_and_no_negative_room(
    store: Store, clock: FakeClock
) -> None:
    """Jobs reserved under the old limits stay counted: use can exceed a limit lowered since."""
    before = SubmitLimits(max_concurrent_jobs=3, video_seconds_per_day=30)
    for token in ("a", "b", "c"):
        await reserve(store, "t", charge(clock, token, 10), before, hold_until=clock.now + 600)
    lowered = SubmitLimits(max_concurrent_jobs=1, video_seconds_per_day=10)
    states, in_flight = await store.usage("t", lowered, None, charge(clock, "x"))
    assert in_flight == 3
    assert {s.name: (s.used, s.remaining) for s in states} == {
        "max_concurrent_jobs": (3, 0),
        "video_seconds_per_day": (30, 0),
    }
    refused = await reserve(store, "t", charge(clock, "d", 10), lowered, hold_until=clock.now + 1)
    assert not refused.allowed
    assert [s.remaining for s in refused.limits] == [0, 0]


async def test_reconcile_lists_unsettled_jobs_by_last_check(store: Store, clock: FakeClock) -> None:
    await charged_job(store, clock, "r1", SubmitLimits())
    clock.advance(1)
    await charged_job(store, clock, "r2", SubmitLimits())
    await store.add_job("t", "uncharged", "m", b"{}")
    clock.advance(1)
    due = await store.jobs_to_reconcile(checked_before=clock.now, limit=10)
    assert [(t, r) for t, r, _ in due] == [("t", "r1"), ("t", "r2")]
    assert due[0][2] == clock.now - 2
    await store.mark_checked("t", "r1")
    due = await store.jobs_to_reconcile(checked_before=clock.now, limit=10)
    assert [r for _, r, _ in due] == ["r2"]
    await store.settle("t", "r2", refund=False)
    assert await store.jobs_to_reconcile(checked_before=clock.now + 1, limit=10) == [
        ("t", "r1", clock.now - 2)
    ]
    assert len(await store.jobs_to_reconcile(checked_before=clock.now + 1, limit=0 + 1)) == 1


async def claim(
    store: Store,
    clock: FakeClock,
    key: str,
    fingerprint: str,
    *,
    tenant: str = "t",
    limits: SubmitLimits = NO_LIMITS,
) -> SubmitStart:
    """A submit's first store step with ``Idempotency-Key: key`` (claims last 60 s)."""
    return await store.begin_submit(
        tenant,
        charge(clock, claim_token(clock, key, fingerprint)),
        limits,
        hold_until=clock.now + 600,
        idempotency=Idempotency(key, fingerprint, 60),
    )


def claim_token(clock: FakeClock, key: str, fingerprint: str) -> str:
    """The reservation token ``claim`` uses now."""
    return f"tok-{clock.now}-{key}-{fingerprint}"


async def outcome(store: Store, clock: FakeClock, key: str, fingerprint: str, **kw: Any) -> str:
    state = (await claim(store, clock, key, fingerprint, **kw)).claim
    assert state is not None
    return state.outcome


async def test_idempotency_claims(store: Store, clock: FakeClock) -> None:
    assert await outcome(store, clock, "k", "fp1") == "new"
    assert await outcome(store, clock, "k", "fp1") == "pending"
    assert await outcome(store, clock, "k", "fp2") == "mismatch"
    assert await outcome(store, clock, "k", "fp2", tenant="other") == "new"
    await store.finish_idempotent("t", "k", "fp1", 200, b'{"request_id":"r"}', ttl=86400)
    done = (await claim(store, clock, "k", "fp1")).claim
    assert done == IdempotencyState("done", 200, b'{"request_id":"r"}')
    assert await outcome(store, clock, "k", "fp2") == "mismatch"
    clock.advance(86400)
    assert await outcome(store, clock, "k", "fp2") == "new"


async def test_a_taken_key_reserves_nothing(store: Store, clock: FakeClock) -> None:
    limits = SubmitLimits(submits_per_minute=10, max_concurrent_jobs=10, video_seconds_per_day=100)
    first = await claim(store, clock, "k", "fp", limits=limits)
    assert first.decision is not None
    assert first.decision.allowed
    for fingerprint in ("fp", "other"):
        assert (await claim(store, clock, "k", fingerprint, limits=limits)).decision is None
    states, in_use = await store.usage("t", limits, None, charge(clock, "probe"))
    assert in_use == 1
    assert {s.name: s.remaining for s in states}["video_seconds_per_day"] == 95


async def test_a_refused_submit_leaves_its_key_free(store: Store, clock: FakeClock) -> None:
    limits = SubmitLimits(max_concurrent_jobs=1)
    assert await outcome(store, clock, "k1", "fp", limits=limits) == "new"
    refused = await claim(store, clock, "k2", "fp", limits=limits)
    assert refused.decision is not None
    assert not refused.decision.allowed
    assert await outcome(store, clock, "k2", "fp") == "new"  # the refusal claimed nothing


async def test_recording_the_job_stores_the_keys_answer(store: Store, clock: FakeClock) -> None:
    token = claim_token(clock, "k", "fp")
    start = await claim(store, clock, "k", "fp")
    assert start.decision is not None
    await store.add_job(
        "t",
        "r1",
        "m",
        b'{"request_id":"r1"}',
        charge=charge(clock, token),
        idempotency=Idempotency("k", "fp", 900, token),
    )
    assert (await claim(store, clock, "k", "fp")).claim == IdempotencyState(
        "done", 200, b'{"request_id":"r1"}'
    )
    assert [
        r for _, r, _ in await store.jobs_to_reconcile(checked_before=clock.now + 1, limit=5)
    ] == ["r1"]
    clock.advance(900)
    assert await outcome(store, clock, "k", "fp") == "new"


async def test_recording_a_job_keeps_an_answer_the_key_has_already(
    store: Store, clock: FakeClock
) -> None:
    """A job written back after an outage must not replace the answer another submit with the
    key got meanwhile: a replay switched to the other job, or to a mismatch (review finding)."""
    await store.finish_idempotent("t", "k", "fp-b", 200, b'{"request_id":"job-b"}', ttl=86400)
    key = Idempotency("k", "fp-a", 86400)
    await store.add_job("t", "job-a", "m", b"{}", idempotency=key, answer=b'{"request_id":"a"}')
    assert (await claim(store, clock, "k", "fp-b")).claim == IdempotencyState(
        "done", 200, b'{"request_id":"job-b"}'
    )
    assert (await store.get_job("t", "job-a")) is not None  # the job itself is recorded


async def test_recording_a_job_leaves_a_key_another_submit_holds(
    store: Store, clock: FakeClock
) -> None:
    """Replica Y holds the key, pending; replica X's write-back took it, and Y's client, given
    job-b, then got a mismatch on replay (review finding)."""
    await claim(store, clock, "k", "fp-b")
    held_by = claim_token(clock, "k", "fp-b")
    written_back = Idempotency("k", "fp-a", 86400, "tok-x")
    await store.add_job("t", "job-a", "m", b"{}", idempotency=written_back, answer=b"job-a")
    own = Idempotency("k", "fp-b", 86400, held_by)
    await store.add_job("t", "job-b", "m", b"{}", idempotency=own, answer=b"job-b")
    assert (await claim(store, clock, "k", "fp-b")).claim == IdempotencyState("done", 200, b"job-b")


async def test_recording_a_job_takes_a_key_whose_claim_has_expired(
    store: Store, clock: FakeClock
) -> None:
    """The memory store took it and Redis did not, so a replay there made a second job."""
    await claim(store, clock, "k", "fp-a")  # claims last 60 s
    clock.advance(61)
    own = Idempotency("k", "fp-b", 86400, "tok-b")
    await store.add_job("t", "job-b", "m", b"{}", idempotency=own, answer=b"job-b")
    assert (await claim(store, clock, "k", "fp-b")).claim == IdempotencyState("done", 200, b"job-b")


async def test_the_keys_answer_can_differ_from_the_jobs_record(
    store: Store, clock: FakeClock
) -> None:
    """A replay returns the submit's own answer; polls get the job's (status-shaped) record."""
    token = claim_token(clock, "k", "fp")
    await claim(store, clock, "k", "fp")
    await store.add_job(
        "t",
        "r1",
        "m",
        b'{"request_id":"r1","payload":{}}',
        charge=charge(clock, token),
        idempotency=Idempotency("k", "fp", 900, token),
        answer=b'{"request_id":"r1"}',
    )
    replay = (await claim(store, clock, "k", "fp")).claim
    assert replay == IdempotencyState("done", 200, b'{"request_id":"r1"}')
    job = await store.get_job("t", "r1")
    assert job is not None
    assert job.record == b'{"request_id":"r1","payload":{}}'


async def test_abandoned_or_expired_claims_can_be_retried(store: Store, clock: FakeClock) -> None:
    assert await outcome(store, clock, "k", "fp") == "new"
    await store.abandon_idempotent("t", "k")
    assert await outcome(store, clock, "k", "fp") == "new"
    clock.advance(60)
    assert await outcome(store, clock, "k", "fp") == "new"


async def test_concurrent_claims_have_one_winner(store: Store, clock: FakeClock) -> None:
    states = await asyncio.gather(*(outcome(store, clock, "k", "fp") for _ in range(20)))
    assert states.count("new") == 1


async def test_leases(store: Store, clock: FakeClock) -> None:
    assert await store.acquire_lease("reconciler", "a", ttl=10)
    assert not await store.acquire_lease("reconciler", "b", ttl=10)
    assert await store.acquire_lease("reconciler", "a", ttl=10)
    clock.advance(9.9)
    assert not await store.acquire_lease("reconciler", "b", ttl=10)
    clock.advance(0.1)
    assert await store.acquire_lease("reconciler", "b", ttl=10)
    assert not await store.acquire_lease("reconciler", "a", ttl=10)


async def test_a_released_lease_is_free_at_once_but_only_its_holder_releases_it(
    store: Store,
) -> None:
    assert await store.acquire_lease("catalog", "a", ttl=10)
    await store.release_lease("catalog", "b")  # not b's to give up
    assert not await store.acquire_lease("catalog", "b", ttl=10)
    await store.release_lease("catalog", "a")
    assert await store.acquire_lease("catalog", "b", ttl=10)
    await store.release_lease("catalog", "a")  # b holds it now
    assert not await store.acquire_lease("catalog", "a", ttl=10)


async def test_poll_spends_a_read_proves_ownership_and_claims_once(
    store: Store, clock: FakeClock
) -> None:
    await store.add_job("t", "r1", "m", b'{"status":"queued"}')
    first = await store.poll_job("t", "r1", reads_per_minute=3, refresh_ttl=1.0)
    assert first.read is not None
    assert first.read.allowed
    assert first.read.limits[0].remaining == 2
    assert first.job is not None
    assert first.job.record == b'{"status":"queued"}'
    assert first.claimed
    second = await store.poll_job("t", "r1", reads_per_minute=3, refresh_ttl=1.0)
    assert second.job is not None
    assert not second.claimed
    foreign = await store.poll_job("other", "r1", reads_per_minute=None, refresh_ttl=1.0)
    assert foreign == type(foreign)(None, None, claimed=False)
    third = await store.poll_job("t", "missing", reads_per_minute=3, refresh_ttl=1.0)
    assert third.job is None
    assert third.read is not None
    assert third.read.allowed
    refused = await store.poll_job("t", "r1", reads_per_minute=3, refresh_ttl=1.0)
    assert refused.read is not None
    assert refused.read.violated == "reads_per_minute"
    assert refused.job is None
    assert not refused.claimed
    clock.advance(20)  # one read back (3 a minute), and the claim window is long over
    again = await store.poll_job("t", "r1", reads_per_minute=3, refresh_ttl=1.0)
    assert again.claimed
    assert again.job is not None


async def test_jobs_in_flight_of_many_tenants_at_once(store: Store, clock: FakeClock) -> None:
    limits = SubmitLimits()
    await reserve(store, "a", charge(clock, "a1"), limits, hold_until=clock.now + 60)
    await reserve(store, "a", charge(clock, "a2"), limits, hold_until=clock.now + 60)
    await reserve(store, "b", charge(clock, "b1"), limits, hold_until=clock.now + 5)
    released = charge(clock, "b2")
    await reserve(store, "b", released, limits, hold_until=clock.now + 60)
    await store.release("b", released)
    assert await store.jobs_in_flight(["a", "b", "nobody"]) == {"a": 2, "b": 1, "nobody": 0}
    clock.advance(10)  # b1's hold is over
    assert await store.jobs_in_flight(["a", "b"]) == {"a": 2, "b": 0}
    assert await store.jobs_in_flight([]) == {}


async def test_spent_counts_charges_whether_or_not_a_budget_limits_them(
    store: Store, clock: FakeClock
) -> None:
    """``/v1/usage`` showed no video seconds for a tenant without budgets: what sizing one
    starts from (review finding)."""
    assert await store.spent("t", charge(clock, "probe")) == (0, 0)
    first = charge(clock, "a", cost=5)
    assert (await reserve(store, "t", first, NO_LIMITS, hold_until=clock.now + 60)).allowed
    assert (
        await reserve(store, "t", charge(clock, "b", cost=3), NO_LIMITS, hold_until=clock.now + 60)
    ).allowed
    assert await store.spent("t", charge(clock, "probe")) == (8, 8)
    assert await store.release("t", first)
    assert await store.spent("t", charge(clock, "probe")) == (3, 3)
    next_month = charge(clock, "probe", day="2026-12-01")
    assert await store.spent("t", next_month) == (0, 0)
