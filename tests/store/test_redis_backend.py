"""What only the Redis backend can do wrong: lost scripts, a dead server, cluster slots."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis

from gateway.store import StoreError
from gateway.store.redis import RedisStore
from tests.store.conftest import FakeClock
from tests.support.redis_server import RedisServer, find_redis_server

pytestmark = pytest.mark.redis
PASSWORD = "s3cret-redis-password"


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A redis-server this test may kill and restart (with a password, to check messages)."""
    server = RedisServer(find_redis_server(), password=PASSWORD).start()
    yield server
    server.stop()


@pytest.fixture
async def store(own_server: RedisServer, clock: FakeClock) -> AsyncIterator[RedisStore]:
    backend = RedisStore.from_url(own_server.url, clock=clock)
    yield backend
    await backend.aclose()


async def test_scripts_are_reloaded_after_script_flush(
    store: RedisStore, own_server: RedisServer
) -> None:
    await store.add_job("a", "r1", "m", b"1")
    client = redis.Redis.from_url(own_server.url)
    client.script_flush()
    client.close()
    await store.add_job("a", "r2", "m", b"2")
    assert await store.update_job_record("a", "r1", b"one") is True
    assert (await store.list_jobs("a")).total == 2


async def test_dead_server_is_a_store_error_without_credentials(
    store: RedisStore, own_server: RedisServer
) -> None:
    await store.ping()
    own_server.stop()
    for operation in (
        store.ping(),
        store.get_job("a", "r"),
        store.add_job("a", "r", "m", b""),
        store.list_jobs("a"),
    ):
        with pytest.raises(StoreError) as caught:
            await operation
        assert PASSWORD not in str(caught.value)
        assert caught.value.__cause__ is None or PASSWORD not in str(caught.value.__cause__)


async def test_same_store_recovers_when_redis_comes_back(
    store: RedisStore, own_server: RedisServer
) -> None:
    own_server.stop()
    with pytest.raises(StoreError):
        await store.ping()
    own_server.start()
    await store.ping()
    await store.add_job("a", "r", "m", b"x")
    assert await store.get_job("a", "r") is not None


async def test_every_key_carries_the_tenant_hash_tag(
    store: RedisStore, own_server: RedisServer
) -> None:
    await store.add_job("studio-web", "r1", "Kling-Text2Video-V2-Master", b"")
    await store.list_jobs("studio-web", model="Kling-Text2Video-V2-Master")
    client = aioredis.Redis.from_url(own_server.url)
    keys = [key.decode() for key in await client.keys("*")]
    await client.aclose()
    assert keys
    assert all(key.startswith("gmigw:{studio-web}:") for key in keys)
