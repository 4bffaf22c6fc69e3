"""Open failure mode: a charge is released and settled in the store that holds it.

A real redis-server, killed and restarted mid-test, is the shared store; a memory store is the
replica's local one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis

from gateway.services.failover import StoreFailover
from gateway.store.base import Charge, Idempotency, SubmitLimits, SubmitStart
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from tests.store.conftest import FakeClock
from tests.store.test_quota_contract import charge
from tests.store.test_redis_backend import until_undone
from tests.support.redis_server import RedisServer, find_redis_server

pytestmark = pytest.mark.redis

LIMITS = SubmitLimits(max_concurrent_jobs=5, video_seconds_per_day=100)


@pytest.fixture
def fragile_redis() -> Iterator[RedisServer]:
    with RedisServer(find_redis_server()) as server:
        yield server


@pytest.fixture
async def stores(
    fragile_redis: RedisServer, clock: FakeClock
) -> AsyncIterator[tuple[StoreFailover, RedisStore, MemoryStore]]:
    shared = RedisStore.from_url(fragile_redis.url, clock=clock, job_retention_seconds=1000)
    local = MemoryStore(clock=clock, job_retention_seconds=1000)
    yield StoreFailover(shared, local), shared, local
    await shared.aclose()


async def day_used(store: RedisStore | MemoryStore, cost: Charge) -> tuple[int, int]:
    """Video seconds used today, and slots in use."""
    states, in_flight = await store.usage("t", LIMITS, None, cost)
    remaining = next(s.remaining for s in states if s.name == "video_seconds_per_day")
    return 100 - remaining, in_flight


async def test_a_local_reservation_is_released_locally_after_redis_returns(
    stores: tuple[StoreFailover, RedisStore, MemoryStore],
    fragile_redis: RedisServer,
    clock: FakeClock,
) -> None:
    failover, shared, local = stores
    cost = charge(clock, "outage-1", cost=10)
    fragile_redis.stop()
    start = await failover.begin_submit("t", cost, LIMITS, hold_until=clock.now + 60)
    assert start.decision is not None
    assert start.decision.allowed
    fragile_redis.start()  # back before the upstream rejected the submit
    assert await failover.release("t", cost)
    assert await day_used(local, cost) == (0, 0)
    assert await day_used(shared, cost) == (0, 0)


async def test_a_local_reservation_is_recorded_and_settled_locally(
    stores: tuple[StoreFailover, RedisStore, MemoryStore],
    fragile_redis: RedisServer,
    clock: FakeClock,
) -> None:
    failover, shared, local = stores
    cost = charge(clock, "outage-2", cost=10)
    fragile_redis.stop()
    await failover.begin_submit("t", cost, LIMITS, hold_until=clock.now + 60)
    fragile_redis.start()
    await failover.add_job("t", "job-2", "m", b"{}", charge=cost, deadline=clock.now + 600)
    await failover.write_back_once()  # ownership only: the charge is not on the shared counters
    assert await shared.get_job("t", "job-2") is not None
    settled = await failover.settle("t", "job-2", refund=True)  # the job failed
    assert settled is not None
    assert settled.refunded == 10
    assert await day_used(local, cost) == (0, 0)
    assert await day_used(shared, cost) == (0, 0)


async def test_a_shared_reservation_recorded_locally_is_settled_in_redis(
    stores: tuple[StoreFailover, RedisStore, MemoryStore],
    fragile_redis: RedisServer,
    clock: FakeClock,
) -> None:
    """Redis failed between the reservation and the job's record, and came back with its data:
    the charge is on the shared counters, so the written-back job carries it and a failed job
    is refunded there."""
    failover, shared, _ = stores
    cost = charge(clock, "blip-3", cost=10)
    await failover.begin_submit("t", cost, LIMITS, hold_until=clock.now + 60)
    with redis.Redis.from_url(fragile_redis.url) as persist:
        persist.save()  # loaded again at restart, as a Redis with persistence would
    fragile_redis.stop()
    await failover.add_job("t", "job-3", "m", b"{}", charge=cost, deadline=clock.now + 600)
    fragile_redis.start()
    await failover.write_back_once()
    assert await day_used(shared, cost) == (10, 1)
    settled = await failover.settle("t", "job-3", refund=True)
    assert settled is not None
    assert settled.refunded == 10
    assert await day_used(shared, cost) == (0, 0)


async def test_a_shared_reservation_settled_during_the_outage_is_settled_once(
    stores: tuple[StoreFailover, RedisStore, MemoryStore],
    fragile_redis: RedisServer,
    clock: FakeClock,
) -> None:
    """Its job ended while Redis was away: settling it in the local store would be reported
    once, and again when the written-back job is settled in Redis, where the charge is."""
    failover, shared, local = stores
    cost = charge(clock, "blip-4", cost=10)
    await failover.begin_submit("t", cost, LIMITS, hold_until=clock.now + 60)
    with redis.Redis.from_url(fragile_redis.url) as persist:
        persist.save()
    fragile_redis.stop()
    await failover.add_job("t", "job-4", "m", b"{}", charge=cost, deadline=clock.now + 600)
    assert await failover.settle("t", "job-4", refund=True) is None  # the job failed: not here
    assert await day_used(local, cost) == (0, 0)  # but the local cap no longer counts it
    fragile_redis.start()
    assert await failover.settle("t", "job-4", refund=True) is None  # nor before write-back
    await failover.write_back_once()
    settled = await failover.settle("t", "job-4", refund=True)
    assert settled is not None
    assert settled.refunded == 10
    assert await day_used(shared, cost) == (0, 0)
    assert await failover.settle("t", "job-4", refund=True) is None


async def test_a_stalled_reservation_is_given_back_but_its_key_stays_claimed(
    fragile_redis: RedisServer, clock: FakeClock
) -> None:
    """Redis stalled: the submit went on under the local store, and the late script reserved
    in Redis too. Its reservation there is given back, but its Idempotency-Key stays claimed:
    freed, a retry with it made a second job (review finding)."""
    client = aioredis.Redis.from_url(fragile_redis.url, socket_timeout=0.3)
    shared = RedisStore(client, clock=clock)
    failover = StoreFailover(shared, MemoryStore(clock=clock))
    await warm_scripts(shared, clock)
    cost = charge(clock, "stalled", cost=10)
    start = await stalled_submit(failover, fragile_redis, cost, "order-7")
    assert start.decision is not None
    assert start.decision.allowed  # under the local store
    await until_undone(shared)
    assert await day_used(shared, cost) == (0, 0)
    assert await retry_outcome(shared, clock, "order-7") == "pending"
    await shared.aclose()


async def stalled_submit(
    failover: StoreFailover, server: RedisServer, cost: Charge, key: str
) -> SubmitStart:
    """A begin_submit through ``failover`` while Redis is stalled: it goes on locally, or not."""
    server.pause()
    try:
        return await failover.begin_submit(
            "t", cost, LIMITS, hold_until=cost.day_ends_at, idempotency=Idempotency(key, "fp", 120)
        )
    finally:
        server.resume()


async def retry_outcome(shared: RedisStore, clock: FakeClock, key: str) -> str:
    """What a client's retry with Idempotency-Key ``key`` finds in Redis."""
    retry = await shared.begin_submit(
        "t", charge(clock, "retry"), LIMITS, hold_until=clock.now + 60,
        idempotency=Idempotency(key, "fp", 120),
    )  # fmt: skip
    assert retry.claim is not None
    return retry.claim.outcome


async def test_a_submit_the_local_store_refuses_leaves_its_key_free(
    fragile_redis: RedisServer, clock: FakeClock
) -> None:
    """Refused, the submit went nowhere: its key must stay free for a retry (review finding:
    it was kept claimed, so the retry got 409 for two minutes)."""
    shared = RedisStore(aioredis.Redis.from_url(fragile_redis.url, socket_timeout=0.3), clock=clock)
    local = MemoryStore(clock=clock)
    failover = StoreFailover(shared, local)
    await warm_scripts(shared, clock)
    await local.begin_submit(
        "t", charge(clock, "earlier", cost=95), LIMITS, hold_until=clock.now + 60
    )
    start = await stalled_submit(failover, fragile_redis, charge(clock, "big", cost=10), "k")
    assert start.decision is not None
    assert not start.decision.allowed  # 95 + 10 > 100 locally; Redis, empty, took it late
    await until_undone(shared)
    assert await retry_outcome(shared, clock, "k") == "new"
    await shared.aclose()


async def test_a_key_answered_during_an_outage_is_written_back_with_its_job(
    fragile_redis: RedisServer, clock: FakeClock
) -> None:
    """The key's answer stayed in the local store: once the Redis claim expired, a retry with
    the key made a second job (review finding)."""
    shared = RedisStore(aioredis.Redis.from_url(fragile_redis.url, socket_timeout=0.3), clock=clock)
    failover = StoreFailover(shared, MemoryStore(clock=clock))
    await warm_scripts(shared, clock)
    cost = charge(clock, "outage", cost=10)
    start = await stalled_submit(failover, fragile_redis, cost, "order-9")
    assert start.decision is not None
    assert start.decision.allowed
    key = Idempotency("order-9", "fp", 86400, cost.token)
    await failover.add_job("t", "job-1", "m", b"{}", charge=cost, idempotency=key, answer=b"one")
    await until_undone(shared)
    await failover.write_back_once()
    clock.advance(200)  # past the claim a late begin_submit would have left
    retry = await shared.begin_submit(
        "t", charge(clock, "retry"), LIMITS, hold_until=clock.now + 60, idempotency=key
    )
    assert retry.claim is not None
    assert (retry.claim.outcome, retry.claim.body) == ("done", b"one")
    await shared.aclose()


async def warm_scripts(shared: RedisStore, clock: FakeClock) -> None:
    """Load the scripts: a NOSCRIPT reply, stalled, would not run later."""
    warm = charge(clock, "warm")
    await shared.begin_submit("t", warm, LIMITS, hold_until=clock.now + 60)
    await shared.release("t", warm)
