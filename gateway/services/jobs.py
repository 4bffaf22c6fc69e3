"""Jobs: submit, observe and list, with every request id owned by the tenant that created it.

Ownership is the gateway's own record (the store), never the upstream's: a tenant asking for an
id it does not own gets the upstream's "request not found" without the upstream being asked,
so it cannot even learn that the id exists. Listing is served from the tenant's own index, with
non-terminal records refreshed from the upstream so the list is as fresh as a poll. Every
observation of a terminal status settles the job's charge (exactly once, in the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import TypeVar

import msgspec
import structlog

from gateway import metrics
from gateway.audit import current_note, note_prompt
from gateway.errors import (
    BadRequest,
    GatewayError,
    IdempotencyConflict,
    IdempotencyMismatch,
    StoreUnavailable,
    UnknownModel,
    UpstreamRelayedError,
    UpstreamTimeout,
)
from gateway.services.catalog import Catalog
from gateway.services.payload import (
    Submission,
    object_fields,
    parse_submission,
    validate_payload,
    video_seconds,
)
from gateway.services.quota import Quotas
from gateway.services.relay import relayed_error, unavailable
from gateway.services.tenants import Principal
from gateway.store import Store, StoredJob, StoreError
from gateway.store.base import Charge, Decision, Idempotency, IdempotencyState, Poll
from gateway.upstream import UpstreamAmbiguous, UpstreamClient, UpstreamError

__all__ = ("TERMINAL_STATUSES", "Jobs", "Submitted", "job_status")

TERMINAL_STATUSES = frozenset({"success", "failed", "cancelled"})
LIST_REFRESH_CONCURRENCY = 8
LIST_REFRESH_WAIT_SECONDS = 2.0  # then a list shows the stored records of jobs not yet read
IDEMPOTENCY_TTL = 24 * 3600.0
IDEMPOTENCY_PENDING_TTL = 120.0
MAX_IDEMPOTENCY_KEY = 255
CANONICAL_PAYLOAD_MAX = 64 * 1024
ECHO_MAX = 64 * 1024  # a larger payload is not echoed back in the records the gateway keeps

_log = structlog.get_logger("gateway.jobs")
_T = TypeVar("_T")


class _AcceptedWithoutId(UpstreamRelayedError):
    """The upstream accepted the submit but named no job: it may exist and be billed."""


class _Record(msgspec.Struct):
    request_id: str = ""
    status: str = ""


class _Account(msgspec.Struct):
    """Whose jobs these are upstream: the same for every job, as the gateway has one key."""

    org_id: str
    user_id: str


def job_status(record: bytes) -> str:
    """The ``status`` field of an upstream record ("" when absent or unreadable)."""
    try:
        return msgspec.json.decode(record, type=_Record).status
    except msgspec.MsgspecError:
        return ""


@dataclass(frozen=True, slots=True)
class Submitted:
    """A submit's answer: status and body (a replay returns the stored ones) and the quota
    decision behind it (``None`` for a replay or a tenant without submit limits)."""

    status: int
    body: bytes
    decision: Decision | None
    replayed: bool = False


class Jobs:
    """The job routes' policy; knows the store contract and the upstream client only."""

    def __init__(
        self,
        store: Store,
        upstream: UpstreamClient,
        catalog: Catalog,
        quotas: Quotas,
        *,
        status_ttl: float = 1.0,
    ) -> None:
        self._store = store
        self._upstream = upstream
        self._catalog = catalog
        self._quotas = quotas
        self._status_ttl = status_ttl
        self._inflight: dict[tuple[str, str], asyncio.Future[bytes]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._account: _Account | None = None  # learnt from the first record read upstream

    async def submit(
        self, principal: Principal, body: bytes, idempotency_key: str | None = None
    ) -> Submitted:
        """Validate, reserve quota, forward once (never retried), record and charge the job.

        Nothing is charged for a request rejected here or by the upstream; a submit whose
        answer never came keeps its charge (the job may exist) and answers 504.
        """
        submission = parse_submission(body)
        tenant = principal.tenant
        # Any refusal from here on is audited with its prompt (SHA-256 and length), DESIGN §6.
        prompt = object_fields(submission.payload, ("prompt",)).get("prompt")
        note_prompt(prompt, keep_text=tenant.store_prompts)
        if not tenant.allows_model(submission.model):
            raise UnknownModel(f"model {submission.model} does not exist")
        entry = (await self._catalog.model(submission.model)).value
        note = current_note()
        note.model = submission.model  # a model that exists: no client text
        # What a cold catalog's reads noted is not the submit's: audit only the POST's answer.
        note.upstream_status = note.upstream_latency_ms = None
        payload = object_fields(submission.payload, tuple(p.name for p in entry.parameters))
        validate_payload(payload, entry.parameters)
        claim = None
        if idempotency_key is not None:
            _check_idempotency_key(idempotency_key)
            fingerprint = _fingerprint(submission.model, submission.payload)
            claim = Idempotency(idempotency_key, fingerprint, IDEMPOTENCY_PENDING_TTL)
        seconds = video_seconds(payload, entry.parameters)
        charge = self._quotas.charge_for(tenant.video_cost(submission.model, seconds))
        claimed_at = asyncio.get_running_loop().time()
        start = await self._quotas.begin_submit(tenant, charge, claim)
        if start.decision is None:  # the key was used before
            assert start.claim is not None
            return _replay(start.claim)
        try:
            return await self._forward(
                principal,
                body,
                submission,
                charge=charge,
                decision=start.decision,
                claim=claim,
            )
        except (UpstreamTimeout, _AcceptedWithoutId) as exc:
            if claim is not None:  # a replay must not create a second job
                try:
                    await self._finish(tenant.id, claim, exc)
                except StoreUnavailable:  # the client hears what happened upstream, not this
                    self._finish_later(tenant.id, claim, exc, claimed_at=claimed_at)
            raise
        except BaseException:
            if claim is not None:
                with contextlib.suppress(StoreUnavailable):
                    await self._call_store(self._store.abandon_idempotent(tenant.id, claim.key))
            raise

    async def _forward(
        self,
        principal: Principal,
        body: bytes,
        submission: Submission,
        *,
        charge: Charge,
        decision: Decision,
        claim: Idempotency | None,
    ) -> Submitted:
        """Send the reserved submit once; record the job (and the key's answer) or release."""
        tenant = principal.tenant
        model = submission.model
        try:
            response = await self._upstream.submit(body)
        except UpstreamAmbiguous as exc:
            _keep_ambiguous_charge(tenant.id, model, charge, str(exc))
            raise UpstreamTimeout(
                "the upstream did not answer the submit in time; the job may exist and be "
                "billed, but its id never reached the gateway: do not resubmit blindly (a retry "
                "with the same Idempotency-Key returns this answer); the gateway operator can "
                "trace it by this request_id"
            ) from None
        except UpstreamError as exc:
            await self._release(tenant.id, charge)
            raise unavailable(exc) from None
        note = current_note()
        if response.status not in (200, 201):
            await self._release(tenant.id, charge)
            refused = relayed_error(response, not_found=UnknownModel)
            note.upstream_request_id = refused.upstream_request_id  # a sync model's failed job
            raise refused
        request_id = _request_id(response.body)
        if not request_id:
            _keep_ambiguous_charge(tenant.id, model, charge, "a 2xx answer without a request_id")
            raise _AcceptedWithoutId(
                "the upstream accepted the submit but sent no request_id: the job may exist and "
                "be billed, but the gateway cannot tell which; do not resubmit blindly (a retry "
                "with the same Idempotency-Key returns this answer); the gateway operator can "
                "trace it by this request_id",
                status=502,
                code="upstream_error",
            )
        note.upstream_request_id = request_id
        note.video_seconds_charged = charge.cost
        answer = _without_large_echo(response.body)  # a sync model's answer is a whole record
        try:
            await self._store.add_job(
                tenant.id,
                request_id,
                model,
                _as_status_record(answer, submission.payload, self._account),
                charge=charge,
                deadline=self._quotas.deadline(),
                idempotency=None
                if claim is None
                else replace(claim, ttl=IDEMPOTENCY_TTL, token=charge.token),
                answer=answer,
            )
        except StoreError as exc:
            # The job exists and is billed: the client gets its id (answered 503, it would
            # submit and pay again) and the store gets the job once it answers (failover.py).
            _log.warning(
                "submit_recorded_later",
                tenant=tenant.id,
                upstream_request_id=request_id,
                error=str(exc),
            )
        metrics.JOBS_SUBMITTED.labels(tenant.id, model).inc()
        metrics.VIDEO_SECONDS_CHARGED.labels(tenant.id).inc(charge.cost)
        status = job_status(answer)
        if status in TERMINAL_STATUSES:  # a sync model (spec §3): the job ended with the POST
            try:
                await self._quotas.settle(tenant.id, request_id, status, model=model)
            except StoreError as exc:  # the reconciler settles it later
                _log.warning(
                    "job_bookkeeping_failed", upstream_request_id=request_id, error=str(exc)
                )
        return Submitted(200, answer, decision)

    async def poll(self, principal: Principal, request_id: str) -> Poll:
        """A status poll's first step, in one store round trip: spend the read (429 when it is
        refused), prove ownership (``job`` is ``None`` unless the tenant owns the id) and claim
        the refresh. Its read is known before ``current`` asks the upstream, so every answer
        carries the RateLimit headers, a 404 or an upstream error included."""
        tenant = principal.tenant.id
        poll = await self._call_store(
            self._store.poll_job(
                tenant,
                request_id,
                reads_per_minute=principal.tenant.limits.reads_per_minute,
                refresh_ttl=self._status_ttl,
            )
        )
        self._quotas.enforce(tenant, poll.read)
        return poll

    async def current(self, job: StoredJob, *, claimed: bool) -> bytes:
        """The record of a polled job. Polls are coalesced: a terminal record never changes,
        so once stored it is served without an upstream call; otherwise at most one upstream
        call per ``status_ttl`` is made for a job across all replicas (the refresh ``claimed``
        by ``poll``), and polls that lose the claim get the stored record."""
        note = current_note()
        note.model = job.model
        note.upstream_request_id = job.request_id
        return await self._coalesced(job, claimed=claimed)

    async def _coalesced(self, job: StoredJob, *, claimed: bool) -> bytes:
        """The record to serve: a terminal one as stored; a new refresh if ``claimed`` and none
        runs on this replica; else the stored one (another caller, maybe on another replica,
        is refreshing it or did less than ``status_ttl`` ago: a slow upstream holds up only
        the poll that asked it, never the polls behind it)."""
        tenant, request_id = job.tenant, job.request_id
        if job_status(job.record) in TERMINAL_STATUSES:
            metrics.CACHE_LOOKUPS.labels("status", "hit").inc()
            return job.record
        if not claimed or (tenant, request_id) in self._inflight:
            metrics.CACHE_LOOKUPS.labels("status", "coalesced").inc()
            return job.record
        metrics.CACHE_LOOKUPS.labels("status", "miss").inc()
        future = asyncio.ensure_future(self.refresh(job))
        self._inflight[tenant, request_id] = future

        def done(_: asyncio.Future[bytes]) -> None:
            self._inflight.pop((tenant, request_id), None)
            if not future.cancelled():
                future.exception()  # seen, though every caller may have stopped waiting for it

        future.add_done_callback(done)
        return await asyncio.shield(future)

    async def list(
        self, principal: Principal, *, model: str | None, limit: int, offset: int
    ) -> bytes:
        """The tenant's jobs in the upstream list shape, newest first (``limit`` 0: none, and
        the ``total``)."""
        page = await self._call_store(
            self._store.list_jobs(
                principal.tenant.id, model=model, limit=max(limit, 1), offset=offset
            )
        )
        page = replace(page, jobs=page.jobs[:limit])
        gate = asyncio.Semaphore(LIST_REFRESH_CONCURRENCY)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LIST_REFRESH_WAIT_SECONDS

        async def fresh(job: StoredJob) -> bytes:
            if job_status(job.record) in TERMINAL_STATUSES:
                return job.record
            async with gate:
                if loop.time() >= deadline:
                    return job.record
                try:
                    claimed = (job.tenant, job.request_id) not in self._inflight and (
                        await self._store.claim_refresh(
                            job.tenant, job.request_id, ttl=self._status_ttl
                        )
                    )
                    return await asyncio.wait_for(
                        self._coalesced(job, claimed=claimed), deadline - loop.time()
                    )
                except TimeoutError:  # a slow upstream: the refresh goes on and stores it
                    _log.warning("list_refresh_slow", upstream_request_id=job.request_id)
                except GatewayError as exc:
                    _log.warning(
                        "list_refresh_failed", upstream_request_id=job.request_id, error=exc.message
                    )
                except StoreError as exc:
                    _log.warning(
                        "list_refresh_failed", upstream_request_id=job.request_id, error=str(exc)
                    )
                return job.record

        records = await asyncio.gather(*(fresh(job) for job in page.jobs))
        has_more = offset + len(page.jobs) < page.total
        return b"".join(
            (
                b'{"requests":[',
                b",".join(records),
                b'],"total":%d,"has_more":%s}' % (page.total, b"true" if has_more else b"false"),
            )
        )

    async def refresh(self, job: StoredJob) -> bytes:
        """Ask the upstream for the job's record, keep it, and settle the job if it ended, or
        as expired if it is still running past its deadline: the same for a job a client
        polls as for one only the reconciler reads."""
        try:
            response = await self._upstream.get_request(job.request_id)
        except UpstreamError as exc:
            raise unavailable(exc) from None
        if response.status != 200:
            raise relayed_error(response)
        record = _without_large_echo(response.body)
        if self._account is None:
            with contextlib.suppress(msgspec.MsgspecError):  # a record without them: next time
                self._account = msgspec.json.decode(record, type=_Account)
        status = job_status(record)
        try:
            if status in TERMINAL_STATUSES:
                await self._quotas.settle(job.tenant, job.request_id, status, model=job.model)
            elif self._quotas.past_deadline(job.created_at):
                await self.expire(job)
            else:
                await self._store.mark_checked(job.tenant, job.request_id)
            if record != job.record:
                await self._store.update_job_record(
                    job.tenant,
                    job.request_id,
                    record,
                    final=status in TERMINAL_STATUSES,
                )
        except StoreError as exc:  # the answer is still right; the reconciler settles later
            _log.warning(
                "job_bookkeeping_failed", upstream_request_id=job.request_id, error=str(exc)
            )
        return record

    async def expire(self, job: StoredJob) -> None:
        """Settle a job that outlived its deadline without ending: refund it, free its slot.

        It stays watched, less and less often: if it succeeds after all, the upstream bills it,
        and so it is charged again (see ``Quotas.settle``)."""
        tenant, request_id = job.tenant, job.request_id
        if await self._quotas.settle(tenant, request_id, "expired", model=job.model) is not None:
            _log.warning("job_expired", tenant=tenant, upstream_request_id=request_id)
        defer = self._quotas.expired_recheck_delay(job.created_at)
        await self._store.mark_checked(tenant, request_id, defer=defer)

    async def _finish(self, tenant: str, claim: Idempotency, exc: GatewayError) -> None:
        """Keep the error as the key's answer, with the id of the request that got it."""
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        body = msgspec.json.encode(
            {"error": exc.message, "code": exc.code, "request_id": request_id}
        )
        await self._call_store(
            self._store.finish_idempotent(
                tenant, claim.key, claim.fingerprint, exc.status, body, ttl=IDEMPOTENCY_TTL
            )
        )

    def _finish_later(
        self, tenant: str, claim: Idempotency, exc: GatewayError, *, claimed_at: float
    ) -> None:
        """Store the key's answer once the store is back, while the key's pending claim lasts
        (``IDEMPOTENCY_PENDING_TTL`` from ``claimed_at``, loop time): a retry with the key then
        replays it, where it would otherwise make (and bill) a second job. Not after: another
        submit may have claimed the key by then."""

        async def keep_trying() -> None:
            loop = asyncio.get_running_loop()
            give_up = claimed_at + IDEMPOTENCY_PENDING_TTL
            delay = 0.5
            while loop.time() + delay < give_up:
                await asyncio.sleep(delay)
                with contextlib.suppress(StoreUnavailable):
                    await self._finish(tenant, claim, exc)
                    _log.info("idempotency_answer_stored_late", tenant=tenant)
                    return
                delay = min(delay * 2, 5.0)
            _log.error("idempotency_answer_lost", tenant=tenant, error=exc.message)

        task = asyncio.create_task(keep_trying())  # in this request's context: its request id
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        """Stop storing answers late (shutdown)."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    async def _release(self, tenant: str, charge: Charge) -> None:
        try:
            await self._quotas.release(tenant, charge)
        except StoreError as exc:
            _log.error("release_failed", tenant=tenant, error=str(exc))

    @staticmethod
    async def _call_store(operation: Awaitable[_T]) -> _T:
        try:
            return await operation
        except StoreError as exc:  # the details are the operator's, not the tenant's
            _log.warning("store_unavailable", error=str(exc))
            raise StoreUnavailable(
                "the gateway's store is unavailable, so nothing was sent upstream"
            ) from None


def _check_idempotency_key(key: str) -> None:
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise BadRequest(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters")


def _replay(claim: IdempotencyState) -> Submitted:
    """The answer for a key that was used before: the stored one, or why there is none."""
    if claim.outcome == "pending":
        raise IdempotencyConflict(
            "a request with this Idempotency-Key is still in progress; retry when it ends"
        )
    if claim.outcome == "mismatch":
        raise IdempotencyMismatch(
            "this Idempotency-Key was already used with a different request body"
        )
    # Audited as what it is: no new job and no charge, whatever status the stored answer has;
    # with the job it answered with, so a retry can be traced to the submit that made it.
    note = current_note()
    note.outcome = "replayed"
    if claim.status == 200:
        note.upstream_request_id = _request_id(claim.body) or None
    return Submitted(claim.status, claim.body, None, replayed=True)


def _fingerprint(model: str, payload: msgspec.Raw) -> str:
    """Same request, same fingerprint, whatever the key order or whitespace of the body; a
    payload over ``CANONICAL_PAYLOAD_MAX`` (a base64 image) by its bytes as sent, since
    decoding a big body whole is what it must not cost (see ``object_fields``)."""
    canonical = msgspec.json.encode(model) + bytes(payload)
    if len(payload) <= CANONICAL_PAYLOAD_MAX:
        with contextlib.suppress(msgspec.DecodeError):  # a number out of range: as sent
            decoded = msgspec.json.decode(payload)
            canonical = msgspec.json.encode({"model": model, "payload": decoded}, order="sorted")
    return hashlib.sha256(canonical).hexdigest()


def _as_status_record(submitted: bytes, payload: msgspec.Raw, account: _Account | None) -> bytes:
    """The submit answer in the shape of a status record (spec §4): what polls and lists serve
    until the first refresh, so a client reading ``payload`` or ``outcome`` finds them. The
    fields the submit answer lacks go where a status record has them (``org_id`` and
    ``user_id`` after ``request_id``, once a record read upstream told them; the others after
    ``status``), and the payload is the client's own bytes, echoed verbatim as the upstream
    does."""
    answer = msgspec.json.decode(submitted)  # _request_id read it already: it is an object
    owner = {} if account is None else msgspec.structs.asdict(account)
    echo = payload if len(payload) <= ECHO_MAX else msgspec.Raw(b"{}")
    defaults = {"is_public": False, "payload": echo, "outcome": None}
    missing = {name: value for name, value in defaults.items() if name not in answer}
    record: dict[str, object] = {}
    for name, value in answer.items():
        record[name] = value
        if name == "request_id":
            record.update({k: v for k, v in owner.items() if k not in answer})
        if name == "status":
            record.update(missing)
    return msgspec.json.encode({**record, **missing})  # at the end if there was no status


def _without_large_echo(record: bytes) -> bytes:
    """A record as the gateway keeps and serves it: a ``payload`` echo over ``ECHO_MAX`` (an
    inline base64 image) becomes ``{}``, as the upstream itself once answered an image job
    (spec §4). A job's record is kept for 30 days and sent on every poll and list."""
    if len(record) <= ECHO_MAX:
        return record
    try:
        fields = msgspec.json.decode(record, type=dict[str, msgspec.Raw])
    except msgspec.DecodeError:
        return record
    if len(fields.get("payload", b"")) <= ECHO_MAX:
        return record
    fields["payload"] = msgspec.Raw(b"{}")
    return msgspec.json.encode(fields)


def _request_id(answer: bytes) -> str:
    """The job id of a submit's answer ("" when it names none)."""
    try:
        return msgspec.json.decode(answer, type=_Record).request_id
    except msgspec.MsgspecError:
        return ""


def _keep_ambiguous_charge(tenant: str, model: str, charge: Charge, error: str) -> None:
    """A submit the upstream may have billed without the gateway learning the job: the charge
    stays (its slot expires after the ambiguous hold), counted and audited as such."""
    metrics.VIDEO_SECONDS_CHARGED.labels(tenant).inc(charge.cost)
    note = current_note()
    note.video_seconds_charged = charge.cost
    note.outcome = "ambiguous_submit"
    _log.warning(
        "ambiguous_submit",
        tenant=tenant,
        model=model,
        video_seconds_charged=charge.cost,
        error=error,
    )
