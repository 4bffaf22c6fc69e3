"""Non-negotiable 5: the GMI key and tenant keys never leave the gateway in any form."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from tests.conftest import UPSTREAM_KEY, Keys, SimControl, client_for
from tests.support.processes import MIRROR, ServerProcess, start_gateway

MODEL = "Kling-Text2Video-V2-Master"


def exercise(gateway: ServerProcess, keys: Keys, sim_control: SimControl) -> list[httpx.Response]:
    """One of every kind of answer: success, each error class, upstream errors."""
    responses: list[httpx.Response] = []
    with client_for(gateway, keys.studio) as studio:
        responses.append(studio.get("/models"))
        responses.append(studio.get(f"/models/{MODEL}"))
        ok = studio.post("/requests", json={"model": MODEL, "payload": {"prompt": "ok"}})
        responses.append(ok)
        responses.append(studio.get(f"/requests/{ok.json()['request_id']}"))
        responses.append(studio.get("/requests"))
        responses.append(studio.post("/requests", json={"model": MODEL, "payload": {}}))
        responses.append(studio.post("/requests", content=b"{"))
        sim_control.fault("POST /requests", status=500, rate=1.0)
        responses.append(
            studio.post("/requests", json={"model": MODEL, "payload": {"prompt": "x"}})
        )
        sim_control.clear_faults()
    with client_for(gateway, "wrong-" + keys.studio) as wrong:
        responses.append(wrong.get("/models"))
    responses.append(
        httpx.post(gateway.url + "/admin/reload", headers={"Authorization": f"Bearer {keys.admin}"})
    )
    responses.append(httpx.get(gateway.url + "/readyz"))
    responses.append(httpx.get(gateway.url + "/schema/openapi.json"))
    return responses


def test_keys_never_appear_in_responses_or_logs(
    gateway: ServerProcess, keys: Keys, sim_control: SimControl
) -> None:
    responses = exercise(gateway, keys, sim_control)
    assert {r.status_code for r in responses} >= {200, 400, 401, 500}
    secrets = [UPSTREAM_KEY, keys.studio, keys.rival, keys.narrow, keys.admin]
    for response in responses:
        text = response.text + json.dumps(dict(response.headers))
        for secret in secrets:
            assert secret not in text, f"secret leaked in {response.request.url}"
    # Audit lines are written off the request path, in order: a last request's line says the
    # others are out.
    httpx.get(gateway.url + MIRROR + "/models", headers={"X-Request-ID": "secrets-scan-end"})
    deadline = time.monotonic() + 10
    while '"request_id":"secrets-scan-end"' not in (output := gateway.output()):
        assert time.monotonic() < deadline, "the last request's line never came"
        time.sleep(0.05)
    for secret in secrets:
        assert secret not in output


def test_rejected_upstream_key_is_an_operator_error_not_a_leak(
    sim: ServerProcess, tenants_file: Path, keys: Keys, tmp_path: Path
) -> None:
    wrong_key = "gmi-wrong-key-" + "z" * 40
    gateway = start_gateway(
        tmp_path, sim=sim, upstream_key=wrong_key, tenants_file=tenants_file, name="badkey"
    )
    try:
        with client_for(gateway, keys.studio) as studio:
            models = studio.get("/models")
            submit = studio.post("/requests", json={"model": MODEL, "payload": {"prompt": "x"}})
        for response in (models, submit):
            assert response.status_code == 502
            assert response.json()["code"] == "upstream_auth_failed"
            assert wrong_key not in response.text
    finally:
        gateway.stop()
    assert wrong_key not in gateway.output()
