"""The simulator against the upstream spec, driven by a fake clock (no sleeps)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.sim.conftest import make_client
from tests.store.conftest import FakeClock

P = "/api/v1/ie/requestqueue/apikey"
M = "Kling-Text2Video-V2-Master"
SUBMIT_KEYS = {"request_id", "model", "status", "created_at", "updated_at", "queued_at"}
RECORD_KEYS = {
    "request_id", "org_id", "user_id", "model", "status", "is_public", "payload", "outcome",
    "created_at", "updated_at", "queued_at",
}  # fmt: skip


async def submit(sim: httpx.AsyncClient, payload: dict[str, Any], model: str = M) -> str:
    response = await sim.post(f"{P}/requests", json={"model": model, "payload": payload})
    assert response.status_code == 200, response.text
    request_id: str = response.json()["request_id"]
    return request_id


async def record(sim: httpx.AsyncClient, request_id: str) -> dict[str, Any]:
    response = await sim.get(f"{P}/requests/{request_id}")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def test_every_route_needs_the_key(sim: httpx.AsyncClient) -> None:
    for method, path in [("GET", f"{P}/models"), ("POST", f"{P}/requests"), ("GET", "/_sim/stats")]:
        response = await sim.request(method, path, headers={"Authorization": "Bearer nope"})
        assert response.status_code == 401
        assert response.json() == {"error": "unauthorized: invalid or expired API key"}


async def test_models_list_and_case_sensitive_details(sim: httpx.AsyncClient) -> None:
    detail = (await sim.get(f"{P}/models/{M}")).json()
    assert detail["model"] == M
    assert [p["name"] for p in detail["parameters"]] == [
        "prompt", "negative_prompt", "duration", "aspect_ratio", "cfg_scale"
    ]  # fmt: skip
    wrong_case = await sim.get(f"{P}/models/kling-text2video-v2-master")
    assert wrong_case.status_code == 404
    assert wrong_case.json() == {"error": "model kling-text2video-v2-master does not exist"}
    veo = (await sim.get(f"{P}/models/Veo3")).json()
    assert "durationSeconds" in {p["name"] for p in veo["parameters"]}


async def test_submit_answer_has_exactly_the_documented_fields(
    sim: httpx.AsyncClient, clock: FakeClock
) -> None:
    response = await sim.post(f"{P}/requests", json={"model": M, "payload": {"prompt": "x"}})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == SUBMIT_KEYS
    assert body["status"] == "queued"
    assert body["created_at"] == body["updated_at"] == body["queued_at"] == int(clock.now)


async def test_a_sync_model_answers_the_submit_with_the_finished_record(
    sim: httpx.AsyncClient,
) -> None:
    """Spec §3: the POST blocks until done; a failure is a 400 naming the job."""
    model = "seedream-5.0-lite"
    detail = (await sim.get(f"{P}/models/{model}")).json()
    assert detail["delivery_mode"] == "sync"
    done = await sim.post(f"{P}/requests", json={"model": model, "payload": {"prompt": "a fox"}})
    assert done.status_code == 200
    body = done.json()
    assert set(body) == RECORD_KEYS
    assert body["status"] == "success"
    assert body["outcome"]["media_urls"]
    assert await record(sim, body["request_id"]) == body
    failed = await sim.post(
        f"{P}/requests", json={"model": model, "payload": {"prompt": "a fox [sim:fail]"}}
    )
    assert failed.status_code == 400
    assert set(failed.json()) == {"error", "request_id"}
    assert (await record(sim, failed.json()["request_id"]))["status"] == "failed"


@pytest.mark.parametrize(
    "payload",
    [
        {"prompt": "p"},
        {"prompt": "p", "duration": 10},
        {"prompt": "p", "duration": "10", "aspect_ratio": "1:1", "cfg_scale": "0.2"},
        {"prompt": "p" * 2500, "negative_prompt": "n" * 2500, "image": "ignored", "extra": [1]},
    ],
)
async def test_valid_payloads_are_accepted_and_echoed_verbatim(
    sim: httpx.AsyncClient, payload: dict[str, Any]
) -> None:
    request_id = await submit(sim, payload)
    assert (await record(sim, request_id))["payload"] == payload


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ({"payload": {"prompt": "p"}}, 400, "model is required"),
        ({"model": M}, 400, "payload is required"),
        ({"model": M, "payload": {}}, 400, "prompt is required"),
        ({"model": M, "payload": {"prompt": ""}}, 400, "prompt is required"),
        ({"model": M, "payload": {"prompt": "p" * 2501}}, 400, "at most 2500"),
        ({"model": M, "payload": {"prompt": "p", "negative_prompt": "n" * 2501}}, 400, "at most"),
        ({"model": M, "payload": {"prompt": "p", "duration": "7"}}, 400, "duration must be one of"),
        ({"model": M, "payload": {"prompt": "p", "aspect_ratio": "4:3"}}, 400, "aspect_ratio"),
        ({"model": M, "payload": {"prompt": "p", "cfg_scale": 1.1}}, 400, "cfg_scale"),
        ({"model": M, "payload": {"prompt": "p", "cfg_scale": "x"}}, 400, "cfg_scale"),
        (
            {"model": "Kling-Image2Video-V2-Master", "payload": {"prompt": "p"}},
            400,
            "image is required",
        ),
        ({"model": "Nope", "payload": {"prompt": "p"}}, 404, "model Nope does not exist"),
    ],
)
async def test_invalid_submits(
    sim: httpx.AsyncClient, body: dict[str, Any], status: int, text: str
) -> None:
    response = await sim.post(f"{P}/requests", json=body)
    assert response.status_code == status
    assert text in response.json()["error"]
    assert set(response.json()) == {"error"}


async def test_malformed_json_is_400(sim: httpx.AsyncClient) -> None:
    response = await sim.post(f"{P}/requests", content=b"{oops")
    assert response.status_code == 400


async def test_strict_mode_rejects_unknown_keys(clock: FakeClock) -> None:
    async with await make_client(clock, strict_payload=True) as strict:
        response = await strict.post(
            f"{P}/requests", json={"model": M, "payload": {"prompt": "p", "x": 1}}
        )
    assert response.status_code == 400
    assert "unknown parameter x" in response.json()["error"]


async def test_status_machine_follows_the_clock(sim: httpx.AsyncClient, clock: FakeClock) -> None:
    request_id = await submit(sim, {"prompt": "p"})
    seen = []
    for _ in range(400):
        current = await record(sim, request_id)
        assert set(current) == RECORD_KEYS
        if not seen or seen[-1] != current["status"]:
            seen.append(current["status"])
            assert current["updated_at"] <= int(clock.now)
        if current["status"] == "success":
            break
        assert current["outcome"] is None
        clock.advance(1)
    assert seen == ["queued", "dispatched", "processing", "success"]
    assert 93 <= clock.now - 1_762_905_623.0 <= 316
    media = current["outcome"]["media_urls"]
    assert media[0]["id"] == "0"
    assert media[0]["url"].startswith("https://storage.googleapis.com/gmi-video-assests-prod/")
    assert current["outcome"]["thumbnail_image_url"] == media[0]["url"]


async def test_time_scale_and_ten_second_jobs(clock: FakeClock) -> None:
    async with await make_client(clock, time_scale=0.01) as fast:
        short = await submit(fast, {"prompt": "p"})
        long = await submit(fast, {"prompt": "p", "duration": "10"})
        clock.advance(3.2)
        assert (await record(fast, short))["status"] == "success"
        clock.advance(3.2)
        assert (await record(fast, long))["status"] == "success"


@pytest.mark.parametrize(
    ("shape", "keys"),
    [
        ("media_urls", {"media_urls", "thumbnail_image_url"}),
        ("legacy", {"video_url", "thumbnail_image_url"}),
        ("both", {"media_urls", "video_url", "thumbnail_image_url"}),
    ],
)
async def test_outcome_shapes(clock: FakeClock, shape: str, keys: set[str]) -> None:
    async with await make_client(clock, time_scale=0.01, outcome_shape=shape) as sim:
        request_id = await submit(sim, {"prompt": "p"})
        clock.advance(10)
        assert set((await record(sim, request_id))["outcome"]) == keys


@pytest.mark.parametrize(
    ("prompt", "status", "message"),
    [
        ("x [sim:fail]", "failed", "Failed to generate video"),
        ("x [sim:policy]", "failed", "Generation rejected; please review the prompt"),
        ("x [sim:stuck]", "queued", None),
    ],
)
async def test_magic_prompts(
    sim: httpx.AsyncClient, clock: FakeClock, prompt: str, status: str, message: str | None
) -> None:
    request_id = await submit(sim, {"prompt": prompt})
    clock.advance(10_000)
    current = await record(sim, request_id)
    assert current["status"] == status
    if message is None:
        assert current["outcome"] is None
    else:
        assert message in current["outcome"]["error"]["message"]
        assert set(current["outcome"]["error"]) == {"code", "message", "status"}


async def test_string_error_form(clock: FakeClock) -> None:
    async with await make_client(clock, error_form="string") as sim:
        request_id = await submit(sim, {"prompt": "[sim:fail]"})
        clock.advance(10_000)
        assert isinstance((await record(sim, request_id))["outcome"]["error"], str)


async def test_unknown_request_is_404(sim: httpx.AsyncClient) -> None:
    response = await sim.get(f"{P}/requests/nope")
    assert response.status_code == 404
    assert response.json() == {"error": "request not found"}


async def test_list_newest_first_filter_and_pagination(
    sim: httpx.AsyncClient, clock: FakeClock
) -> None:
    ids = []
    for n in range(3):
        ids.append(await submit(sim, {"prompt": f"{n}"}))
        clock.advance(1)
    veo = await submit(sim, {"prompt": "v"}, model="Veo3")
    page = (await sim.get(f"{P}/requests", params={"limit": 2})).json()
    assert [r["request_id"] for r in page["requests"]] == [veo, ids[2]]
    assert (page["total"], page["has_more"]) == (4, True)
    last = (await sim.get(f"{P}/requests", params={"page_size": 2, "offset": 2})).json()
    assert [r["request_id"] for r in last["requests"]] == [ids[1], ids[0]]
    assert last["has_more"] is False
    kling = (await sim.get(f"{P}/requests", params={"model_id": M})).json()
    assert kling["total"] == 3
    assert set(kling["requests"][0]) == RECORD_KEYS
    bad = await sim.get(f"{P}/requests", params={"limit": "-1"})
    assert bad.status_code == 400


async def test_cancel_control(sim: httpx.AsyncClient, clock: FakeClock) -> None:
    request_id = await submit(sim, {"prompt": "p"})
    cancelled = await sim.post(f"/_sim/requests/{request_id}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    clock.advance(10_000)
    assert (await record(sim, request_id))["status"] == "cancelled"
    assert (await sim.post(f"/_sim/requests/{request_id}/cancel")).status_code == 409
    assert (await sim.post("/_sim/requests/nope/cancel")).status_code == 404


async def test_no_cancel_route_unless_enabled(sim: httpx.AsyncClient, clock: FakeClock) -> None:
    request_id = await submit(sim, {"prompt": "p"})
    assert (await sim.delete(f"{P}/requests/{request_id}")).status_code in (404, 405)
    async with await make_client(clock, enable_delete=True) as deleting:
        other = await submit(deleting, {"prompt": "p"})
        assert (await deleting.delete(f"{P}/requests/{other}")).json()["status"] == "cancelled"


async def test_faults_and_stats(sim: httpx.AsyncClient) -> None:
    stats = (await sim.get("/_sim/stats")).json()["calls"]
    assert stats == dict.fromkeys(stats, 0)
    assert set(stats) == {
        "GET /models", "GET /models/{model_id}", "POST /requests", "GET /requests",
        "GET /requests/{request_id}", "POST /upload-url",
    }  # fmt: skip
    ok = await sim.post("/_sim/faults", json={"route": "GET /models", "status": 503, "rate": 1.0})
    assert ok.status_code == 200
    failed = await sim.get(f"{P}/models")
    assert failed.status_code == 503
    assert "capacity" in failed.json()["error"]
    assert "request_id" in failed.json()
    await sim.post("/_sim/faults", json={"route": "GET /models", "status": 429, "rate": 1.0})
    limited = await sim.get(f"{P}/models")
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "1")
    await sim.post("/_sim/faults", json={"route": "GET /models", "status": 500, "rate": 0.0})
    assert (await sim.get(f"{P}/models")).status_code == 200
    await sim.delete("/_sim/faults")
    assert (await sim.get(f"{P}/models")).status_code == 200
    assert (await sim.get("/_sim/stats")).json()["calls"]["GET /models"] == 4
    for bad in (
        {"route": "GET /nope"},
        {"route": "GET /models", "status": 418},
        {"route": "GET /models", "rate": 2},
    ):
        assert (await sim.post("/_sim/faults", json=bad)).status_code == 400


async def test_latency_fault(sim: httpx.AsyncClient) -> None:
    await sim.post("/_sim/faults", json={"route": "GET /models", "latency_ms": 30})
    response = await sim.get(f"{P}/models")
    assert response.status_code == 200
    assert response.elapsed.total_seconds() >= 0.03


async def test_rate_limit_per_hour(clock: FakeClock) -> None:
    async with await make_client(clock, requests_per_hour=2) as sim:
        assert (await sim.get(f"{P}/models")).status_code == 200
        assert (await sim.get(f"{P}/models")).status_code == 200
        limited = await sim.get(f"{P}/models")
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) > 0
        clock.advance(3601)
        assert (await sim.get(f"{P}/models")).status_code == 200


async def test_wrong_method_and_unknown_path(sim: httpx.AsyncClient) -> None:
    assert (await sim.put(f"{P}/models")).status_code == 405
    assert (await sim.get(f"{P}/nothing")).status_code == 404


async def test_injected_500_can_leave_a_failed_record(clock: FakeClock) -> None:
    async with await make_client(clock, failed_record_on_500=True) as sim:
        await sim.post("/_sim/faults", json={"route": "POST /requests", "status": 500})
        response = await sim.post(f"{P}/requests", json={"model": M, "payload": {"prompt": "p"}})
        assert response.status_code == 500
        assert response.json() == {"error": "Backend error (400). Please try again."}
        listed = (await sim.get(f"{P}/requests")).json()["requests"]
        assert [r["status"] for r in listed] == ["failed"]


async def test_upload_url_answers_a_signed_put_url_and_the_public_url(
    sim: httpx.AsyncClient,
) -> None:
    """Spec E6: a slot per call, for the file types it lists; the public URL is the object."""
    first = (await sim.post(f"{P}/upload-url", json={"file_type": "png"})).json()
    second = (await sim.post(f"{P}/upload-url", json={"file_type": "mp4"})).json()
    assert set(first) == {"upload_url", "public_url"}
    assert first["public_url"].startswith("https://")
    assert first["public_url"].endswith(".png")
    assert first["upload_url"].startswith(first["public_url"] + "?")
    assert "X-Goog-Signature=" in first["upload_url"]
    assert second["public_url"].endswith(".mp4")
    assert second["public_url"] != first["public_url"]
    assert (await sim.get("/_sim/stats")).json()["calls"]["POST /upload-url"] == 2


@pytest.mark.parametrize("body", [b'{"file_type": "gif"}', b"{}", b"[]", b"not json"])
async def test_upload_url_refuses_what_it_cannot_sign(sim: httpx.AsyncClient, body: bytes) -> None:
    response = await sim.post(f"{P}/upload-url", content=body)
    assert response.status_code == 400
    assert response.json()["error"].startswith("invalid")
