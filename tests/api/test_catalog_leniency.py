"""A model whose parameter schema has odd fields stays in service (through real sockets).

The upstream's parameter specs are only partly documented; numbers typed as strings are
plausible (spec U12). One unreadable field used to take the whole model out with 502s.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import UPSTREAM_KEY, SimControl
from tests.support.processes import MIRROR, ServerProcess, start_gateway, start_sim

KEY = "lenient-tenant-key-0123456789abcdef"
QUIRKY = "Quirky-Video"
OPEN = "Open-Video"
CATALOG = {
    "model_ids": [QUIRKY, OPEN],
    "details": {
        QUIRKY: {
            "model": QUIRKY,
            "parameters": [
                {"name": "prompt", "type": "string", "required": "true",
                 "description": "Max 40 characters."},
                {"name": "cfg_scale", "type": "float", "min_value": "0", "max_value": "1"},
                # Unreadable (max_length is no number): unchecked, but still the duration.
                {"name": "duration", "type": "enum", "options": ["5", "10"],
                 "default_value": "5", "max_length": "n/a"},
                {"name": "style", "type": "enum"},  # no options: nothing to check against
                {"name": "mood", "type": "enum", "options": None},
                {"name": "fps", "type": "enum", "options": [24, 30]},  # numeric options
            ],
        },
        OPEN: {"model": OPEN, "parameters": None},
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, SimControl]]:
    workdir = tmp_path_factory.mktemp("lenient")
    (workdir / "catalog.json").write_text(json.dumps(CATALOG))
    (workdir / "tenants.yaml").write_text(
        "tenants:\n  - id: lenient\n    keys:\n      - id: k1\n"
        f'        sha256: "{hashlib.sha256(KEY.encode()).hexdigest()}"\n'
        '    models: ["*"]\n    limits:\n      video_seconds_per_day: 1000\n'
    )
    sim = start_sim(
        workdir,
        api_key=UPSTREAM_KEY,
        time_scale=0.01,
        name="lenient-sim",
        extra_args=["--catalog", str(workdir / "catalog.json")],
    )
    gateway = start_gateway(
        workdir, sim=sim, upstream_key=UPSTREAM_KEY, tenants_file=workdir / "tenants.yaml",
        name="lenient-gateway",
    )  # fmt: skip
    control = SimControl(sim)
    yield gateway, control
    control.close()
    gateway.stop()
    sim.stop()


@pytest.fixture
def api(servers: tuple[ServerProcess, SimControl]) -> Iterator[httpx.Client]:
    gateway, _ = servers
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=gateway.url + MIRROR, headers=headers, timeout=10) as client:
        yield client


def charged(api: httpx.Client) -> int:
    usage = api.get(api.base_url.copy_with(path="/v1/usage")).raise_for_status().json()
    used: int = usage["limits"]["video_seconds_per_day"]["used"]
    return used


def submit(api: httpx.Client, payload: dict[str, object], model: str = QUIRKY) -> httpx.Response:
    return api.post("/requests", json={"model": model, "payload": payload})


def test_the_detail_is_served_as_the_upstream_sent_it(api: httpx.Client) -> None:
    detail = api.get(f"/models/{QUIRKY}")
    assert detail.status_code == 200
    assert detail.json() == CATALOG["details"][QUIRKY]  # type: ignore[index]


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({}, "prompt is required"),  # "required": "true"
        ({"prompt": "x" * 41}, "prompt must be at most 40 characters"),
        ({"prompt": "ok", "cfg_scale": 2}, "cfg_scale must be <= 1"),  # "max_value": "1"
        ({"prompt": "ok", "cfg_scale": -0.5}, "cfg_scale must be >= 0"),
    ],
)
def test_fields_sent_as_strings_are_still_checked_before_sending(
    api: httpx.Client, servers: tuple[ServerProcess, SimControl], payload: dict[str, object],
    problem: str,
) -> None:  # fmt: skip
    _, sim = servers
    before = sim.calls().get("POST /requests", 0)
    answer = submit(api, payload)
    assert sim.calls().get("POST /requests", 0) == before
    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid_payload"
    assert problem in answer.json()["error"]


def test_an_unreadable_duration_spec_still_sets_the_charge(api: httpx.Client) -> None:
    before = charged(api)
    # cfg_scale in range: the simulator checks it against its string bounds too.
    assert submit(api, {"prompt": "ok", "duration": "10", "cfg_scale": 0.5}).status_code == 200
    assert charged(api) == before + 10


def test_an_unreadable_spec_is_left_to_the_upstream_and_costs_nothing(
    api: httpx.Client, servers: tuple[ServerProcess, SimControl]
) -> None:
    before = charged(api)
    answer = submit(api, {"prompt": "ok", "duration": "7"})
    assert answer.status_code == 400  # the simulated upstream's own check
    assert "duration" in answer.json()["error"]
    assert charged(api) == before
    gateway, _ = servers
    log = [json.loads(line) for line in gateway.output().splitlines() if "unreadable" in line]
    assert {(e["model"], e["parameter"]) for e in log} == {(QUIRKY, "duration")}


def test_a_model_without_parameters_takes_any_payload(api: httpx.Client) -> None:
    assert submit(api, {"anything": 1}, model=OPEN).status_code == 200


def test_an_enum_without_options_takes_any_value_and_numeric_options_their_own(
    api: httpx.Client,
) -> None:
    accepted = submit(api, {"prompt": "ok", "style": "anime", "mood": "calm", "fps": 24})
    assert accepted.status_code == 200, accepted.text
    refused = submit(api, {"prompt": "ok", "fps": 25})
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid payload: fps must be one of [24, 30], got 25"
