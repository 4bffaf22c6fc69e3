"""The lifespan moves what it built out of the garbage collector's reach (tail latency)."""

from __future__ import annotations

import gc
import time

import httpx
from litestar.testing import AsyncTestClient

from gateway.app import create_app
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
