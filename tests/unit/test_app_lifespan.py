"""The lifespan moves what it built out of the garbage collector's reach (tail latency)."""

from __future__ import annotations

import asyncio
import gc
import time

import httpx
from litestar.testing import AsyncTestClient

from gateway.app import _cancel, create_app  # _cancel: how the lifespan stops its tasks
from gateway.services.tenant_registry import TenantRegistry
from gateway.services.tenants import parse_tenants
from gateway.settings import Settings
from gateway.store.memory import MemoryStore
from gateway.upstream import UpstreamClient


async def test_long_lived_objects_are_frozen_once_started() -> None:
    settings = Settings.from_env({"GMI_API_KEY": "k" * 20}, require_tenants_file=False)
    tenants = TenantRegistry.fixed(parse_tenants("tenants: []"))
    upstream = UpstreamClient(
        base_url="http://upstream.test",
        api_key="k" * 20,
        transport=httpx.MockTransport(lambda _: httpx.Response(503)),
    )
    app = create_app(
        settings, store=MemoryStore(clock=time.time), upstream=upstream, tenants=tenants
    )
    gc.unfreeze()
    try:
        async with AsyncTestClient(app) as client:
            assert (await client.get("/healthz")).status_code == 200
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        await upstream.aclose()


async def test_a_background_task_that_swallows_its_cancellation_is_still_stopped() -> None:
    """redis-py returns normally from a call cancelled while it opens a connection
    (redis/redis-py#2028): the store watch's loop went on, and the worker's shutdown waited on
    it until granian killed the worker (a flaky-test hunt's find)."""
    swallowed = 0

    async def loop_like_redis_py() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)  # a Redis call, mid-connect
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # the first cancellation is lost: the loop goes on

    task = asyncio.create_task(loop_like_redis_py())
    await asyncio.sleep(0)
    stopping = asyncio.create_task(_cancel(task))
    await asyncio.wait({stopping}, timeout=5)  # left running (not cancelled) if it hangs
    try:
        assert stopping.done()
        assert (task.cancelled(), swallowed) == (True, 1)
    finally:
        stopping.cancel()
        task.cancel()
