"""Keys, error bodies and request ids on every kind of answer."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import Keys, client_for, utf8_key
from tests.support.processes import MIRROR, ServerProcess


@pytest.mark.parametrize(
    ("headers", "text"),
    [
        ({}, "Authorization: Bearer"),
        ({"Authorization": "Basic abc"}, "Authorization: Bearer"),
        ({"Authorization": "Bearer"}, "Authorization: Bearer"),
        ({"Authorization": "Bearer not-a-real-key"}, "invalid"),
    ],
)
def test_missing_or_wrong_key_is_401(
    gateway: ServerProcess, headers: dict[str, str], text: str
) -> None:
    response = httpx.get(gateway.url + MIRROR + "/models", headers=headers)
    assert response.status_code == 401
    body = response.json()
    assert body["code"] == "unauthorized"
    assert text in body["error"]
    assert "not-a-real-key" not in response.text


def test_a_key_is_read_as_the_utf8_its_hash_was_made_of(gateway: ServerProcess, keys: Keys) -> None:
    """Read as Latin-1, a key with "ü" never matched the hash ``sha256sum`` gives of it."""
    key = utf8_key(keys).encode()
    response = httpx.get(
        gateway.url + MIRROR + "/models", headers={"Authorization": b"Bearer " + key}
    )
    assert response.status_code == 200


def test_two_authorization_headers_are_refused_by_name(gateway: ServerProcess, keys: Keys) -> None:
    """Joined by ", ", two copies of a valid key read as a third: a 401 that named no cause."""
    line = ("Authorization", f"Bearer {keys.studio}")
    response = httpx.get(gateway.url + MIRROR + "/models", headers=[line, line])
    assert response.status_code == 400
    assert "Authorization header once" in response.json()["error"]
    assert keys.studio not in response.text


def test_expired_key_is_401(gateway: ServerProcess, keys: Keys) -> None:
    with client_for(gateway, keys.expired) as client:
        response = client.get("/models")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    assert "expired" in response.json()["error"]


def test_admin_key_is_not_a_tenant_key(gateway: ServerProcess, keys: Keys) -> None:
    with client_for(gateway, keys.admin) as client:
        assert client.get("/models").status_code == 401


def test_tenant_key_on_admin_route_is_403(gateway: ServerProcess, keys: Keys) -> None:
    headers = {"Authorization": f"Bearer {keys.studio}"}
    response = httpx.post(gateway.url + "/admin/reload", headers=headers)
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    no_key = httpx.post(gateway.url + "/admin/reload")
    assert no_key.status_code == 401


def test_request_id_is_echoed_or_generated(gateway: ServerProcess) -> None:
    given = httpx.get(gateway.url + "/healthz", headers={"X-Request-ID": "trace-123.abc"})
    assert given.headers["x-request-id"] == "trace-123.abc"
    generated = httpx.get(gateway.url + "/healthz")
    assert len(generated.headers["x-request-id"]) == 32
    unsafe = httpx.get(gateway.url + "/healthz", headers={"X-Request-ID": "bad id\tinjected"})
    assert unsafe.headers["x-request-id"] != "bad id\tinjected"


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nope", 404, "not_found"),
        ("GET", "/schema/swagger", 404, "not_found"),  # Litestar's own: an HTML page
        ("DELETE", MIRROR + "/requests/abc", 405, "method_not_allowed"),
        ("PUT", MIRROR + "/models", 405, "method_not_allowed"),
    ],
)
def test_routing_errors_are_json_with_request_id(
    gateway: ServerProcess, method: str, path: str, status: int, code: str
) -> None:
    response = httpx.request(method, gateway.url + path, headers={"X-Request-ID": "rid-1"})
    assert response.status_code == status
    assert response.json() == {
        "error": response.json()["error"],
        "code": code,
        "request_id": "rid-1",
    }


def test_head_is_answered_as_get_without_the_body(gateway: ServerProcess, keys: Keys) -> None:
    """RFC 9110: a general-purpose server supports HEAD (uptime checks use it on /healthz)."""
    with client_for(gateway, keys.studio) as studio:
        for path in ("/models", gateway.url + "/healthz"):
            got, head = studio.get(path), studio.head(path, headers={"X-Request-ID": "head-1"})
            assert head.status_code == got.status_code == 200
            assert head.content == b""
            assert head.headers["content-length"] == str(len(got.content))
            assert head.headers.get("etag") == got.headers.get("etag")
        not_get = studio.head("/upload-url")
    assert not_get.status_code == 405
    assert set(not_get.headers["allow"].split(", ")) == {"OPTIONS", "POST"}
    deadline = time.monotonic() + 5  # audit lines are written off the request path
    while len(audited := head_lines(gateway)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(audited) == 2
    assert all('"method":"HEAD"' in line for line in audited)


def head_lines(gateway: ServerProcess) -> list[str]:
    return [line for line in gateway.output().splitlines() if '"request_id":"head-1"' in line]


def test_health_and_readiness(gateway: ServerProcess) -> None:
    assert httpx.get(gateway.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(gateway.url + "/readyz").json()
    assert ready["status"] == "ready"
    assert ready["tenants"] == 3
