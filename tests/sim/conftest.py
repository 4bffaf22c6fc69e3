"""The simulator in-process under a fake clock, for the tests of this folder (which shadow the
session's simulator process of the same fixture name)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.sim import SimConfig, create_sim_app
from tests.store.conftest import FakeClock

KEY = "sim-test-key"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_762_905_623.0)


async def make_client(clock: FakeClock, **config: Any) -> httpx.AsyncClient:
    app = create_sim_app(SimConfig(api_key=KEY, seed=7, **config), clock=clock)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app),  # type: ignore[arg-type]
        base_url="http://sim",
        headers={"Authorization": f"Bearer {KEY}"},
    )


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    async with await make_client(clock) as client:
        yield client
