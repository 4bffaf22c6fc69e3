"""A submit the upstream accepted but Redis refused to record (closed failure mode).

The job exists and is billed. Answered 503, its client would submit (and pay) again; left
unrecorded, the tenant could never poll it, the reconciler never saw it, and a failure was never
refunded: its charge stayed for good and its slot for the ambiguous hold (review finding).
"""

from __future__ import annotations

import httpx
import msgspec
import redis

from gateway.services.catalog import Catalog
from gateway.services.failover import StoreFailover
from gateway.services.jobs import Jobs
from gateway.services.quota import Quotas
from gateway.services.tenants import Limits, Principal, Tenant
from gateway.sim import SimConfig, create_sim_app
from gateway.store.redis import RedisStore
from gateway.upstream import UpstreamClient
from tests.store.conftest import FakeClock
from tests.support.redis_server import RedisServer

SIM_KEY = "sim-test-key"
PREFIX = "/api/v1/ie/requestqueue/apikey"
MODEL = "Kling-Text2Video-V2-Master"
PROMPT = "a fox [sim:fail]"  # the job ends failed upstream: its charge must come back
BODY = msgspec.json.encode({"model": MODEL, "payload": {"prompt": PROMPT, "duration": "5"}})
TENANT = Tenant("unrecorded", (), None, Limits(max_concurrent_jobs=3, video_seconds_per_month=100))


class _StoreFullOnceSubmitted(httpx.AsyncBaseTransport):
    """The simulator; once it has accepted a submit, Redis refuses every write (maxmemory)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, server: RedisServer) -> None:
        self.inner = inner
        self.server = server

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and request.url.path.endswith("/requests"):
            with redis.Redis.from_url(self.server.url) as client:
                client.config_set("maxmemory", 1)
        return response


async def test_a_job_redis_refused_to_record_is_answered_written_back_and_settled(
    clock: FakeClock,
) -> None:
    with RedisServer() as server:
        shared = RedisStore.from_url(server.url, clock=clock)
        store = StoreFailover(shared)  # closed: no local fallback
        sim = create_sim_app(SimConfig(api_key=SIM_KEY, seed=7), clock=clock)
        transport = _StoreFullOnceSubmitted(httpx.ASGITransport(sim), server)
        upstream = UpstreamClient(
            base_url="http://sim" + PREFIX, api_key=SIM_KEY, transport=transport
        )
        quotas = Quotas(store, clock=clock, ambiguous_hold_seconds=900, job_deadline_seconds=3600)
        catalog = Catalog(upstream, store, ttl=10 * 86400, clock=clock, holder="test")
        jobs = Jobs(store, upstream, catalog, quotas)
        principal = Principal(TENANT, "k1")

        async def used() -> tuple[int, int]:
            limits = (await quotas.usage(TENANT))["limits"]
            return limits["video_seconds_per_month"]["used"], limits["max_concurrent_jobs"]["used"]

        try:
            submitted = await jobs.submit(principal, BODY, idempotency_key="k-1")
            assert submitted.status == 200
            request_id = msgspec.json.decode(submitted.body)["request_id"]
            with redis.Redis.from_url(server.url) as client:
                client.config_set("maxmemory", 0)
            assert await store.get_job(TENANT.id, request_id) is None
            assert await used() == (5, 1)

            await store.write_back_once()
            assert await store.get_job(TENANT.id, request_id) is not None
            replay = await jobs.submit(principal, BODY, idempotency_key="k-1")
            assert replay.replayed
            assert msgspec.json.decode(replay.body)["request_id"] == request_id

            clock.advance(3600)  # long past the simulated job's end
            poll = await jobs.poll(principal, request_id)
            assert poll.job is not None
            record = msgspec.json.decode(await jobs.current(poll.job, claimed=poll.claimed))
            assert record["status"] == "failed"
            assert await used() == (0, 0)  # refunded, and the slot given back
        finally:
            await jobs.aclose()
            await upstream.aclose()
            await shared.aclose()
