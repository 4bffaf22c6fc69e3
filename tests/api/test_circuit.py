"""DESIGN §5: a failing upstream opens the circuit; the gateway then fails fast with Retry-After."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import UPSTREAM_KEY, Keys, SimControl, client_for
from tests.support.processes import ServerProcess, start_gateway

MODEL = "Kling-Text2Video-V2-Master"


@contextmanager
def circuit_gateway(
    sim: ServerProcess, tenants_file: Path, tmp_path: Path, *, threshold: int, cooldown: int
) -> Iterator[ServerProcess]:
    """A gateway of its own: the session's keeps its circuit shut for the other tests."""
    env = {
        "GATEWAY_CIRCUIT_THRESHOLD": str(threshold),
        "GATEWAY_CIRCUIT_COOLDOWN_SECONDS": str(cooldown),
    }
    gateway = start_gateway(
        tmp_path, sim=sim, upstream_key=UPSTREAM_KEY, tenants_file=tenants_file,
        name=f"circuit-{threshold}-{cooldown}", extra_env=env,
    )  # fmt: skip
    try:
        yield gateway
    finally:
        gateway.stop()


def test_open_circuit_fails_fast_without_calling_upstream(
    sim: ServerProcess, sim_control: SimControl, tenants_file: Path, keys: Keys, tmp_path: Path
) -> None:
    with circuit_gateway(sim, tenants_file, tmp_path, threshold=3, cooldown=30) as gateway:
        sim_control.fault("GET /models", status=503, rate=1.0)
        with client_for(gateway, keys.studio) as studio:
            first = studio.get("/models")
            assert first.status_code == 503
            assert first.json()["code"] == "upstream_error"
            before = sim_control.calls()["GET /models"]
            fast = studio.get("/models")
            assert fast.status_code == 503
            assert fast.json()["code"] == "upstream_unavailable"
            assert "circuit open" in fast.json()["error"]
            assert 1 <= int(fast.headers["retry-after"]) <= 30
            assert sim_control.calls()["GET /models"] == before
        metrics = httpx.get(gateway.url + "/metrics").text
        assert "gmigw_upstream_circuit_state 2.0" in metrics


def test_one_tenants_rejected_submits_do_not_open_the_circuit_for_all(
    sim: ServerProcess, sim_control: SimControl, tenants_file: Path, keys: Keys, tmp_path: Path
) -> None:
    """The upstream answers 500 "Backend error (400)" to payloads its vendor refuses (spec §8)."""
    with circuit_gateway(sim, tenants_file, tmp_path, threshold=3, cooldown=30) as gateway:
        sim_control.fault("POST /requests", status=500, rate=1.0)
        body = {"model": MODEL, "payload": {"prompt": "refused by the vendor"}}
        with client_for(gateway, keys.studio) as studio:
            for _ in range(4):
                assert studio.post("/requests", json=body).status_code == 500
        sim_control.clear_faults()
        with client_for(gateway, keys.rival) as rival:
            accepted = rival.post("/requests", json={"model": MODEL, "payload": {"prompt": "ok"}})
            assert accepted.status_code == 200, accepted.text
        metrics = httpx.get(gateway.url + "/metrics").text
        assert "gmigw_upstream_circuit_state 0.0" in metrics


def test_the_circuit_gauge_leaves_open_when_the_cooldown_ends_without_traffic(
    sim: ServerProcess, sim_control: SimControl, tenants_file: Path, keys: Keys, tmp_path: Path
) -> None:
    """README alerts on gmigw_upstream_circuit_state == 2: it must clear with no further call."""
    with circuit_gateway(sim, tenants_file, tmp_path, threshold=2, cooldown=1) as gateway:
        sim_control.fault("GET /models", status=503, rate=1.0)
        with client_for(gateway, keys.studio) as studio:
            assert studio.get("/models").status_code == 503
        assert "gmigw_upstream_circuit_state 2.0" in httpx.get(gateway.url + "/metrics").text
        time.sleep(1.5)
        assert "gmigw_upstream_circuit_state 1.0" in httpx.get(gateway.url + "/metrics").text


def test_the_circuit_gauge_stays_open_while_a_probe_hangs(
    sim: ServerProcess, sim_control: SimControl, tenants_file: Path, keys: Keys, tmp_path: Path
) -> None:
    """Every other call is refused until the probe answers, which may take the whole read
    timeout: shown as half-open, the alert on == 2 was false for most of a hanging outage."""
    with circuit_gateway(sim, tenants_file, tmp_path, threshold=2, cooldown=1) as gateway:
        sim_control.fault("GET /models", status=503, rate=1.0)
        with client_for(gateway, keys.studio) as studio:
            assert studio.get("/models").status_code == 503
            time.sleep(1.5)  # cooled down: the next call probes
            assert "gmigw_upstream_circuit_state 1.0" in httpx.get(gateway.url + "/metrics").text
            sim_control.clear_faults()
            sim_control.fault("GET /models", latency_ms=3000)
            before = sim_control.calls()["GET /models"]
            with ThreadPoolExecutor(1) as pool:
                probe = pool.submit(studio.get, "/models")
                deadline = time.monotonic() + 2
                while sim_control.calls()["GET /models"] == before:  # the probe is upstream
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
                refused = studio.post("/upload-url", json={"file_type": "png"})  # not cached
                gauge = httpx.get(gateway.url + "/metrics").text
                assert probe.result().status_code == 200
        assert refused.status_code == 503, refused.text
        assert "circuit open" in refused.json()["error"]
        assert "gmigw_upstream_circuit_state 2.0" in gauge
        assert "gmigw_upstream_circuit_state 0.0" in httpx.get(gateway.url + "/metrics").text
