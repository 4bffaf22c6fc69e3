"""msgspec structs of the gateway's HTTP surface: the source of the OpenAPI document.

Mirror routes pass upstream bytes through unchanged; these structs describe those bytes for
clients (they follow the upstream spec) and shape the gateway's own answers.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = (
    "AuditPage",
    "ErrorBody",
    "HealthBody",
    "LimitUsage",
    "ModelIdList",
    "ReadyBody",
    "ReloadBody",
    "RequestList",
    "RequestRecord",
    "SubmitRecord",
    "UploadSlot",
    "UsageBody",
    "UsageLimits",
    "VideoSecondsUsed",
)


class ErrorBody(msgspec.Struct):
    """Every error: the upstream-compatible ``error`` plus the gateway's ``code`` and id, and
    the upstream's own request id when its error answer named one."""

    error: str
    code: str
    request_id: str
    upstream_request_id: str | None = None


class ModelIdList(msgspec.Struct):
    model_ids: list[str]


class SubmitRecord(msgspec.Struct):
    request_id: str
    model: str
    status: str
    created_at: int
    updated_at: int
    queued_at: int


class RequestRecord(msgspec.Struct):
    request_id: str
    model: str
    status: str
    payload: dict[str, Any]
    outcome: dict[str, Any] | None
    created_at: int
    updated_at: int
    queued_at: int
    org_id: str | None = None
    user_id: str | None = None
    is_public: bool = False


class RequestList(msgspec.Struct):
    requests: list[RequestRecord]
    total: int
    has_more: bool


class UploadSlot(msgspec.Struct):
    upload_url: str
    public_url: str


class HealthBody(msgspec.Struct):
    status: str


class ReadyBody(msgspec.Struct):
    status: str
    store: str
    tenants: int


class ReloadBody(msgspec.Struct):
    changed: bool
    tenants: int


class AuditPage(msgspec.Struct):
    """A page of audit events (see ``gateway.audit.AuditEvent`` for the fields), newest first;
    ``next_cursor`` is ``null`` on the last page."""

    events: list[dict[str, Any]]
    next_cursor: str | None


class LimitUsage(msgspec.Struct):
    """One limit's state. ``reset_after_seconds`` / ``reset_at``: for a budget, when its period
    ends and ``used`` returns to 0; for a rate, when the next request is let through (0 and
    ``null`` while ``remaining`` is above 0); a concurrency limit has none (0, ``null``)."""

    limit: int
    used: int
    remaining: int
    reset_after_seconds: int
    reset_at: str | None


class UsageLimits(msgspec.Struct):
    """Every limit by name; ``null`` when the tenant has no such limit."""

    submits_per_minute: LimitUsage | None
    reads_per_minute: LimitUsage | None
    max_concurrent_jobs: LimitUsage | None
    video_seconds_per_day: LimitUsage | None
    video_seconds_per_month: LimitUsage | None


class VideoSecondsUsed(msgspec.Struct):
    """Video seconds charged this UTC day and month, whether or not a budget limits them."""

    day: int
    month: int


class UsageBody(msgspec.Struct):
    tenant: str
    limits: UsageLimits
    jobs_in_flight: int
    video_seconds_used: VideoSecondsUsed
