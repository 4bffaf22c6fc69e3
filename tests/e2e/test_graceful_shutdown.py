"""Kubernetes-grade shutdown: on SIGTERM in-flight requests finish, new ones are refused before
being accepted, the audit buffer is flushed, and the process exits 0.

Each request carries its own X-Request-ID, so the audit trail shows which ones the gateway
accepted: every completed request is in it, and no request that failed is.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import UPSTREAM_KEY, Keys, SimControl
from tests.support.processes import MIRROR, ServerProcess, start_gateway
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.redis


Outcome = tuple[str, httpx.Response | Exception]


async def steady_stream(url: str, key: str, *, seconds: float) -> list[Outcome]:
    """A request every 20 ms, each on a fresh connection and with its own id, for ``seconds``."""
    outcomes: list[Outcome] = []

    async def one(n: int) -> None:
        request_id = f"drain-{n}"
        headers = {"Authorization": f"Bearer {key}", "X-Request-ID": request_id}
        try:
            async with httpx.AsyncClient(timeout=30) as http:  # new connection: no reuse races
                outcomes.append(
                    (request_id, await http.get(f"{url}{MIRROR}/models", headers=headers))
                )
        except httpx.HTTPError as exc:
            outcomes.append((request_id, exc))

    tasks = []
    for n in range(int(seconds / 0.02)):
        tasks.append(asyncio.create_task(one(n)))
        await asyncio.sleep(0.02)
    await asyncio.gather(*tasks)
    return outcomes


def test_sigterm_drains_in_flight_requests_and_flushes_audit(
    sim: ServerProcess,
    sim_control: SimControl,
    tenants_file: Path,
    keys: Keys,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    redis_server.flush()
    gateway = start_gateway(
        tmp_path,
        sim=sim,
        upstream_key=UPSTREAM_KEY,
        tenants_file=tenants_file,
        name="draining",
        extra_env={"GATEWAY_REDIS_URL": redis_server.url, "GATEWAY_CATALOG_TTL": "0.001"},
    )
    sim_control.fault("GET /models", latency_ms=400, rate=1.0)  # every request is in flight a while

    async def scenario() -> list[Outcome]:
        stream = asyncio.create_task(steady_stream(gateway.url, keys.studio, seconds=2.0))
        await asyncio.sleep(1.0)
        gateway.send(signal.SIGTERM)
        return await stream

    outcomes = asyncio.run(scenario())
    exit_code = gateway.wait(30)
    completed = {rid: o for rid, o in outcomes if isinstance(o, httpx.Response)}
    failed = {rid: o for rid, o in outcomes if isinstance(o, Exception)}
    assert exit_code == 0
    assert completed, "some requests completed before the signal"
    assert failed, "requests after the signal were refused"
    assert {r.status_code for r in completed.values()} == {200}
    client = redis.Redis.from_url(redis_server.url)
    trail = client.xrange("gmigw:{studio}:audit")
    client.close()
    audited = {json.loads(fields[b"e"])["request_id"] for _, fields in trail}
    assert set(completed) <= audited  # the audit buffer was flushed on the way out
    assert not set(failed) & audited  # every failure was refused before the gateway accepted it
    assert '"event":"audit"' in gateway.output()
