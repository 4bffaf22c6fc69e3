"""The reconciler against the simulator, on both stores: it settles what it reads, with the
status the upstream reports, and expires only jobs still running past their deadline (or
unreadable well past it)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import msgspec
import pytest
import redis
from prometheus_client import REGISTRY

from gateway.services.catalog import Catalog
from gateway.services.jobs import Jobs
from gateway.services.quota import Quotas
from gateway.services.reconciler import LEASE_NAME, Reconciler
from gateway.services.tenants import Limits, Principal, Tenant
from gateway.sim import SimConfig, create_sim_app
from gateway.store import Store
from gateway.upstream import UpstreamClient
from tests.store.conftest import FakeClock, redis_store
from tests.support.redis_server import RedisServer

SIM_KEY = "sim-test-key"
PREFIX = "/api/v1/ie/requestqueue/apikey"
MODEL = "Kling-Text2Video-V2-Master"
COST = 5
DEADLINE = 3600.0
GRACE = 86400.0
GET_REQUEST = "GET /requests/{request_id}"
STATUSES = ("success", "failed", "cancelled", "expired")


@pytest.fixture
def retention() -> float:
    return 30 * 86400.0  # longer than the deadline and the grace, as in production


@dataclass
class World:
    """The gateway's job services over a store, and the simulated upstream behind them."""

    store: Store
    principal: Principal
    jobs: Jobs
    quotas: Quotas
    sim: httpx.AsyncClient
    upstream_calls: _WhileWaiting

    @property
    def tenant(self) -> str:
        return self.principal.tenant.id

    def reconciler(self, clock: FakeClock, *, read_budget: int = 20) -> Reconciler:
        return Reconciler(
            self.store,
            self.jobs,
            holder="test",
            clock=clock,
            deadline_seconds=DEADLINE,
            read_budget=read_budget,
            unreadable_grace=GRACE,
        )

    async def submit(self, prompt: str) -> str:
        body = {"model": MODEL, "payload": {"prompt": prompt, "duration": str(COST)}}
        submitted = await self.jobs.submit(self.principal, msgspec.json.encode(body))
        request_id: str = msgspec.json.decode(submitted.body)["request_id"]
        return request_id

    async def poll(self, request_id: str) -> bytes:
        """A client's status poll, as the route makes it."""
        poll = await self.jobs.poll(self.principal, request_id)
        assert poll.job is not None
        return await self.jobs.current(poll.job, claimed=poll.claimed)

    async def reads(self) -> int:
        """Status reads the upstream has served so far."""
        calls: dict[str, int] = (await self.sim.get("/_sim/stats")).json()["calls"]
        return calls[GET_REQUEST]

    async def month_used(self) -> int:
        usage = await self.quotas.usage(self.principal.tenant)
        used: int = usage["limits"]["video_seconds_per_month"]["used"]
        return used

    def finished(self) -> dict[str, float]:
        """Settlements by final status, as the settlement path counts them."""
        found = {}
        for status in STATUSES:
            labels = {"tenant": self.tenant, "model": MODEL, "status": status}
            value = REGISTRY.get_sample_value("gmigw_jobs_finished_total", labels)
            if value:
                found[status] = value
        return found


class _WhileWaiting(httpx.AsyncBaseTransport):
    """The simulator, with something happening elsewhere during every upstream call."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.meanwhile: Callable[[], Awaitable[None]] | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.meanwhile is not None:
            await self.meanwhile()
        return await self.inner.handle_async_request(request)


@asynccontextmanager
async def world_on(
    store: Store, clock: FakeClock, *, time_scale: float = 1.0
) -> AsyncIterator[World]:
    config = SimConfig(api_key=SIM_KEY, seed=7, time_scale=time_scale)
    sim_app = create_sim_app(config, clock=clock)
    transport = httpx.ASGITransport(sim_app)
    upstream_calls = _WhileWaiting(transport)
    upstream = UpstreamClient(
        base_url="http://sim" + PREFIX, api_key=SIM_KEY, transport=upstream_calls, get_attempts=1
    )
    sim = httpx.AsyncClient(
        transport=transport, base_url="http://sim", headers={"Authorization": f"Bearer {SIM_KEY}"}
    )
    catalog = Catalog(upstream, store, ttl=3600, clock=clock, holder="test")
    quotas = Quotas(store, clock=clock, ambiguous_hold_seconds=900, job_deadline_seconds=DEADLINE)
    tenant = Tenant(  # a fresh id: fresh metric labels
        f"t-{uuid.uuid4().hex[:12]}", (), None, Limits(video_seconds_per_month=1000)
    )
    jobs = Jobs(store, upstream, catalog, quotas)
    try:
        yield World(store, Principal(tenant, "k1"), jobs, quotas, sim, upstream_calls)
    finally:
        await sim.aclose()
        await upstream.aclose()


@pytest.fixture
async def world(store: Store, clock: FakeClock) -> AsyncIterator[World]:
    async with world_on(store, clock) as built:
        yield built


@pytest.mark.parametrize(
    ("prompt", "status", "used"),
    [
        ("a fox in the snow", "success", COST),  # billed upstream: stays charged
        ("a fox in the snow [sim:fail]", "failed", 0),
        ("a fox in the snow [sim:stuck]", "expired", 0),  # still queued: the only expiry
    ],
)
async def test_a_job_past_its_deadline_is_read_and_settled_with_its_real_status(
    world: World, clock: FakeClock, prompt: str, status: str, used: int
) -> None:
    """Nobody polled the job before its deadline: the reconciler asks the upstream first."""
    request_id = await world.submit(prompt)
    clock.advance(DEADLINE + 1)  # the simulated job ended long ago, unless it is stuck
    reads = await world.reads()
    assert await world.reconciler(clock).reconcile_once() == 1
    assert await world.reads() == reads + 1
    assert world.finished() == {status: 1}
    assert await world.month_used() == used
    assert await world.store.settle(world.tenant, request_id, refund=True) is None


async def test_a_job_polled_past_its_deadline_is_expired_as_the_reconciler_would(
    world: World, clock: FakeClock
) -> None:
    """A client polling often enough keeps a job out of the reconciler's reach: the poll
    applies the same rule, so a stuck job is refunded whether or not anyone polls it."""
    request_id = await world.submit("a fox in the snow [sim:stuck]")
    for _ in range(int(DEADLINE // 20) - 1):  # a poll every 20 s, up to just before it
        clock.advance(20)
        record = await world.poll(request_id)
        assert msgspec.json.decode(record)["status"] == "queued"
    assert world.finished() == {}
    assert await world.month_used() == COST
    assert await world.reconciler(clock).reconcile_once() == 0  # polled: never due for it
    clock.advance(40)
    await world.poll(request_id)
    assert world.finished() == {"expired": 1}
    assert await world.month_used() == 0
    assert await world.reconciler(clock).reconcile_once() == 0  # nothing left to settle


async def test_an_expired_job_that_succeeds_after_all_is_charged_again(
    store: Store, clock: FakeClock
) -> None:
    """The upstream bills a job that succeeds past its deadline: the tenant's budget must show
    it again. Meanwhile the expired job is read ever less often, not on every pass."""
    async with world_on(store, clock, time_scale=40) as world:  # phases of 1 to 3.5 hours
        request_id = await world.submit("a fox in the snow")
        clock.advance(DEADLINE + 1)
        reconciler = world.reconciler(clock)
        assert await reconciler.reconcile_once() == 1
        assert world.finished() == {"expired": 1}
        assert await world.month_used() == 0
        clock.advance(60)
        assert await reconciler.reconcile_once() == 0  # due again only after 10 minutes
        clock.advance(15_000)  # the job has ended by now
        reads = await world.reads()
        assert await reconciler.reconcile_once() == 1
        assert await world.reads() == reads + 1
        assert await world.month_used() == COST
        assert world.finished() == {"expired": 1}  # one job, finished once
        assert msgspec.json.decode(await world.poll(request_id))["status"] == "success"
        clock.advance(86_400)
        assert await reconciler.reconcile_once() == 0  # settled for good


async def test_an_unreadable_job_is_expired_only_after_the_grace(
    world: World, clock: FakeClock
) -> None:
    """A job the upstream cannot report on may have succeeded: it keeps its charge past the
    deadline while the reconciler keeps trying, and is expired only after ``GRACE`` more."""
    await world.submit("a fox in the snow")
    fault = {"route": GET_REQUEST, "status": 503}
    assert (await world.sim.post("/_sim/faults", json=fault)).status_code == 200
    reconciler = world.reconciler(clock)
    clock.advance(DEADLINE + 1)
    assert await reconciler.reconcile_once() == 1
    assert world.finished() == {}
    assert await world.month_used() == COST
    clock.advance(GRACE)
    assert await reconciler.reconcile_once() == 1
    assert world.finished() == {"expired": 1}
    assert await world.month_used() == 0


@pytest.mark.redis
async def test_a_settled_job_left_listed_does_not_starve_the_read_budget(
    redis_server: RedisServer, clock: FakeClock, retention: float
) -> None:
    """A settlement whose reconcile-set cleanup was lost leaves a member that sorts first;
    with a read budget of one, the reconciler must still get to the job that needs it."""
    store = redis_store(redis_server, clock, retention)
    async with world_on(store, clock) as world:
        orphan = await world.submit("a fox in the snow [sim:fail]")
        waiting = await world.submit("a fox in the snow [sim:fail]")
        clock.advance(600)  # both failed upstream; nobody polled
        assert await world.quotas.settle(world.tenant, orphan, "failed", model=MODEL) is not None
        with redis.Redis.from_url(redis_server.url) as client:
            client.zadd("gmigw:reconcile", {f"{world.tenant}\n{orphan}": 0})
        reads = await world.reads()
        assert await world.reconciler(clock, read_budget=1).reconcile_once() == 1
        assert await world.reads() == reads + 1
        assert world.finished() == {"failed": 2}
        assert await world.month_used() == 0
        assert await store.settle(world.tenant, waiting, refund=True) is None
    await store.aclose()


async def test_a_pass_stops_once_another_replica_holds_the_lease(
    world: World, clock: FakeClock
) -> None:
    """An upstream read outlasted the lease and another replica took it over: this pass stops
    at the next job, so one replica reconciles at a time."""
    for _ in range(3):
        await world.submit("a fox in the snow [sim:stuck]")
    clock.advance(60)  # all three are due

    async def slow_read_meanwhile_another_replica_takes_over() -> None:
        clock.advance(60)
        assert await world.store.acquire_lease(LEASE_NAME, "other-replica", ttl=60)

    world.upstream_calls.meanwhile = slow_read_meanwhile_another_replica_takes_over
    assert await world.reconciler(clock).reconcile_once() == 1
    world.upstream_calls.meanwhile = None
    assert await world.reconciler(clock).reconcile_once() == 0  # and a new pass does not start
