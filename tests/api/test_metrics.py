"""DESIGN §7: /metrics is valid Prometheus text, moves as requests expect, and sums workers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import UPSTREAM_KEY, Keys, client_for
from tests.support.processes import ServerProcess, start_gateway
from tests.support.promtool import promtool_check
from tests.support.redis_server import RedisServer, find_redis_server
from tests.support.scrape import samples, value

MODEL = "Kling-Text2Video-V2-Master"
MIRROR_ROUTE = "/api/v1/ie/requestqueue/apikey"


def test_scrape_passes_promtool(gateway: ServerProcess, keys: Keys) -> None:
    with client_for(gateway, keys.studio) as studio:
        studio.get("/models")
    body = httpx.get(gateway.url + "/metrics")
    assert body.headers.get_list("content-type") == [CONTENT_TYPE_LATEST]  # one charset
    assert b"gmigw_http_requests_total" in body.content
    assert promtool_check(body.content) == ""


def test_counters_move_as_the_requests_say(gateway: ServerProcess, keys: Keys) -> None:
    before = samples(gateway)
    with client_for(gateway, keys.studio) as studio, client_for(gateway, "nope") as stranger:
        ok = studio.post("/requests", json={"model": MODEL, "payload": {"prompt": "a cat"}})
        assert ok.status_code == 200
        assert studio.post("/requests", json={"model": MODEL, "payload": {}}).status_code == 400
        assert stranger.get("/models").status_code == 401
        studio.get("/models")
    after = samples(gateway)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "gmigw_http_requests_total"
    submit_route = MIRROR_ROUTE + "/requests"
    assert delta(requests, route=submit_route, status_class="2xx", tenant="studio") == 1
    assert delta(requests, route=submit_route, status_class="4xx", tenant="studio") == 1
    assert (
        delta(requests, route=MIRROR_ROUTE + "/models", status_class="4xx", tenant="unknown") == 1
    )
    assert delta("gmigw_jobs_submitted_total", tenant="studio", model=MODEL) == 1
    assert delta("gmigw_video_seconds_charged_total", tenant="studio") == 5
    assert delta("gmigw_upstream_requests_total", endpoint="POST /requests", status="200") == 1
    assert delta("gmigw_cache_lookups_total", cache="models") >= 1
    assert delta("gmigw_http_request_duration_seconds_count", route=submit_route) == 2
    assert value(after, "gmigw_audit_events_dropped_total") == 0
    for name, labels in after:
        if name.startswith("gmigw_") and dict(labels).get("tenant"):
            assert dict(labels)["tenant"] in {"studio", "rival", "narrow", "unknown"}


@pytest.fixture
def two_workers(sim: ServerProcess, tenants_file: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    with RedisServer(find_redis_server()) as redis:  # workers share their state through it
        server = start_gateway(
            tmp_path, sim=sim, upstream_key=UPSTREAM_KEY, tenants_file=tenants_file,
            name="workers", workers=2, extra_env={"GATEWAY_REDIS_URL": redis.url},
        )  # fmt: skip
        yield server
        server.stop()


@pytest.mark.redis
def test_one_scrape_sums_every_worker(two_workers: ServerProcess) -> None:
    for _ in range(20):
        with httpx.Client() as fresh:  # a new connection each time, so both workers answer
            assert fresh.get(two_workers.url + "/healthz").status_code == 200
    for _ in range(5):
        with httpx.Client() as fresh:
            text = fresh.get(two_workers.url + "/metrics").content
        scrape = {
            (s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text.decode())
            for s in f.samples
        }
        assert value(scrape, "gmigw_http_requests_total", route="/healthz") == 21  # + the probe
    # Present at 0 before any error, so an alert on increase() sees an outage's first one.
    store_errors = ("gmigw_store_errors_total", frozenset({("kind", "ConnectionError")}))
    assert scrape[store_errors] == 0
    assert promtool_check(text) == ""


def test_one_worker_reports_its_process_metrics(gateway: ServerProcess) -> None:
    """Memory, CPU and file descriptors (multiprocess mode, for several workers, has none)."""
    scrape = httpx.get(gateway.url + "/metrics").text
    assert "process_resident_memory_bytes " in scrape
    assert "process_open_fds " in scrape


def test_probes_and_scrapes_that_succeed_log_at_debug_only(gateway: ServerProcess) -> None:
    """The chart's probes and a scrape come every few seconds: about 20 lines a minute a pod
    at info. (The tests' gateways log at debug, so the lines are there to look at.)"""
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(gateway.url + path).status_code == 200

    def probe_lines() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in gateway.output().splitlines() if '"request"' in line]
        return [line for line in lines if line.get("route") in {"/healthz", "/readyz", "/metrics"}]

    deadline = time.monotonic() + 5  # lines are written off the request path
    while len(probes := probe_lines()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(probes) >= 3
    assert {line["level"] for line in probes} == {"debug"}
