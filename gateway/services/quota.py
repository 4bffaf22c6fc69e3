"""Quota policy: what a submit costs, which UTC periods it is charged to, and how limits show.

The atomic check-and-reserve is the store's (one Lua script on Redis); this module decides its
inputs (the cost, the period keys, the tenant's limits), turns refusals into 429s naming the
limit, renders the IETF httpapi ``RateLimit-Policy`` / ``RateLimit`` headers, and settles a
job's charge when it ends: ``success`` keeps it, ``failed``/``cancelled``/expired refund it.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import structlog

from gateway import metrics
from gateway.audit import AuditEvent, AuditLog
from gateway.errors import JobExceedsBudget, QuotaExceeded, StoreUnavailable
from gateway.services.payload import DEFAULT_VIDEO_SECONDS
from gateway.services.tenants import Limits, Tenant
from gateway.store import Store, StoreError
from gateway.store.base import (
    MAX_CONCURRENT_JOBS,
    READS_PER_MINUTE,
    SUBMITS_PER_MINUTE,
    VIDEO_SECONDS_PER_DAY,
    VIDEO_SECONDS_PER_MONTH,
    Charge,
    Decision,
    Idempotency,
    LimitState,
    Settlement,
    SubmitLimits,
    SubmitStart,
)

__all__ = (
    "CONCURRENCY_RETRY_AFTER",
    "Quotas",
    "ratelimit_headers",
)

CONCURRENCY_RETRY_AFTER = 5  # seconds: a slot frees when some job ends, at a time nobody knows
LIMIT_ORDER = (
    SUBMITS_PER_MINUTE,
    READS_PER_MINUTE,
    MAX_CONCURRENT_JOBS,
    VIDEO_SECONDS_PER_DAY,
    VIDEO_SECONDS_PER_MONTH,
)
_CODES = {
    SUBMITS_PER_MINUTE: "rate_limited",
    READS_PER_MINUTE: "rate_limited",
    MAX_CONCURRENT_JOBS: "concurrency_exceeded",
    VIDEO_SECONDS_PER_DAY: "budget_exhausted",
    VIDEO_SECONDS_PER_MONTH: "budget_exhausted",
}
_UNLIMITED = Limits()
_REFUNDED_STATUSES = frozenset({"failed", "cancelled", "expired"})
_SETTLEMENT_OUTCOMES = {"success": "charged", "expired": "expired"}

_log = structlog.get_logger("gateway.quota")
IN_FLIGHT_SCRAPE_SECONDS = 1.0  # a scrape must not wait on a stalled store
EXPIRED_RECHECK_SECONDS = 600.0
_T = TypeVar("_T")


def _periods(now: float) -> tuple[str, str, float, float]:
    """The UTC day and month of ``now`` and when each ends (unix seconds)."""
    moment = datetime.fromtimestamp(now, UTC)
    day_start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    next_day = day_start + timedelta(days=1)
    month_start = day_start.replace(day=1)
    next_month = (month_start + timedelta(days=32)).replace(day=1)
    return (
        day_start.strftime("%Y-%m-%d"),
        month_start.strftime("%Y-%m"),
        next_day.timestamp(),
        next_month.timestamp(),
    )


def _submit_limits(tenant: Tenant) -> SubmitLimits:
    limits = tenant.limits
    return SubmitLimits(
        submits_per_minute=limits.submits_per_minute,
        max_concurrent_jobs=limits.max_concurrent_jobs,
        video_seconds_per_day=limits.video_seconds_per_day,
        video_seconds_per_month=limits.video_seconds_per_month,
    )


class Quotas:
    """Tenant limits, enforced through the store's atomic operations."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float],
        ambiguous_hold_seconds: float,
        job_deadline_seconds: float,
        audit: AuditLog | None = None,
    ) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock
        self._hold = ambiguous_hold_seconds
        self.job_deadline_seconds = job_deadline_seconds

    def charge_for(self, video_seconds: int) -> Charge:
        """A fresh reservation of ``video_seconds`` at the current time."""
        day, month, day_ends, month_ends = _periods(self._clock())
        return Charge(uuid.uuid4().hex, video_seconds, day, month, day_ends, month_ends)

    async def begin_submit(
        self, tenant: Tenant, charge: Charge, idempotency: Idempotency | None = None
    ) -> SubmitStart:
        """Claim the submit's Idempotency-Key and reserve every submit limit for ``charge`` in
        one store step, or raise a 429 naming the first violated limit (the key stays free).

        A key that is not new reserves nothing: the caller replays or refuses. The slot is held
        for a bounded time (``ambiguous_hold_seconds``) unless the job gets recorded, which
        holds it until the job's deadline or its settlement.
        """
        start = await _unavailable_on_error(
            self._store.begin_submit(
                tenant.id,
                charge,
                _submit_limits(tenant),
                hold_until=self._clock() + self._hold,
                idempotency=idempotency,
            )
        )
        if start.decision is not None and not start.decision.allowed:
            raise _rejection(tenant.id, start.decision, cost=charge.cost)
        return start

    async def take_read(self, tenant: Tenant) -> Decision | None:
        """Consume one read, or raise a 429; ``None`` when reads are unlimited."""
        limit = tenant.limits.reads_per_minute
        if limit is None:
            return None
        decision = await _unavailable_on_error(self._store.take_read(tenant.id, limit))
        if not decision.allowed:
            raise _rejection(tenant.id, decision)
        return decision

    def enforce(self, tenant_id: str, read: Decision | None) -> None:
        """Raise the 429 for a read the store refused (``None``: reads are unlimited)."""
        if read is not None and not read.allowed:
            raise _rejection(tenant_id, read)

    async def release(self, tenant_id: str, charge: Charge) -> None:
        """The upstream refused the submit: give everything back but the submit rate."""
        await self._store.release(tenant_id, charge)

    def deadline(self) -> float:
        """When a job submitted now is settled as expired if it has not ended."""
        return self._clock() + self.job_deadline_seconds

    def past_deadline(self, created_at: float) -> bool:
        """Whether a job recorded at ``created_at`` should have ended by now."""
        return self._clock() - created_at >= self.job_deadline_seconds

    def expired_recheck_delay(self, created_at: float) -> float:
        """How much longer than usual the reconciler leaves an expired job before reading it
        again: a tenth of its age, at least ``EXPIRED_RECHECK_SECONDS``. A job stuck for good
        costs about 70 upstream reads over the 30 days its record is kept."""
        return max(EXPIRED_RECHECK_SECONDS, (self._clock() - created_at) / 10)

    async def settle(
        self, tenant_id: str, request_id: str, status: str, *, model: str
    ) -> Settlement | None:
        """Settle a job of ``model`` that reached ``status`` (terminal, or ``expired``), exactly
        once; an expired job that succeeds after all is charged again (the upstream bills it)."""
        refund = status in _REFUNDED_STATUSES
        settled = await self._store.settle(
            tenant_id, request_id, refund=refund, expired=status == "expired"
        )
        if settled is not None:
            if settled.late:
                metrics.VIDEO_SECONDS_CHARGED.labels(tenant_id).inc(settled.cost)
            else:  # finished once: a late charge is the same job, already counted as expired
                metrics.JOBS_FINISHED.labels(tenant_id, model, status).inc()
            metrics.VIDEO_SECONDS_REFUNDED.labels(tenant_id).inc(settled.refunded)
            outcome = _SETTLEMENT_OUTCOMES.get(status, "refunded")
            if settled.late:
                outcome = "charged_late"
            if self._audit is not None:
                self._audit.emit(
                    AuditEvent(
                        time=datetime.now(UTC).isoformat(timespec="milliseconds"),
                        kind="settlement",
                        outcome=outcome,
                        tenant=tenant_id,
                        # The request that saw the job end (the reconciler's: none).
                        request_id=structlog.contextvars.get_contextvars().get("request_id"),
                        model=model,
                        upstream_request_id=request_id,
                        video_seconds_charged=settled.cost - settled.refunded,
                        video_seconds_refunded=settled.refunded,
                    )
                )
            _log.info(
                "job_settled",
                tenant=tenant_id,
                upstream_request_id=request_id,
                status=status,
                outcome=outcome,
                video_seconds_charged=settled.cost - settled.refunded,
                video_seconds_refunded=settled.refunded,
            )
        return settled

    async def peek(self, tenant: Tenant) -> Decision | None:
        """Every limit's state, spending nothing: the RateLimit headers of a response that
        decided nothing (a refused body, a replay, the audit route). ``None`` when the tenant
        has no limits, or the store cannot say (the answer goes out without them)."""
        if tenant.limits == _UNLIMITED:
            return None
        try:
            states, _ = await self._states(tenant)
        except StoreError:
            return None
        return Decision(True, states)

    async def usage(self, tenant: Tenant) -> dict[str, Any]:
        """The tenant's limits, use, what remains and when it resets, and its jobs in flight."""
        body, _ = await self.usage_and_limits(tenant)
        return body

    async def usage_and_limits(self, tenant: Tenant) -> tuple[dict[str, Any], Decision | None]:
        """``usage`` and, from the same store read, what ``peek`` would say."""
        now = self._clock()
        charge = self.charge_for(DEFAULT_VIDEO_SECONDS)
        (states, in_flight), (day, month) = await _unavailable_on_error(
            asyncio.gather(self._states(tenant, charge), self._store.spent(tenant.id, charge))
        )
        # A period's end is exact; ``now + reset_after`` would fall short of it by however long
        # the store took to read its own clock.
        ends = {
            VIDEO_SECONDS_PER_DAY: charge.day_ends_at,
            VIDEO_SECONDS_PER_MONTH: charge.month_ends_at,
        }
        entries = {
            state.name: _usage_entry(state, ends.get(state.name, now + state.reset_after))
            for state in states
        }
        body = {
            "tenant": tenant.id,
            "limits": {name: entries.get(name) for name in LIMIT_ORDER},
            "jobs_in_flight": in_flight,
            # Spent whether or not a budget limits it: what sizing a budget starts from.
            "video_seconds_used": {"day": day, "month": month},
        }
        return body, Decision(True, states) if states else None

    async def publish_in_flight(self, tenants: Iterable[Tenant]) -> None:
        """Set ``gmigw_jobs_in_flight`` from the shared store, before a scrape.

        A count kept per process went wrong as soon as one replica submitted a job and another
        settled it (one +1, the other -1), and a restart lost it. The store's count is the same
        on every replica. Left as it was if the store does not answer in time.
        """
        ids = [tenant.id for tenant in tenants]
        try:
            counts = await asyncio.wait_for(
                self._store.jobs_in_flight(ids), IN_FLIGHT_SCRAPE_SECONDS
            )
        except (StoreError, TimeoutError) as exc:
            _log.warning("in_flight_unknown", error=str(exc) or "the store did not answer")
            return
        for tenant_id, count in counts.items():
            metrics.JOBS_IN_FLIGHT.labels(tenant_id).set(count)

    async def _states(
        self, tenant: Tenant, charge: Charge | None = None
    ) -> tuple[tuple[LimitState, ...], int]:
        return await self._store.usage(
            tenant.id,
            _submit_limits(tenant),
            tenant.limits.reads_per_minute,
            charge or self.charge_for(DEFAULT_VIDEO_SECONDS),
        )


async def _unavailable_on_error(operation: Awaitable[_T]) -> _T:
    try:
        return await operation
    except StoreError as exc:  # the details are the operator's, not the tenant's
        _log.warning("store_unavailable", error=str(exc))
        raise StoreUnavailable(
            "the gateway's quota store is unavailable, so nothing was sent upstream"
        ) from None


def _usage_entry(state: LimitState, resets_at: float) -> dict[str, Any]:
    resets = state.reset_after > 0
    return {
        "limit": state.limit,
        "used": state.limit - state.remaining if state.used is None else state.used,
        "remaining": state.remaining,
        "reset_after_seconds": math.ceil(state.reset_after) if resets else 0,
        "reset_at": (
            datetime.fromtimestamp(resets_at, UTC).isoformat().replace("+00:00", "Z")
            if resets
            else None
        ),
    }


def _rejection(tenant_id: str, decision: Decision, *, cost: int = 0) -> QuotaExceeded:
    budgets = (VIDEO_SECONDS_PER_DAY, VIDEO_SECONDS_PER_MONTH)
    too_big = next((s for s in decision.limits if s.name in budgets and cost > s.limit), None)
    if too_big is not None:  # whatever else refused it, waiting would not help
        metrics.QUOTA_REJECTIONS.labels(tenant_id, too_big.name).inc()
        return JobExceedsBudget(
            f"this job costs {cost} video-seconds (its duration times the model's weight), more"
            f" than the whole {too_big.name} budget of {too_big.limit}: make it shorter, or ask"
            " for a larger budget",
            headers=ratelimit_headers(decision, focus=too_big.name),
        )
    name = decision.violated or SUBMITS_PER_MINUTE
    metrics.QUOTA_REJECTIONS.labels(tenant_id, name).inc()
    state = next((s for s in decision.limits if s.name == name), None)
    limit = f" of {state.limit}" if state is not None else ""
    wait = decision.retry_after
    retry = CONCURRENCY_RETRY_AFTER if wait is None else max(1, math.ceil(wait))
    if name == MAX_CONCURRENT_JOBS:
        message = f"{name} limit{limit} reached: wait for one of your jobs to finish"
    elif name in (VIDEO_SECONDS_PER_DAY, VIDEO_SECONDS_PER_MONTH):
        message = f"{name} budget{limit} is used up; it resets in {retry} s (UTC period)"
    else:
        message = f"{name} limit{limit} reached; retry in {retry} s"
    headers = {"Retry-After": str(retry), **ratelimit_headers(decision, focus=name)}
    return QuotaExceeded(message, code=_CODES[name], headers=headers)


def ratelimit_headers(decision: Decision | None, *, focus: str | None = None) -> dict[str, str]:
    """IETF httpapi ``RateLimit-Policy`` / ``RateLimit`` for the limit closest to running out
    (or ``focus``, the limit that refused the request)."""
    if decision is None or not decision.limits:
        return {}
    state = next((s for s in decision.limits if s.name == focus), None) or min(
        decision.limits, key=lambda s: (s.remaining / s.limit, s.remaining)
    )
    policy = f'"{state.name}";q={state.limit}'
    window = _WINDOWS.get(state.name)
    if window is not None:
        policy += f";w={window}"
    elif state.name == MAX_CONCURRENT_JOBS:
        policy += ';qu="concurrent-requests"'
    return {
        "RateLimit-Policy": policy,
        "RateLimit": f'"{state.name}";r={state.remaining};t={math.ceil(state.reset_after)}',
    }


_WINDOWS = {
    SUBMITS_PER_MINUTE: 60,
    READS_PER_MINUTE: 60,
    VIDEO_SECONDS_PER_DAY: 86400,
    VIDEO_SECONDS_PER_MONTH: 31 * 86400,
}
