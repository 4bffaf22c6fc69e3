"""Redis backend: one Lua script per atomic operation, every key tagged with its tenant."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
from collections.abc import Awaitable, Callable, Sequence
from importlib.resources import files
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ReadOnlyError, RedisError
from redis.maint_notifications import MaintNotificationsConfig

from gateway import metrics
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
    StoreError,
    SubmitLimits,
    SubmitStart,
)
from gateway.store.batching import Batcher
from gateway.store.keys import store_key
from gateway.store.limits import RateResult, decide_submit, to_us, usage_states
from gateway.store.undo import Reservation, UndoQueue

__all__ = ("RedisStore",)

_T = TypeVar("_T")
Arg = bytes | str | int | float
_ReadGroup = tuple[str, int, float]  # tenant, reads per minute (0: unlimited), refresh ttl
VOID_SECONDS = 86400  # how long a voided token stays refused: longer than any Redis stall
AUDIT_CLOCK_STEP_MS = 60_000  # how far Redis's clock may step back, for resent audit batches
MAX_UNCONFIRMED_AUDIT = 1_000  # failed audit batches remembered (beyond: appended unchecked)


def _script(client: aioredis.Redis, name: str, *, rates: bool = False) -> AsyncScript:
    """A Lua script of ``lua/``; with ``rates``, behind the GCRA they share (``gcra.lua``)."""
    source = _lua(name)
    return client.register_script(_lua("gcra") + source if rates else source)


def _lua(name: str) -> str:
    return files("gateway.store").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


class RedisStore(Store):
    """Shared state in Redis (or Redis Cluster: one tenant's keys share one slot)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        max_in_flight: int = 64,
        clock: Callable[[], float],
        job_retention_seconds: float = 30 * 86400,
        prefix: str = "gmigw",
        audit_max_events: int = 100_000,
        audit_retention_seconds: float = 30 * 86400,
    ) -> None:
        self._redis = client
        # A semaphore, not redis-py's BlockingConnectionPool: the same bound on connections,
        # at a fraction of the cost per command when there is no contention.
        self._in_flight = asyncio.Semaphore(max_in_flight)
        for kind in ("ConnectionError", "TimeoutError"):  # an outage's first error is an increase
            metrics.STORE_ERRORS.labels(kind)
        self._clock = clock
        self._retention = job_retention_seconds
        self._prefix = prefix
        self._add_job = _script(client, "add_job")
        self._update_job = _script(client, "update_job")
        self._list_jobs = _script(client, "list_jobs")
        self._begin_submit = _script(client, "begin_submit", rates=True)
        self._release = _script(client, "release")
        self._settle = _script(client, "settle")
        self._lease = _script(client, "lease")
        self._lease_release = _script(client, "lease_release")
        self._claim = _script(client, "claim")
        self._reads_script = _script(client, "reads", rates=True)
        self._append_audit = _script(client, "append_audit")
        self._data_id_script = _script(client, "data_id")
        self._cache_put = _script(client, "cache_put")
        self._reads: Batcher[_ReadGroup, str | None, list[Any]] = Batcher(self._read_batch)
        self._undo = UndoQueue(self.undo_reservation)
        # A failed audit batch's digest: where to look for it in each of its streams.
        self._unconfirmed_audit: dict[bytes, dict[str, str]] = {}
        self._audit_marks: dict[str, str] = {}  # the last id this process wrote, per stream
        self._to_check = store_key(prefix, None, "reconcile")  # spans tenants; never in a script
        self._catalog = store_key(prefix, None, "catalog")  # the same for every tenant
        self._generation = store_key(prefix, None, "catalog", "generation")
        self._data_id = store_key(prefix, None, "data-id")
        self._audit_global = store_key(prefix, None, "audit")
        self._audit_max = audit_max_events
        self._audit_retention = audit_retention_seconds

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        clock: Callable[[], float],
        job_retention_seconds: float = 30 * 86400,
        prefix: str = "gmigw",
        max_connections: int = 64,
        audit_max_events: int = 100_000,
        audit_retention_seconds: float = 30 * 86400,
    ) -> RedisStore:
        """A store over a new connection pool with short timeouts (a dead Redis fails fast).

        At most ``max_connections`` operations run at once; more wait their turn (see
        ``_call``) instead of failing with "Too many connections". Pooled connections are
        health-checked after 15 s idle. Nothing is retried here: a script whose reply was lost
        may have run, and running ``reserve`` twice would charge twice, so failures surface as
        ``StoreError`` and the services decide. The one exception: a reservation or refund
        whose reply was lost is undone once Redis answers again (``undo.py``).
        """
        pool = aioredis.ConnectionPool.from_url(
            url,
            max_connections=max_connections,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            health_check_interval=15,
            # Left "auto", redis-py skips the check that replaces a pooled connection the server
            # closed (a restart, or its idle ``timeout``): each failed a request. Managed-Redis
            # maintenance notices are not needed (a failover is a lost connection, as ever).
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )
        client = aioredis.Redis.from_pool(pool)  # the client owns (and closes) the pool
        return cls(
            client,
            max_in_flight=max_connections,
            clock=clock,
            job_retention_seconds=job_retention_seconds,
            prefix=prefix,
            audit_max_events=audit_max_events,
            audit_retention_seconds=audit_retention_seconds,
        )

    def _key(self, tenant: str, *parts: str) -> str:
        return store_key(self._prefix, tenant, *parts)

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
        keys = [
            self._key(tenant, "job", request_id),
            self._key(tenant, "jobs"),
            self._key(tenant, "jobs", "model", model),
            self._key(tenant, "slots"),
        ]
        now = self._clock()
        args: list[Arg] = [request_id, model, record, now, self._retention]
        if charge is None:
            args += ["", 0, "", "", ""]
        else:
            args += [charge.token, charge.cost, charge.day, charge.month]
            args.append("" if deadline is None else deadline)
        if idempotency is not None:
            keys.append(self._key(tenant, "idempotency", idempotency.key))
            args += [idempotency.fingerprint, idempotency.ttl]
            args += [record if answer is None else answer, idempotency.token]
        if charge is None:
            created, _, stored_model = await self._call(self._add_job(keys=keys, args=args))
        else:
            member = _member(tenant, request_id)
            reply, listed = await self._call(
                self._with_reconcile_entry(self._add_job, keys, args, member)
            )
            created, charged, stored_model = reply
            if listed and not charged:  # the job carried a charge already, since settled
                await self._call(self._redis.zrem(self._to_check, member))
        return StoredJob(tenant, request_id, stored_model.decode(), float(created), record)

    async def get_job(self, tenant: str, request_id: str) -> StoredJob | None:
        fields: list[Any] = await self._call(
            self._redis.hmget(self._key(tenant, "job", request_id), "model", "created_at", "record")
        )
        return self._job(tenant, request_id, fields)

    async def update_job_record(
        self, tenant: str, request_id: str, record: bytes, *, final: bool = False
    ) -> bool:
        keys = [self._key(tenant, "job", request_id)]
        args: list[Arg] = [record, self._clock(), self._retention, 1 if final else 0]
        return bool(await self._call(self._update_job(keys=keys, args=args)))

    async def list_jobs(
        self, tenant: str, *, model: str | None = None, limit: int = 100, offset: int = 0
    ) -> JobPage:
        _check_page(limit, offset)  # limit 0 would be ZREVRANGE 0 -1: the whole index
        index = (
            self._key(tenant, "jobs", "model", model)
            if model is not None
            else self._key(tenant, "jobs")
        )
        job_prefix = self._key(tenant, "job", "")
        args: list[Arg] = [self._clock(), self._retention, offset, limit, job_prefix]
        total, rows = await self._call(self._list_jobs(keys=[index], args=args))
        jobs = [
            StoredJob(tenant, raw_id.decode(), model_id.decode(), float(created), bytes(record))
            for raw_id, model_id, created, record in rows
        ]
        return JobPage(jobs, int(total))

    async def poll_job(
        self, tenant: str, request_id: str, *, reads_per_minute: int | None, refresh_ttl: float
    ) -> Poll:
        group = (tenant, reads_per_minute or 0, refresh_ttl)
        reply = await self._reads.call(group, request_id)
        allowed, remaining, reset_us, retry_us, model, created, record, claimed = reply
        read = None
        if reads_per_minute is not None:
            read = _read_decision(reads_per_minute, allowed, remaining, reset_us, retry_us)
        job = None
        if model:
            job = StoredJob(tenant, request_id, model.decode(), float(created), bytes(record))
        return Poll(read, job, bool(claimed))

    async def _read_batch(self, group: _ReadGroup, items: Sequence[str | None]) -> list[Any]:
        """One ``reads.lua`` call for a tenant's queued reads and polls (see ``batching``)."""
        tenant, reads_per_minute, refresh_ttl = group
        keys = [self._key(tenant, "rate", "read")]
        at: list[Arg] = []
        for request_id in items:
            if request_id is None:
                at.append(0)
            else:
                at.append(len(keys) + 1)  # Lua indexes KEYS from 1
                keys += [
                    self._key(tenant, "job", request_id),
                    self._key(tenant, "refresh", request_id),
                ]
        now = self._clock()
        args: list[Arg] = [to_us(now), now, reads_per_minute, self._retention, refresh_ttl, *at]
        answers: list[Any] = await self._call(self._reads_script(keys=keys, args=args))
        return answers

    async def claim_refresh(self, tenant: str, request_id: str, *, ttl: float) -> bool:
        keys = [self._key(tenant, "refresh", request_id)]
        args: list[Arg] = [self._clock(), ttl]
        return bool(await self._call(self._claim(keys=keys, args=args)))

    async def _with_reconcile_entry(
        self, script: AsyncScript, keys: list[str], args: list[Arg], member: str
    ) -> tuple[Any, bool]:
        """Run ``script`` and put ``member`` in the reconcile set (unless it is there) in one
        round trip: that set spans tenants, so no script may touch it (Redis Cluster).
        Returns the script's reply and whether ``member`` was added."""

        async def run() -> tuple[Any, bool]:
            pipe = self._redis.pipeline(transaction=False)
            _ = pipe.evalsha(script.sha, len(keys), *keys, *args)
            _ = pipe.zadd(self._to_check, {member: self._clock()}, nx=True)
            reply, added = await pipe.execute()
            return reply, bool(added)

        try:
            return await run()
        except NoScriptError:  # a restarted or flushed Redis: load the script, run it once more
            await self._redis.script_load(script.script)
            return await run()

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
        keys = [
            self._key(tenant, "rate", "submit"),
            self._key(tenant, "slots"),
            self._key(tenant, "budget", charge.day),
            self._key(tenant, "budget", charge.month),
        ]
        args: list[Arg] = [
            to_us(now),
            now,
            charge.token,
            charge.cost,
            limits.submits_per_minute or 0,
            limits.max_concurrent_jobs or 0,
            limits.video_seconds_per_day or 0,
            limits.video_seconds_per_month or 0,
            hold_until,
            charge.day_ends_at,
            charge.month_ends_at,
        ]
        keys.append(self._void_key(tenant, charge))
        if idempotency is not None:
            keys.append(self._key(tenant, "idempotency", idempotency.key))
            args += [idempotency.fingerprint, idempotency.ttl]
        try:
            reply = await self._call(self._begin_submit(keys=keys, args=args))
        except (StoreError, asyncio.CancelledError):
            # The script may run yet, and nobody would give back what it reserves.
            key = None if idempotency is None else idempotency.key
            self._undo.add(Reservation(tenant, charge, key))
            raise
        outcome = reply[0].decode()
        if outcome == "void":
            raise StoreError(f"reservation {charge.token} was given up before it reached Redis")
        claim = None if idempotency is None else IdempotencyState(outcome)
        if outcome == "done":
            return SubmitStart(IdempotencyState("done", int(reply[1]), bytes(reply[2])), None)
        if outcome in ("pending", "mismatch"):
            return SubmitStart(claim, None)
        _, _, remaining, reset_us, retry_us, tat, in_use, day_used, month_used = reply
        rate = None
        if limits.submits_per_minute is not None:
            rate = RateResult(retry_us == 0, int(tat), remaining, reset_us, retry_us)
        decision = decide_submit(
            limits=limits,
            charge=charge,
            now=now,
            rate=rate,
            slots_in_use=in_use,
            day_used=day_used,
            month_used=month_used,
        )
        return SubmitStart(claim, decision)

    async def release(self, tenant: str, charge: Charge) -> bool:
        keys = self._charge_keys(tenant, charge.day, charge.month)
        try:
            return bool(
                await self._call(self._release(keys=keys, args=[charge.token, charge.cost]))
            )
        except StoreError:
            self._undo.add(Reservation(tenant, charge))  # the refund may not have happened
            raise

    async def undo_reservation(self, reservation: Reservation) -> bool:
        """Give back a reservation whose submit was given up (as ``release``), and void its
        token, so a ``begin_submit`` of it still on its way to Redis reserves nothing; free the
        Idempotency-Key it claimed, unless another submit holds it now.
        Returns whether there was a reservation to give back."""
        tenant, charge = reservation.tenant, reservation.charge
        keys = [
            *self._charge_keys(tenant, charge.day, charge.month),
            self._void_key(tenant, charge),
        ]
        if reservation.idempotency_key is not None:
            keys.append(self._key(tenant, "idempotency", reservation.idempotency_key))
        args: list[Arg] = [charge.token, charge.cost, VOID_SECONDS]
        return bool(await self._call(self._release(keys=keys, args=args)))

    def submit_goes_on(self, charge: Charge) -> None:
        self._undo.keep_claim(charge.token)

    @property
    def undo_pending(self) -> int:
        """Reservations waiting for Redis to answer an undo."""
        return len(self._undo)

    def _void_key(self, tenant: str, charge: Charge) -> str:
        return self._key(tenant, "void", charge.token)

    async def settle(
        self, tenant: str, request_id: str, *, refund: bool, expired: bool = False
    ) -> Settlement | None:
        job_key = self._key(tenant, "job", request_id)
        fields: list[Any] = await self._call(self._redis.hmget(job_key, "day", "month"))
        day, month = fields
        if day is None or month is None:
            return None
        keys = [job_key, *self._charge_keys(tenant, day.decode(), month.decode())]
        mode = "expire" if expired else "refund" if refund else "charge"
        args: list[Arg] = [mode, self._clock(), self._retention]
        member = None if expired else _member(tenant, request_id)  # an expired job stays listed
        reply = await self._call(self._settle_unlisted(keys, args, member))
        if not reply:
            return None
        cost, refunded, late = reply
        return Settlement(int(cost), int(refunded), late=bool(late))

    async def _settle_unlisted(self, keys: list[str], args: list[Arg], member: str | None) -> Any:
        """Run ``settle.lua`` and drop ``member`` (if any) from the reconcile set in one round
        trip (that set spans tenants, so no script may touch it; Redis Cluster). The ZREM runs
        whatever the script answers, so settling an already settled job also unlists it.
        Returns the script's reply even when the ZREM failed: the settlement happened and must
        be reported; the member left behind is dropped by ``jobs_to_reconcile``."""

        async def run() -> Any:
            pipe = self._redis.pipeline(transaction=False)
            _ = pipe.evalsha(self._settle.sha, len(keys), *keys, *args)
            if member is not None:
                _ = pipe.zrem(self._to_check, member)
            reply, *removed = await pipe.execute(raise_on_error=False)
            if isinstance(reply, Exception):
                raise reply
            if removed and isinstance(removed[0], Exception):
                metrics.STORE_ERRORS.labels(type(removed[0]).__name__).inc()
            return reply

        try:
            return await run()
        except NoScriptError:  # a restarted or flushed Redis: load the script, run it once more
            await self._redis.script_load(self._settle.script)
            return await run()

    async def take_read(self, tenant: str, reads_per_minute: int) -> Decision:
        reply = await self._reads.call((tenant, reads_per_minute, 0.0), None)
        allowed, remaining, reset_us, retry_us = reply[:4]
        return _read_decision(reads_per_minute, allowed, remaining, reset_us, retry_us)

    async def usage(
        self, tenant: str, limits: SubmitLimits, reads_per_minute: int | None, charge: Charge
    ) -> tuple[tuple[LimitState, ...], int]:
        now = self._clock()
        pipe = self._redis.pipeline(transaction=False)
        _ = pipe.get(self._key(tenant, "rate", "submit"))
        _ = pipe.get(self._key(tenant, "rate", "read"))
        _ = pipe.zcount(self._key(tenant, "slots"), f"({now!r}", "+inf")
        _ = pipe.get(self._key(tenant, "budget", charge.day))
        _ = pipe.get(self._key(tenant, "budget", charge.month))
        submit_tat, read_tat, in_use, day_used, month_used = await self._call(pipe.execute())
        return usage_states(
            limits=limits,
            reads_per_minute=reads_per_minute,
            charge=charge,
            now=now,
            submit_tat=None if submit_tat is None else int(submit_tat),
            read_tat=None if read_tat is None else int(read_tat),
            slots_in_use=int(in_use),
            day_used=int(day_used or 0),
            month_used=int(month_used or 0),
        ), int(in_use)

    async def spent(self, tenant: str, charge: Charge) -> tuple[int, int]:
        keys = (self._key(tenant, "budget", period) for period in (charge.day, charge.month))
        day, month = await self._call(self._redis.mget(*keys))
        return int(day or 0), int(month or 0)

    async def jobs_in_flight(self, tenants: Sequence[str]) -> dict[str, int]:
        now = self._clock()
        pipe = self._redis.pipeline(transaction=False)
        for tenant in tenants:
            _ = pipe.zcount(self._key(tenant, "slots"), f"({now!r}", "+inf")
        counts = await self._call(pipe.execute()) if tenants else []
        return {tenant: int(count) for tenant, count in zip(tenants, counts, strict=True)}

    async def jobs_to_reconcile(
        self, *, checked_before: float, limit: int
    ) -> list[tuple[str, str, float]]:
        found: list[tuple[str, str, float]] = []
        while len(found) < limit:
            # Members kept so far stay at the front of the range; dropped ones leave it.
            members: list[Any] = await self._call(
                self._redis.zrangebyscore(
                    self._to_check,
                    "-inf",
                    f"({checked_before!r}",
                    start=len(found),
                    num=limit - len(found),
                )
            )
            if not members:
                break
            jobs = await self._listed_jobs(members)
            found += [job for job in jobs if job is not None]
            dropped = [member for member, job in zip(members, jobs, strict=True) if job is None]
            if not dropped:
                break
            await self._call(self._redis.zrem(self._to_check, *dropped))
        return found

    async def _listed_jobs(self, members: list[bytes]) -> list[tuple[str, str, float] | None]:
        """Each reconcile-set member's ``(tenant, request_id, created_at)`` in one round trip,
        or ``None`` for a job that is gone or settled: its member only outlived a cleanup
        that failed (see ``_settle_unlisted``) and would cost the reconciler a read per pass."""
        ids = [member.decode().split("\n", 1) for member in members]
        pipe = self._redis.pipeline(transaction=False)
        for tenant, request_id in ids:
            _ = pipe.hmget(self._key(tenant, "job", request_id), "created_at", "settled")
        rows: list[Any] = await self._call(pipe.execute())
        cutoff = self._clock() - self._retention  # the scripts' expression, exactly
        listed: list[tuple[str, str, float] | None] = []
        for (tenant, request_id), (created, settled) in zip(ids, rows, strict=True):
            live = created is not None and float(created) > cutoff and settled in (b"0", b"expired")
            listed.append((tenant, request_id, float(created)) if live else None)
        return listed

    async def mark_checked(self, tenant: str, request_id: str, *, defer: float = 0.0) -> None:
        member = _member(tenant, request_id)
        checked = self._clock() + defer
        await self._call(self._redis.zadd(self._to_check, {member: checked}, xx=True))

    async def finish_idempotent(
        self, tenant: str, key: str, fingerprint: str, status: int, body: bytes, *, ttl: float
    ) -> None:
        claim = self._key(tenant, "idempotency", key)
        fields: dict[str, Arg] = {
            "fingerprint": fingerprint,
            "expires_at": self._clock() + ttl,
            "status": status,
            "body": body,
        }
        pipe = self._redis.pipeline(transaction=True)
        _ = pipe.hset(claim, mapping=fields)  # type: ignore[arg-type]
        _ = pipe.pexpire(claim, math.ceil(ttl * 1000))
        await self._call(pipe.execute())

    async def abandon_idempotent(self, tenant: str, key: str) -> None:
        await self._call(self._redis.delete(self._key(tenant, "idempotency", key)))

    async def acquire_lease(self, name: str, holder: str, *, ttl: float) -> bool:
        keys = [store_key(self._prefix, None, "lease", name)]
        args: list[Arg] = [holder, self._clock(), ttl]
        return bool(await self._call(self._lease(keys=keys, args=args)))

    async def release_lease(self, name: str, holder: str) -> None:
        keys = [store_key(self._prefix, None, "lease", name)]
        await self._call(self._lease_release(keys=keys, args=[holder]))

    def _charge_keys(self, tenant: str, day: str, month: str) -> list[str]:
        return [
            self._key(tenant, "slots"),
            self._key(tenant, "budget", day),
            self._key(tenant, "budget", month),
        ]

    def _oldest_audit_id(self, written_after: float | None = None) -> str:
        """The first stream entry id inside the audit retention, and after ``written_after``
        when given (an entry id is the time it was appended, in ms)."""
        oldest = int((self._clock() - self._audit_retention) * 1000)
        if written_after is not None:
            oldest = max(oldest, int(written_after * 1000) + 1)
        return f"{max(0, oldest)}-0"

    async def append_audit(self, events: Sequence[tuple[str | None, bytes]]) -> None:
        """Append the batch once, even if it comes again after a reply was lost (the audit
        drain retries a failed batch): a batch that failed here is looked for before it is
        appended again."""
        oldest = self._oldest_audit_id()
        streams: dict[str, list[Arg]] = {self._audit_global: []}
        for tenant, body in events:
            streams[self._audit_global].append(body)
            if tenant is not None:
                streams.setdefault(self._key(tenant, "audit"), []).append(body)
        # Digested only while some batch failed: the hot path (none did) pays nothing for it.
        digest = _digest(events) if self._unconfirmed_audit else None
        look_from = self._unconfirmed_audit.pop(digest, {}) if digest else {}
        try:
            last_ids = await self._call(self._append_streams(streams, oldest, look_from))
        except StoreError:
            if len(self._unconfirmed_audit) < MAX_UNCONFIRMED_AUDIT:
                self._unconfirmed_audit[digest or _digest(events)] = look_from or {
                    stream: self._resend_from(stream, oldest) for stream in streams
                }
            raise
        self._audit_marks.update((stream, id_) for stream, id_ in last_ids.items() if id_)

    def _resend_from(self, stream: str, oldest: str) -> str:
        """The id from which a batch whose append to ``stream`` just failed would be found:
        the last entry this process saw written there (a stream's ids only grow, whatever any
        clock says); for a stream it never wrote, the last one of the global stream less a
        minute (in case Redis's clock steps back), else the retention's start."""
        if stream in self._audit_marks:
            return self._audit_marks[stream]
        mark = self._audit_marks.get(self._audit_global)
        if mark is None:
            return oldest
        return f"{max(int(mark.partition('-')[0]) - AUDIT_CLOCK_STEP_MS, 0)}-0"

    async def _append_streams(
        self, streams: dict[str, list[Arg]], oldest: str, look_from: dict[str, str]
    ) -> dict[str, str]:
        """``append_audit.lua`` once per stream (each touches one cluster slot), all in one
        round trip: a batch costs one call, not one per stream. ``look_from`` holds, for a
        resent batch, where to look for it in each stream. Returns each stream's last new id
        ("" where the stream had the batch already).

        The pipeline is not a transaction: after a Redis restart, another replica's
        ``SCRIPT LOAD`` can land midway, so some streams take the batch and others answer
        NOSCRIPT. Only those are sent again, or the others would hold it twice.
        """
        sha, cap = self._append_audit.sha, self._audit_max
        retention_ms = math.ceil(self._audit_retention * 1000)

        last_ids: dict[str, bytes] = {}

        async def run(todo: dict[str, list[Arg]]) -> dict[str, list[Arg]]:
            pipe = self._redis.pipeline(transaction=False)
            for stream, bodies in todo.items():
                since = look_from.get(stream, "")
                _ = pipe.evalsha(sha, 1, stream, cap, oldest, since, retention_ms, *bodies)
            replies = await pipe.execute(raise_on_error=False)
            unscripted: dict[str, list[Arg]] = {}
            for (stream, bodies), reply in zip(todo.items(), replies, strict=True):
                if isinstance(reply, NoScriptError):
                    unscripted[stream] = bodies
                elif isinstance(reply, Exception):
                    raise reply
                else:
                    last_ids[stream] = reply
            return unscripted

        unscripted = await run(streams)
        if unscripted:  # a restarted or flushed Redis: load the script, run those once more
            await self._redis.script_load(self._append_audit.script)
            if await run(unscripted):
                raise NoScriptError("append_audit.lua missing again right after loading it")
        return {stream: last_id.decode() for stream, last_id in last_ids.items()}

    async def read_audit(
        self,
        tenant: str | None,
        *,
        before: str | None,
        count: int,
        written_after: float | None = None,
    ) -> list[tuple[str, bytes]]:
        stream = self._audit_global if tenant is None else self._key(tenant, "audit")
        newest = "+" if before is None else f"({before}"
        # Bounded by the retention too: a trail is trimmed only when appended to, so an idle
        # tenant's could still hold events past it.
        oldest = self._oldest_audit_id(written_after)
        entries: Any = await self._call(self._redis.xrevrange(stream, newest, oldest, count))
        return [(entry_id.decode(), bytes(fields[b"e"])) for entry_id, fields in entries]

    async def cache_get(self, name: str) -> tuple[bytes, float] | None:
        fields: list[Any] = await self._call(
            self._redis.hmget(self._catalog, f"v:{name}", f"t:{name}")
        )
        value, stored = fields
        if value is None or stored is None:
            return None
        return bytes(value), float(stored)

    async def cache_put(self, name: str, value: bytes, *, generation: int) -> bool:
        keys = [self._catalog, self._generation]
        args: list[Arg] = [name, value, self._clock(), generation]
        return bool(await self._call(self._cache_put(keys=keys, args=args)))

    async def cache_invalidate(self) -> int:
        pipe = self._redis.pipeline(transaction=True)
        _ = pipe.delete(self._catalog)
        _ = pipe.incr(self._generation)
        _, generation = await self._call(pipe.execute())
        return int(generation)

    async def cache_generation(self) -> int:
        return int(await self._call(self._redis.get(self._generation)) or 0)

    async def eviction_policy(self) -> str | None:
        """Redis's ``maxmemory-policy``, or ``None`` when it cannot be read (managed Redis often
        forbids CONFIG, or Redis is not up yet)."""
        try:
            reply = await self._redis.config_get("maxmemory-policy")
        except (RedisError, OSError):
            return None
        return reply.get("maxmemory-policy")

    async def data_id(self, candidate: str) -> str:
        script = self._data_id_script(keys=[self._data_id], args=[candidate])
        reply: bytes = await self._call(script)
        return reply.decode()

    async def ping(self) -> None:
        await self._call(self._redis.ping())

    async def aclose(self) -> None:
        await self._undo.aclose()
        await self._reads.aclose()
        await self._redis.aclose()

    def _job(self, tenant: str, request_id: str, fields: list[Any]) -> StoredJob | None:
        model, created, record = fields
        if model is None or created is None or record is None:
            return None
        created_at = float(created)
        if created_at <= self._clock() - self._retention:  # the scripts' expression, exactly
            return None
        return StoredJob(tenant, request_id, model.decode(), created_at, bytes(record))

    async def _call(self, operation: Awaitable[_T]) -> _T:
        """Run one Redis operation, wrapping every backend failure in ``StoreError``."""
        try:
            async with self._in_flight:
                return await operation
        except (RedisError, OSError) as exc:
            metrics.STORE_ERRORS.labels(type(exc).__name__).inc()
            if isinstance(exc, ReadOnlyError):
                # A failover demoted the server these connections reach: connect afresh, to
                # wherever the URL leads now (a managed endpoint, a proxy), rather than fail on.
                with contextlib.suppress(RedisError, OSError):
                    await self._redis.connection_pool.disconnect(inuse_connections=False)
            raise StoreError(
                f"redis {type(exc).__name__}: {_without_credentials(str(exc))}"
            ) from None


def _digest(events: Sequence[tuple[str | None, bytes]]) -> bytes:
    """What tells a batch sent again from any other."""
    return hashlib.sha256(b"\n".join(body for _, body in events)).digest()


def _read_decision(
    reads_per_minute: int, allowed: int, remaining: int, reset_us: int, retry_us: int
) -> Decision:
    state = LimitState(READS_PER_MINUTE, reads_per_minute, remaining, reset_us / 1e6)
    if not allowed:
        return Decision(False, (state,), READS_PER_MINUTE, retry_us / 1e6)
    return Decision(True, (state,))


def _member(tenant: str, request_id: str) -> str:
    """A job's entry in the cross-tenant reconcile set (tenant ids never contain a newline)."""
    return f"{tenant}\n{request_id}"


def _without_credentials(message: str) -> str:
    """redis-py messages name host and port, never the password; drop any URL to be sure."""
    return " ".join("<url>" if "://" in word else word for word in message.split())


def _check_page(limit: int, offset: int) -> None:
    """Refuse a page the contract leaves to the caller, so both backends fail alike."""
    if limit < 1 or offset < 0:
        raise ValueError(f"limit must be >= 1 and offset >= 0, not {limit} and {offset}")
