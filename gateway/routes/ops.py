"""Probes for the orchestrator: liveness never touches a dependency, readiness checks the store."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, get

from gateway import metrics
from gateway.routes.deps import services
from gateway.routes.docs import documented
from gateway.schemas import ErrorBody, HealthBody, ReadyBody
from gateway.store import StoreError

__all__ = ("HEALTH_PATH", "METRICS_PATH", "READY_PATH", "healthz", "metrics_endpoint", "readyz")

HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"
READY_PATH = "/readyz"

AnyRequest = Request[Any, Any, Any]


@get(METRICS_PATH, tags=["operations"], include_in_schema=False)
async def metrics_endpoint(request: AnyRequest) -> Response[bytes]:
    """Prometheus text exposition (every worker's metrics when several run)."""
    tenants = None
    if not metrics.switched_off():
        found = services(request)
        tenants = found.tenants.current.tenants
        await found.quotas.publish_in_flight(tenants.values())
    # As a header: as media_type, Litestar would add a second "; charset=utf-8".
    body = metrics.exposition(tenants)
    return Response(body, headers={"Content-Type": metrics.CONTENT_TYPE_LATEST})


_NO_KEY: list[dict[str, list[str]]] = [{}]  # probes take no key


@get(HEALTH_PATH, tags=["operations"], security=_NO_KEY)
async def healthz() -> HealthBody:
    """The process is alive and its event loop answers."""
    return HealthBody(status="ok")


@get(
    READY_PATH,
    tags=["operations"],
    security=_NO_KEY,
    responses={
        200: documented(ReadyBody),
        503: documented(ErrorBody, "not_ready: the store is unreachable"),
    },
)
async def readyz(request: AnyRequest) -> Response[bytes]:
    """Config is loaded and the store answers (the upstream is deliberately not checked)."""
    found = services(request)
    tenants = len(found.tenants.current.tenants)
    try:
        await found.store.ping()
    except StoreError:
        if found.store_failure_mode == "open":  # serving under the local cap is still serving
            degraded = ReadyBody(status="ready", store="unreachable (open mode)", tenants=tenants)
            return Response(msgspec.json.encode(degraded), media_type="application/json")
        body = {
            "error": "not ready: the store is unreachable",
            "code": "not_ready",
            "request_id": request.scope["state"].get("request_id", ""),
        }
        return Response(msgspec.json.encode(body), status_code=503, media_type="application/json")
    ready = ReadyBody(status="ready", store="ok", tenants=tenants)
    return Response(msgspec.json.encode(ready), media_type="application/json")
