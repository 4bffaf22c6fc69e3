"""DESIGN §5 model-listing cache through real sockets: two replicas, one redis-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import UPSTREAM_KEY, Keys, SimControl, client_for
from tests.support.processes import MIRROR, ServerProcess, start_gateway
from tests.support.redis_server import RedisServer, find_redis_server

pytestmark = pytest.mark.redis

TTL = 3.0


@pytest.fixture
def pair(
    sim: ServerProcess, tenants_file: Path, tmp_path: Path
) -> Iterator[tuple[list[ServerProcess], RedisServer]]:
    redis = RedisServer(find_redis_server()).start()
    env = {"GATEWAY_REDIS_URL": redis.url, "GATEWAY_CATALOG_TTL": str(TTL)}
    servers = [
        start_gateway(tmp_path, sim=sim, upstream_key=UPSTREAM_KEY, tenants_file=tenants_file,
                      name=f"cache{n}", extra_env=env)
        for n in range(2)
    ]  # fmt: skip
    yield servers, redis
    for server in servers:
        server.stop()
    redis.stop()


def test_cold_cache_costs_one_upstream_call_for_200_requests(
    pair: tuple[list[ServerProcess], RedisServer], sim_control: SimControl, keys: Keys
) -> None:
    servers, _ = pair
    before = sim_control.calls()["GET /models"]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {keys.studio}"}) as http:
            return await asyncio.gather(
                *(http.get(f"{servers[i % 2].url}{MIRROR}/models") for i in range(200))
            )

    answers = asyncio.run(burst())
    assert all(a.status_code == 200 for a in answers)
    assert len({a.content for a in answers}) == 1
    assert sim_control.calls()["GET /models"] - before == 1  # one refresh across replicas
    assert {a.headers["x-cache"] for a in answers} <= {"MISS", "HIT"}
    for server in servers:
        with client_for(server, keys.studio) as studio:
            assert studio.get("/models").headers["x-cache"] == "HIT"


def test_warm_cache_survives_an_upstream_outage_as_stale(
    pair: tuple[list[ServerProcess], RedisServer], sim_control: SimControl, keys: Keys
) -> None:
    servers, _ = pair
    with client_for(servers[0], keys.studio) as studio:
        warm = studio.get("/models")
        assert warm.status_code == 200
        sim_control.fault("GET /models", status=503, rate=1.0)
        time.sleep(TTL + 0.1)
        stale = studio.get("/models")
        assert stale.status_code == 200
        assert stale.headers["x-cache"] == "STALE"
        assert stale.content == warm.content
        sim_control.clear_faults()


def test_an_expired_entry_is_served_stale_while_one_refresh_runs(
    pair: tuple[list[ServerProcess], RedisServer], sim_control: SimControl, keys: Keys
) -> None:
    servers, _ = pair
    with client_for(servers[0], keys.studio) as studio:
        warm = studio.get("/models")
        time.sleep(TTL + 0.1)
        sim_control.fault("GET /models", latency_ms=1500, rate=1.0)  # a slow, not failing, refresh
        before = sim_control.calls()["GET /models"]
        stale = [studio.get("/models") for _ in range(3)]
        assert [r.headers["x-cache"] for r in stale] == ["STALE"] * 3  # none waited for it
        assert {r.content for r in stale} == {warm.content}
        assert sim_control.calls()["GET /models"] - before <= 1
        sim_control.clear_faults()


def test_etag_and_if_none_match(pair: tuple[list[ServerProcess], RedisServer], keys: Keys) -> None:
    servers, _ = pair
    with (
        client_for(servers[0], keys.studio) as studio,
        client_for(servers[1], keys.narrow) as narrow,
    ):
        first = studio.get("/models")
        etag = first.headers["etag"]
        again = studio.get("/models", headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert studio.get("/models", headers={"If-None-Match": '"other"'}).status_code == 200
        lines = [("If-None-Match", '"other"'), ("If-None-Match", f"W/{etag}")]  # a list header
        assert studio.get("/models", headers=lines).status_code == 304
        assert first.headers["content-type"] == "application/json"
        assert int(first.headers["content-length"]) == len(first.content)
        filtered = narrow.get("/models")  # one shared entry, filtered per tenant after the cache
        assert filtered.json() == {"model_ids": ["Kling-Text2Video-V2-Master"]}
        assert filtered.headers["etag"] != etag
        detail = studio.get("/models/Veo3")
        assert (
            studio.get(
                "/models/Veo3", headers={"If-None-Match": detail.headers["etag"]}
            ).status_code
            == 304
        )


def test_admin_invalidation_reaches_every_replica(
    pair: tuple[list[ServerProcess], RedisServer], sim_control: SimControl, keys: Keys
) -> None:
    servers, _ = pair
    with client_for(servers[0], keys.studio) as one, client_for(servers[1], keys.studio) as two:
        one.get("/models")
        two.get("/models")
        before = sim_control.calls()["GET /models"]
        admin = {"Authorization": f"Bearer {keys.admin}"}
        invalidated = httpx.post(servers[0].url + "/admin/cache/invalidate", headers=admin)
        assert invalidated.json() == {"invalidated": True}
        time.sleep(1.2)  # replicas check the cache generation once a second; TTL is 3 s
        started = time.monotonic()  # the replica that refreshed last must not hold it up
        assert two.get("/models").headers["x-cache"] == "MISS"
        assert time.monotonic() - started < 2.0  # it waited out a 5 s lease wait before
        assert one.get("/models").status_code == 200
        assert 1 <= sim_control.calls()["GET /models"] - before <= 2


def test_a_new_replica_serves_the_shared_copy_at_once_during_an_outage(
    pair: tuple[list[ServerProcess], RedisServer], sim_control: SimControl, keys: Keys
) -> None:
    """DESIGN §5: stale rather than failing, and fast: a replica without a copy of its own
    adopts the shared one instead of waiting on another replica's refresh every time."""
    servers, _ = pair
    with client_for(servers[0], keys.studio) as warm, client_for(servers[1], keys.studio) as cold:
        fresh = warm.get("/models")
        sim_control.fault("GET /models", status=503, rate=1.0)
        time.sleep(TTL + 0.1)
        assert warm.get("/models").headers["x-cache"] == "STALE"  # its refresh failed
        for _ in range(3):
            started = time.monotonic()
            stale = cold.get("/models")
            assert (stale.status_code, stale.headers["x-cache"]) == (200, "STALE")
            assert stale.content == fresh.content
            assert time.monotonic() - started < 2.0  # each waited 5 s for a lease before


def test_an_invalidation_that_reached_only_one_replica_says_so(
    pair: tuple[list[ServerProcess], RedisServer], keys: Keys
) -> None:
    servers, redis = pair
    redis.stop()
    admin = {"Authorization": f"Bearer {keys.admin}"}
    answer = httpx.post(servers[0].url + "/admin/cache/invalidate", headers=admin)
    assert answer.status_code == 503
    assert answer.json()["code"] == "store_unavailable"
    assert "this replica only" in answer.json()["error"]
