"""Both backends, one clock, one random script of job operations: every answer must be the same.

The contract suite checks each sentence on each backend; this checks what the sentences leave
to arithmetic (float retention edges, ties, pages across expiry) by comparing the two directly.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator

import pytest

from gateway.store import Store, StoredJob
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
