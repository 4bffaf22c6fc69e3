"""Operator routes behind admin keys (DESIGN §2.3); tenant keys get 403 here."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Request, Router, get, post
from litestar.params import FromPath

from gateway.errors import BadRequest, InvalidTenantsFile, NotFound
from gateway.routes.audit import AUDIT_QUERY, filter_params, page_params
from gateway.routes.deps import admin_principal, services
from gateway.routes.docs import ADMIN_ERRORS, documented, documented_operation, error, query
from gateway.schemas import AuditPage, ReloadBody
from gateway.services.tenants import TENANT_ID_RULE, Tenant, is_tenant_id

__all__ = ("admin_router",)

AnyRequest = Request[Any, Any, Any]


@post(
    "/reload",
    status_code=200,
    responses={422: error("invalid_tenants_file: the old config keeps serving"), **ADMIN_ERRORS},
)
async def reload_tenants(request: AnyRequest) -> ReloadBody:
    """Re-read the tenants file now; a bad file keeps the current config serving."""
    admin_principal(request)
    registry = services(request).tenants
    result = registry.reload()
    if result.error is not None:
        serving = "the last good copy serves" if result.changed else "the previous config serves"
        raise InvalidTenantsFile(f"tenants file rejected, {serving}: {result.error}")
    return ReloadBody(changed=result.changed, tenants=len(registry.current.tenants))


@get("/tenants", responses=ADMIN_ERRORS)
async def list_tenants(request: AnyRequest) -> dict[str, Any]:
    """Every configured tenant with its key ids, models, limits and current usage."""
    admin_principal(request)
    found = services(request)
    tenants = list(found.tenants.current.tenants.values())
    usages = await asyncio.gather(*(found.quotas.usage(t) for t in tenants))
    return {"tenants": [_describe(t) | {"usage": u} for t, u in zip(tenants, usages, strict=True)]}


@get(
    "/tenants/{tenant_id:str}/usage",
    responses={404: error("not_found: no such tenant"), **ADMIN_ERRORS},
)
async def tenant_usage(request: AnyRequest, tenant_id: FromPath[str]) -> dict[str, Any]:
    """One tenant's limits, use, remaining, reset times and jobs in flight."""
    admin_principal(request)
    found = services(request)
    tenant = found.tenants.current.tenants.get(tenant_id)
    if tenant is None:
        raise NotFound(f"no tenant {tenant_id}")
    return await found.quotas.usage(tenant)


@get(
    "/audit",
    responses={
        200: documented(AuditPage),
        400: error("bad_request: a bad query"),
        **ADMIN_ERRORS,
    },
    operation_class=documented_operation(
        parameters=[*AUDIT_QUERY, query("tenant", "only this tenant's events")], headers={}
    ),
)
async def all_audit(request: AnyRequest) -> dict[str, Any]:
    """Audit events of every tenant (or ``tenant``), newest first, with filters ``since``,
    ``until``, ``route``, ``status``, ``outcome``, ``request_id`` and ``upstream_request_id``."""
    admin_principal(request)
    limit, cursor = page_params(request)
    found = services(request)
    tenant = request.query_params.get("tenant") or None
    if tenant is not None and not is_tenant_id(tenant):  # a removed tenant's trail stays readable
        raise BadRequest(f"tenant must be a tenant id ({TENANT_ID_RULE}), got {tenant[:70]!r}")
    only = filter_params(request, also=frozenset({"tenant"}))
    return await found.audit.query(tenant, limit=limit, cursor=cursor, only=only)


@post(
    "/cache/invalidate",
    status_code=200,
    responses={
        **ADMIN_ERRORS,
        503: error("store_unavailable: dropped on this replica only; retry"),
    },
)
async def invalidate_cache(request: AnyRequest) -> dict[str, bool]:
    """Drop the cached model list and details on every replica (others follow within 1 s)."""
    admin_principal(request)
    await services(request).catalog.invalidate()
    return {"invalidated": True}


def _describe(tenant: Tenant) -> dict[str, Any]:
    return {
        "id": tenant.id,
        "keys": [
            {"id": key.id, "expires_at": key.expires_at.isoformat() if key.expires_at else None}
            for key in tenant.keys
        ],
        "models": "*" if tenant.models is None else sorted(tenant.models),
        "store_prompts": tenant.store_prompts,
    }


admin_router = Router(
    path="/admin",
    route_handlers=[reload_tenants, list_tenants, tenant_usage, all_audit, invalidate_cache],
    tags=["admin"],
)
