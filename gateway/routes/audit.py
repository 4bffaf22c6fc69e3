"""Audit queries: ``GET /v1/audit`` (a tenant's own events) and the admin variant's parsing."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import Request, Router, get

from gateway.errors import BadRequest
from gateway.routes.deps import documented, services, tenant_principal
from gateway.schemas import AuditPage, ErrorBody
from gateway.services.audit_trail import AuditFilter

__all__ = ("audit_router", "page_params")

MAX_LIMIT = 500

AnyRequest = Request[Any, Any, Any]


def page_params(request: AnyRequest) -> tuple[int, str | None]:
    """``limit`` (1 to 500, default 100) and the opaque ``cursor`` of the previous page."""
    raw = request.query_params.get("limit") or "100"
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}, got {raw!r}")
    cursor = request.query_params.get("cursor") or None
    if cursor is not None and (len(cursor) > 64 or not cursor.replace("-", "").isdigit()):
        raise BadRequest("cursor must be a next_cursor value from a previous page")
    return int(raw), cursor


def filter_params(request: AnyRequest) -> AuditFilter:
    """``since``/``until`` (RFC 3339), ``route``, ``status``, ``outcome``."""
    query = request.query_params
    status = query.get("status")
    if status is not None and not status.isdigit():
        raise BadRequest(f"status must be an HTTP status code, got {status!r}")
    return AuditFilter(
        since=_moment(query.get("since"), "since"),
        until=_moment(query.get("until"), "until"),
        route=query.get("route"),
        status=int(status) if status is not None else None,
        outcome=query.get("outcome"),
    )


def _moment(raw: str | None, name: str) -> datetime | None:
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be an RFC 3339 time, got {raw!r}") from None
    if moment.tzinfo is None:
        raise BadRequest(f"{name} needs a timezone (e.g. a trailing Z)")
    return moment


@get("/audit", responses={200: documented(AuditPage), 400: documented(ErrorBody, "Bad query")})
async def own_audit(request: AnyRequest) -> dict[str, Any]:
    """Your own audit events, newest first; pass ``next_cursor`` back as ``cursor``."""
    principal = tenant_principal(request)
    limit, cursor = page_params(request)
    return await services(request).audit.query(principal.tenant.id, limit=limit, cursor=cursor)


audit_router = Router(path="/v1", route_handlers=[own_audit], tags=["tenant"])
