"""The model catalog shared by replicas through the store (DESIGN §5), on both backends: one
refresh per expiry across replicas, and an invalidation that no refresh under way undoes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx

from gateway.services.catalog import MODELS_KEY, Catalog
from gateway.sim import SimConfig, create_sim_app
from gateway.store import Store
from gateway.upstream import UpstreamClient
from tests.store.conftest import FakeClock

KEY = "sim-key"
PREFIX = "/api/v1/ie/requestqueue/apikey"
TTL = 60.0


class _Upstream(httpx.AsyncBaseTransport):
    """The simulator, counting model-list calls; ``during_list`` runs while one is answered."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.lists = 0
        self.during_list: Callable[[], Awaitable[None]] | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            self.lists += 1
            if self.during_list is not None:
                await self.during_list()
        return await self.inner.handle_async_request(request)


class _LeaseHook:
    """A store whose lease is taken only after ``before_lease`` ran (another replica's work)."""

    def __init__(self, store: Store, before_lease: Callable[[], Awaitable[None]]) -> None:
        self._store = store
        self._before_lease = before_lease

    async def acquire_lease(self, name: str, holder: str, *, ttl: float) -> bool:
        await self._before_lease()
        return await self._store.acquire_lease(name, holder, ttl=ttl)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@asynccontextmanager
async def upstream_of(clock: FakeClock) -> AsyncIterator[tuple[UpstreamClient, _Upstream]]:
    sim = create_sim_app(SimConfig(api_key=KEY, seed=7), clock=clock)
    transport = _Upstream(httpx.ASGITransport(sim))
    client = UpstreamClient(base_url="http://sim" + PREFIX, api_key=KEY, transport=transport)
    try:
        yield client, transport
    finally:
        await client.aclose()


async def test_a_refresh_that_lands_before_the_lease_is_taken_is_not_fetched_again(
    store: Store, clock: FakeClock
) -> None:
    """Seeing the shared copy stale, a replica took the lease another had just freed and
    fetched again: each replica refetched at every expiry (review finding)."""
    async with upstream_of(clock) as (upstream, calls):
        first = Catalog(upstream, store, ttl=TTL, clock=clock, holder="a")
        landed = (await first.model_ids()).value  # warm: shared and local
        raw = await store.cache_get(MODELS_KEY)
        assert raw is not None
        clock.advance(TTL + 1)  # every copy is stale now

        async def another_replica_refreshes() -> None:
            await store.cache_put(MODELS_KEY, raw[0], generation=await store.cache_generation())

        second = Catalog(
            upstream,
            _LeaseHook(store, another_replica_refreshes),  # type: ignore[arg-type]
            ttl=TTL,
            clock=clock,
            holder="b",
        )
        before = calls.lists
        found = await second.model_ids()
        assert (found.value, found.cache) == (landed, "HIT")
        assert calls.lists == before


async def test_an_invalidation_during_a_refresh_is_not_undone_by_it(
    store: Store, clock: FakeClock
) -> None:
    """A refresh under way when an operator invalidated (the upstream had just added a model)
    stored its older answer afterwards, as fresh, on every replica for a whole TTL."""
    async with upstream_of(clock) as (upstream, calls):
        catalog = Catalog(upstream, store, ttl=TTL, clock=clock, holder="a")

        async def operator_invalidates_on_another_replica() -> None:
            await store.cache_invalidate()

        calls.during_list = operator_invalidates_on_another_replica
        assert (await catalog.model_ids()).cache == "MISS"  # this caller gets the answer
        calls.during_list = None
        assert await store.cache_get(MODELS_KEY) is None  # nobody keeps it
        before = calls.lists
        assert (await catalog.model_ids()).cache == "MISS"
        assert calls.lists == before + 1
        assert (await catalog.model_ids()).cache == "HIT"  # the new answer is kept


async def test_a_replica_waiting_on_a_refresh_whose_answer_was_dropped_refreshes_at_once(
    store: Store, clock: FakeClock
) -> None:
    """A cold replica waits for the lease holder's shared copy; dropped by an invalidation, it
    never came, and the replica waited out its whole wait before fetching (review finding)."""
    async with upstream_of(clock) as (upstream, calls):
        holder = Catalog(upstream, store, ttl=TTL, clock=clock, holder="a")
        waiter = Catalog(upstream, store, ttl=TTL, clock=clock, holder="b", shared_wait=30)
        answer = asyncio.Event()

        async def upstream_answers_later() -> None:
            await answer.wait()

        calls.during_list = upstream_answers_later
        refresh = asyncio.create_task(holder.model_ids())
        async with asyncio.timeout(5):
            while calls.lists == 0:  # the holder's refresh is upstream, its lease taken
                await asyncio.sleep(0.01)
        calls.during_list = None
        await store.cache_invalidate()
        waiting = asyncio.create_task(waiter.model_ids())
        await asyncio.sleep(0.2)  # waiting on the holder's lease
        answer.set()
        assert (await refresh).cache == "MISS"
        async with asyncio.timeout(5):  # not the 30 s wait
            assert (await waiting).cache == "MISS"
        assert calls.lists == 2
