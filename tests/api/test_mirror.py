"""The mirror routes through a real gateway socket in front of the simulator."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import UPSTREAM_KEY, Keys, SimControl, client_for
from tests.support.processes import MIRROR, ServerProcess, start_gateway
from tests.support.redis_server import RedisServer

MODEL = "Kling-Text2Video-V2-Master"
IMAGE_MODEL = "Kling-Image2Video-V2-Master"
SYNC_MODEL = "seedream-5.0-lite"
GOOD = {"prompt": "waves at a lighthouse", "duration": "5"}


def submit(client: httpx.Client, payload: dict[str, Any] | None = None, model: str = MODEL) -> str:
    response = client.post("/requests", json={"model": model, "payload": payload or GOOD})
    assert response.status_code == 200, response.text
    request_id: str = response.json()["request_id"]
    return request_id


def poll_until_terminal(client: httpx.Client, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        record: dict[str, Any] = client.get(f"/requests/{request_id}").raise_for_status().json()
        if record["status"] in {"success", "failed", "cancelled"}:
            return record
        time.sleep(0.05)
    raise AssertionError(f"job {request_id} never finished")


def audited(client: httpx.Client, answered: httpx.Response) -> dict[str, Any]:
    """The audit event of the request that got ``answered`` (the session's simulator serves
    other gateways meanwhile, so its call counters cannot tell what one request did)."""
    request_id = answered.headers["x-request-id"]
    deadline = time.monotonic() + 10  # the trail is written off the request path
    while True:
        trail = client.get(client.base_url.join("/v1/audit")).json()["events"]
        found = [e for e in trail if e.get("request_id") == request_id]
        if found or time.monotonic() > deadline:
            assert found, f"no audit event for {request_id}"
            return found[0]  # type: ignore[no-any-return]
        time.sleep(0.05)


def assert_error(response: httpx.Response, status: int, code: str, text: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert text in body["error"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def test_submit_answers_with_the_upstream_submit_record(studio: httpx.Client) -> None:
    response = studio.post("/requests", json={"model": MODEL, "payload": GOOD})
    assert response.status_code == 200
    assert set(response.json()) == {
        "request_id", "model", "status", "created_at", "updated_at", "queued_at"
    }  # fmt: skip
    assert response.json()["status"] == "queued"


def test_poll_reaches_success_with_media_urls(studio: httpx.Client) -> None:
    record = poll_until_terminal(studio, submit(studio))
    assert record["status"] == "success"
    assert record["payload"] == GOOD
    assert record["outcome"]["media_urls"][0]["url"].startswith("https://")


def test_failed_job_is_reported_as_the_upstream_reports_it(studio: httpx.Client) -> None:
    record = poll_until_terminal(studio, submit(studio, {"prompt": "boom [sim:fail]"}))
    assert record["status"] == "failed"
    assert record["outcome"]["error"]


def test_list_shows_own_jobs_newest_first_with_pagination(rival: httpx.Client) -> None:
    ids = [submit(rival, {"prompt": f"job {n}"}) for n in range(3)]
    page = rival.get("/requests", params={"limit": 2}).raise_for_status().json()
    assert [r["request_id"] for r in page["requests"]] == ids[::-1][:2]
    assert page["has_more"] is True
    assert page["total"] >= 3
    rest = rival.get("/requests", params={"limit": 2, "offset": 2}).raise_for_status().json()
    assert rest["requests"][0]["request_id"] == ids[0]
    assert all("payload" in r and "status" in r for r in page["requests"])  # full records
    counted = rival.get("/requests", params={"limit": 0}).raise_for_status().json()
    assert counted == {"requests": [], "total": page["total"], "has_more": True}  # as upstream


def test_list_filters_by_model_and_accepts_page_size(studio: httpx.Client) -> None:
    submit(studio)
    other = studio.get("/requests", params={"model_id": "Veo3"}).raise_for_status().json()
    assert other == {"requests": [], "total": 0, "has_more": False}
    mine = studio.get("/requests", params={"model_id": MODEL, "page_size": 1}).json()
    assert len(mine["requests"]) == 1
    assert mine["requests"][0]["model"] == MODEL


@pytest.mark.parametrize(
    ("params", "text"),
    [
        ({"limit": "x"}, "limit must be"),
        ({"offset": "-1"}, "offset must be"),
        ({"limit": "\u00b2"}, "limit must be"),  # a digit to str.isdigit, not to int
    ],
)
def test_list_rejects_bad_query(studio: httpx.Client, params: dict[str, str], text: str) -> None:
    assert_error(studio.get("/requests", params=params), 400, "bad_request", text)


def test_list_takes_any_size_of_limit_and_offset_as_the_upstream_does(
    studio: httpx.Client,
) -> None:
    submit(studio)
    everything = studio.get("/requests", params={"limit": "9007199254740991"}).json()
    assert 0 < len(everything["requests"]) <= 100
    past_the_end = studio.get("/requests", params={"offset": "9" * 5000}).json()
    assert past_the_end == {"requests": [], "total": everything["total"], "has_more": False}
    padded = studio.get("/requests", params={"limit": "0000000000001"}).json()
    assert len(padded["requests"]) == 1


def test_tenant_cannot_read_or_list_another_tenants_job(
    studio: httpx.Client, rival: httpx.Client
) -> None:
    request_id = submit(studio)
    refused = rival.get(f"/requests/{request_id}")
    assert_error(refused, 404, "not_found", "request not found")
    assert "upstream_status" not in audited(rival, refused)  # the upstream was never asked
    listed = rival.get("/requests", params={"limit": 100}).json()["requests"]
    assert request_id not in {r["request_id"] for r in listed}
    assert studio.get(f"/requests/{request_id}").status_code == 200


def test_unknown_request_id_is_404_without_an_upstream_call(studio: httpx.Client) -> None:
    refused = studio.get("/requests/not-a-job")
    assert_error(refused, 404, "not_found", "request not found")
    assert "upstream_status" not in audited(studio, refused)
    # An encoded path that climbs out matches no route: no handler runs at all.
    assert_error(studio.get("/requests/..%2F..%2Fmodels"), 404, "not_found", "")


def test_models_are_filtered_to_the_tenants_allow_list(
    studio: httpx.Client, narrow: httpx.Client
) -> None:
    everything = studio.get("/models").raise_for_status().json()["model_ids"]
    assert MODEL in everything
    assert len(everything) > 1
    assert narrow.get("/models").json() == {"model_ids": [MODEL]}
    detail = narrow.get(f"/models/{MODEL}").raise_for_status().json()
    assert detail["model"] == MODEL
    assert {p["name"] for p in detail["parameters"]} >= {"prompt", "duration"}
    assert_error(narrow.get("/models/Veo3"), 404, "unknown_model", "model Veo3 does not exist")


def test_model_not_allowed_for_tenant_is_404_on_submit(
    narrow: httpx.Client, sim_control: SimControl
) -> None:
    before = sim_control.calls()["POST /requests"]
    response = narrow.post("/requests", json={"model": "Veo3", "payload": {"prompt": "x"}})
    assert_error(response, 404, "unknown_model", "model Veo3 does not exist")
    assert sim_control.calls()["POST /requests"] == before


@pytest.mark.parametrize("model", ["Kling-Text2Video-V9-Master", "kling-text2video-v2-master"])
def test_unknown_or_wrong_case_model_is_404(studio: httpx.Client, model: str) -> None:
    response = studio.post("/requests", json={"model": model, "payload": GOOD})
    assert_error(response, 404, "unknown_model", f"model {model} does not exist")
    assert_error(studio.get(f"/models/{model}"), 404, "unknown_model", model)


@pytest.mark.parametrize(
    ("payload", "text"),
    [
        ({}, "prompt is required"),
        ({"prompt": ""}, "prompt is required"),
        ({"prompt": 7}, "prompt must be a string"),
        ({"prompt": "p" * 2501}, "prompt must be at most 2500 characters"),
        ({"prompt": "p", "negative_prompt": "n" * 2501}, "negative_prompt must be at most 2500"),
        ({"prompt": "p", "duration": "15"}, "duration must be one of"),
        ({"prompt": "p", "duration": 15}, "duration must be one of"),
        ({"prompt": "p", "aspect_ratio": "4:3"}, "aspect_ratio must be one of"),
        ({"prompt": "p", "cfg_scale": 2}, "cfg_scale must be <= 1"),
        ({"prompt": "p", "cfg_scale": -1}, "cfg_scale must be >= 0"),
        ({"prompt": "p", "cfg_scale": "strict"}, "cfg_scale must be a number"),
        ({"prompt": "p", "cfg_scale": 10**400}, "cfg_scale must be a number"),
    ],
)
def test_bad_payloads_are_rejected_before_the_upstream(
    studio: httpx.Client, sim_control: SimControl, payload: dict[str, Any], text: str
) -> None:
    before = sim_control.calls()["POST /requests"]
    response = studio.post("/requests", json={"model": MODEL, "payload": payload})
    assert_error(response, 400, "invalid_payload", text)
    assert sim_control.calls()["POST /requests"] == before


@pytest.mark.parametrize(
    "payload",
    [
        {"prompt": "p", "duration": 10},
        {"prompt": "p", "cfg_scale": "0.3"},
        {"prompt": "p", "custom_key": "kept"},
    ],
)
def test_lenient_where_the_upstream_is_lenient(
    studio: httpx.Client, payload: dict[str, Any]
) -> None:
    request_id = submit(studio, payload)
    assert studio.get(f"/requests/{request_id}").json()["payload"] == payload


@pytest.mark.parametrize(
    ("body", "code", "text"),
    [
        (b"{not json", "invalid_json", "not valid JSON"),
        (b"", "invalid_payload", "body is empty"),
        (b"[]", "invalid_payload", "must be a JSON object"),
        (b'{"model": "Kling-Text2Video-V2-Master"}', "invalid_payload", "payload is required"),
        (b'{"payload": {"prompt": "x"}}', "invalid_payload", "model is required"),
        (b'{"model": "m", "payload": {"prompt": "\xff"}}', "invalid_json", "not valid JSON"),
        (b'{"model": ' + b"[" * 50_000, "invalid_json", "nested too deeply"),
        (b"[" * 50_000, "invalid_payload", "must be a JSON object"),
    ],
)
def test_malformed_bodies(studio: httpx.Client, body: bytes, code: str, text: str) -> None:
    response = studio.post("/requests", content=body, headers={"Content-Type": "application/json"})
    assert_error(response, 400, code, text)


@pytest.mark.parametrize("route", ["/requests", "/upload-url"])
def test_a_malformed_chunk_is_the_clients_400(
    gateway: ServerProcess, keys: Keys, sim_control: SimControl, route: str
) -> None:
    """Litestar reports a body cut short as a 500 "client disconnected prematurely", which
    counted as the gateway's own failure (review finding)."""
    before = sim_control.calls()
    head = (
        f"POST {MIRROR}{route} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {keys.studio}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as raw:
        raw.sendall(head.encode() + b"zz\r\n{}\r\n0\r\n\r\n")
        answer = raw.makefile("rb").read()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 400 Bad Request"
    body = json.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert body["code"] == "incomplete_body"
    assert sim_control.calls() == before


def test_body_over_the_size_limit_is_413(
    gateway: ServerProcess, keys: Keys, sim_control: SimControl
) -> None:
    """The body is left unread, so the connection closes after the 413: the answer says so,
    or a client's next request goes down a connection about to close (and is lost)."""
    before = sim_control.calls()["POST /requests"]
    body = {"model": MODEL, "payload": {"prompt": "p", "extra": "x" * (70 * 1024)}}
    encoded = json.dumps(body).encode()
    for content in (encoded, (encoded[at : at + 8192] for at in range(0, len(encoded), 8192))):
        with client_for(gateway, keys.studio) as studio:
            refused = studio.post("/requests", content=content)
            assert_error(refused, 413, "payload_too_large", "limit of 65536")
            assert refused.headers["connection"] == "close"
            assert studio.get("/models").status_code == 200  # on a new connection
    assert sim_control.calls()["POST /requests"] == before


def test_any_answer_that_leaves_a_body_unread_closes_the_connection(
    gateway: ServerProcess, keys: Keys
) -> None:
    """Refused before its body was read (a wrong key, an unknown route), a large body made the
    server close the connection, sometimes without saying so; once a body is read (a 400 on
    its content), the connection is kept."""
    large = b"x" * (60 * 1024)
    with client_for(gateway, "not-a-key") as stranger, client_for(gateway, keys.studio) as studio:
        for refused in (
            stranger.post("/requests", content=large),
            studio.post("/nope", content=large),
        ):
            assert refused.status_code in (401, 404)
            assert refused.headers["connection"] == "close"
        kept = studio.post("/requests", json={"model": MODEL, "payload": {"duration": "7"}})
        assert kept.status_code == 400
        assert "connection" not in kept.headers
        assert studio.get("/models").status_code == 200


def test_upstream_rejection_is_relayed_and_nothing_is_recorded(
    studio: httpx.Client, sim_control: SimControl
) -> None:
    total = studio.get("/requests").json()["total"]
    sim_control.fault("POST /requests", status=503, rate=1.0)
    response = studio.post("/requests", json={"model": MODEL, "payload": GOOD})
    assert_error(response, 503, "upstream_error", "capacity")
    sim_control.clear_faults()
    assert studio.get("/requests").json()["total"] == total


def test_an_upstream_error_that_names_its_request_keeps_that_id(
    studio: httpx.Client, sim_control: SimControl
) -> None:
    """request_id is the gateway's (X-Request-ID); the upstream's, what GMI support asks for,
    was lost: a capacity 503 names one, and so does a sync model's failed job (spec §3)."""
    sim_control.fault("POST /requests", status=503, rate=1.0)
    busy = assert_error(
        studio.post("/requests", json={"model": MODEL, "payload": GOOD}), 503, "upstream_error", ""
    )
    sim_control.clear_faults()
    failed = assert_error(
        studio.post("/requests", json={"model": SYNC_MODEL, "payload": {"prompt": "[sim:fail]"}}),
        400,
        "invalid_payload",
        "",
    )
    for body in (busy, failed):
        assert body["upstream_request_id"] != body["request_id"]
        assert len(body["upstream_request_id"]) == 36  # the simulator's UUIDs
    assert "upstream_request_id" not in studio.get("/requests/not-mine").json()
    deadline = time.monotonic() + 10  # the trail is written off the request path
    while True:
        trail = studio.get(studio.base_url.join("/v1/audit")).json()["events"]
        audited = {e.get("request_id"): e.get("upstream_request_id") for e in trail}
        if failed["request_id"] in audited or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert audited[failed["request_id"]] == failed["upstream_request_id"]  # the failed job


def test_upstream_failure_on_a_poll_is_a_clear_error(
    studio: httpx.Client, sim_control: SimControl
) -> None:
    request_id = submit(studio, {"prompt": "forever [sim:stuck]"})
    sim_control.fault("GET /requests/{request_id}", status=500, rate=1.0)
    response = studio.get(f"/requests/{request_id}")
    assert_error(response, 500, "upstream_error", "Backend error")


def test_a_job_has_the_status_record_shape_before_its_first_refresh(
    studio: httpx.Client, sim_control: SimControl
) -> None:
    """Until a refresh succeeds, polls and lists serve the stored record: it must already
    carry what clients read from a status record (spec §4), not only the submit's fields
    (org_id and user_id, the same on every job, were missing)."""
    warm = submit(studio, {"prompt": "read upstream once"})
    deadline = time.monotonic() + 5
    while "org_id" not in (account := studio.get(f"/requests/{warm}").json()):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    payload = b'{"prompt": "kept in its shape \xf0\x9f\xa6\x8a [sim:stuck]", "cfg_scale": 0.50}'
    body = b'{"model": "%s", "payload": %s}' % (MODEL.encode(), payload)
    submitted = studio.post("/requests", content=body).json()
    sim_control.fault("GET /requests/{request_id}", status=503, rate=1.0)
    listed = studio.get("/requests").json()["requests"]
    record = next(r for r in listed if r["request_id"] == submitted["request_id"])
    owner = {"org_id": account["org_id"], "user_id": account["user_id"]}
    extra = {"is_public": False, "payload": json.loads(payload), "outcome": None}
    assert record == {**submitted, **owner, **extra}
    # In a status record's order, the client's payload bytes echoed as they came (spec §4).
    order = "request_id org_id user_id model status is_public payload outcome created_at"
    order += " updated_at queued_at"
    assert list(record) == order.split()
    raw = studio.get("/requests").content
    assert b'"payload":' + payload + b',"outcome":null' in raw


def test_a_slow_upstream_holds_up_only_the_poll_that_refreshes(
    gateway: ServerProcess, keys: Keys, sim_control: SimControl
) -> None:
    """DESIGN §5: a poll within another's refresh gets the stored record, not a wait on the
    upstream (a hung upstream held every poll of the job on the replica for 3 read timeouts);
    a list waits for its own refreshes at most 2 s."""
    headers = {"Authorization": f"Bearer {keys.studio}"}
    base = gateway.url + MIRROR

    async def scenario() -> tuple[float, float, bool, float]:
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
            submitted = await http.post(
                "/requests", json={"model": MODEL, "payload": {"prompt": "slow [sim:stuck]"}}
            )
            request_id = submitted.json()["request_id"]
            sim_control.fault("GET /requests/{request_id}", latency_ms=4000)
            refreshing = asyncio.create_task(http.get(f"/requests/{request_id}"))
            await asyncio.sleep(0.3)
            started = time.monotonic()
            behind = await http.get(f"/requests/{request_id}")
            assert behind.status_code == 200
            assert behind.json()["status"] == "queued"
            behind_took = time.monotonic() - started
            await asyncio.sleep(1.0)  # past the status TTL: this poll wins the next claim
            started = time.monotonic()
            claimant = await http.get(f"/requests/{request_id}")
            assert claimant.status_code == 200
            claimant_took = time.monotonic() - started
            refresh_still_running = not refreshing.done()
            assert (await refreshing).status_code == 200
            await asyncio.sleep(1.1)  # past the status TTL: the list claims the next refresh
            started = time.monotonic()
            listed = await http.get("/requests", params={"limit": 1})
            assert listed.json()["requests"][0]["request_id"] == request_id
            return behind_took, claimant_took, refresh_still_running, time.monotonic() - started

    behind_took, claimant_took, refresh_still_running, list_took = asyncio.run(scenario())
    assert refresh_still_running
    assert behind_took < 1.0  # the upstream takes 4 s
    assert claimant_took < 1.0  # a refresh of the job was still running on this replica
    assert list_took < 3.5


def test_a_number_out_of_range_in_a_field_nobody_reads_is_no_500(studio: httpx.Client) -> None:
    """The partial reader skips it; the Idempotency-Key's fingerprint must not trip over it."""
    body = b'{"model": "%s", "payload": {"prompt": "a fox", "extra": 1e999}}' % MODEL.encode()
    answer = studio.post("/requests", content=body, headers={"Idempotency-Key": "big-number"})
    assert answer.status_code == 400, answer.text  # the upstream's own refusal, relayed
    declared = b'{"model": "%s", "payload": {"prompt": "a fox", "cfg_scale": 1e999}}'
    assert_error(
        studio.post("/requests", content=declared % MODEL.encode()),
        400,
        "invalid_json",
        "out of range",
    )


@pytest.mark.redis
def test_an_inline_image_is_not_echoed_back_in_the_records_kept_and_served(
    sim: ServerProcess, tenants_file: Path, keys: Keys, tmp_path: Path, redis_server: RedisServer
) -> None:
    """The upstream echoes the payload in every record (spec §4): kept for 30 days and sent on
    every poll and list, a 10 MB base64 image made each job cost 10 MB of Redis and of every
    poll. Over 64 KiB the echo is {} (as the upstream once answered an image job)."""
    server = start_gateway(
        tmp_path,
        sim=sim,
        upstream_key=UPSTREAM_KEY,
        tenants_file=tenants_file,
        name="images",
        extra_env={"GATEWAY_REDIS_URL": redis_server.url, "GATEWAY_MAX_BODY_BYTES": "1048576"},
    )
    image = "data:image/png;base64," + "A" * (512 * 1024)
    client = redis.Redis.from_url(redis_server.url)

    def kept(request_id: str) -> int:
        size = client.memory_usage(f"gmigw:{{studio}}:job:{request_id}")
        assert size is not None
        return size

    try:
        with client_for(server, keys.studio) as studio:
            large = submit(studio, {"prompt": "a kite", "image": image}, model=IMAGE_MODEL)
            assert kept(large) < 16 * 1024  # as submitted, before any refresh
            small = submit(studio, {"prompt": "a kite", "image": "https://x.example/k.png"},
                           model=IMAGE_MODEL)  # fmt: skip
            listed = {r["request_id"]: r for r in studio.get("/requests").json()["requests"]}
            assert listed[large]["payload"] == {}
            assert listed[small]["payload"]["image"] == "https://x.example/k.png"
            finished = poll_until_terminal(studio, large)
            assert (finished["payload"], finished["status"]) == ({}, "success")
            assert kept(large) < 16 * 1024
            assert poll_until_terminal(studio, small)["payload"]["image"].startswith("https://")
            # A sync model answers the whole record at once (spec §3), echo included.
            body = {"model": SYNC_MODEL, "payload": {"prompt": "a kite", "extra": "x" * 100_000}}
            key = {"Idempotency-Key": "sync-large-1"}
            answered = studio.post("/requests", json=body, headers=key)
            assert (answered.status_code, answered.json()["payload"]) == (200, {})
            assert kept(answered.json()["request_id"]) < 16 * 1024
            assert studio.post("/requests", json=body, headers=key).content == answered.content
    finally:
        server.stop()
        client.close()
