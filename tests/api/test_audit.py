"""DESIGN §6 through real sockets: one audit event per request, queryable, and free of secrets."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import UPSTREAM_KEY, SimControl
from tests.support.processes import MIRROR, ServerProcess, start_gateway
from tests.support.redis_server import RedisServer, find_redis_server
from tests.support.scrape import samples, value

pytestmark = pytest.mark.redis

MODEL = "Kling-Text2Video-V2-Master"
KEYS = {name: f"audit-{name}-key-0123456789" for name in ("auditee", "other", "chatty", "admin")}
SECRET_PROMPT = "a secret storyboard about a heron [sim:stuck]"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture
def audited(sim: ServerProcess, tmp_path: Path) -> Iterator[tuple[ServerProcess, RedisServer]]:
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(
        "tenants:\n"
        f'  - {{id: auditee, keys: [{{id: a-k, sha256: "{sha(KEYS["auditee"])}"}}], models: ["*"],'
        " limits: {submits_per_minute: 2}}\n"
        f'  - {{id: other, keys: [{{id: o-k, sha256: "{sha(KEYS["other"])}"}}], models: ["*"]}}\n'
        f'  - {{id: chatty, keys: [{{id: c-k, sha256: "{sha(KEYS["chatty"])}"}}], models: ["*"],'
        " audit: {store_prompts: true}}\n"
        f'admins: [{{id: ops, sha256: "{sha(KEYS["admin"])}"}}]\n'
    )
    redis = RedisServer(find_redis_server()).start()
    env = {"GATEWAY_REDIS_URL": redis.url, "GATEWAY_TRUSTED_PROXIES": "127.0.0.1/32"}
    server = start_gateway(
        tmp_path,
        sim=sim,
        upstream_key=UPSTREAM_KEY,
        tenants_file=tenants,
        name="audited",
        extra_env=env,
    )
    yield server, redis
    server.stop()
    redis.stop()


def as_tenant(server: ServerProcess, name: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {KEYS[name]}"}, timeout=30
    )


def events(client: httpx.Client, path: str, want: int, **params: str) -> list[dict[str, Any]]:
    """The trail without the audit queries' own events (they are audited too), once ``want``
    events have arrived (audit writing is asynchronous)."""
    deadline = time.monotonic() + 10
    while True:
        page = client.get(path, params={"limit": "500", **params}).raise_for_status().json()
        found = [e for e in page["events"] if not e.get("route", "").endswith("/audit")]
        if len(found) >= want or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_every_request_is_audited_once_with_its_outcome(
    audited: tuple[ServerProcess, RedisServer],
) -> None:
    server, _ = audited
    body = {"model": MODEL, "payload": {"prompt": SECRET_PROMPT}}
    with (
        as_tenant(server, "auditee") as auditee,
        as_tenant(server, "other") as other,
        httpx.Client(base_url=server.url, headers={"Authorization": "Bearer wrong-key"}) as wrong,
    ):
        foreign = other.post(f"{MIRROR}/requests", json=body).json()["request_id"]
        key = {"Idempotency-Key": "audit-replay-1"}
        script = [
            (auditee.get(f"{MIRROR}/models"), "ok"),
            (wrong.get(f"{MIRROR}/models"), "unauthorized"),
            (
                auditee.post(f"{MIRROR}/requests", json={"model": MODEL, "payload": {}}),
                "invalid_payload",
            ),
            (auditee.post(f"{MIRROR}/requests", json=body), "ok"),
            (auditee.post(f"{MIRROR}/requests", json=body, headers=key), "ok"),
            (auditee.post(f"{MIRROR}/requests", json=body, headers=key), "replayed"),  # no charge
            (auditee.post(f"{MIRROR}/requests", json=body), "rate_limited"),
            (auditee.get(f"{MIRROR}/requests/{foreign}"), "not_found"),
        ]
        mine = [
            (r, outcome)
            for r, outcome in script
            if r.request.headers["authorization"] != "Bearer wrong-key"
        ]
        found = events(auditee, "/v1/audit", len(mine))
    assert [e["outcome"] for e in found] == [outcome for _, outcome in reversed(mine)]
    assert [e["request_id"] for e in found] == [
        r.headers["x-request-id"] for r, _ in reversed(mine)
    ]
    assert all(e["tenant"] == "auditee" and e["key_id"] == "a-k" for e in found)
    assert all(e["client_ip"] == "127.0.0.1" and e["latency_ms"] > 0 for e in found)
    rejected = value(samples(server), "gmigw_quota_rejections_total", tenant="auditee")
    assert rejected == 1  # the rate_limited submit
    accepted = [e for e in found if e["outcome"] == "ok" and e["method"] == "POST"]
    assert len(accepted) == 2
    (replayed,) = (e for e in found if e["outcome"] == "replayed")
    keyed = accepted[0]  # newest first: the keyed submit the replay answered with
    assert replayed["upstream_request_id"] == keyed["upstream_request_id"]
    for event in accepted:
        assert event["video_seconds_charged"] == 5
        assert event["model"] == MODEL
        assert event["upstream_status"] == 200
        assert event["upstream_request_id"]
        assert event["prompt_sha256"] == hashlib.sha256(SECRET_PROMPT.encode()).hexdigest()
        assert event["prompt_length"] == len(SECRET_PROMPT)
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {KEYS['admin']}"}
    ) as admin:
        everything = events(admin, "/admin/audit", len(script) + 1)
        assert any(e["outcome"] == "unauthorized" and "tenant" not in e for e in everything)
        limited = events(admin, "/admin/audit", 1, outcome="rate_limited")
        assert [e["tenant"] for e in limited] == ["auditee"]
        bad = events(admin, "/admin/audit", 1, tenant="auditee", status="400")
        assert [e["outcome"] for e in bad] == ["invalid_payload"]
        for status in ("\u00b2", "99", "1" * 40):
            assert admin.get("/admin/audit", params={"status": status}).status_code == 400
        for tenant in ("{", "a}b", "Auditee"):  # no Redis key made of an arbitrary string
            assert admin.get("/admin/audit", params={"tenant": tenant}).status_code == 400
        # A complaint traced from the request id a client saw to every event of its job.
        (submitted,) = events(admin, "/admin/audit", 1, request_id=keyed["request_id"])
        assert submitted["upstream_request_id"] == keyed["upstream_request_id"]
        job = events(admin, "/admin/audit", 2, upstream_request_id=keyed["upstream_request_id"])
        assert [e["outcome"] for e in job] == ["replayed", "ok"]
        # A misspelt filter answered every event, as if it matched; an empty one is absent.
        misspelt = admin.get("/admin/audit", params={"tenant_id": "auditee"})
        assert misspelt.status_code == 400
        assert "'tenant_id'" in misspelt.json()["error"]
        blank = {"route": "", "status": "", "outcome": "", "since": "", "tenant": ""}
        assert len(events(admin, "/admin/audit", len(everything), **blank)) >= len(everything)
        lower_z = events(admin, "/admin/audit", 1, since="2020-01-01t00:00:00z", outcome="ok")
        assert lower_z
    text = str(everything) + server.output()
    assert SECRET_PROMPT not in text
    for key in KEYS.values():
        assert key not in text
    assert UPSTREAM_KEY not in text
    assert '"event":"audit"' in server.output()


def test_every_upstream_call_is_in_the_audit_of_the_request_that_made_it(
    audited: tuple[ServerProcess, RedisServer], sim_control: SimControl
) -> None:
    """Before, only submits and polls noted the upstream: an upstream 503 on the other routes
    looked like the gateway's own, and a model's detail had no model."""
    server, _ = audited
    sim_control.fault("POST /upload-url", status=503, rate=1.0)
    with as_tenant(server, "other") as other:
        assert other.get(f"{MIRROR}/models/{MODEL}").status_code == 200  # a cold catalog
        assert other.post(f"{MIRROR}/upload-url", json={"file_type": "jpg"}).status_code == 503
        # Refused after its model's detail was read: that read is not the submit's upstream.
        invalid = {"model": "Veo3", "payload": {"negative_prompt": "no prompt"}}
        assert other.post(f"{MIRROR}/requests", json=invalid).status_code == 400
        assert other.get(f"{MIRROR}/models/{'Z' * 300}").status_code == 404
        unknown, refused, upload, detail = events(other, "/v1/audit", 4)
    assert (refused["status"], refused.get("upstream_status")) == (400, None)
    assert "model" not in unknown  # no client text in the trail
    assert (detail["model"], detail["upstream_status"]) == (MODEL, 200)
    assert detail["upstream_latency_ms"] > 0
    assert (upload["status"], upload["upstream_status"]) == (503, 503)
    assert upload["upstream_latency_ms"] > 0


def settlements(client: httpx.Client) -> list[dict[str, Any]]:
    page = client.get("/v1/audit", params={"limit": "500"}).raise_for_status().json()
    return [e for e in page["events"] if e["kind"] == "settlement"]


def test_settlements_are_audited_with_what_they_charged_or_refunded(
    audited: tuple[ServerProcess, RedisServer],
) -> None:
    server, _ = audited
    with as_tenant(server, "other") as other:
        ids = {
            prompt: other.post(
                f"{MIRROR}/requests", json={"model": MODEL, "payload": {"prompt": prompt}}
            ).json()["request_id"]
            for prompt in ("a heron", "a heron [sim:fail]")
        }
        polls = set()  # the gateway's ids of the polls
        for request_id in ids.values():
            deadline = time.monotonic() + 10
            while True:
                poll = other.get(f"{MIRROR}/requests/{request_id}")
                polls.add(poll.headers["x-request-id"])
                if poll.json()["status"] in ("success", "failed"):
                    break
                assert time.monotonic() < deadline
                time.sleep(0.05)
        deadline = time.monotonic() + 10
        while len(found := settlements(other)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    by_job = {e["upstream_request_id"]: e for e in found}
    assert set(by_job) == set(ids.values())
    succeeded, failed = by_job[ids["a heron"]], by_job[ids["a heron [sim:fail]"]]
    assert (succeeded["outcome"], succeeded["video_seconds_charged"]) == ("charged", 5)
    assert (failed["outcome"], failed["video_seconds_refunded"]) == ("refunded", 5)
    assert all(e["tenant"] == "other" and e["model"] == MODEL for e in found)
    assert all(e["request_id"] in polls for e in found)  # which poll saw the job end
    scrape = samples(server)
    assert value(scrape, "gmigw_video_seconds_refunded_total", tenant="other") == 5
    assert value(scrape, "gmigw_jobs_finished_total", tenant="other", status="failed") == 1


def test_the_client_behind_a_trusted_proxy_is_audited(
    audited: tuple[ServerProcess, RedisServer],
) -> None:
    server, _ = audited
    with as_tenant(server, "other") as other:
        forwarded = {"X-Forwarded-For": "203.0.113.50, 198.51.100.7"}
        assert other.get(f"{MIRROR}/models", headers=forwarded).status_code == 200
        (event,) = events(other, "/v1/audit", 1)
    assert event["client_ip"] == "198.51.100.7"  # the nearest hop the trusted proxy names


def test_prompts_are_kept_only_for_tenants_who_opted_in(
    audited: tuple[ServerProcess, RedisServer],
) -> None:
    server, _ = audited
    with as_tenant(server, "chatty") as chatty:
        chatty.post(
            f"{MIRROR}/requests", json={"model": MODEL, "payload": {"prompt": SECRET_PROMPT}}
        )
        found = events(chatty, "/v1/audit", 1)
    assert found[0]["prompt"] == SECRET_PROMPT


def test_rejected_submits_record_their_prompt_but_no_invented_model(
    audited: tuple[ServerProcess, RedisServer],
) -> None:
    """A model that does not exist is the client's text, not a fact: the trail leaves it out.
    The prompt of a refused submit is recorded like any other (DESIGN §6: a refusal for a
    prompt over the limit had no trace of that prompt; review finding)."""
    server, _ = audited
    prompt = "p" * 3000
    with as_tenant(server, "auditee") as auditee:
        invented = {"model": "made-up-" + "m" * 150, "payload": {"prompt": prompt}}
        assert auditee.post(f"{MIRROR}/requests", json=invented).status_code == 404
        too_long = {"model": MODEL, "payload": {"prompt": prompt}}
        assert auditee.post(f"{MIRROR}/requests", json=too_long).status_code == 400
        found = events(auditee, "/v1/audit", 2)
    assert [e["outcome"] for e in found] == ["invalid_payload", "unknown_model"]
    assert "model" not in found[1]
    assert found[0]["model"] == MODEL
    for event in found:
        assert event["prompt_sha256"] == hashlib.sha256(prompt.encode()).hexdigest()
        assert event["prompt_length"] == 3000
        assert "prompt" not in event  # this tenant keeps no prompt text


def test_cursor_pagination_newest_first(audited: tuple[ServerProcess, RedisServer]) -> None:
    server, _ = audited
    with as_tenant(server, "other") as other:
        ids = [other.get(f"{MIRROR}/models").headers["x-request-id"] for _ in range(5)]
        events(other, "/v1/audit", 5)
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
            page = other.get("/v1/audit", params=params).raise_for_status().json()
            seen += [e["request_id"] for e in page["events"] if e["route"].endswith("/models")]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == ids[::-1]
        assert other.get("/v1/audit", params={"limit": "0"}).status_code == 400
        for bad in (
            {"cursor": "x"},
            {"cursor": "1-2-3"},
            {"cursor": "0-0"},
            {"cursor": "9" * 20},
            {"limit": "\u00b2"},
            {"limit": "9" * 5000},
        ):
            assert other.get("/v1/audit", params=bad).status_code == 400, bad


def test_a_since_query_ends_where_the_trail_gets_older_than_since(
    audited: tuple[ServerProcess, RedisServer],
) -> None:
    """Not after scanning 5,000 older events per page: a client would page through empty
    pages, or stop at the first one, thinking nothing matched."""
    server, redis_server = audited
    hour_ago = int((time.time() - 3600) * 1000)
    with redis.Redis.from_url(redis_server.url) as client:
        pipe = client.pipeline(transaction=False)
        for n in range(6000):  # an hour-old trail, longer than one page's scan
            old = f'{{"time":"2026-01-01T00:00:00+00:00","kind":"request","n":{n}}}'
            pipe.xadd("gmigw:{other}:audit", {"e": old}, id=f"{hour_ago}-{n + 1}")
        pipe.execute()
    since = datetime.now(UTC).isoformat()
    with as_tenant(server, "other") as other:
        other.get(f"{MIRROR}/models").raise_for_status()
        events(other, "/v1/audit", 1, since=since)
        page = other.get("/v1/audit", params={"since": since}).raise_for_status().json()
    assert page["events"]
    assert all(
        datetime.fromisoformat(e["time"]) >= datetime.fromisoformat(since) for e in page["events"]
    )
    assert page["next_cursor"] is None


def test_a_tenant_key_refused_on_an_admin_route_is_in_that_tenants_trail(
    audited: tuple[ServerProcess, RedisServer],
) -> None:
    server, _ = audited
    with as_tenant(server, "other") as other:
        assert other.post("/admin/reload").status_code == 403
        found = events(other, "/v1/audit", 1)
    assert [(e["status"], e["tenant"], e["key_id"]) for e in found] == [(403, "other", "o-k")]


def test_an_expired_key_is_in_its_tenants_trail(sim: ServerProcess, tmp_path: Path) -> None:
    """Who still uses a rotated-out key is what an operator needs to know (DESIGN §6)."""
    old_key = "audit-expired-key-0123456789"
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(
        "tenants:\n"
        f'  - {{id: rotated, keys: [{{id: r-old, sha256: "{sha(old_key)}",'
        ' expires_at: "2020-01-01T00:00:00Z"}], models: ["*"]}\n'
        f'admins: [{{id: ops, sha256: "{sha(KEYS["admin"])}"}}]\n'
    )
    server = start_gateway(
        tmp_path, sim=sim, upstream_key=UPSTREAM_KEY, tenants_file=tenants, name="rotated"
    )
    try:
        headers = {"Authorization": f"Bearer {old_key}"}
        assert httpx.get(f"{server.url}{MIRROR}/models", headers=headers).status_code == 401
        with as_tenant(server, "admin") as admin:
            found = events(admin, "/admin/audit", 1, tenant="rotated")
    finally:
        server.stop()
    assert [(e["status"], e["tenant"], e["key_id"]) for e in found] == [(401, "rotated", "r-old")]


def test_events_written_while_redis_stalls_reach_the_trail_once(
    audited: tuple[ServerProcess, RedisServer],
) -> None:
    """A failed batch was dropped (and counted even when Redis had in fact run it): a second
    of Redis failover lost that window of the trail for good (review finding). It is now kept
    and sent again, and a batch Redis already holds is not added twice."""
    server, redis = audited
    with as_tenant(server, "other") as other:
        assert other.get(f"{MIRROR}/models").status_code == 200  # scripts loaded, catalog warm
        redis.pause()
        try:
            sent = [
                other.get(f"{MIRROR}/models", headers={"X-Request-ID": f"stall-{n}"})
                for n in range(5)
            ]
            time.sleep(2.5)  # past the client's 2 s timeout: the batch under way fails
        finally:
            redis.resume()
        assert all(r.status_code == 200 for r in sent)
        found = events(other, "/v1/audit", 6)
    ids = [e["request_id"] for e in found if e["request_id"].startswith("stall-")]
    assert sorted(ids) == [f"stall-{n}" for n in range(5)]
    scrape = httpx.get(server.url + "/metrics").text
    assert "gmigw_audit_events_dropped_total 0.0" in scrape
    assert '"event":"audit_sink_retrying"' in server.output()
