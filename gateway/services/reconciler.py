"""The reconciler: settles jobs nobody is polling, so slots and refunds never wait on clients.

One replica at a time does it (a lease in the store, renewed every pass and taken over when its
holder dies). Each pass reads at most ``read_budget`` job statuses from the upstream, oldest
check first, and settles the jobs that ended with their real status. Only a job the upstream
still reports running past its deadline is settled as expired (refunded): a job that succeeded
unobserved is charged, however late the reconciler gets to it, and so is an expired job that
succeeds after all (it is read again less and less often). A job whose status cannot be read is
expired only ``unreadable_grace`` after its deadline, so an upstream outage does not turn
finished jobs into free ones.
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
UNREADABLE_GRACE = 86400.0  # within the budget counters' margin, so the refund still counts

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
        unreadable_grace: float = UNREADABLE_GRACE,
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
        self._unreadable_grace = unreadable_grace

    async def run(self) -> None:
        """Until cancelled: a pass every ``interval``."""
        while True:
            try:
                await self.reconcile_once()
            except StoreError as exc:
                _log.warning("reconcile_skipped", error=str(exc))
            await asyncio.sleep(self._interval)

    async def reconcile_once(self) -> int:
        """One pass while this replica holds the lease; returns how many jobs it looked at.

        The lease is renewed before each job: upstream reads can make a pass outlast it, and a
        replica that lost it stops, so one replica reconciles at a time.
        """
        if not await self._hold_lease():
            return 0
        now = self._clock()
        due = await self._store.jobs_to_reconcile(
            checked_before=now - self._stale_after, limit=self._read_budget
        )
        for looked_at, (tenant, request_id, created_at) in enumerate(due):
            if looked_at and not await self._hold_lease():
                return looked_at
            await self._reconcile(tenant, request_id, age=now - created_at)
        return len(due)

    async def _hold_lease(self) -> bool:
        return await self._store.acquire_lease(LEASE_NAME, self._holder, ttl=3 * self._interval)

    async def _reconcile(self, tenant: str, request_id: str, *, age: float) -> None:
        """Read the job's status: ``refresh`` settles a job that ended, and expires one still
        running past its deadline. One that cannot be read is expired past the grace."""
        job = await self._store.get_job(tenant, request_id)
        if job is None or not await self._store.claim_refresh(
            tenant, request_id, ttl=self._status_ttl
        ):
            return  # gone, or polled this very moment: that poll settles or marks it
        try:
            await self._jobs.refresh(job)
        except GatewayError as exc:
            _log.warning("reconcile_read_failed", upstream_request_id=request_id, error=exc.message)
            if age >= self._deadline + self._unreadable_grace:
                await self._jobs.expire(job)
            else:
                await self._store.mark_checked(tenant, request_id)
