"""What the gateway does while its shared store is unreachable (``GATEWAY_STORE_FAILURE_MODE``).

``closed`` (the default): every operation fails with ``StoreError`` and the request is answered
503 before anything goes upstream. ``open``: requests are served under a per-replica local cap
(the tenant's own limits, enforced by an in-process store on this replica only), each such
request is counted and logged as ``unchecked_request``, and jobs submitted meanwhile are written
back to the shared store when it returns. A charge is released and settled where it was
reserved: one reserved locally stays local; one reserved in Redis before it failed goes back
there with its job. What cannot be answered safely from one replica's
memory still fails closed: a job this replica never saw (ownership cannot be proven, and a
wrong answer would leak another tenant's job), the job list, usage, and the reconciler's lease.

In both modes, a job the upstream accepted but the shared store failed to record is written back
when the store answers again: it exists and is billed, so it must become the tenant's, to be
polled, listed, reconciled and settled (refunded if it fails) like any other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from gateway import metrics
from gateway.store import JobPage, Store, StoredJob, StoreError
from gateway.store.base import (
    Charge,
    Decision,
    Idempotency,
    LimitState,
    Poll,
    Settlement,
    SubmitLimits,
    SubmitStart,
)

__all__ = ("StoreFailover",)

_log = structlog.get_logger("gateway.store")


@dataclass(frozen=True, slots=True)
class _PendingJob:
    """A job recorded locally, to copy to the shared store; with the charge when that charge
    was reserved there (only its job record failed), so it can be settled there."""

    tenant: str
    request_id: str
    model: str
    record: bytes
    charge: Charge | None = None
    deadline: float | None = None
    idempotency: Idempotency | None = None  # the key's answer goes with the job
    answer: bytes | None = None


class StoreFailover(Store):
    """The shared store, with a per-replica fallback in open mode (``local`` given)."""

    def __init__(self, shared: Store, local: Store | None = None) -> None:
        self._shared = shared
        self._local = local
        self._pending: list[_PendingJob] = []
        # Reservations made on the local store (during an outage), until their job is recorded
        # or they are released: those must be recorded and released locally, where they are.
        self._local_tokens: set[str] = set()

    def _fallback(self, operation: str, exc: StoreError) -> Store:
        if self._local is None:
            raise exc
        metrics.UNCHECKED_REQUESTS.labels(operation).inc()
        _log.warning("unchecked_request", operation=operation, error=str(exc))
        return self._local

    async def add_job(
        self,
        tenant: str,
        request_id: str,
        model: str,
        record: bytes,
        *,
        charge: Charge | None = None,
        deadline: float | None = None,
        idempotency: Idempotency | None = None,
        answer: bytes | None = None,
    ) -> StoredJob:
        async def add(store: Store) -> StoredJob:
            return await store.add_job(
                tenant,
                request_id,
                model,
                record,
                charge=charge,
                deadline=deadline,
                idempotency=idempotency,
                answer=answer,
            )

        if charge is not None and charge.token in self._local_tokens and self._local:
            self._local_tokens.discard(charge.token)  # its job and charge stay local
            self._pending.append(
                _PendingJob(
                    tenant, request_id, model, record, idempotency=idempotency, answer=answer
                )
            )
            return await add(self._local)
        try:
            return await add(self._shared)
        except StoreError as exc:
            pending = _PendingJob(
                tenant, request_id, model, record, charge, deadline, idempotency, answer
            )
            self._pending.append(pending)
            if self._local is None:
                raise  # closed: written back all the same, the job exists (and is billed)
            local = self._fallback("add_job", exc)
        return await add(local)

    async def get_job(self, tenant: str, request_id: str) -> StoredJob | None:
        try:
            return await self._shared.get_job(tenant, request_id)
        except StoreError as exc:
            job = await self._fallback("get_job", exc).get_job(tenant, request_id)
            if job is None:
                raise  # not provably this tenant's, nor provably not: never guess
            return job

    async def update_job_record(
        self, tenant: str, request_id: str, record: bytes, *, final: bool = False
    ) -> bool:
        try:
            return await self._shared.update_job_record(tenant, request_id, record, final=final)
        except StoreError as exc:
            return await self._fallback("update_job_record", exc).update_job_record(
                tenant, request_id, record, final=final
            )

    async def list_jobs(
        self, tenant: str, *, model: str | None = None, limit: int = 100, offset: int = 0
    ) -> JobPage:
        return await self._shared.list_jobs(tenant, model=model, limit=limit, offset=offset)

    async def poll_job(
        self, tenant: str, request_id: str, *, reads_per_minute: int | None, refresh_ttl: float
    ) -> Poll:
        try:
            return await self._shared.poll_job(
                tenant, request_id, reads_per_minute=reads_per_minute, refresh_ttl=refresh_ttl
            )
        except StoreError as exc:
            poll = await self._fallback("poll_job", exc).poll_job(
                tenant, request_id, reads_per_minute=reads_per_minute, refresh_ttl=refresh_ttl
            )
            if poll.job is None and (poll.read is None or poll.read.allowed):
                raise  # not provably this tenant's, nor provably not: never guess
            return poll

    async def claim_refresh(self, tenant: str, request_id: str, *, ttl: float) -> bool:
        try:
            return await self._shared.claim_refresh(tenant, request_id, ttl=ttl)
        except StoreError as exc:
            return await self._fallback("claim_refresh", exc).claim_refresh(
                tenant, request_id, ttl=ttl
            )

    async def begin_submit(
        self,
        tenant: str,
        charge: Charge,
        limits: SubmitLimits,
        *,
        hold_until: float,
        idempotency: Idempotency | None = None,
    ) -> SubmitStart:
        try:
            return await self._shared.begin_submit(
                tenant, charge, limits, hold_until=hold_until, idempotency=idempotency
            )
        except StoreError as exc:
            start = await self._fallback("begin_submit", exc).begin_submit(
                tenant, charge, limits, hold_until=hold_until, idempotency=idempotency
            )
        if start.decision is not None and start.decision.allowed:
            self._local_tokens.add(charge.token)
            # Before the shared store's undo can run: nothing here has waited since it failed
            # (the local store never waits).
            self._shared.submit_goes_on(charge)
        return start

    def submit_goes_on(self, charge: Charge) -> None:
        self._shared.submit_goes_on(charge)

    async def release(self, tenant: str, charge: Charge) -> bool:
        if charge.token in self._local_tokens and self._local:
            self._local_tokens.discard(charge.token)
            return await self._local.release(tenant, charge)
        try:
            return await self._shared.release(tenant, charge)
        except StoreError as exc:
            return await self._fallback("release", exc).release(tenant, charge)

    async def settle(
        self, tenant: str, request_id: str, *, refund: bool, expired: bool = False
    ) -> Settlement | None:
        try:
            settled = await self._shared.settle(tenant, request_id, refund=refund, expired=expired)
        except StoreError as exc:
            local = self._fallback("settle", exc)
        else:
            if settled is not None or self._local is None:
                return settled
            local = self._local  # a charge made locally in an outage, or not written back yet
        if self._charged_in_shared(tenant, request_id):
            # Settled there once written back (by a poll or the reconciler); here only its
            # local slot is freed, so the local cap does not count a job that has ended.
            await local.settle(tenant, request_id, refund=False)
            return None
        return await local.settle(tenant, request_id, refund=refund, expired=expired)

    def _charged_in_shared(self, tenant: str, request_id: str) -> bool:
        """A job waiting to be written back whose charge is on the shared counters."""
        return any(
            job.charge is not None and (job.tenant, job.request_id) == (tenant, request_id)
            for job in self._pending
        )

    async def take_read(self, tenant: str, reads_per_minute: int) -> Decision:
        try:
            return await self._shared.take_read(tenant, reads_per_minute)
        except StoreError as exc:
            return await self._fallback("take_read", exc).take_read(tenant, reads_per_minute)

    async def usage(
        self, tenant: str, limits: SubmitLimits, reads_per_minute: int | None, charge: Charge
    ) -> tuple[tuple[LimitState, ...], int]:
        return await self._shared.usage(tenant, limits, reads_per_minute, charge)

    async def spent(self, tenant: str, charge: Charge) -> tuple[int, int]:
        return await self._shared.spent(tenant, charge)

    async def jobs_in_flight(self, tenants: Sequence[str]) -> dict[str, int]:
        return await self._shared.jobs_in_flight(tenants)

    async def jobs_to_reconcile(
        self, *, checked_before: float, limit: int
    ) -> list[tuple[str, str, float]]:
        return await self._shared.jobs_to_reconcile(checked_before=checked_before, limit=limit)

    async def mark_checked(self, tenant: str, request_id: str, *, defer: float = 0.0) -> None:
        await self._shared.mark_checked(tenant, request_id, defer=defer)

    async def finish_idempotent(
        self, tenant: str, key: str, fingerprint: str, status: int, body: bytes, *, ttl: float
    ) -> None:
        try:
            await self._shared.finish_idempotent(tenant, key, fingerprint, status, body, ttl=ttl)
        except StoreError as exc:
            await self._fallback("finish_idempotent", exc).finish_idempotent(
                tenant, key, fingerprint, status, body, ttl=ttl
            )

    async def abandon_idempotent(self, tenant: str, key: str) -> None:
        try:
            await self._shared.abandon_idempotent(tenant, key)
        except StoreError as exc:
            await self._fallback("abandon_idempotent", exc).abandon_idempotent(tenant, key)

    async def acquire_lease(self, name: str, holder: str, *, ttl: float) -> bool:
        return await self._shared.acquire_lease(name, holder, ttl=ttl)

    async def release_lease(self, name: str, holder: str) -> None:
        await self._shared.release_lease(name, holder)

    async def append_audit(self, events: Sequence[tuple[str | None, bytes]]) -> None:
        await self._shared.append_audit(events)

    async def read_audit(
        self,
        tenant: str | None,
        *,
        before: str | None,
        count: int,
        written_after: float | None = None,
    ) -> list[tuple[str, bytes]]:
        return await self._shared.read_audit(
            tenant, before=before, count=count, written_after=written_after
        )

    async def cache_get(self, name: str) -> tuple[bytes, float] | None:
        return await self._shared.cache_get(name)

    async def cache_put(self, name: str, value: bytes, *, generation: int) -> bool:
        return await self._shared.cache_put(name, value, generation=generation)

    async def cache_invalidate(self) -> int:
        return await self._shared.cache_invalidate()

    async def cache_generation(self) -> int:
        return await self._shared.cache_generation()

    async def data_id(self, candidate: str) -> str:
        return await self._shared.data_id(candidate)  # the local store's data is not shared

    async def ping(self) -> None:
        await self._shared.ping()

    async def aclose(self) -> None:
        await self._shared.aclose()

    async def write_back(self, interval: float) -> None:
        """Until cancelled: copy jobs not yet in the shared store into it (see the module)."""
        try:
            while True:
                await asyncio.sleep(interval)
                await self.write_back_once()
        finally:
            if self._pending:  # shutting down: the operator is left to trace them
                _log.error(
                    "jobs_not_written_back",
                    jobs=[(job.tenant, job.request_id) for job in self._pending],
                )

    async def write_back_once(self) -> None:
        """Copy what is pending, in order, until done or the shared store fails again."""
        while self._pending:
            job = self._pending[0]
            try:  # with its charge only if that charge is on the shared counters
                await self._shared.add_job(
                    job.tenant,
                    job.request_id,
                    job.model,
                    job.record,
                    charge=job.charge,
                    deadline=job.deadline,
                    idempotency=job.idempotency,
                    answer=job.answer,
                )
            except StoreError:
                return
            if job.charge is not None and self._local is not None:
                # The charge is settled in the shared store: the local copy must never be.
                await self._local.settle(job.tenant, job.request_id, refund=False)
            self._pending.pop(0)
            _log.info("job_written_back", tenant=job.tenant, upstream_request_id=job.request_id)
