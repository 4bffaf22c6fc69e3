"""The audit trail: one event per request and per settlement, never blocking a response.

Request handling fills a per-request :class:`AuditNote` (a context variable, so services can add
the model, the upstream request id and status, the charge and the prompt's hash without knowing
about HTTP); the request middleware turns it into an :class:`AuditEvent` when the response is
sent. Events go into a bounded in-memory buffer that a background task drains in batches to the
sinks: JSON lines on stdout (structlog logger ``audit``) and the store's audit streams, which
the audit APIs query. A full buffer drops the event and counts it in
``gmigw_audit_events_dropped_total`` (which should stay at zero); shutdown flushes the buffer.
Keys are never part of an event: only the key *id*.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

import msgspec
import structlog

from gateway import metrics

__all__ = (
    "AuditEvent",
    "AuditLog",
    "AuditNote",
    "begin_note",
    "current_note",
    "log_sink",
    "note_prompt",
    "stop",
)

AUDIT_BUFFER = 10_000
AUDIT_BATCH = 256

# The audit lines pass whatever GATEWAY_LOG_LEVEL is: DESIGN §6 puts them on stdout always.
_log = structlog.wrap_logger(
    None,
    wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET),
    logger_factory_args=("audit",),
)
_errors = structlog.get_logger("gateway.audit")


class AuditEvent(msgspec.Struct, omit_defaults=True):
    """One audited fact. ``kind`` is ``request`` or ``settlement``."""

    time: str
    kind: str
    outcome: str
    tenant: str | None = None
    key_id: str | None = None
    request_id: str | None = None
    client_ip: str | None = None
    method: str | None = None
    route: str | None = None
    status: int | None = None
    latency_ms: float | None = None
    model: str | None = None
    upstream_request_id: str | None = None
    upstream_status: int | None = None
    upstream_latency_ms: float | None = None
    video_seconds_charged: int | None = None
    video_seconds_refunded: int | None = None
    prompt_sha256: str | None = None
    prompt_length: int | None = None
    prompt: str | None = None


@dataclass(slots=True)
class AuditNote:
    """What the services learned while handling one request."""

    model: str | None = None
    upstream_request_id: str | None = None
    upstream_status: int | None = None
    upstream_latency_ms: float | None = None
    video_seconds_charged: int | None = None
    prompt_sha256: str | None = None
    prompt_length: int | None = None
    prompt: str | None = None
    outcome: str | None = None


_note: ContextVar[AuditNote | None] = ContextVar("audit_note", default=None)


def current_note() -> AuditNote:
    """This request's note (a throwaway one outside a request, e.g. in the reconciler)."""
    note = _note.get()
    return note if note is not None else AuditNote()


def begin_note() -> AuditNote:
    note = AuditNote()
    _note.set(note)
    return note


def note_prompt(prompt: object, *, keep_text: bool) -> None:
    """Record a prompt as SHA-256 and length; the text itself only if the tenant opted in."""
    if not isinstance(prompt, str):
        return
    note = current_note()
    note.prompt_sha256 = hashlib.sha256(prompt.encode()).hexdigest()
    note.prompt_length = len(prompt)
    note.prompt = prompt if keep_text else None


Sink = Callable[[Sequence[AuditEvent]], Awaitable[None]]


class AuditLog:
    """The bounded buffer between requests and the sinks."""

    def __init__(self, sinks: Sequence[Sink], *, capacity: int = AUDIT_BUFFER) -> None:
        self._sinks = sinks
        self._queue: asyncio.Queue[AuditEvent] = asyncio.Queue(maxsize=capacity)

    def emit(self, event: AuditEvent) -> None:
        """Queue an event without waiting; a full buffer drops and counts it."""
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            metrics.AUDIT_EVENTS_DROPPED.inc()
            _errors.error("audit_event_dropped", outcome=event.outcome, tenant=event.tenant)

    async def run(self) -> None:
        """Until cancelled: drain the buffer into every sink, in batches."""
        while True:
            batch = [await self._queue.get()]
            while len(batch) < AUDIT_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._write(batch)

    async def flush(self) -> None:
        """Write everything still buffered (shutdown)."""
        while not self._queue.empty():
            batch: list[AuditEvent] = []
            while len(batch) < AUDIT_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._write(batch)

    async def _write(self, batch: Sequence[AuditEvent]) -> None:
        for sink in self._sinks:
            try:
                await sink(batch)
            except Exception as exc:  # noqa: BLE001 - one failing sink must not stop the others
                metrics.AUDIT_EVENTS_DROPPED.inc(len(batch))
                _errors.error("audit_sink_failed", error=str(exc), events=len(batch))


async def log_sink(events: Sequence[AuditEvent]) -> None:
    """JSON lines on stdout through the ``audit`` logger (fields that are unset left out).

    For an audited request this is its canonical log line (the middleware writes no other).
    """
    for event in events:
        _log.info("audit", **msgspec.to_builtins(event))  # unset fields are left out


async def stop(task: asyncio.Task[None], audit: AuditLog) -> None:
    """Stop the drain task, then flush what is left."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await audit.flush()
