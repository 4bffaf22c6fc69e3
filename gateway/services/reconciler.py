"""The reconciler: settles jobs nobody is polling, so slots and refunds never wait on clients.

One replica at a time does it (a lease in the store, renewed every pass and taken over when its
holder dies). Each pass reads at most ``read_budget`` job statuses from the upstream, oldest
check first; a job past its deadline without ending is settled as expired (refunded) without
asking the upstream at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from gateway.errors import GatewayError
from gateway.services.jobs import Jobs
from gateway.store import Store, StoreError

__all__ = ("LEASE_NAME", "Reconciler")

LEASE_NAME = "reconciler"

_log = structlog.get_logger("gateway.reconciler")


class Reconciler:
    """Periodic settlement of unpolled jobs under a lease."""

    def __init__(
        self,
        store: Store,
        jobs: Jobs,
        *,
        holder: str,
        clock: Callable[[], float],
        deadline_seconds: float,
        interval: float = 5.0,
        stale_after: float = 30.0,
        read_budget: int = 20,
        status_ttl: float = 1.0,
    ) -> None:
        self._store = store
        self._jobs = jobs
        self._holder = holder
        self._clock = clock
        self._deadline = deadline_seconds
        self._interval = interval
        self._stale_after = stale_after
        self._read_budget = read_budget
        self._status_ttl = status_ttl

    async def run(self) -> None:
        """Until cancelled: every ``interval``, if this replica holds the lease, do one pass."""
        while True:
            try:
                if await self._store.acquire_lease(
                    LEASE_NAME, self._holder, ttl=3 * self._interval
                ):
                    await self.reconcile_once()
            except StoreError as exc:
                _log.warning("reconcile_skipped", error=str(exc))
            await asyncio.sleep(self._interval)

    async def reconcile_once(self) -> int:
        """One pass; returns how many jobs it looked at."""
        now = self._clock()
        due = await self._store.jobs_to_reconcile(
            checked_before=now - self._stale_after, limit=self._read_budget
        )
        for tenant, request_id, created_at in due:
            if now - created_at >= self._deadline:
                await self._jobs.expire(tenant, request_id)
                continue
            job = await self._store.get_job(tenant, request_id)
            if job is None or not await self._store.claim_refresh(
                tenant, request_id, ttl=self._status_ttl
            ):
                continue  # gone, or polled this very moment: its status is fresh anyway
            try:
                await self._jobs.refresh(job)
            except GatewayError as exc:
                _log.warning(
                    "reconcile_read_failed", upstream_request_id=request_id, error=exc.message
                )
                await self._store.mark_checked(tenant, request_id)
        return len(due)
