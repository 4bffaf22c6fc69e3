"""Two gateway replicas sharing one real redis-server behave as one gateway."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import UPSTREAM_KEY, Keys, client_for
from tests.support.processes import ServerProcess, start_gateway
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.redis

MODEL = "Kling-Text2Video-V2-Master"


def test_a_job_submitted_on_one_replica_is_owned_on_the_other(
    sim: ServerProcess, tenants_file: Path, keys: Keys, redis_server: RedisServer, tmp_path: Path
) -> None:
    env = {"GATEWAY_REDIS_URL": redis_server.url}
    replicas = [
        start_gateway(
            tmp_path, sim=sim, upstream_key=UPSTREAM_KEY, tenants_file=tenants_file,
            name=f"replica{n}", extra_env=env,
        )
        for n in (1, 2)
    ]  # fmt: skip
    try:
        with (
            client_for(replicas[0], keys.studio) as first,
            client_for(replicas[1], keys.studio) as second,
            client_for(replicas[1], keys.rival) as rival,
        ):
            submitted = first.post("/requests", json={"model": MODEL, "payload": {"prompt": "x"}})
            request_id = submitted.raise_for_status().json()["request_id"]
            assert second.get(f"/requests/{request_id}").status_code == 200
            listed = second.get("/requests").json()["requests"]
            assert request_id in {r["request_id"] for r in listed}
            assert rival.get(f"/requests/{request_id}").status_code == 404
    finally:
        for replica in replicas:
            replica.stop()
