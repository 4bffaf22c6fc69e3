"""In-process store for the demo and single-replica use; same answers as Redis under one clock.

Every operation runs without an ``await`` in the middle, so within one event loop each is as
atomic as the Redis backend's Lua scripts.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Generic, Literal, TypeVar

from gateway.store.base import (
    READS_PER_MINUTE,
    Charge,
    Decision,
    Idempotency,
    IdempotencyState,
    JobPage,
    LimitState,
    Poll,
    Settlement,
    Store,
    StoredJob,
    SubmitLimits,
    SubmitStart,
)
from gateway.store.limits import decide_submit, rate_take, to_us, usage_states

__all__ = ("MemoryStore",)

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")
_BUDGET_MARGIN = 2 * 86400.0  # budgets outlive their period for late refunds (begin_submit.lua)


@dataclass(slots=True)
class _Charged:
    charge: Charge
    settled: Literal["no", "yes", "expired"] = "no"  # expired: refunded, may be charged again


@dataclass(slots=True)
class _Claim:
    fingerprint: str
    status: int = 0
    body: bytes | None = None
    token: str = ""  # the reservation that claimed the key, while it has no answer


class _Expiring(Generic[_K, _V]):
    """Entries that vanish at their expiry time, as Redis keys with a TTL do.

    Without this, entries nobody reads again (a day's idempotency answers, last month's budget)
    would stay forever. Each write that sets an expiry pushes it on a heap and each write pops
    what is due, so forgetting costs O(log n) per write, amortised; a heap entry outdated by a
    later write to its key is skipped when it comes up.
    """

    def __init__(self) -> None:
        self._entries: dict[_K, tuple[_V, float]] = {}
        self._due: list[tuple[float, _K]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: _K, now: float) -> _V | None:
        entry = self._entries.get(key)
        return entry[0] if entry is not None and entry[1] > now else None

    def put(self, key: _K, value: _V, *, until: float, now: float) -> None:
        """Set ``key`` until ``until``, then forget every entry that is due by ``now``."""
        old = self._entries.get(key)
        self._entries[key] = (value, until)
        if old is None or old[1] != until:
            heapq.heappush(self._due, (until, key))
        while self._due and self._due[0][0] <= now:
            _, due = heapq.heappop(self._due)
            entry = self._entries.get(due)
            if entry is not None and entry[1] <= now:
                del self._entries[due]

    def keep_ttl(self, key: _K, value: _V) -> None:
        """Change an entry's value but not its expiry, as Redis's ``SET … KEEPTTL``."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries[key] = (value, entry[1])

    def pop(self, key: _K) -> None:
        self._entries.pop(key, None)


class MemoryStore(Store):
    """Keeps everything in dicts."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        job_retention_seconds: float = 30 * 86400,
        audit_max_events: int = 100_000,
        audit_retention_seconds: float = 30 * 86400,
    ) -> None:
        self._clock = clock
        self._audit_max = audit_max_events
        self._audit_retention = audit_retention_seconds
        self._audit: dict[str | None, deque[tuple[float, str, bytes]]] = {}
        self._audit_seq = 0
        self._retention = job_retention_seconds
        self._jobs: dict[str, dict[str, StoredJob]] = {}
        self._charges: dict[tuple[str, str], _Charged] = {}
        self._rates: dict[tuple[str, str], int] = {}
        self._slots: dict[str, dict[str, float]] = {}
        self._budgets: _Expiring[tuple[str, str], int] = _Expiring()
        self._to_check: dict[tuple[str, str], float] = {}
        self._final: set[tuple[str, str]] = set()  # jobs whose stored record is their last
        self._claims: _Expiring[tuple[str, str], _Claim] = _Expiring()
        self._leases: dict[str, tuple[str, float]] = {}
        self._refresh_claims: _Expiring[tuple[str, str], bool] = _Expiring()
        self._cache: dict[str, tuple[bytes, float]] = {}
        self._cache_generation = 0
        self._data_id: str | None = None

    # --- jobs -------------------------------------------------------------------------------

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
        now = self._clock()
        jobs = self._purged(tenant, now)
        existing = self._live(jobs.get(request_id))
        if existing is not None:
            final = (tenant, request_id) in self._final  # a job's last record stays
            job = existing if final else replace(existing, record=record)
        else:
            # An expired leftover is dropped first so the new job goes to the end of the
            # insertion order, which _purged relies on.
            if jobs.pop(request_id, None) is not None:  # its charge expired with it, as in Redis
                self._charges.pop((tenant, request_id), None)
                self._to_check.pop((tenant, request_id), None)
            job = StoredJob(tenant, request_id, model, now, record)
        jobs[request_id] = job
        if charge is not None and (tenant, request_id) not in self._charges:
            self._charges[tenant, request_id] = _Charged(charge)
            if deadline is not None:
                self._slots.setdefault(tenant, {})[charge.token] = deadline
            self._to_check[tenant, request_id] = now
        if idempotency is not None and self._answer_is_free(tenant, idempotency, now):
            await self.finish_idempotent(
                tenant,
                idempotency.key,
                idempotency.fingerprint,
                200,
                record if answer is None else answer,
                ttl=idempotency.ttl,
            )
        return job

    def _answer_is_free(self, tenant: str, idempotency: Idempotency, now: float) -> bool:
        """No answer yet, and no claim but this submit's (as add_job.lua decides)."""
        held = self._claims.get((tenant, idempotency.key), now)
        return held is None or (held.body is None and held.token in ("", idempotency.token))

    async def get_job(self, tenant: str, request_id: str) -> StoredJob | None:
        return self._live(self._jobs.get(tenant, {}).get(request_id))

    async def update_job_record(
        self, tenant: str, request_id: str, record: bytes, *, final: bool = False
    ) -> bool:
        job = await self.get_job(tenant, request_id)
        if job is None:
            return False
        if (tenant, request_id) not in self._final:
            self._jobs[tenant][request_id] = replace(job, record=record)
            if final:
                self._final.add((tenant, request_id))
        return True

    async def list_jobs(
        self, tenant: str, *, model: str | None = None, limit: int = 100, offset: int = 0
    ) -> JobPage:
        _check_page(limit, offset)
        jobs = self._purged(tenant, self._clock())
        matching = [
            job
            for job in jobs.values()
            if self._live(job) is not None and (model is None or job.model == model)
        ]
        matching.sort(key=lambda j: (j.created_at, j.request_id), reverse=True)
        return JobPage(matching[offset : offset + limit], len(matching))

    async def poll_job(
        self, tenant: str, request_id: str, *, reads_per_minute: int | None, refresh_ttl: float
    ) -> Poll:
        read = None
        if reads_per_minute is not None:
            read = await self.take_read(tenant, reads_per_minute)
            if not read.allowed:
                return Poll(read, None, claimed=False)
        job = await self.get_job(tenant, request_id)
        if job is None:
            return Poll(read, None, claimed=False)
        claimed = await self.claim_refresh(tenant, request_id, ttl=refresh_ttl)
        return Poll(read, job, claimed)

    async def claim_refresh(self, tenant: str, request_id: str, *, ttl: float) -> bool:
        now = self._clock()
        if self._refresh_claims.get((tenant, request_id), now) is not None:
            return False
        self._refresh_claims.put((tenant, request_id), True, now=now, until=now + ttl)
        return True

    # --- quotas -----------------------------------------------------------------------------

    async def begin_submit(
        self,
        tenant: str,
        charge: Charge,
        limits: SubmitLimits,
        *,
        hold_until: float,
        idempotency: Idempotency | None = None,
    ) -> SubmitStart:
        now = self._clock()
        claim = None
        if idempotency is not None:
            claim = self._claim_state(tenant, idempotency, now)
            if claim.outcome != "new":
                return SubmitStart(claim, None)
        rate = None
        if limits.submits_per_minute is not None:
            tat = self._rates.get((tenant, "submit"))
            rate = rate_take(tat, to_us(now), limits.submits_per_minute)
        decision = decide_submit(
            limits=limits,
            charge=charge,
            now=now,
            rate=rate,
            slots_in_use=self._in_use(tenant, now),
            day_used=self._budgets.get((tenant, charge.day), now) or 0,
            month_used=self._budgets.get((tenant, charge.month), now) or 0,
        )
        if decision.allowed:
            if rate is not None:
                self._rates[tenant, "submit"] = rate.tat
            self._live_slots(tenant, now)[charge.token] = hold_until  # as Redis: pruned only here
            for period, ends_at in (
                (charge.day, charge.day_ends_at),
                (charge.month, charge.month_ends_at),
            ):
                used = self._budgets.get((tenant, period), now) or 0
                until = ends_at + _BUDGET_MARGIN
                self._budgets.put((tenant, period), used + charge.cost, now=now, until=until)
            if idempotency is not None:
                self._claims.put(
                    (tenant, idempotency.key),
                    _Claim(idempotency.fingerprint, token=charge.token),
                    now=now,
                    until=now + idempotency.ttl,
                )
        return SubmitStart(claim, decision)

    def submit_goes_on(self, charge: Charge) -> None:
        """Nothing to do: a call here never half-happens."""

    async def release(self, tenant: str, charge: Charge) -> bool:
        slots = self._slots.get(tenant, {})
        if slots.pop(charge.token, None) is None:
            return False
        self._refund(tenant, charge, charge.cost)
        return True

    async def settle(
        self, tenant: str, request_id: str, *, refund: bool, expired: bool = False
    ) -> Settlement | None:
        charged = self._charges.get((tenant, request_id))
        if charged is None or await self.get_job(tenant, request_id) is None:
            return None
        charge = charged.charge
        if charged.settled == "expired" and not expired:
            charged.settled = "yes"
            self._to_check.pop((tenant, request_id), None)
            if refund:  # failed or cancelled: refunded already
                return None
            self._refund(tenant, charge, -charge.cost)
            return Settlement(charge.cost, 0, late=True)
        if charged.settled != "no":
            return None
        charged.settled = "expired" if expired else "yes"
        self._slots.get(tenant, {}).pop(charge.token, None)
        if not expired:
            self._to_check.pop((tenant, request_id), None)
        if refund or expired:
            self._refund(tenant, charge, charge.cost)
            return Settlement(charge.cost, charge.cost)
        return Settlement(charge.cost, 0)

    async def take_read(self, tenant: str, reads_per_minute: int) -> Decision:
        result = rate_take(
            self._rates.get((tenant, "read")), to_us(self._clock()), reads_per_minute
        )
        state = LimitState(
            READS_PER_MINUTE, reads_per_minute, result.remaining, result.reset_after_us / 1e6
        )
        if not result.allowed:
            return Decision(False, (state,), READS_PER_MINUTE, result.retry_after_us / 1e6)
        self._rates[tenant, "read"] = result.tat
        return Decision(True, (state,))

    async def usage(
        self, tenant: str, limits: SubmitLimits, reads_per_minute: int | None, charge: Charge
    ) -> tuple[tuple[LimitState, ...], int]:
        now = self._clock()
        in_use = self._in_use(tenant, now)
        states = usage_states(
            limits=limits,
            reads_per_minute=reads_per_minute,
            charge=charge,
            now=now,
            submit_tat=self._rates.get((tenant, "submit")),
            read_tat=self._rates.get((tenant, "read")),
            slots_in_use=in_use,
            day_used=self._budgets.get((tenant, charge.day), now) or 0,
            month_used=self._budgets.get((tenant, charge.month), now) or 0,
        )
        return states, in_use

    async def spent(self, tenant: str, charge: Charge) -> tuple[int, int]:
        now = self._clock()
        day = self._budgets.get((tenant, charge.day), now) or 0
        return day, self._budgets.get((tenant, charge.month), now) or 0

    async def jobs_in_flight(self, tenants: Sequence[str]) -> dict[str, int]:
        now = self._clock()
        return {tenant: self._in_use(tenant, now) for tenant in tenants}

    def _in_use(self, tenant: str, now: float) -> int:
        # Count, but do not drop, the expired slots: as on Redis, only a submit drops them, so a
        # late release still finds (and refunds) its slot until then.
        return sum(1 for until in self._slots.get(tenant, {}).values() if until > now)

    # --- reconciliation, idempotency, leases ------------------------------------------------

    async def jobs_to_reconcile(
        self, *, checked_before: float, limit: int
    ) -> list[tuple[str, str, float]]:
        due = sorted(
            (checked, tenant, request_id)
            for (tenant, request_id), checked in self._to_check.items()
            if checked < checked_before
        )
        found = []
        for _, tenant, request_id in due:
            job = await self.get_job(tenant, request_id)
            if job is None:
                self._to_check.pop((tenant, request_id), None)
                continue
            found.append((tenant, request_id, job.created_at))
            if len(found) == limit:
                break
        return found

    async def mark_checked(self, tenant: str, request_id: str, *, defer: float = 0.0) -> None:
        if (tenant, request_id) in self._to_check:
            self._to_check[tenant, request_id] = self._clock() + defer

    def _claim_state(self, tenant: str, idempotency: Idempotency, now: float) -> IdempotencyState:
        claim = self._claims.get((tenant, idempotency.key), now)
        if claim is None:
            return IdempotencyState("new")
        if claim.fingerprint != idempotency.fingerprint:
            return IdempotencyState("mismatch")
        if claim.body is None:
            return IdempotencyState("pending")
        return IdempotencyState("done", claim.status, claim.body)

    async def finish_idempotent(
        self, tenant: str, key: str, fingerprint: str, status: int, body: bytes, *, ttl: float
    ) -> None:
        now = self._clock()
        self._claims.put((tenant, key), _Claim(fingerprint, status, body), now=now, until=now + ttl)

    async def abandon_idempotent(self, tenant: str, key: str) -> None:
        self._claims.pop((tenant, key))

    async def acquire_lease(self, name: str, holder: str, *, ttl: float) -> bool:
        now = self._clock()
        current = self._leases.get(name)
        if current is not None and current[0] != holder and current[1] > now:
            return False
        self._leases[name] = (holder, now + ttl)
        return True

    async def release_lease(self, name: str, holder: str) -> None:
        current = self._leases.get(name)
        if current is not None and current[0] == holder:
            del self._leases[name]

    async def append_audit(self, events: Sequence[tuple[str | None, bytes]]) -> None:
        now = self._clock()
        for tenant, body in events:
            self._audit_seq += 1
            entry = (now, f"{self._audit_seq:020d}", body)
            for trail in {None, tenant}:
                kept = self._audit.setdefault(trail, deque(maxlen=self._audit_max))
                kept.append(entry)
                while kept and kept[0][0] <= now - self._audit_retention:
                    kept.popleft()

    async def read_audit(
        self,
        tenant: str | None,
        *,
        before: str | None,
        count: int,
        written_after: float | None = None,
    ) -> list[tuple[str, bytes]]:
        trail = self._audit.get(tenant, deque())
        expired = self._clock() - self._audit_retention  # pruned only when a trail is appended to
        if written_after is not None:
            expired = max(expired, written_after)
        found: list[tuple[str, bytes]] = []
        for at, entry_id, body in reversed(trail):
            if at <= expired:
                break
            if before is not None and entry_id >= before:
                continue
            found.append((entry_id, body))
            if len(found) == count:
                break
        return found

    async def cache_get(self, name: str) -> tuple[bytes, float] | None:
        return self._cache.get(name)

    async def cache_put(self, name: str, value: bytes, *, generation: int) -> bool:
        if generation != self._cache_generation:
            return False
        self._cache[name] = (value, self._clock())
        return True

    async def cache_invalidate(self) -> int:
        self._cache.clear()
        self._cache_generation += 1
        return self._cache_generation

    async def cache_generation(self) -> int:
        return self._cache_generation

    async def data_id(self, candidate: str) -> str:
        if self._data_id is None:
            self._data_id = candidate
        return self._data_id

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    # --- internals --------------------------------------------------------------------------

    def _live(self, job: StoredJob | None) -> StoredJob | None:
        """``job`` unless it has outlived retention (the expression the Lua scripts use)."""
        if job is None or job.created_at <= self._clock() - self._retention:
            return None
        return job

    def _purged(self, tenant: str, now: float) -> dict[str, StoredJob]:
        """The tenant's jobs after dropping expired ones from the front, as Redis trims its index.

        Jobs are kept in insertion order, which is ``created_at`` order while the clock does not
        go back, so this costs only the expired jobs it drops. (A clock that goes back only leaves
        some expired jobs in place; ``_live`` still hides them.)
        """
        jobs = self._jobs.setdefault(tenant, {})
        cutoff = now - self._retention
        while jobs:
            request_id, oldest = next(iter(jobs.items()))
            if oldest.created_at > cutoff:
                break
            del jobs[request_id]
            self._charges.pop((tenant, request_id), None)
            self._to_check.pop((tenant, request_id), None)
            self._final.discard((tenant, request_id))
        return jobs

    def _live_slots(self, tenant: str, now: float) -> dict[str, float]:
        slots = self._slots.setdefault(tenant, {})
        for token in [t for t, expires in slots.items() if expires <= now]:
            del slots[token]
        return slots

    def _refund(self, tenant: str, charge: Charge, amount: int) -> None:
        """Give ``amount`` back to the charge's periods (negative: charge it again)."""
        now = self._clock()
        for period in (charge.day, charge.month):
            used = self._budgets.get((tenant, period), now)
            if used is not None:
                self._budgets.keep_ttl((tenant, period), max(0, used - amount))


def _check_page(limit: int, offset: int) -> None:
    """Refuse a page the contract leaves to the caller, so both backends fail alike."""
    if limit < 1 or offset < 0:
        raise ValueError(f"limit must be >= 1 and offset >= 0, not {limit} and {offset}")
