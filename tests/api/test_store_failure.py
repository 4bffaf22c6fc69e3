"""DESIGN §4 store failure: Redis killed mid-test, in closed and in open mode, then restored."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import UPSTREAM_KEY, SimControl
from tests.support.processes import MIRROR, ServerProcess, start_gateway
from tests.support.redis_server import RedisServer, find_redis_server
from tests.support.scrape import samples, value

pytestmark = pytest.mark.redis

KEY = "key-fragile-0123456789abcdef"
LOST_METRIC = "gmigw_store_data_lost_total"
BODY = {"model": "Kling-Text2Video-V2-Master", "payload": {"prompt": "a kite"}}


@pytest.fixture
def redis_to_kill() -> Iterator[RedisServer]:
    server = RedisServer(find_redis_server()).start()
    yield server
    server.stop()


def gateway(
    sim: ServerProcess,
    redis: RedisServer,
    tmp_path: Path,
    mode: str,
    name: str,
    **more_env: str,
) -> ServerProcess:
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    tenants = tmp_path / f"{name}.yaml"
    tenants.write_text(
        "tenants:\n  - id: fragile\n"
        f'    keys: [{{id: f-k, sha256: "{digest}"}}]\n'
        '    models: ["*"]\n'
        "    limits: {submits_per_minute: 2}\n"
    )
    env = {"GATEWAY_REDIS_URL": redis.url, "GATEWAY_STORE_FAILURE_MODE": mode, **more_env}
    return start_gateway(
        tmp_path, sim=sim, upstream_key=UPSTREAM_KEY, tenants_file=tenants, name=name, extra_env=env
    )


def logged(server: ServerProcess, text: str) -> bool:
    """Whether ``text`` reaches the process's output within a few seconds (log lines are
    written off the request path, so not always before the answer arrives)."""
    deadline = time.monotonic() + 5
    while text not in server.output():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def reaches_upstream(sim_control: SimControl, posted: int) -> None:
    """Wait until a submit is at the simulator (which then holds it for its injected latency)."""
    deadline = time.monotonic() + 10
    while sim_control.calls()["POST /requests"] == posted:
        assert time.monotonic() < deadline, "the submit never reached the upstream"
        time.sleep(0.02)


def recovers(client: httpx.Client) -> bool:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if client.post("/requests", json=BODY).status_code == 200:
            return True
        time.sleep(0.1)
    return False


def test_closed_mode_answers_503_and_forwards_nothing(
    sim: ServerProcess, sim_control: SimControl, redis_to_kill: RedisServer, tmp_path: Path
) -> None:
    server = gateway(sim, redis_to_kill, tmp_path, "closed", "closed")
    try:
        with httpx.Client(
            base_url=server.url + MIRROR, headers={"Authorization": f"Bearer {KEY}"}, timeout=30
        ) as client:
            assert client.post("/requests", json=BODY).status_code == 200
            redis_to_kill.stop()
            before = sim_control.calls()["POST /requests"]
            refused = client.post("/requests", json=BODY)
            assert refused.status_code == 503
            assert refused.json()["code"] == "store_unavailable"
            assert "nothing was sent upstream" in refused.json()["error"]
            assert str(redis_to_kill.port) not in refused.text  # the operator's detail, logged
            assert logged(server, "ConnectionError")
            assert client.get("/requests").status_code == 503
            assert sim_control.calls()["POST /requests"] == before
            assert httpx.get(server.url + "/readyz").status_code == 503
            redis_to_kill.start()
            assert recovers(client)
            assert httpx.get(server.url + "/readyz").status_code == 200
    finally:
        server.stop()


def test_a_job_redis_lost_mid_submit_is_answered_and_becomes_the_tenants_when_redis_returns(
    sim: ServerProcess, sim_control: SimControl, redis_to_kill: RedisServer, tmp_path: Path
) -> None:
    """The upstream has (and bills) the job: answered 503, its client would submit and pay
    again, and the job, never recorded, answered 404 to its own tenant for good."""
    server = gateway(sim, redis_to_kill, tmp_path, "closed", "mid-submit")
    try:
        with httpx.Client(
            base_url=server.url + MIRROR, headers={"Authorization": f"Bearer {KEY}"}, timeout=30
        ) as client:
            assert client.get("/models").status_code == 200  # the catalog is warm
            sim_control.fault("POST /requests", latency_ms=1500)
            posted = sim_control.calls()["POST /requests"]
            with ThreadPoolExecutor(1) as pool:
                submitted = pool.submit(
                    client.post, "/requests", json=BODY, headers={"Idempotency-Key": "k-1"}
                )
                reaches_upstream(sim_control, posted)  # reserved, and upstream
                redis_to_kill.stop()
                answer = submitted.result()
            sim_control.clear_faults()
            assert answer.status_code == 200
            request_id = answer.json()["request_id"]
            assert logged(server, "submit_recorded_later")
            redis_to_kill.start()
            deadline = time.monotonic() + 15
            while (poll := client.get(f"/requests/{request_id}")).status_code != 200:
                assert time.monotonic() < deadline, poll.text
                time.sleep(0.2)
            assert logged(server, "job_written_back")
    finally:
        server.stop()


def test_an_answer_redis_could_not_take_is_stored_once_it_can_so_a_retry_replays_it(
    sim: ServerProcess, sim_control: SimControl, redis_to_kill: RedisServer, tmp_path: Path
) -> None:
    """Redis full while a keyed submit was upstream: the job could not be recorded, nor the
    key's answer. The claim expired two minutes later and a retry made a second billed job."""
    server = gateway(sim, redis_to_kill, tmp_path, "closed", "late-answer")
    key = {"Idempotency-Key": "k-late"}
    try:
        with (
            httpx.Client(
                base_url=server.url + MIRROR, headers={"Authorization": f"Bearer {KEY}"}, timeout=30
            ) as client,
            redis.Redis.from_url(redis_to_kill.url) as admin,
        ):
            assert client.get("/models").status_code == 200  # the catalog is warm
            sim_control.fault("POST /requests", latency_ms=1500)
            posted = sim_control.calls()["POST /requests"]
            with ThreadPoolExecutor(1) as pool:
                submitted = pool.submit(client.post, "/requests", json=BODY, headers=key)
                reaches_upstream(sim_control, posted)  # reserved, and upstream
                admin.config_set("maxmemory", 1)  # full: every write is refused
                first = submitted.result()
            admin.config_set("maxmemory", 0)
            sim_control.clear_faults()
            posts = sim_control.calls()["POST /requests"]
            deadline = time.monotonic() + 10
            while (retry := client.post("/requests", json=BODY, headers=key)).status_code == 409:
                assert time.monotonic() < deadline  # the answer is stored within seconds
                time.sleep(0.2)
    finally:
        server.stop()
    assert first.status_code == 200
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json() == first.json()
    assert sim_control.calls()["POST /requests"] == posts  # no second job


def test_open_mode_serves_under_a_local_cap_and_writes_back(
    sim: ServerProcess, redis_to_kill: RedisServer, tmp_path: Path
) -> None:
    server = gateway(sim, redis_to_kill, tmp_path, "open", "open")
    try:
        with httpx.Client(
            base_url=server.url + MIRROR, headers={"Authorization": f"Bearer {KEY}"}, timeout=30
        ) as client:
            redis_to_kill.stop()
            served = [client.post("/requests", json=BODY) for _ in range(3)]
            assert [r.status_code for r in served] == [200, 200, 429]  # the local cap: 2 a minute
            unchecked = value(samples(server), "gmigw_unchecked_requests_total")
            assert unchecked >= 3  # every submit, counted as well as logged
            request_id = served[0].json()["request_id"]
            assert client.get(f"/requests/{request_id}").status_code == 200  # seen on this replica
            assert client.get("/requests/never-seen-here").status_code == 503  # cannot prove it
            assert httpx.get(server.url + "/readyz").status_code == 200
            redis_to_kill.start()
            deadline = time.monotonic() + 15
            while (
                client.get("/requests").status_code != 200
                or request_id not in client.get("/requests").text
            ):
                assert time.monotonic() < deadline, "the job was never written back"
                time.sleep(0.1)
    finally:
        server.stop()
    assert '"event":"unchecked_request"' in server.output()


def test_a_redis_that_evicts_keys_is_reported_at_start(
    sim: ServerProcess, redis_to_kill: RedisServer, tmp_path: Path
) -> None:
    """volatile-lru is ElastiCache's and Memorystore's default: it would silently drop job
    ownership, quota counters and Idempotency-Key answers under memory pressure."""
    with redis.Redis.from_url(redis_to_kill.url) as client:
        client.config_set("maxmemory-policy", "volatile-lru")
    server = gateway(sim, redis_to_kill, tmp_path, "closed", "evicting")
    try:
        warnings = [line for line in server.output().splitlines() if "redis_evicts_keys" in line]
    finally:
        server.stop()
    assert len(warnings) == 1
    assert '"maxmemory_policy":"volatile-lru"' in warnings[0]


def test_a_redis_that_restarts_empty_is_reported(
    sim: ServerProcess, redis_to_kill: RedisServer, tmp_path: Path
) -> None:
    """Redis answers as if nothing happened; the gateway's data id tells the loss."""
    server = gateway(
        sim, redis_to_kill, tmp_path, "closed", "lost", GATEWAY_STORE_CHECK_SECONDS="0.1"
    )

    def losses() -> str:
        scrape = httpx.get(server.url + "/metrics").text
        return next(line for line in scrape.splitlines() if line.startswith(LOST_METRIC))

    try:
        time.sleep(0.5)  # several checks of a Redis that keeps its data
        assert losses() == f"{LOST_METRIC} 0.0"
        redis_to_kill.stop()
        redis_to_kill.start()
        deadline = time.monotonic() + 10
        while losses() != f"{LOST_METRIC} 1.0" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert losses() == f"{LOST_METRIC} 1.0"
    finally:
        server.stop()
    reports = [line for line in server.output().splitlines() if "store_data_lost" in line]
    assert len(reports) == 1
    assert '"level":"error"' in reports[0]
