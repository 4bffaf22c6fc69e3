"""The catalog's upstream calls land in the audit of the request that waits for them, and only
there: a refresh behind a stale answer belongs to no request."""

from __future__ import annotations

import asyncio

import httpx

from gateway.audit import begin_note
from gateway.services.catalog import Catalog
from gateway.sim import SimConfig, create_sim_app
from gateway.store.memory import MemoryStore
from gateway.upstream import UpstreamClient
from tests.store.conftest import FakeClock

KEY = "sim-key"
PREFIX = "/api/v1/ie/requestqueue/apikey"


async def test_a_refresh_behind_a_stale_answer_writes_nothing_in_the_callers_audit() -> None:
    clock = FakeClock()
    sim = create_sim_app(SimConfig(api_key=KEY, seed=7), clock=clock)
    upstream = UpstreamClient(
        base_url="http://sim" + PREFIX, api_key=KEY, transport=httpx.ASGITransport(sim)
    )
    catalog = Catalog(upstream, MemoryStore(clock=clock), ttl=60, clock=clock, holder="test")
    try:
        waited = begin_note()
        assert (await catalog.model_ids()).cache == "MISS"
        assert waited.upstream_status == 200  # the call this request waited for
        clock.advance(61)
        served_stale = begin_note()
        assert (await catalog.model_ids()).cache == "STALE"
        await asyncio.gather(*catalog._inflight.values())  # the refresh, run to its end
        assert (served_stale.upstream_status, served_stale.upstream_latency_ms) == (None, None)
    finally:
        await upstream.aclose()
