"""A submit the upstream accepts (2xx) without naming the job is treated as ambiguous: the job
may exist and be billed, so the charge stays, is counted and audited as such, and a retry with
the same Idempotency-Key replays the answer instead of submitting (and billing) again."""

from __future__ import annotations

from collections.abc import AsyncIterator

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
TENANT = Tenant("no-id", (), None, Limits(max_concurrent_jobs=3, video_seconds_per_month=100))


class _WithoutRequestId(httpx.AsyncBaseTransport):
    """The simulator, whose submit answers lose their request_id on the way back."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.submits = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method != "POST" or not request.url.path.endswith("/requests"):
            return response
        self.submits += 1
        record = msgspec.json.decode(await response.aread())
        del record["request_id"]
        return httpx.Response(response.status_code, json=record)


@pytest.fixture
async def services(
    store: Store, clock: FakeClock
) -> AsyncIterator[tuple[Jobs, Quotas, _WithoutRequestId]]:
    sim = create_sim_app(SimConfig(api_key=SIM_KEY, seed=7), clock=clock)
    transport = _WithoutRequestId(httpx.ASGITransport(sim))
    upstream = UpstreamClient(base_url="http://sim" + PREFIX, api_key=SIM_KEY, transport=transport)
    quotas = Quotas(store, clock=clock, ambiguous_hold_seconds=900, job_deadline_seconds=3600)
    catalog = Catalog(upstream, store, ttl=3600, clock=clock, holder="test")
    yield Jobs(store, upstream, catalog, quotas), quotas, transport
    await upstream.aclose()


async def test_a_submit_accepted_without_a_job_id_keeps_its_charge_and_its_answer(
    services: tuple[Jobs, Quotas, _WithoutRequestId],
) -> None:
    jobs, quotas, upstream = services
    principal = Principal(TENANT, "k1")
    charged = REGISTRY.get_sample_value("gmigw_video_seconds_charged_total", {"tenant": "no-id"})
    note = begin_note()
    with pytest.raises(GatewayError) as refused:
        await jobs.submit(principal, BODY, idempotency_key="k-1")
    assert (refused.value.status, refused.value.code) == (502, "upstream_error")
    assert "may exist and be billed" in refused.value.message
    assert (note.outcome, note.video_seconds_charged) == ("ambiguous_submit", 5)
    after = REGISTRY.get_sample_value("gmigw_video_seconds_charged_total", {"tenant": "no-id"})
    assert (after or 0) - (charged or 0) == 5
    usage = (await quotas.usage(TENANT))["limits"]
    assert (usage["video_seconds_per_month"]["used"], usage["max_concurrent_jobs"]["used"]) == (
        5,
        1,
    )

    replay = await jobs.submit(principal, BODY, idempotency_key="k-1")
    assert (replay.status, replay.replayed) == (502, True)
    assert upstream.submits == 1
