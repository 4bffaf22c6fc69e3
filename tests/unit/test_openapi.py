"""The OpenAPI document tells a client generator what the routes really take and answer.

The routes read their query and headers raw, so Litestar cannot see them: a document without
them gave generated clients no way to page, filter or authenticate.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.in_process import openapi_document

MIRROR = "/api/v1/ie/requestqueue/apikey"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(openapi_document())
    return parsed


def operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    found: dict[str, Any] = document["paths"][path][method]
    return found


def parameters(document: dict[str, Any], method: str, path: str) -> set[str]:
    return {p["name"] for p in operation(document, method, path).get("parameters", [])}


def test_every_route_but_the_probes_needs_a_bearer_key(document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert document["security"] == [{"bearerAuth": []}]
    for probe in ("/healthz", "/readyz"):
        assert operation(document, "get", probe)["security"] == [{}]


def test_query_parameters_and_headers_the_routes_read_are_declared(
    document: dict[str, Any],
) -> None:
    assert parameters(document, "get", f"{MIRROR}/requests") >= {
        "model_id", "limit", "page_size", "offset"
    }  # fmt: skip
    audit = {"limit", "cursor", "since", "until", "route", "status", "outcome"}
    assert parameters(document, "get", "/v1/audit") >= audit
    assert parameters(document, "get", "/admin/audit") >= audit | {"tenant"}
    assert "If-None-Match" in parameters(document, "get", f"{MIRROR}/models")
    assert "Idempotency-Key" in parameters(document, "post", f"{MIRROR}/requests")


def test_the_answers_a_client_meets_are_declared(document: dict[str, Any]) -> None:
    submit = operation(document, "post", f"{MIRROR}/requests")["responses"]
    assert set(submit) >= {"200", "400", "401", "409", "413", "422", "429", "503", "504"}
    assert {"Idempotent-Replayed", "RateLimit"} <= set(submit["200"]["headers"])
    models = operation(document, "get", f"{MIRROR}/models")["responses"]
    assert "304" in models
    assert {"ETag", "X-Cache", "RateLimit"} <= set(models["200"]["headers"])
    for admin in ("/admin/tenants", "/admin/audit"):
        assert {"401", "403"} <= set(operation(document, "get", admin)["responses"])
    ready = operation(document, "get", "/readyz")["responses"]["200"]
    assert ready["content"]["application/json"]["schema"]["$ref"].endswith("/ReadyBody")
