"""Audit queries: ``GET /v1/audit`` (a tenant's own events) and the admin variant's parsing."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from litestar import Request, Router, get
from litestar.openapi.spec import OpenAPIFormat, OpenAPIType, Schema

from gateway.errors import BadRequest
from gateway.routes.deps import (
    note_ratelimit,
    query_count,
    refusal_with_ratelimit,
    services,
    tenant_principal,
)
from gateway.routes.docs import TENANT_ERRORS, documented, documented_operation, error, query
from gateway.schemas import AuditPage
from gateway.services.audit_trail import AuditFilter

__all__ = ("AUDIT_QUERY", "audit_router", "filter_params", "page_params")

MAX_LIMIT = 500
_CURSOR = re.compile(r"[0-9]{1,20}(?:-[0-9]{1,20})?")

AnyRequest = Request[Any, Any, Any]


_TIME = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.DATE_TIME)
AUDIT_QUERY = [
    query("limit", "events per page, 1 to 500 (default 100)", Schema(type=OpenAPIType.INTEGER)),
    query("cursor", "the next_cursor of the previous page"),
    query("since", "only events at or after this RFC 3339 time", _TIME),
    query("until", "only events before this RFC 3339 time", _TIME),
    query("route", "only this route template, e.g. /api/v1/ie/requestqueue/apikey/requests"),
    query("status", "only this HTTP status", Schema(type=OpenAPIType.INTEGER)),
    query("outcome", "only this outcome: ok, an error code, replayed, charged, refunded, ..."),
    query(
        "request_id",
        "only events of this gateway request id (X-Request-ID): the request's, and a"
        " settlement it caused",
    ),
    query("upstream_request_id", "only events of this upstream job id (its submit, polls, ...)"),
]
_KNOWN = frozenset(parameter.name for parameter in AUDIT_QUERY)


def page_params(request: AnyRequest) -> tuple[int, str | None]:
    """``limit`` (1 to 500, default 100) and the opaque ``cursor`` of the previous page."""
    raw = request.query_params.get("limit") or "100"
    limit = query_count(raw)
    if limit is None or not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}, got {raw!r}")
    cursor = request.query_params.get("cursor") or None
    if cursor is not None and not _is_cursor(cursor):
        raise BadRequest("cursor must be a next_cursor value from a previous page")
    return limit, cursor


def _is_cursor(raw: str) -> bool:
    """An audit entry id as the stores make them: a Redis stream id, or a memory sequence
    (never all zeros, which Redis refuses as the end of a range)."""
    if _CURSOR.fullmatch(raw) is None:
        return False
    parts = [int(n) for n in raw.split("-")]
    return all(n < 2**64 for n in parts) and any(parts)


def filter_params(request: AnyRequest, *, also: frozenset[str] = frozenset()) -> AuditFilter:
    """``since``/``until`` (RFC 3339), ``route``, ``status``, ``outcome``, ``request_id`` and
    ``upstream_request_id``; an empty one is absent, as for ``limit`` and ``cursor``.

    Raises:
        BadRequest: a bad value, or a parameter that is neither one of these nor in ``also``
            (ignored, a misspelt filter answered every event, as if it had matched).
    """
    query = request.query_params
    unknown = sorted(set(query) - _KNOWN - also)
    if unknown:
        known = ", ".join(sorted(_KNOWN | also))
        raise BadRequest(f"unknown query parameter {unknown[0][:40]!r}; known: {known}")
    raw_status = query.get("status") or None
    status = None if raw_status is None else query_count(raw_status)
    if raw_status is not None and (status is None or not 100 <= status <= 599):
        raise BadRequest(f"status must be an HTTP status code, got {raw_status!r}")
    return AuditFilter(
        since=_moment(query.get("since") or None, "since"),
        until=_moment(query.get("until") or None, "until"),
        route=query.get("route") or None,
        status=status,
        outcome=query.get("outcome") or None,
        request_id=query.get("request_id") or None,
        upstream_request_id=query.get("upstream_request_id") or None,
    )


def _moment(raw: str | None, name: str) -> datetime | None:
    if raw is None:
        return None
    if raw[-1:] in ("Z", "z"):  # RFC 3339 allows either
        raw = raw[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an RFC 3339 time, got {raw!r}") from None
    if moment.tzinfo is None:
        raise BadRequest(f"{name} needs a timezone (e.g. a trailing Z)")
    return moment


@get(
    "/audit",
    responses={200: documented(AuditPage), 400: error("bad_request: a bad query"), **TENANT_ERRORS},
    operation_class=documented_operation(parameters=AUDIT_QUERY),
)
async def own_audit(request: AnyRequest) -> dict[str, Any]:
    """Your own audit events, newest first; pass ``next_cursor`` back as ``cursor``. Filters
    as on ``/admin/audit``: ``since``/``until`` (RFC 3339), ``route``, ``status``, ``outcome``,
    ``request_id``, ``upstream_request_id``."""
    principal = tenant_principal(request)
    found = services(request)
    async with refusal_with_ratelimit(request, principal):
        limit, cursor = page_params(request)
        only = filter_params(request)
    # A read like any other: unmetered, a flood of these scans filled the trail and the CPU.
    read = await found.quotas.take_read(principal.tenant)
    note_ratelimit(request, read or await found.quotas.peek(principal.tenant))
    return await found.audit.query(principal.tenant.id, limit=limit, cursor=cursor, only=only)


audit_router = Router(path="/v1", route_handlers=[own_audit], tags=["tenant"])
