"""Gateway extensions for tenants (DESIGN §2.2): ``GET /v1/usage``."""

from __future__ import annotations

from typing import Any

from litestar import Request, Router, get

from gateway.routes.deps import note_ratelimit, services, tenant_principal
from gateway.routes.docs import TENANT_ERRORS, documented, documented_operation
from gateway.schemas import UsageBody

__all__ = ("usage_router",)

AnyRequest = Request[Any, Any, Any]


@get(
    "/usage",
    responses={200: documented(UsageBody), **TENANT_ERRORS},
    operation_class=documented_operation(),
)
async def usage(request: AnyRequest) -> dict[str, Any]:
    """Your limits, what you used, what remains, when each resets, and your jobs in flight.

    A limit that is ``null`` is not configured (unlimited).
    """
    principal = tenant_principal(request)
    body, limits = await services(request).quotas.usage_and_limits(principal.tenant)
    note_ratelimit(request, limits)  # from the same store read
    return body


usage_router = Router(path="/v1", route_handlers=[usage], tags=["tenant"])
