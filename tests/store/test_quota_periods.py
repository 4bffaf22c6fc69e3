"""Budgets reset at UTC midnight and at the start of the UTC month (injected clock, no sleeps)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.errors import QuotaExceeded
from gateway.services.quota import Quotas, ratelimit_headers
from gateway.services.tenants import parse_tenants
from gateway.store import Store
from tests.store.conftest import FakeClock

TENANTS = parse_tenants(
    """
tenants:
  - id: t
    keys: [{id: k, sha256: "%s"}]
    models: ["*"]
    limits: {video_seconds_per_day: 10, video_seconds_per_month: 25}
"""
    % ("0" * 64)
)
TENANT = TENANTS.tenants["t"]


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def quotas(store: Store, clock: FakeClock) -> Quotas:
    return Quotas(store, clock=clock, ambiguous_hold_seconds=60, job_deadline_seconds=3600)


async def submit(q: Quotas, seconds: int = 5) -> None:
    await q.begin_submit(TENANT, q.charge_for(seconds))


async def test_day_budget_returns_after_utc_midnight(store: Store, clock: FakeClock) -> None:
    clock.now = at("2026-11-23T23:59:58")
    q = quotas(store, clock)
    await submit(q)
    await submit(q)
    with pytest.raises(QuotaExceeded) as refused:
        await submit(q)
    assert refused.value.code == "budget_exhausted"
    assert refused.value.headers["Retry-After"] == "2"
    assert "video_seconds_per_day" in refused.value.message
    clock.now = at("2026-11-24T00:00:00")
    await submit(q)


async def test_month_budget_returns_on_the_first(store: Store, clock: FakeClock) -> None:
    clock.now = at("2026-11-28T12:00:00")
    q = quotas(store, clock)
    await submit(q)
    await submit(q)
    clock.now = at("2026-11-29T12:00:00")
    await submit(q)
    await submit(q)
    clock.now = at("2026-11-30T12:00:00")
    await submit(q)  # 25 of 25 this month
    with pytest.raises(QuotaExceeded) as refused:
        await submit(q)
    assert "video_seconds_per_month" in refused.value.message
    assert refused.value.headers["Retry-After"] == str(12 * 3600)
    clock.now = at("2026-12-01T00:00:00")
    await submit(q)


async def test_usage_reports_resets(store: Store, clock: FakeClock) -> None:
    clock.now = at("2026-11-23T18:00:00")
    q = quotas(store, clock)
    await submit(q, 10)
    usage = await q.usage(TENANT)
    day = usage["limits"]["video_seconds_per_day"]
    assert day == {
        "limit": 10,
        "used": 10,
        "remaining": 0,
        "reset_after_seconds": 6 * 3600,
        "reset_at": "2026-11-24T00:00:00Z",
    }
    assert usage["limits"]["video_seconds_per_month"]["reset_at"] == "2026-12-01T00:00:00Z"
    assert usage["limits"]["submits_per_minute"] is None
    assert usage["jobs_in_flight"] == 1


async def test_headers_name_the_limit_closest_to_running_out(
    store: Store, clock: FakeClock
) -> None:
    clock.now = at("2026-11-23T12:00:00")
    q = quotas(store, clock)
    decision = (await q.begin_submit(TENANT, q.charge_for(5))).decision
    headers = ratelimit_headers(decision)
    assert headers == {
        "RateLimit-Policy": '"video_seconds_per_day";q=10;w=86400',
        "RateLimit": '"video_seconds_per_day";r=5;t=43200',
    }
