"""What every handler needs: the services of this app and the caller's identity.

Handlers call these explicitly (rather than through Litestar's DI) because it is one line, it is
obvious at the call site, and it costs nothing per request when unused.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from litestar import Request
from litestar.exceptions import InternalServerException

from gateway.errors import (
    BadRequest,
    BodyTimeout,
    ExpiredKey,
    Forbidden,
    GatewayError,
    IncompleteBody,
    QuotaExceeded,
    StoreUnavailable,
    Unauthorized,
)
from gateway.services.audit_trail import AuditTrail
from gateway.services.catalog import Catalog
from gateway.services.jobs import Jobs
from gateway.services.quota import Quotas, ratelimit_headers
from gateway.services.tenant_registry import TenantRegistry
from gateway.services.tenants import Admin, Principal
from gateway.services.uploads import Uploads
from gateway.store import Store
from gateway.store.base import Decision

__all__ = (
    "Services",
    "admin_principal",
    "body_left_unread",
    "header",
    "note_ratelimit",
    "query_count",
    "read_body",
    "refusal_with_ratelimit",
    "services",
    "single_header",
    "spend_read",
    "tenant_principal",
    "tenant_read",
)

AnyRequest = Request[Any, Any, Any]
_BODY_READ = "body_read"


@dataclass(frozen=True, slots=True)
class Services:
    """The long-lived objects the lifespan builds; one per app, on ``app.state.services``."""

    tenants: TenantRegistry
    jobs: Jobs
    catalog: Catalog
    quotas: Quotas
    uploads: Uploads
    audit: AuditTrail
    store: Store
    store_failure_mode: str
    now: Callable[[], datetime]
    body_idle_seconds: float


def services(request: AnyRequest) -> Services:
    found: Services = request.app.state.services
    return found


def tenant_principal(request: AnyRequest) -> Principal:
    """Authenticate the bearer key as a tenant key and note who it is for the request log."""
    found = services(request)
    state = request.scope["state"]
    try:
        principal = found.tenants.current.authenticate(_bearer_key(request), found.now())
    except ExpiredKey as expired:  # the trail shows who still uses a rotated-out key
        state["tenant"] = expired.tenant
        state["key_id"] = expired.key_id
        raise
    state["tenant"] = principal.tenant.id
    state["key_id"] = principal.key_id
    return principal


async def tenant_read(request: AnyRequest) -> Principal:
    """Authenticate a tenant and spend one of its reads (429 when ``reads_per_minute`` is out)."""
    principal = tenant_principal(request)
    await spend_read(request, principal)
    return principal


async def spend_read(request: AnyRequest, principal: Principal) -> None:
    """Spend one of the tenant's reads: once the request is known to be valid (see
    ``refusal_with_ratelimit``), as a refused one costs nothing."""
    note_ratelimit(request, await services(request).quotas.take_read(principal.tenant))


@contextlib.asynccontextmanager
async def refusal_with_ratelimit(request: AnyRequest, principal: Principal) -> AsyncIterator[None]:
    """A refusal from the checks inside (which spend nothing) still carries the RateLimit
    headers of the tenant's current state; a 429 names its own limit, and a store that is down
    cannot say."""
    try:
        yield
    except (QuotaExceeded, StoreUnavailable):
        raise
    except GatewayError:
        note_ratelimit(request, await services(request).quotas.peek(principal.tenant))
        raise


def note_ratelimit(request: AnyRequest, decision: Decision | None) -> None:
    """Have the response (whatever it turns out to be) carry the RateLimit headers."""
    headers = ratelimit_headers(decision)
    if headers:
        request.scope["state"]["response_headers"] = headers


def admin_principal(request: AnyRequest) -> Admin:
    """Authenticate an admin key; a valid tenant key here is 403, anything else 401."""
    found = services(request)
    key = _bearer_key(request)
    config = found.tenants.current
    try:
        admin = config.authenticate_admin(key)
    except Unauthorized:
        tenant = config.authenticate(key, found.now())  # raises 401 unless a tenant key
        state = request.scope["state"]
        state["tenant"] = tenant.tenant.id  # the trail shows who tried
        state["key_id"] = tenant.key_id
        raise Forbidden("forbidden: admin routes need an admin key") from None
    request.scope["state"]["key_id"] = admin.id
    return admin


async def read_body(request: AnyRequest) -> bytes:
    """The request body; a body cut short is the client's 400, not the gateway's 500.

    A client that sends nothing for ``body_idle_seconds`` mid-body gets 408 (as from nginx's
    ``client_body_timeout``): the server times out only header reads, so such a request would
    otherwise stay open, unaudited, and hold a pod's shutdown until it is killed. The limit is
    on silence: a slow body that keeps coming is not cut.
    """
    idle = services(request).body_idle_seconds
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []
    try:
        async with asyncio.timeout(idle) as deadline:
            async for chunk in request.stream():
                chunks.append(chunk)
                deadline.reschedule(loop.time() + idle)
    except TimeoutError:
        raise BodyTimeout(f"the request body stopped arriving: nothing for {idle:g} s") from None
    except InternalServerException:  # Litestar's "client disconnected prematurely"
        raise IncompleteBody(
            "the request body ended before it was complete (the connection closed, or a "
            "chunk was malformed)"
        ) from None
    request.scope["state"][_BODY_READ] = True
    return b"".join(chunks)


def body_left_unread(scope: Any) -> bool:
    """Whether the client sent a body (or began to) that no handler read whole."""
    if scope["state"].get(_BODY_READ):
        return False
    for name, value in scope["headers"]:
        if name == b"transfer-encoding":
            return True
        if name == b"content-length":
            return value.strip() not in (b"", b"0")
    return False


def header(request: AnyRequest, name: bytes) -> str | None:
    """The request header ``name`` (lower-case), its lines joined by ", " if it came more than
    once; read straight from the ASGI scope, which costs far less than parsing every header."""
    values = [value for key, value in request.scope["headers"] if key == name]
    if not values:
        return None
    return b", ".join(values).decode("latin-1")


def single_header(request: AnyRequest, name: bytes) -> str | None:
    """The request header ``name`` (lower-case), which must come at most once.

    Raises:
        BadRequest: it came more than once (joined, two keys would read as a third).
    """
    values = [value for key, value in request.scope["headers"] if key == name]
    if len(values) > 1:
        raise BadRequest(f"send the {name.decode().title()} header once, not {len(values)} times")
    return values[0].decode("latin-1") if values else None


def query_count(raw: str) -> int | None:
    """``raw`` as a non-negative integer of at most nine ASCII digits, else ``None``.

    ``str.isdigit`` alone also accepts digits such as "²" that ``int`` refuses.
    """
    if raw.isascii() and raw.isdigit() and len(raw) <= 9:
        return int(raw)
    return None


def _bearer_key(request: AnyRequest) -> str:
    """The key as its client wrote it: UTF-8 where the header is (read as Latin-1, a key of
    "ü" never matched the hash of its UTF-8 bytes, the form ``sha256sum`` gives), and from one
    header (two, joined by ", ", read as a third key: a 401 that named no cause)."""
    raw = single_header(request, b"authorization") or ""
    with contextlib.suppress(UnicodeDecodeError):
        raw = raw.encode("latin-1").decode("utf-8")
    scheme, _, key = raw.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise Unauthorized("unauthorized: send your key as 'Authorization: Bearer <key>'")
    return key
