"""DESIGN §4: a submit that times out after sending is never retried and says so."""

from __future__ import annotations

from pathlib import Path

import msgspec

from tests.conftest import UPSTREAM_KEY, Keys, SimControl, client_for
from tests.support.processes import ServerProcess, start_gateway


def test_timed_out_submit_is_504_and_never_retried(
    sim: ServerProcess, sim_control: SimControl, tenants_file: Path, keys: Keys, tmp_path: Path
) -> None:
    gateway = start_gateway(
        tmp_path,
        sim=sim,
        upstream_key=UPSTREAM_KEY,
        tenants_file=tenants_file,
        name="impatient",
        extra_env={"GATEWAY_UPSTREAM_READ_TIMEOUT": "0.3"},
    )
    try:
        with client_for(gateway, keys.studio) as studio:
            studio.get("/models/Kling-Text2Video-V2-Master").raise_for_status()  # warm the schema
            sim_control.fault("POST /requests", latency_ms=1500, rate=1.0)
            before = sim_control.calls()["POST /requests"]
            body = {"model": "Kling-Text2Video-V2-Master", "payload": {"prompt": "slow"}}
            key = {"Idempotency-Key": "slow-1"}
            response = studio.post("/requests", json=body, headers=key)
            assert response.status_code == 504
            assert response.json()["code"] == "upstream_timeout"
            assert "do not resubmit" in response.json()["error"]
            assert response.json()["request_id"] == response.headers["x-request-id"]
            replay = studio.post("/requests", json=body, headers=key)
            assert replay.headers["idempotent-replayed"] == "true"
            assert replay.json() == response.json()  # the stored answer, its request id too
            assert sim_control.calls()["POST /requests"] == before + 1
    finally:
        gateway.stop()
    audited = [
        line
        for line in gateway.output().splitlines()
        if '"event":"audit"' in line and '"route":"/api/v1/ie/requestqueue/apikey/requests"' in line
    ]
    timed_out, replayed = (msgspec.json.decode(line) for line in audited[-2:])
    assert (timed_out["outcome"], replayed["outcome"]) == ("ambiguous_submit", "replayed")
    assert timed_out["upstream_latency_ms"] >= 300  # how long the upstream was waited for
