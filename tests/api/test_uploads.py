"""POST /upload-url (spec E6) through a real gateway socket in front of the simulator."""

from __future__ import annotations

import httpx
import pytest

from tests.api.test_mirror import assert_error
from tests.conftest import SimControl, client_for
from tests.support.processes import ServerProcess


def test_upload_url_passes_the_upstream_slot_through(
    studio: httpx.Client, sim_control: SimControl
) -> None:
    """Spec E6: image-to-video clients get their upload slot through the gateway too."""
    before = sim_control.calls()["POST /upload-url"]
    response = studio.post("/upload-url", json={"file_type": "jpg"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    slot = response.json()
    assert set(slot) == {"upload_url", "public_url"}
    assert slot["public_url"].endswith(".jpg")
    assert sim_control.calls()["POST /upload-url"] == before + 1


@pytest.mark.parametrize(
    ("body", "code", "text"),
    [
        (b'{"file_type": "gif"}', "invalid_payload", "file_type must be one of jpeg, jpg, png"),
        (b'{"file_type": ["png"]}', "invalid_payload", "file_type must be one of"),
        (b"{}", "invalid_payload", "file_type must be one of"),
        (b'["png"]', "invalid_payload", "must be a JSON object"),
        (b"png", "invalid_json", "not valid JSON"),
        (b"\xff\xfe", "invalid_json", "not valid JSON"),
        (b"", "invalid_payload", "request body is empty; expected {file_type}"),
    ],
)
def test_upload_url_refuses_a_bad_body_before_the_upstream(
    studio: httpx.Client, sim_control: SimControl, body: bytes, code: str, text: str
) -> None:
    before = sim_control.calls()["POST /upload-url"]
    assert_error(studio.post("/upload-url", content=body), 400, code, text)
    assert sim_control.calls()["POST /upload-url"] == before


def test_upload_url_needs_a_tenant_key_and_relays_upstream_failures(
    gateway: ServerProcess, studio: httpx.Client, sim_control: SimControl
) -> None:
    with client_for(gateway, None) as anonymous:
        assert_error(
            anonymous.post("/upload-url", json={"file_type": "png"}), 401, "unauthorized", ""
        )
    sim_control.fault("POST /upload-url", status=503, rate=1.0)
    response = studio.post("/upload-url", json={"file_type": "png"})
    assert_error(response, 503, "upstream_error", "capacity temporarily exhausted")
