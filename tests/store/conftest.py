"""The ``store`` fixture: every contract test runs against the memory and the Redis backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.store import Store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from tests.support.redis_server import RedisServer

RETENTION = 1000.0


class FakeClock:
    """Unix seconds that move only when a test says so."""

    def __init__(self, now: float = 1_790_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore(clock=clock, job_retention_seconds=RETENTION)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    server.flush()
    backend = RedisStore.from_url(server.url, clock=clock, job_retention_seconds=RETENTION)
    yield backend
    await backend.aclose()
