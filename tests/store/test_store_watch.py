"""A Redis that lost its data is noticed (logged at ERROR and counted) once, and a Redis that
restarts with its data is not taken for one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from gateway.services.store_watch import StoreWatch
from gateway.store import StoreError
from gateway.store.redis import RedisStore
from tests.store.conftest import FakeClock
from tests.support.redis_server import RedisServer, find_redis_server

pytestmark = pytest.mark.redis


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    server = RedisServer(find_redis_server()).start()
    yield server
    server.close()


@pytest.fixture
async def store(own_server: RedisServer, clock: FakeClock) -> AsyncIterator[RedisStore]:
    backend = RedisStore.from_url(own_server.url, clock=clock)
    yield backend
    await backend.aclose()


def losses() -> float:
    return REGISTRY.get_sample_value("gmigw_store_data_lost_total") or 0.0


async def test_the_store_keeps_the_first_data_id_until_it_loses_its_data(
    store: RedisStore, own_server: RedisServer
) -> None:
    assert await store.data_id("first") == "first"
    assert await store.data_id("second") == "first"
    own_server.flush()
    assert await store.data_id("third") == "third"


async def test_a_redis_restarted_empty_is_reported_once(
    store: RedisStore, own_server: RedisServer
) -> None:
    watch = StoreWatch(store)
    before = losses()
    with capture_logs() as logs:
        assert await watch.check() is False  # the first look: nothing to compare with
        assert await watch.check() is False
        own_server.stop()  # no persistence: it comes back empty
        with pytest.raises(StoreError):  # run() skips a check the store cannot answer
            await watch.check()
        own_server.start()
        assert await watch.check() is True
        assert await watch.check() is False
    assert losses() == before + 1
    assert [log["log_level"] for log in logs if log["event"] == "store_data_lost"] == ["error"]


async def test_a_redis_restarted_with_its_data_is_not_a_loss(
    store: RedisStore, own_server: RedisServer
) -> None:
    watch = StoreWatch(store)
    assert await watch.check() is False
    with redis.Redis.from_url(own_server.url) as client:
        client.save()  # the snapshot the restarted server loads
    own_server.stop()
    with pytest.raises(StoreError):
        await watch.check()
    own_server.start()
    before = losses()
    assert await watch.check() is False
    assert losses() == before


async def test_every_worker_of_a_replica_reports_the_loss(
    store: RedisStore, own_server: RedisServer, clock: FakeClock
) -> None:
    """The worker that writes the new id and those that read it afterwards all report."""
    other = RedisStore.from_url(own_server.url, clock=clock)
    try:
        first, second = StoreWatch(store), StoreWatch(other)
        assert (await first.check(), await second.check()) == (False, False)
        own_server.flush()
        assert (await first.check(), await second.check()) == (True, True)
    finally:
        await other.aclose()
