"""DESIGN §2.3 admin routes behind the admin key."""

from __future__ import annotations

import httpx

from tests.conftest import Keys, client_for
from tests.support.processes import ServerProcess


def admin(gateway: ServerProcess, keys: Keys) -> httpx.Client:
    return httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {keys.admin}"})


def test_tenants_are_listed_with_usage_and_without_secrets(
    gateway: ServerProcess, keys: Keys
) -> None:
    with admin(gateway, keys) as ops:
        body = ops.get("/admin/tenants").raise_for_status().json()
    by_id = {t["id"]: t for t in body["tenants"]}
    assert set(by_id) == {"studio", "rival", "narrow"}
    assert by_id["narrow"]["models"] == ["Kling-Text2Video-V2-Master"]
    assert [k["id"] for k in by_id["narrow"]["keys"]] == ["narrow-k1", "narrow-old"]
    assert by_id["narrow"]["keys"][1]["expires_at"].startswith("2020-01-01")
    assert "jobs_in_flight" in by_id["studio"]["usage"]
    text = str(body)
    assert "sha256" not in text
    assert keys.studio not in text


def test_one_tenants_usage(gateway: ServerProcess, keys: Keys) -> None:
    with admin(gateway, keys) as ops:
        usage = ops.get("/admin/tenants/studio/usage").raise_for_status().json()
        assert usage["tenant"] == "studio"
        assert set(usage["limits"]) == {
            "submits_per_minute", "reads_per_minute", "max_concurrent_jobs",
            "video_seconds_per_day", "video_seconds_per_month",
        }  # fmt: skip
        missing = ops.get("/admin/tenants/nobody/usage")
        assert missing.status_code == 404
        assert missing.json()["code"] == "not_found"


def test_tenant_sees_its_own_usage_only(gateway: ServerProcess, keys: Keys) -> None:
    with client_for(gateway, keys.rival) as rival:
        response = httpx.get(gateway.url + "/v1/usage", headers=rival.headers)
    assert response.json()["tenant"] == "rival"


def test_usage_shows_the_video_seconds_spent_without_a_budget(
    gateway: ServerProcess, keys: Keys
) -> None:
    """What sizing a budget starts from: a tenant without one saw no use at all."""
    body = {"model": "Kling-Text2Video-V2-Master", "payload": {"prompt": "a spent second"}}
    with client_for(gateway, keys.rival) as rival:
        assert rival.post("/requests", json=body).status_code == 200
        usage = httpx.get(gateway.url + "/v1/usage", headers=rival.headers).json()
    assert usage["limits"]["video_seconds_per_day"] is None
    spent = usage["video_seconds_used"]
    assert spent["month"] >= spent["day"] >= 5  # this submit's, and any other of this rival


def test_every_admin_route_refuses_tenant_keys(gateway: ServerProcess, keys: Keys) -> None:
    tenant = {"Authorization": f"Bearer {keys.studio}"}
    for method, path in [
        ("GET", "/admin/tenants"),
        ("GET", "/admin/tenants/studio/usage"),
        ("GET", "/admin/audit"),
        ("POST", "/admin/cache/invalidate"),
        ("POST", "/admin/reload"),
    ]:
        response = httpx.request(method, gateway.url + path, headers=tenant)
        assert response.status_code == 403, path
        assert httpx.request(method, gateway.url + path).status_code == 401
