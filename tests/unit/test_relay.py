"""What an upstream error becomes for the client: the upstream's own request id is kept only
when it looks like one, and never for a refusal of the gateway's own key."""

from __future__ import annotations

import msgspec
import pytest

from gateway.services.relay import relayed_error
from gateway.upstream import UpstreamResponse

UUID = "9f22b97b-db7c-462a-8daa-4ecbacf07c6b"


def error_for(status: int, body: object) -> tuple[str, str | None]:
    response = UpstreamResponse(status, msgspec.json.encode(body), None, 0.01)
    error = relayed_error(response)
    return error.code, error.upstream_request_id


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (503, {"error": "capacity", "request_id": UUID}, ("upstream_error", UUID)),
        (400, {"error": "failed", "request_id": UUID}, ("invalid_payload", UUID)),
        (503, {"error": "capacity"}, ("upstream_error", None)),
        (503, {"error": "capacity", "request_id": 12}, ("upstream_error", None)),
        (503, {"error": "capacity", "request_id": "A" * 129}, ("upstream_error", None)),
        (503, {"error": "capacity", "request_id": "a\r\nX-Injected: 1"}, ("upstream_error", None)),
        (503, {"error": "capacity", "request_id": "Bearer gmi-key"}, ("upstream_error", None)),
        # The gateway's own key refused: the operator's problem, nothing to hand the tenant.
        (401, {"error": "unauthorized", "request_id": UUID}, ("upstream_auth_failed", None)),
        (503, ["not", "an", "object"], ("upstream_error", None)),
    ],
)
def test_the_upstream_request_id_is_kept_only_when_it_is_one(
    status: int, body: object, expected: tuple[str, str | None]
) -> None:
    assert error_for(status, body) == expected
