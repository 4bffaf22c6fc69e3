"""Operator routes behind admin keys (DESIGN §2.3)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Router, post

from gateway.errors import InvalidTenantsFile
from gateway.routes.deps import admin_principal, documented, services
from gateway.schemas import ErrorBody, ReloadBody

__all__ = ("admin_router",)

AnyRequest = Request[Any, Any, Any]


@post(
    "/reload",
    status_code=200,
    responses={422: documented(ErrorBody, "The new tenants file is invalid")},
)
async def reload_tenants(request: AnyRequest) -> ReloadBody:
    """Re-read the tenants file now; a bad file keeps the current config serving."""
    admin_principal(request)
    registry = services(request).tenants
    result = registry.reload()
    if result.error is not None:
        raise InvalidTenantsFile(
            f"tenants file rejected, the previous config keeps serving: {result.error}"
        )
    return ReloadBody(changed=result.changed, tenants=len(registry.current.tenants))


admin_router = Router(path="/admin", route_handlers=[reload_tenants], tags=["admin"])
