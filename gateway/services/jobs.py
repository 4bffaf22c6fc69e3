"""Jobs: submit, observe and list, with every request id owned by the tenant that created it.

Ownership is the gateway's own record (the store), never the upstream's: a tenant asking for an
id it does not own gets the upstream's "request not found" without the upstream being asked,
so it cannot even learn that the id exists. Listing is served from the tenant's own index, with
non-terminal records refreshed from the upstream so the list is as fresh as a poll.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import msgspec
import structlog

from gateway.errors import (
    GatewayError,
    NotFound,
    StoreUnavailable,
    UnknownModel,
    UpstreamRelayedError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.services.catalog import Catalog
from gateway.services.payload import parse_submission, validate_payload
from gateway.services.relay import relayed_error
from gateway.services.tenants import Principal
from gateway.store import Store, StoredJob, StoreError
from gateway.upstream import UpstreamAmbiguous, UpstreamClient, UpstreamError, UpstreamResponse

__all__ = ("TERMINAL_STATUSES", "Jobs", "job_status")

TERMINAL_STATUSES = frozenset({"success", "failed", "cancelled"})
LIST_REFRESH_CONCURRENCY = 8

_log = structlog.get_logger("gateway.jobs")
_T = TypeVar("_T")


class _Record(msgspec.Struct):
    request_id: str = ""
    status: str = ""


def job_status(record: bytes) -> str:
    """The ``status`` field of an upstream record ("" when absent or unreadable)."""
    try:
        return msgspec.json.decode(record, type=_Record).status
    except msgspec.MsgspecError:
        return ""


class Jobs:
    """The job routes' policy; knows the store contract and the upstream client only."""

    def __init__(self, store: Store, upstream: UpstreamClient, catalog: Catalog) -> None:
        self._store = store
        self._upstream = upstream
        self._catalog = catalog

    async def submit(self, principal: Principal, body: bytes) -> bytes:
        """Validate, forward once (never retried) and record ownership of the new job.

        Returns:
            The upstream's submit answer, unchanged.
        """
        submission = parse_submission(body)
        if not principal.tenant.allows_model(submission.model):
            raise UnknownModel(f"model {submission.model} does not exist")
        entry = await self._catalog.model(submission.model)
        validate_payload(submission.payload, entry.parameters)
        tenant = principal.tenant.id
        try:
            response = await self._upstream.submit(body)
        except UpstreamAmbiguous as exc:
            _log.warning("ambiguous_submit", tenant=tenant, model=submission.model, error=str(exc))
            raise UpstreamTimeout(
                "the upstream did not answer the submit in time; the job may exist and be "
                "billed: do not resubmit blindly, list your requests to check"
            ) from None
        except UpstreamError as exc:
            raise UpstreamUnavailable(f"upstream unavailable: {exc}") from None
        if response.status not in (200, 201):
            raise relayed_error(response, not_found=UnknownModel)
        request_id = _request_id(response)
        try:
            await self._store.add_job(tenant, request_id, submission.model, response.body)
        except StoreError as exc:
            _log.error("submit_not_recorded", tenant=tenant, request_id=request_id, error=str(exc))
            raise StoreUnavailable(
                f"the upstream accepted job {request_id} but the gateway could not record it; "
                "contact the gateway operator with this request id"
            ) from None
        return response.body

    async def get(self, principal: Principal, request_id: str) -> bytes:
        """The job's current upstream record, if the tenant owns it.

        A terminal record never changes, so once stored it is served without an upstream call.
        """
        job = await self._owned(principal, request_id)
        if job_status(job.record) in TERMINAL_STATUSES:
            return job.record
        return await self._refresh(job)

    async def list(
        self, principal: Principal, *, model: str | None, limit: int, offset: int
    ) -> bytes:
        """The tenant's jobs in the upstream list shape, newest first."""
        page = await self._call_store(
            self._store.list_jobs(principal.tenant.id, model=model, limit=limit, offset=offset)
        )
        gate = asyncio.Semaphore(LIST_REFRESH_CONCURRENCY)

        async def fresh(job: StoredJob) -> bytes:
            if job_status(job.record) in TERMINAL_STATUSES:
                return job.record
            async with gate:
                try:
                    return await self._refresh(job)
                except GatewayError as exc:
                    _log.warning(
                        "list_refresh_failed", request_id=job.request_id, error=exc.message
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

    async def _owned(self, principal: Principal, request_id: str) -> StoredJob:
        job = await self._call_store(self._store.get_job(principal.tenant.id, request_id))
        if job is None:
            raise NotFound("request not found")
        return job

    async def _refresh(self, job: StoredJob) -> bytes:
        try:
            response = await self._upstream.get_request(job.request_id)
        except UpstreamError as exc:
            raise UpstreamUnavailable(f"upstream unavailable: {exc}") from None
        if response.status != 200:
            raise relayed_error(response)
        if response.body != job.record:
            await self._call_store(
                self._store.update_job_record(job.tenant, job.request_id, response.body)
            )
        return response.body

    @staticmethod
    async def _call_store(operation: Awaitable[_T]) -> _T:
        try:
            return await operation
        except StoreError as exc:
            raise StoreUnavailable(f"the gateway's store is unavailable: {exc}") from None


def _request_id(response: UpstreamResponse) -> str:
    try:
        request_id = msgspec.json.decode(response.body, type=_Record).request_id
    except msgspec.MsgspecError:
        request_id = ""
    if not request_id:
        raise UpstreamRelayedError(
            "the upstream accepted the submit but sent no request_id",
            status=502,
            code="upstream_error",
        )
    return request_id
