"""Reading and writing the audit trail kept in the store.

The store keeps each event as encoded JSON in the global trail and in its tenant's trail;
queries page through one trail newest first and filter on the decoded events, scanning a
bounded number of entries per call (the cursor lets a client continue a sparse search).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import structlog

from gateway.audit import AuditEvent
from gateway.errors import StoreUnavailable
from gateway.store import Store, StoreError

__all__ = ("AuditFilter", "AuditTrail")

MAX_SCANNED = 5_000
CLOCK_SLACK = 60.0  # seconds a replica's clock may be ahead of the store's

_log = structlog.get_logger("gateway.audit")


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which events a query wants; ``None`` matches anything."""

    since: datetime | None = None
    until: datetime | None = None
    route: str | None = None
    status: int | None = None
    outcome: str | None = None
    request_id: str | None = None
    upstream_request_id: str | None = None

    def matches(self, event: dict[str, Any]) -> bool:
        if self.route is not None and event.get("route") != self.route:
            return False
        if self.request_id is not None and event.get("request_id") != self.request_id:
            return False
        if (
            self.upstream_request_id is not None
            and event.get("upstream_request_id") != self.upstream_request_id
        ):
            return False
        if self.status is not None and event.get("status") != self.status:
            return False
        if self.outcome is not None and event.get("outcome") != self.outcome:
            return False
        if self.since is not None or self.until is not None:
            moment = datetime.fromisoformat(event["time"])
            if self.since is not None and moment < self.since:
                return False
            if self.until is not None and moment >= self.until:
                return False
        return True


class AuditTrail:
    """The store side of the audit log: a sink for ``AuditLog`` and the query behind the APIs."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def write(self, events: Sequence[AuditEvent]) -> None:
        await self._store.append_audit([(e.tenant, msgspec.json.encode(e)) for e in events])

    async def query(
        self,
        tenant: str | None,
        *,
        limit: int,
        cursor: str | None,
        only: AuditFilter | None = None,
    ) -> dict[str, Any]:
        """``{"events": [...], "next_cursor": ...}``: newest first, each event with its ``id``."""
        wanted = only or AuditFilter()
        # An event is appended after it happened, so nothing appended before ``since`` (give
        # or take the clocks of the replica and Redis) can match: the scan, and the pages, end
        # there rather than at the retention.
        written_after = None if wanted.since is None else wanted.since.timestamp() - CLOCK_SLACK
        found: list[dict[str, Any]] = []
        scanned = 0
        position = cursor
        exhausted = False
        while len(found) < limit and scanned < MAX_SCANNED:
            batch = await self._read(tenant, position, max(limit, 100), written_after)
            if not batch:
                exhausted = True
                break
            for entry_id, body in batch:
                scanned += 1
                position = entry_id
                event = msgspec.json.decode(body)
                if wanted.matches(event):
                    found.append({"id": entry_id, **event})
                    if len(found) == limit:
                        break
        return {"events": found, "next_cursor": None if exhausted else position}

    async def _read(
        self, tenant: str | None, before: str | None, count: int, written_after: float | None
    ) -> list[tuple[str, bytes]]:
        try:
            return await self._store.read_audit(
                tenant, before=before, count=count, written_after=written_after
            )
        except StoreError as exc:  # the details are the operator's, not the tenant's
            _log.warning("store_unavailable", error=str(exc))
            raise StoreUnavailable("the audit trail is unavailable") from None
