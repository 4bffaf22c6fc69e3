"""DESIGN §4, ambiguous submits: the upstream may have created (and billed) the job, but its
id never reached the gateway, because the answer was lost or named no job. The charge stays,
counted and audited as such; the concurrency slot is held only for the ambiguous hold; a retry
with the same Idempotency-Key replays the answer instead of submitting (and billing) again, as
any keyed submit's does for 24 hours."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import msgspec
import pytest
from prometheus_client import REGISTRY

from gateway.audit import begin_note
from gateway.errors import GatewayError
from gateway.services.catalog import Catalog
from gateway.services.jobs import Jobs
from gateway.services.quota import Quotas
from gateway.services.tenants import Limits, Principal, Tenant
from gateway.sim import SimConfig, create_sim_app
from gateway.store import Store
from gateway.upstream import UpstreamClient
from tests.store.conftest import FakeClock

SIM_KEY = "sim-test-key"
PREFIX = "/api/v1/ie/requestqueue/apikey"
MODEL = "Kling-Text2Video-V2-Master"
BODY = msgspec.json.encode({"model": MODEL, "payload": {"prompt": "p", "duration": "5"}})
TENANT = Tenant("ambiguous", (), None, Limits(max_concurrent_jobs=3, video_seconds_per_month=100))
HOLD = 900.0


class _LostSubmitAnswers(httpx.AsyncBaseTransport):
    """The simulator, whose submit answers (the job created) are lost on the way back: the
    connection times out, or the answer comes without its request_id."""

    def __init__(self, inner: httpx.AsyncBaseTransport, fault: str | None) -> None:
        self.inner = inner
        self.fault = fault
        self.submits = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method != "POST" or not request.url.path.endswith("/requests"):
            return response
        self.submits += 1
        if self.fault is None:
            return response
        if self.fault == "timeout":
            raise httpx.ReadTimeout("the answer never came", request=request)
        record = msgspec.json.decode(await response.aread())
        del record["request_id"]
        return httpx.Response(response.status_code, json=record)


@asynccontextmanager
async def services_over_sim(
    store: Store, clock: FakeClock, fault: str | None
) -> AsyncIterator[tuple[Jobs, Quotas, _LostSubmitAnswers]]:
    sim = create_sim_app(SimConfig(api_key=SIM_KEY, seed=7), clock=clock)
    transport = _LostSubmitAnswers(httpx.ASGITransport(sim), fault)
    upstream = UpstreamClient(base_url="http://sim" + PREFIX, api_key=SIM_KEY, transport=transport)
    quotas = Quotas(store, clock=clock, ambiguous_hold_seconds=HOLD, job_deadline_seconds=3600)
    # Fresh for longer than any clock jump here: no refresh left running when the test ends.
    catalog = Catalog(upstream, store, ttl=10 * 86400, clock=clock, holder="test")
    try:
        yield Jobs(store, upstream, catalog, quotas), quotas, transport
    finally:
        await upstream.aclose()


FAULTS = {"timeout": 504, "no request_id": 502}  # the status each answers with


@pytest.fixture(params=list(FAULTS))
async def services(
    request: pytest.FixtureRequest, store: Store, clock: FakeClock
) -> AsyncIterator[tuple[Jobs, Quotas, _LostSubmitAnswers]]:
    async with services_over_sim(store, clock, request.param) as found:
        yield found


async def used(quotas: Quotas) -> tuple[int, int]:
    """Video seconds used this month, and concurrency slots held."""
    limits = (await quotas.usage(TENANT))["limits"]
    return limits["video_seconds_per_month"]["used"], limits["max_concurrent_jobs"]["used"]


async def test_an_ambiguous_submit_keeps_its_charge_and_its_answer(
    services: tuple[Jobs, Quotas, _LostSubmitAnswers], clock: FakeClock
) -> None:
    jobs, quotas, upstream = services
    principal = Principal(TENANT, "k1")
    labels = {"tenant": TENANT.id}
    charged = REGISTRY.get_sample_value("gmigw_video_seconds_charged_total", labels) or 0.0
    note = begin_note()
    with pytest.raises(GatewayError) as refused:
        await jobs.submit(principal, BODY, idempotency_key="k-1")
    assert upstream.fault is not None
    assert refused.value.status == FAULTS[upstream.fault]
    assert "may exist and be billed" in refused.value.message
    assert (note.outcome, note.video_seconds_charged) == ("ambiguous_submit", 5)
    after = REGISTRY.get_sample_value("gmigw_video_seconds_charged_total", labels) or 0.0
    assert after - charged == 5
    assert await used(quotas) == (5, 1)

    replay = await jobs.submit(principal, BODY, idempotency_key="k-1")
    assert (replay.status, replay.replayed) == (refused.value.status, True)
    assert upstream.submits == 1

    clock.advance(HOLD - 1)
    assert await used(quotas) == (5, 1)
    clock.advance(2)  # the slot is given back; the charge stays
    assert await used(quotas) == (5, 0)


async def test_an_idempotency_key_answer_is_kept_24_hours(store: Store, clock: FakeClock) -> None:
    """Any retry within a day replays the answer; a shorter retention would create (and bill)
    a second job for a client retrying late."""
    async with services_over_sim(store, clock, None) as (jobs, _, upstream):
        principal = Principal(TENANT, "k1")
        first = await jobs.submit(principal, BODY, idempotency_key="k-day")
        clock.advance(24 * 3600 - 60)
        replay = await jobs.submit(principal, BODY, idempotency_key="k-day")
        assert (replay.replayed, replay.body) == (True, first.body)
        assert upstream.submits == 1
        clock.advance(120)
        assert (await jobs.submit(principal, BODY, idempotency_key="k-day")).replayed is False
        assert upstream.submits == 2
