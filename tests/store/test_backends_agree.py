"""Both backends, one clock, one random script of job operations: every answer must be the same.

The contract suite checks each sentence on each backend; this checks what the sentences leave
to arithmetic (float retention edges, ties, pages across expiry) by comparing the two directly,
and holds both to exact rate arithmetic and to Redis's semantics of expired slots.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator, Iterable
from fractions import Fraction

import pytest
import redis

from gateway.store import Store, StoredJob
from gateway.store.base import (
    READS_PER_MINUTE,
    SUBMITS_PER_MINUTE,
    Charge,
    Decision,
    LimitState,
    SubmitLimits,
    SubmitStart,
)
from gateway.store.keys import store_key
from gateway.store.limits import to_us
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from tests.store.conftest import FakeClock, memory_store, redis_store
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.redis
RETENTION = 1000.3
TENANTS = ("a", "b")
IDS = tuple(f"r{n}" for n in range(8))
MODELS = ("Kling-Text2Video-V2-Master", "Veo3")


@pytest.fixture
def small_clock() -> FakeClock:
    """Near zero, where ``created + retention`` and ``now - retention`` round differently."""
    return FakeClock(0.1)


@pytest.fixture
async def pair(
    redis_server: RedisServer, small_clock: FakeClock
) -> AsyncIterator[tuple[Store, Store]]:
    backend = redis_store(redis_server, small_clock, RETENTION)
    yield memory_store(small_clock, RETENTION), backend
    await backend.aclose()


async def one_step(store: Store, rng: random.Random) -> object:
    """One random operation; ``rng`` is a copy per backend, so both draw the same choices."""
    tenant, request_id = rng.choice(TENANTS), rng.choice(IDS)
    action = rng.randrange(4)
    if action == 0:
        return await store.add_job(tenant, request_id, rng.choice(MODELS), rng.randbytes(4))
    if action == 1:
        return await store.get_job(tenant, request_id)
    if action == 2:
        return await store.update_job_record(tenant, request_id, rng.randbytes(4))
    model = rng.choice((None, *MODELS))
    return await store.list_jobs(
        tenant, model=model, limit=rng.randint(1, 5), offset=rng.randint(0, 6)
    )


@pytest.mark.parametrize("seed", range(5))
async def test_memory_and_redis_answer_alike(
    pair: tuple[Store, Store], small_clock: FakeClock, seed: int
) -> None:
    memory, redis = pair
    rng = random.Random(seed)
    created: list[float] = []
    for step in range(500):
        state = rng.getstate()
        expected = await one_step(memory, rng)
        rng.setstate(state)
        assert await one_step(redis, rng) == expected, f"seed {seed}, step {step}"
        if isinstance(expected, StoredJob):
            created.append(expected.created_at)
        small_clock.now = next_instant(rng, small_clock.now, created)


def next_instant(rng: random.Random, now: float, created: list[float]) -> float:
    """Often the next retention edge of a job (give or take one ulp), else a small step on."""
    edges = [at + RETENTION for at in created if at + RETENTION > now]
    if edges and rng.random() < 0.5:
        edge = min(edges)
        nudged = (
            math.nextafter(edge, rng.choice((-math.inf, math.inf))) if rng.random() < 0.7 else edge
        )
        return max(now, nudged)
    return now + rng.random() * 0.7


# --- rates: both backends against GCRA in exact fractions --------------------------------------

WINDOW_US = 60_000_000
RATE_LIMITS = (7, 13, 7768, 9999, 12_345, 999_983, 1_000_000)  # the limit cap, 1e6, too
EXPIRY_MARGIN_US = 1_000_000


class ExactRate:
    """GCRA straight from its definition, in fractions: what both stores must answer."""

    def __init__(self, limit: int, tat: int) -> None:
        self.limit = limit
        self.interval = Fraction(WINDOW_US, limit)
        self.tat = Fraction(tat)

    def take(self, now: int) -> tuple[bool, int, int, int]:
        """``(allowed, remaining, reset µs, retry µs)``, spending one request when allowed."""
        ahead = max(self.tat, now) + self.interval - now
        if ahead > WINDOW_US:
            wait = math.ceil(ahead - WINDOW_US)
            return False, 0, wait, wait
        self.tat = now + ahead
        return (True, *self._room(ahead), 0)

    def peek(self, now: int) -> tuple[int, int]:
        return self._room(max(self.tat, now) - now)

    def _room(self, ahead: Fraction) -> tuple[int, int]:
        remaining = math.floor((WINDOW_US - ahead) / self.interval)
        return remaining, 0 if remaining else math.ceil(ahead + self.interval - WINDOW_US)


def expected(
    name: str, limit: int, allowed: bool, remaining: int, reset: int, retry: int
) -> Decision:
    state = LimitState(name, limit, remaining, reset / 1e6)
    if allowed:
        return Decision(True, (state,))
    return Decision(False, (state,), name, retry / 1e6)


@pytest.fixture
async def stores(
    redis_server: RedisServer, clock: FakeClock
) -> AsyncIterator[tuple[MemoryStore, RedisStore]]:
    """Both backends at today's clock, where µs times (~1.8e15) leave Lua's doubles little room."""
    backend = redis_store(redis_server, clock, RETENTION)
    yield memory_store(clock, RETENTION), backend
    await backend.aclose()


@pytest.mark.parametrize("limit", RATE_LIMITS)
async def test_rates_are_exact_on_both_backends(
    stores: tuple[MemoryStore, RedisStore], redis_server: RedisServer, clock: FakeClock, limit: int
) -> None:
    """Random reads, submits and usage calls around a full rate, from a TAT the previous
    release stored (whole µs), on both backends: every answer is the exact one."""
    memory, redis_backend = stores
    rng = random.Random(limit)
    now = to_us(clock.now)
    rates: dict[str, ExactRate] = {}
    with redis.Redis.from_url(redis_server.url) as raw:
        for kind in ("read", "submit"):
            tat = now + WINDOW_US - rng.randint(0, 3 * WINDOW_US // limit)  # about full
            rates[kind] = ExactRate(limit, tat)
            memory._rates["t", kind] = tat
            raw.set(store_key("gmigw", "t", "rate", kind), tat, px=120_000)
    limits = SubmitLimits(submits_per_minute=limit)
    for step in range(200):
        now = to_us(clock.now)
        action = rng.randrange(3)
        if action == 0:
            n = rng.randint(1, 4)  # concurrent reads share one script call on Redis
            want: object = [
                expected(READS_PER_MINUTE, limit, *rates["read"].take(now)) for _ in range(n)
            ]
            for store in (memory, redis_backend):
                got: object = await asyncio.gather(*(store.take_read("t", limit) for _ in range(n)))
                assert got == want, f"{type(store).__name__}, step {step}"
        elif action == 1:
            want = expected(SUBMITS_PER_MINUTE, limit, *rates["submit"].take(now))
            for store in (memory, redis_backend):
                cost = charge_of(clock, f"tok{step}")
                got = await store.begin_submit("t", cost, limits, hold_until=clock.now)
                assert got == SubmitStart(None, want), f"{store}, step {step}"
        else:
            want = tuple(
                LimitState(name, limit, remaining, reset / 1e6)
                for name, (remaining, reset) in (
                    (SUBMITS_PER_MINUTE, rates["submit"].peek(now)),
                    (READS_PER_MINUTE, rates["read"].peek(now)),
                )
            )
            for store in (memory, redis_backend):
                got, _ = await store.usage("t", limits, limit, charge_of(clock, "probe"))
                assert got == want, f"{type(store).__name__}, step {step}"
        clock.now = next_now(rng, now, limit, rates.values()) / 1e6
    with redis.Redis.from_url(redis_server.url) as raw:
        stored = [raw.get(store_key("gmigw", "t", "rate", kind)) for kind in ("read", "submit")]
    # The previous release reads what we store as a number; it must be in the past to it (so it
    # admits), not far ahead (so it would refuse everything until the key expires).
    assert all(value is None or int(value) < now for value in stored)


def next_now(rng: random.Random, now: int, limit: int, rates: Iterable[ExactRate]) -> int:
    """Up to two intervals on (on average one: the rate stays about full), but never to just
    short of a TAT: Redis expires a rate key a millisecond after its TAT by its own clock,
    which does not follow the fake one."""
    later = now + rng.randint(0, 2 * WINDOW_US // limit)
    for rate in sorted(rates, key=lambda r: r.tat):
        if 0 < rate.tat - later < EXPIRY_MARGIN_US:
            later = math.ceil(rate.tat) + 1
    return later


def charge_of(clock: FakeClock, token: str, cost: int = 0) -> Charge:
    return Charge(token, cost, "2026-11-23", "2026-11", clock.now + 86400, clock.now + 40 * 86400)


# --- concurrency slots ---------------------------------------------------------------------------


async def late_release(
    store: Store, clock: FakeClock, tenant: str, *, cost_between: int | None
) -> tuple[bool, int, int]:
    """Reserve with a 10 s hold, read usage 20 s on (and submit again at ``cost_between``, if
    given), then release: whether it released, the day budget left and the slots in use."""
    limits = SubmitLimits(video_seconds_per_day=100)
    reserved = charge_of(clock, "a", cost=5)
    start = await store.begin_submit(tenant, reserved, limits, hold_until=clock.now + 10)
    assert start.decision is not None
    assert start.decision.allowed
    clock.advance(20)
    await store.usage(tenant, limits, None, reserved)
    if cost_between is not None:
        await store.begin_submit(
            tenant, charge_of(clock, "b", cost=cost_between), limits, hold_until=clock.now + 10
        )
    released = await store.release(tenant, reserved)
    states, in_use = await store.usage(tenant, limits, None, reserved)
    clock.advance(-20)
    return released, states[0].remaining, in_use


async def test_a_release_after_the_hold_ran_out_agrees(
    stores: tuple[MemoryStore, RedisStore], clock: FakeClock
) -> None:
    """An expired slot stays until a submit that is allowed drops it (release.lua still finds it
    until then), however often usage is read or submits are refused meanwhile: a late release
    refunds only before the next accepted submit. The memory store used to drop it on a refusal."""
    for store in stores:
        assert await late_release(store, clock, "a", cost_between=None) == (True, 100, 0)
        assert await late_release(store, clock, "b", cost_between=5) == (False, 90, 1)
        assert await late_release(store, clock, "c", cost_between=500) == (True, 100, 0)
