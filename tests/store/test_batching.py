"""The batcher: concurrent calls of a group share round trips, answers keep their order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from gateway.store.batching import Batcher


class Recorder:
    """A ``run`` that records each batch and answers ``item * 10``, after a yield."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[tuple[str, list[int]]] = []
        self.fail_on = fail_on
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, group: str, items: Sequence[int]) -> list[int]:
        self.batches.append((group, list(items)))
        await self.release.wait()
        if self.fail_on in items:
            raise ValueError(f"item {self.fail_on} failed")
        return [item * 10 for item in items]


async def test_a_lone_call_is_sent_at_once_and_answered() -> None:
    run = Recorder()
    assert await Batcher(run).call("a", 1) == 10
    assert run.batches == [("a", [1])]


async def test_calls_arriving_together_share_one_round_trip_in_order() -> None:
    run = Recorder()
    batcher = Batcher(run)
    answers = await asyncio.gather(*(batcher.call("a", i) for i in range(20)))
    assert answers == [i * 10 for i in range(20)]
    assert run.batches == [("a", list(range(20)))]


async def test_calls_queued_during_a_round_trip_ride_on_the_next() -> None:
    run = Recorder()
    run.release.clear()
    batcher = Batcher(run)
    first = asyncio.create_task(batcher.call("a", 1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the first batch is under way, blocked in run
    later = [asyncio.create_task(batcher.call("a", i)) for i in (2, 3, 4)]
    await asyncio.sleep(0)
    run.release.set()
    assert await first == 10
    assert [await task for task in later] == [20, 30, 40]
    assert run.batches == [("a", [1]), ("a", [2, 3, 4])]


async def test_groups_never_share_a_round_trip() -> None:
    run = Recorder()
    batcher = Batcher(run)
    await asyncio.gather(batcher.call("a", 1), batcher.call("b", 2), batcher.call("a", 3))
    assert sorted(run.batches) == [("a", [1, 3]), ("b", [2])]


async def test_batches_are_capped() -> None:
    run = Recorder()
    batcher = Batcher(run, max_batch=4)
    answers = await asyncio.gather(*(batcher.call("a", i) for i in range(10)))
    assert answers == [i * 10 for i in range(10)]
    assert [len(items) for _, items in run.batches] == [4, 4, 2]


async def test_a_failed_round_trip_fails_its_own_callers_only() -> None:
    run = Recorder(fail_on=2)
    batcher = Batcher(run, max_batch=2)
    results = await asyncio.gather(
        *(batcher.call("a", i) for i in range(4)), return_exceptions=True
    )
    assert results[:2] == [0, 10]
    assert [type(r) for r in results[2:]] == [ValueError, ValueError]
    assert await batcher.call("a", 5) == 50  # the group recovers


async def test_a_caller_that_gives_up_does_not_disturb_the_others() -> None:
    run = Recorder()
    run.release.clear()
    batcher = Batcher(run)
    quitter = asyncio.create_task(batcher.call("a", 1))
    stayer = asyncio.create_task(batcher.call("a", 2))
    await asyncio.sleep(0)
    quitter.cancel()
    run.release.set()
    assert await stayer == 20
    with pytest.raises(asyncio.CancelledError):
        await quitter


async def test_aclose_cancels_what_is_under_way() -> None:
    run = Recorder()
    run.release.clear()
    batcher = Batcher(run)
    waiting = asyncio.create_task(batcher.call("a", 1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    await batcher.aclose()
    with pytest.raises(asyncio.CancelledError):
        await waiting
