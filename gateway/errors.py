"""Every error the gateway answers with, as one exception tree.

A handler or service raises one of these; the single exception-handler table in ``app.py`` turns
it into ``{"error": <message>, "code": <code>, "request_id": <id>}`` with the class's status::

    GatewayError                      500 internal_error
    ├── BadRequest                    400 bad_request
    │   ├── IncompleteBody            400 incomplete_body
    │   ├── InvalidJSON               400 invalid_json
    │   └── InvalidPayload            400 invalid_payload
    ├── Unauthorized                  401 unauthorized
    │   └── ExpiredKey                401 unauthorized
    ├── Forbidden                     403 forbidden
    ├── NotFound                      404 not_found
    │   └── UnknownModel              404 unknown_model
    ├── BodyTimeout                   408 request_timeout
    ├── PayloadTooLarge               413 payload_too_large
    ├── IdempotencyConflict           409 idempotency_conflict
    ├── IdempotencyMismatch           422 idempotency_key_reused
    ├── InvalidTenantsFile            422 invalid_tenants_file
    ├── QuotaExceeded                 429 rate_limited | concurrency_exceeded | budget_exhausted
    │   └── JobExceedsBudget          422 job_exceeds_budget
    ├── UpstreamRelayedError          (upstream's status) upstream_error, 429
    │                                 upstream_rate_limited, 502 upstream_auth_failed
    └── Unavailable                   503 unavailable
        ├── UpstreamUnavailable       503 upstream_unavailable
        └── StoreUnavailable          503 store_unavailable
    └── UpstreamTimeout               504 upstream_timeout

Messages are shown to clients: they name the problem and never contain a secret.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = (
    "BadRequest",
    "BodyTimeout",
    "ExpiredKey",
    "Forbidden",
    "GatewayError",
    "IdempotencyConflict",
    "IdempotencyMismatch",
    "IncompleteBody",
    "InvalidJSON",
    "InvalidPayload",
    "InvalidTenantsFile",
    "JobExceedsBudget",
    "NotFound",
    "PayloadTooLarge",
    "QuotaExceeded",
    "StoreUnavailable",
    "Unauthorized",
    "Unavailable",
    "UnknownModel",
    "UpstreamRelayedError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
)


class GatewayError(Exception):
    """Base of every error the gateway turns into an HTTP answer."""

    status: int = 500
    code: str = "internal_error"
    # The upstream's own request id when it named one in the error it answered (a sync
    # model's failed job, a capacity error): what GMI support asks for.
    upstream_request_id: str | None = None

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers: Mapping[str, str] = headers or {}


class BadRequest(GatewayError):
    status = 400
    code = "bad_request"


class IncompleteBody(BadRequest):
    """The body ended before it was complete: the client hung up, or sent a malformed chunk."""

    code = "incomplete_body"


class BodyTimeout(GatewayError):
    """The client stopped sending its body: it holds a request (and a pod's shutdown) open."""

    status = 408
    code = "request_timeout"


class InvalidJSON(BadRequest):
    code = "invalid_json"


class InvalidPayload(BadRequest):
    code = "invalid_payload"


class Unauthorized(GatewayError):
    status = 401
    code = "unauthorized"


class ExpiredKey(Unauthorized):
    """A known key past its ``expires_at``: who still uses it is worth auditing."""

    def __init__(self, tenant: str, key_id: str) -> None:
        super().__init__(f"unauthorized: API key {key_id} expired")
        self.tenant = tenant
        self.key_id = key_id


class Forbidden(GatewayError):
    status = 403
    code = "forbidden"


class NotFound(GatewayError):
    status = 404
    code = "not_found"


class UnknownModel(NotFound):
    code = "unknown_model"


class PayloadTooLarge(GatewayError):
    status = 413
    code = "payload_too_large"


class IdempotencyConflict(GatewayError):
    status = 409
    code = "idempotency_conflict"


class IdempotencyMismatch(GatewayError):
    status = 422
    code = "idempotency_key_reused"


class QuotaExceeded(GatewayError):
    """A tenant limit refused the request; ``code`` says which kind of limit."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, code: str, headers: Mapping[str, str]) -> None:
        super().__init__(message, headers=headers)
        self.code = code


class JobExceedsBudget(QuotaExceeded):
    """The job alone costs more than a whole budget period: no wait makes it fit, so no
    Retry-After (a 429 that never clears would be retried for ever)."""

    status = 422

    def __init__(self, message: str, *, headers: Mapping[str, str]) -> None:
        super().__init__(message, code="job_exceeds_budget", headers=headers)


class InvalidTenantsFile(GatewayError):
    status = 422
    code = "invalid_tenants_file"


class UpstreamRelayedError(GatewayError):
    """The upstream answered with an error; relay its status and words to the client."""

    code = "upstream_error"

    def __init__(
        self, message: str, *, status: int, code: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message, headers=headers)
        self.status = status
        self.code = code


class Unavailable(GatewayError):
    status = 503
    code = "unavailable"


class UpstreamUnavailable(Unavailable):
    code = "upstream_unavailable"


class StoreUnavailable(Unavailable):
    code = "store_unavailable"


class UpstreamTimeout(GatewayError):
    """A submit was sent but not answered: the job may exist (and be billed) upstream."""

    status = 504
    code = "upstream_timeout"
