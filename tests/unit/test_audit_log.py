"""The audit buffer (DESIGN §6): stdout lines always, never a silent drop, flushed on shutdown."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence

import msgspec
import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from gateway import audit
from gateway.audit import AuditEvent, AuditLog, stop


def event(n: int) -> AuditEvent:
    return AuditEvent(time="t", kind="request", outcome="ok", request_id=str(n))


def dropped() -> float:
    return REGISTRY.get_sample_value("gmigw_audit_events_dropped_total") or 0.0


class Sink:
    """Records what it is given; while ``held`` (the default) each call waits for ``release``."""

    def __init__(self, *, held: bool = True) -> None:
        self.written: list[AuditEvent] = []
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.progress = asyncio.Event()
        if not held:
            self.release.set()

    async def __call__(self, events: Sequence[AuditEvent]) -> None:
        self.entered.set()
        await self.release.wait()
        self.written += events
        self.progress.set()

    async def reaches(self, count: int) -> None:
        while len(self.written) < count:
            self.progress.clear()
            await asyncio.wait_for(self.progress.wait(), 10)  # a safety net, not a measure


async def test_shutdown_waits_for_the_batch_being_stored_then_flushes_the_rest() -> None:
    store = Sink()
    audit = AuditLog([store])
    task = asyncio.create_task(audit.run())
    for n in range(10):
        audit.emit(event(n))
    await store.entered.wait()  # the drain is inside the store call with all ten
    for n in range(10, 15):
        audit.emit(event(n))
    before = dropped()
    asyncio.get_running_loop().call_soon(store.release.set)  # the store answers during stop()
    await stop(task, audit)
    assert [e.request_id for e in store.written] == [str(n) for n in range(15)]
    assert dropped() == before
    assert task.done()


async def test_a_store_that_hangs_at_shutdown_loses_events_counted_and_logged() -> None:
    store = Sink()  # never released: a partitioned store
    audit = AuditLog([store])
    task = asyncio.create_task(audit.run())
    for n in range(10):
        audit.emit(event(n))
    await store.entered.wait()
    for n in range(10, 15):
        audit.emit(event(n))
    before = dropped()
    with capture_logs() as logs:
        await stop(task, audit, grace=0)
    assert task.done()
    assert dropped() - before == 15  # the batch under way and the five behind it
    assert [(e["event"], e["events"]) for e in logs] == [("audit_events_dropped_at_shutdown", 15)]


async def test_a_slow_store_neither_holds_back_nor_drops_the_stdout_lines() -> None:
    lines, store = Sink(held=False), Sink()
    audit = AuditLog([lines, store], capacity=100)
    task = asyncio.create_task(audit.run())
    before = dropped()
    with capture_logs() as logs:
        for start in range(0, 1000, 100):
            for n in range(start, start + 100):
                audit.emit(event(n))
            await lines.reaches(start + 100)
    assert [e.request_id for e in lines.written] == [str(n) for n in range(1000)]
    # The store is stuck on its first 100 with 100 more buffered: only its own 800 are lost.
    assert dropped() - before == 800
    # Logged at once, then (within 10 s) not once per event: the rest at shutdown.
    assert [(e["event"], e["events"]) for e in logs] == [("audit_events_dropped", 1)]
    with capture_logs() as logs:
        store.release.set()
        await store.reaches(101)  # slow, never failing: no line per batch it manages
        assert logs == []
        await stop(task, audit)
    assert [(e["event"], e["events"]) for e in logs] == [("audit_events_dropped", 799)]
    assert [e.request_id for e in store.written] == [str(n) for n in range(200)]


def test_a_kept_prompt_is_cut_to_a_bounded_length_but_hashed_whole() -> None:
    prompt = "a heron at dawn " * 1000
    note = audit.begin_note()
    audit.note_prompt(prompt, keep_text=True)
    assert note.prompt == prompt[: audit.MAX_PROMPT_TEXT]
    assert note.prompt_length == len(prompt)
    assert note.prompt_sha256 == hashlib.sha256(prompt.encode()).hexdigest()


@pytest.mark.parametrize("character", ["\u0001", "\u9e6d", "\U0001f99a"])
def test_a_kept_prompt_is_bounded_in_encoded_bytes_too(character: str) -> None:
    """4,000 control characters encode to 24 KB: past the 16 KiB at which container runtimes
    split a log line, and 60 times the event size the README plans Redis for."""
    note = audit.begin_note()
    audit.note_prompt(character * 4000, keep_text=True)
    assert note.prompt is not None
    size = len(msgspec.json.encode(note.prompt))
    assert audit.MAX_PROMPT_BYTES - 12 <= size <= audit.MAX_PROMPT_BYTES
    assert set(note.prompt) == {character}


async def test_a_failing_sink_is_retried_and_loses_nothing() -> None:
    """A store that is briefly unreachable: the batch waits and goes again, nothing dropped."""
    written: list[AuditEvent] = []
    failures = 2

    async def flaky(events: Sequence[AuditEvent]) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise OSError("connection refused")
        written.extend(events)

    audit = AuditLog([flaky])
    task = asyncio.create_task(audit.run())
    before = dropped()
    with capture_logs() as logs:
        for n in range(3):
            audit.emit(event(n))
        for _ in range(500):  # a safety net, not a measure
            if len(written) == 3:
                break
            await asyncio.sleep(0.01)
        await stop(task, audit)
    assert [e.request_id for e in written] == ["0", "1", "2"]
    assert dropped() == before
    assert [e["event"] for e in logs] == ["audit_sink_retrying", "audit_sink_retrying"]


async def test_drops_of_an_outage_are_logged_when_the_sink_is_back() -> None:
    """The count of a burst must not wait for the next drop, which may be a day later."""
    failing = True
    written: list[AuditEvent] = []

    async def down_then_up(events: Sequence[AuditEvent]) -> None:
        if failing:
            raise OSError("connection refused")
        written.extend(events)

    audit = AuditLog([down_then_up], capacity=10)
    task = asyncio.create_task(audit.run())
    before = dropped()
    with capture_logs() as logs:
        for n in range(30):  # a batch is being retried, 10 wait, the rest are dropped
            audit.emit(event(n))
            await asyncio.sleep(0)
        lost = dropped() - before
        failing = False
        for _ in range(500):  # a safety net, not a measure
            if len(written) == 30 - lost:
                break
            await asyncio.sleep(0.01)
        dropped_lines = [e["events"] for e in logs if e["event"] == "audit_events_dropped"]
        await stop(task, audit)
    assert lost > 10
    assert dropped_lines == [1, lost - 1]  # the first at once, the rest when the sink is back
