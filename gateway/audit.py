"""The audit trail: one event per request and per settlement, never blocking a response.

Request handling fills a per-request :class:`AuditNote` (a context variable, so services can add
the model, the upstream request id and status, the charge and the prompt's hash without knowing
about HTTP); the request middleware turns it into an :class:`AuditEvent` when the response is
sent. Each sink has its own bounded in-memory buffer, drained in batches by a background task:
JSON lines on stdout (``log.audit_sink``) and the store's audit streams, which the audit
APIs query; a slow or unreachable store never holds back the stdout lines. A full buffer drops
the event and counts it in ``gmigw_audit_events_dropped_total`` (which should stay at zero);
shutdown flushes the buffers, waiting a bounded time for a store that hangs and counting what it
could not write. Keys are never part of an event: only the key *id*.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

import msgspec
import structlog

from gateway import metrics

__all__ = (
    "AUDIT_SHUTDOWN_SECONDS",
    "AuditEvent",
    "AuditLog",
    "AuditNote",
    "begin_note",
    "current_note",
    "note_prompt",
    "stop",
)

AUDIT_BUFFER = 10_000
MAX_PROMPT_TEXT = 4_000  # Kling's limit is 2,500; container runtimes split lines at 16 KiB
MAX_PROMPT_BYTES = 8_192  # JSON-encoded: a control character takes 6 bytes, a CJK one 3
AUDIT_BATCH = 256
RETRY_FIRST_SECONDS = 0.1
RETRY_MAX_SECONDS = 5.0
DROP_LOG_SECONDS = 10.0
AUDIT_SHUTDOWN_SECONDS = 5.0  # for a store that hangs; serve's drain leaves this much for it

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
    """Record a prompt as SHA-256 and length; the text itself only if the tenant opted in, and
    at most ``MAX_PROMPT_TEXT`` characters and ``MAX_PROMPT_BYTES`` encoded of it: one audit
    line stays one log record, and the trail's size in Redis stays bounded whatever a model
    allows."""
    if not isinstance(prompt, str):
        return
    note = current_note()
    note.prompt_sha256 = hashlib.sha256(prompt.encode()).hexdigest()
    note.prompt_length = len(prompt)
    note.prompt = _bounded(prompt) if keep_text else None


def _bounded(text: str) -> str:
    text = text[:MAX_PROMPT_TEXT]
    while (size := len(msgspec.json.encode(text))) > MAX_PROMPT_BYTES:
        text = text[: len(text) * MAX_PROMPT_BYTES // size]  # shorter each time
    return text


Sink = Callable[[Sequence[AuditEvent]], Awaitable[None]]


class _Drain:
    """One sink's own buffer and what it is writing, so a slow sink never holds back another."""

    __slots__ = ("dropped", "dropped_logged_at", "name", "queue", "sink", "writing")

    def __init__(self, sink: Sink, capacity: int) -> None:
        self.sink = sink
        self.name = getattr(sink, "__qualname__", repr(sink))
        # ``None`` is the wake-up call of close(), never an event.
        self.queue: asyncio.Queue[AuditEvent | None] = asyncio.Queue(maxsize=capacity)
        self.writing = 0  # events in the sink call under way: lost if it is cancelled
        self.dropped = 0  # since the last log line about drops
        self.dropped_logged_at = float("-inf")


class AuditLog:
    """A bounded buffer per sink between requests and that sink.

    Each sink drains its own buffer, so a store that is slow or unreachable fills (and drops
    from) only its own buffer while the stdout lines keep flowing.
    """

    def __init__(self, sinks: Sequence[Sink], *, capacity: int = AUDIT_BUFFER) -> None:
        self._drains = tuple(_Drain(sink, capacity) for sink in sinks)
        self._closing = False

    def emit(self, event: AuditEvent) -> None:
        """Queue an event for every sink without waiting; a full buffer drops and counts it.

        Drops are logged at most every ``DROP_LOG_SECONDS`` per sink, with their count, and
        the rest once a failing sink writes again (or at shutdown): a line per event would
        flood the error log, and double its volume, through an outage.
        """
        for drain in self._drains:
            try:
                drain.queue.put_nowait(event)
            except asyncio.QueueFull:
                metrics.AUDIT_EVENTS_DROPPED.inc()
                drain.dropped += 1
                now = time.monotonic()
                if now - drain.dropped_logged_at >= DROP_LOG_SECONDS:
                    _report_drops(drain)
                    drain.dropped_logged_at = now

    async def run(self) -> None:
        """Drain every sink's buffer into it, in batches, until closed and all written."""
        await asyncio.gather(*(self._drain(drain) for drain in self._drains))

    def close(self) -> None:
        """Ask the drains to finish: each writes what it holds, then returns (shutdown)."""
        self._closing = True
        for drain in self._drains:
            _report_drops(drain)
            # Wakes a drain waiting for events; a full buffer means its drain is not waiting.
            with contextlib.suppress(asyncio.QueueFull):
                drain.queue.put_nowait(None)

    def abandon(self) -> int:
        """Let go of what the (stopped) drains did not write, and return how many events."""
        lost = 0
        for drain in self._drains:
            lost += drain.writing
            drain.writing = 0
            while not drain.queue.empty():
                if drain.queue.get_nowait() is not None:
                    lost += 1
        return lost

    async def _drain(self, drain: _Drain) -> None:
        queue = drain.queue
        while not (self._closing and queue.empty()):
            first = await queue.get()
            batch = [] if first is None else [first]
            while len(batch) < AUDIT_BATCH and not queue.empty():
                event = queue.get_nowait()
                if event is not None:
                    batch.append(event)
            if not batch:
                continue
            drain.writing = len(batch)
            await self._write(drain, batch)
            drain.writing = 0

    async def _write(self, drain: _Drain, batch: list[AuditEvent]) -> None:
        """Write ``batch``, retrying with backoff while the sink fails (an unreachable store):
        new events wait in the bounded buffer meanwhile. Only at shutdown is a batch that
        still fails given up, counted and logged. The Redis trail adds a batch sent again
        only once, so a retry after a lost reply duplicates nothing."""
        delay = RETRY_FIRST_SECONDS
        failed = False
        while True:
            try:
                await drain.sink(batch)
            except Exception as exc:  # noqa: BLE001 - a failing sink must not stop the drain
                failure = str(exc)
                failed = True
            else:
                if failed:  # the sink is back: the rest of what it missed while it was away
                    _report_drops(drain)
                return
            if self._closing:
                metrics.AUDIT_EVENTS_DROPPED.inc(len(batch))
                _errors.error(
                    "audit_sink_failed", sink=drain.name, error=failure, events=len(batch)
                )
                return
            _errors.warning(
                "audit_sink_retrying", sink=drain.name, error=failure, events=len(batch)
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)


def _report_drops(drain: _Drain) -> None:
    if drain.dropped:
        _errors.error("audit_events_dropped", sink=drain.name, events=drain.dropped)
        drain.dropped = 0


async def stop(
    task: asyncio.Task[None], audit: AuditLog, *, grace: float = AUDIT_SHUTDOWN_SECONDS
) -> None:
    """Flush on shutdown: the drain task finishes the batches under way and writes the rest.

    A sink that hangs (an unreachable store) gets ``grace`` seconds, so shutdown stays
    bounded; what it has not written by then is counted as dropped and logged, not lost silently.
    """
    audit.close()
    await asyncio.wait([task], timeout=grace)
    task.cancel()  # a no-op when it finished
    with contextlib.suppress(asyncio.CancelledError):
        await task
    lost = audit.abandon()
    if lost:
        metrics.AUDIT_EVENTS_DROPPED.inc(lost)
        _errors.error("audit_events_dropped_at_shutdown", events=lost, grace_seconds=grace)
