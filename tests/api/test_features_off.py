"""GATEWAY_FEATURES_OFF (the benchmark's switch): audit and metrics off, and nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.test_metrics import samples, value
from tests.conftest import UPSTREAM_KEY, Keys, client_for
from tests.support.processes import ServerProcess, start_gateway


@pytest.fixture(scope="module")
def bare_gateway(logdir: Path, sim: ServerProcess, tenants_file: Path) -> Iterator[ServerProcess]:
    server = start_gateway(
        logdir,
        sim=sim,
        upstream_key=UPSTREAM_KEY,
        tenants_file=tenants_file,
        name="gateway-features-off",
        extra_env={"GATEWAY_FEATURES_OFF": "audit,metrics"},
    )
    yield server
    server.stop()


def test_requests_are_served_but_neither_counted_nor_audited(
    bare_gateway: ServerProcess, gateway: ServerProcess, keys: Keys
) -> None:
    with client_for(bare_gateway, keys.studio) as studio:
        assert studio.get("/models").status_code == 200
        submitted = studio.post(
            "/requests",
            json={"model": "Kling-Text2Video-V2-Master", "payload": {"prompt": "a cat"}},
        )
        assert submitted.status_code == 200
        assert studio.get(f"/requests/{submitted.json()['request_id']}").status_code == 200
        audit = httpx.get(
            bare_gateway.url + "/v1/audit", headers={"Authorization": f"Bearer {keys.studio}"}
        )
    assert audit.status_code == 200
    assert audit.json()["events"] == []
    scrape = httpx.get(bare_gateway.url + "/metrics")
    assert scrape.status_code == 200
    assert value(samples(bare_gateway), "gmigw_http_requests_total") == 0
    assert "gmigw_jobs_submitted_total{" not in scrape.text
    assert "gmigw_http_requests_total{" in httpx.get(gateway.url + "/metrics").text  # control
