"""What an upstream error answer becomes for our client.

The upstream's own words (its ``error`` text) are kept, so a drop-in client sees what it would
have seen; the status is kept except where keeping it would mislead the tenant (the upstream
rejecting *our* key is the operator's problem, not the tenant's: 502).
"""

from __future__ import annotations

import math
import re
from typing import Any

import msgspec

from gateway.errors import (
    GatewayError,
    InvalidPayload,
    NotFound,
    UpstreamRelayedError,
    UpstreamUnavailable,
)
from gateway.upstream import UpstreamError, UpstreamResponse

__all__ = ("relayed_error", "unavailable")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def unavailable(exc: UpstreamError) -> UpstreamUnavailable:
    """The 503 for an upstream that could not be reached (with Retry-After when known)."""
    wait = getattr(exc, "retry_after", None)
    headers = {"Retry-After": str(math.ceil(wait))} if wait else {}
    return UpstreamUnavailable(f"upstream unavailable: {exc}", headers=headers)


def _message(decoded: Any, status: int) -> str:
    """The human message of an upstream error body, whatever its known form."""
    if isinstance(decoded, dict):
        error = decoded.get("error", decoded.get("message"))
        if isinstance(error, dict):
            error = error.get("message")
        if isinstance(error, str) and error:
            return error
    return f"upstream answered HTTP {status}"


def relayed_error(
    response: UpstreamResponse, *, not_found: type[NotFound] = NotFound
) -> GatewayError:
    """Map an upstream non-2xx response to the error the client gets, with the upstream's
    request id when its answer named one (our ``request_id`` is the gateway's)."""
    try:
        decoded: Any = msgspec.json.decode(response.body)
    except msgspec.DecodeError:
        decoded = None
    error = _relayed(response, decoded, not_found)
    upstream_id = decoded.get("request_id") if isinstance(decoded, dict) else None
    # Only what looks like an id (GMI's are UUIDs): the body is the upstream's, not ours to
    # pass on unchecked into answers and the audit trail.
    named = isinstance(upstream_id, str) and _REQUEST_ID.fullmatch(upstream_id) is not None
    if named and error.code != "upstream_auth_failed":
        error.upstream_request_id = upstream_id
    return error


def _relayed(response: UpstreamResponse, decoded: Any, not_found: type[NotFound]) -> GatewayError:
    status = response.status
    message = _message(decoded, status)
    headers = {"Retry-After": response.retry_after} if response.retry_after else {}
    if status == 400:
        return InvalidPayload(message)
    if status == 404:
        return not_found(message)
    if status in (401, 403):
        return UpstreamRelayedError(
            "the upstream rejected the gateway's credentials; contact the gateway operator",
            status=502,
            code="upstream_auth_failed",
        )
    if status == 429:
        return UpstreamRelayedError(
            message, status=429, code="upstream_rate_limited", headers=headers
        )
    if 400 <= status < 600:
        return UpstreamRelayedError(message, status=status, code="upstream_error", headers=headers)
    return UpstreamRelayedError(
        f"upstream answered with unexpected HTTP {status}", status=502, code="upstream_error"
    )
