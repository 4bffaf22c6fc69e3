"""The ``store`` fixture: every contract test runs against the memory and the Redis backend.

The ``redis_server`` fixture comes from ``tests.support.redis_server`` (registered as a plugin
by the root ``conftest.py``). A test can override ``retention`` by parametrizing it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from gateway.store import Store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from tests.support.redis_server import RedisServer

RETENTION = 1000.0
BACKENDS = ("memory", pytest.param("redis", marks=pytest.mark.redis))


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


@pytest.fixture
def retention() -> float:
    return RETENTION


def memory_store(clock: Callable[[], float], retention: float) -> MemoryStore:
    return MemoryStore(clock=clock, job_retention_seconds=retention)


def redis_store(server: RedisServer, clock: Callable[[], float], retention: float) -> RedisStore:
    """A store on a freshly flushed database of the session's server."""
    server.flush()
    return RedisStore.from_url(server.url, clock=clock, job_retention_seconds=retention)


@pytest.fixture(params=BACKENDS)
async def store(
    request: pytest.FixtureRequest, clock: FakeClock, retention: float
) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield memory_store(clock, retention)
        return
    backend = redis_store(request.getfixturevalue("redis_server"), clock, retention)
    yield backend
    await backend.aclose()
