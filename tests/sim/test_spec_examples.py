"""The simulator answers in the shapes of the upstream spec's examples (copied beside this file,
so the check runs on any checkout): what the gateway is tested against is what GMI sends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.sim.conftest import KEY
from tests.sim.test_simulator import M, P, record, submit
from tests.store.conftest import FakeClock

EXAMPLES = Path(__file__).resolve().parent / "upstream_examples"


def example(name: str) -> Any:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def shape(value: Any) -> Any:
    """The keys, in order, and the JSON types of a document, without its values."""
    if isinstance(value, dict):
        return [(key, shape(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


async def test_the_model_list_and_a_model_detail_are_the_spec_examples(
    sim: httpx.AsyncClient,
) -> None:
    assert (await sim.get(f"{P}/models")).json() == example("models_list")
    detail = (await sim.get(f"{P}/models/{M}")).json()
    assert detail == example(f"model_detail_{M}")


async def test_submit_answers_and_records_have_the_spec_shapes(
    sim: httpx.AsyncClient, clock: FakeClock
) -> None:
    submitted = await sim.post(
        f"{P}/requests", json={"model": M, "payload": example("status_queued")["payload"]}
    )
    assert shape(submitted.json()) == shape(example("submit_response"))
    request_id = submitted.json()["request_id"]
    assert shape(await record(sim, request_id)) == shape(example("status_queued"))
    clock.advance(3600)
    assert shape(await record(sim, request_id)) == shape(example("status_success"))
    policy = example("status_failed")["payload"]
    failed = await submit(sim, {**policy, "prompt": policy["prompt"] + " [sim:policy]"})
    clock.advance(3600)
    assert shape(await record(sim, failed)) == shape(example("status_failed"))
    listed = (await sim.get(f"{P}/requests")).json()
    assert [key for key, _ in shape(listed)] == [key for key, _ in shape(example("requests_list"))]


async def test_errors_are_the_spec_examples(sim: httpx.AsyncClient) -> None:
    unauthorized = await sim.get(f"{P}/models", headers={"Authorization": "Bearer nope"})
    assert unauthorized.status_code == 401
    assert unauthorized.json() == example("error_unauthorized_401")
    missing = await sim.get(f"{P}/models/Kling-Text2Video-V9-Master")
    assert (missing.status_code, missing.json()) == (404, example("error_model_not_found_404"))
    invalid = await sim.post(
        f"{P}/requests", json={"model": M, "payload": {"prompt": "p", "duration": "7"}}
    )
    assert invalid.status_code == 400
    assert invalid.json() == example("error_invalid_payload_400")
    assert KEY not in unauthorized.text
