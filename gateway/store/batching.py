"""Coalescing of concurrent calls into one round trip per group.

A Redis round trip costs the client far more than the script it runs (measured here: ~44 µs of
redis-py per EVALSHA against ~7 µs per item when 32 items share one call). The hot path's reads
and status polls are therefore queued per group (a tenant and its limits) and sent together:
the first call of an idle group is sent at once, and calls that arrive while a round trip is
under way ride on the next one. Nothing waits for a timer, so a lone request pays no latency;
under load each round trip carries everything that queued behind it. Items keep their arrival
order, and the script handles them one after the other, so the answers are exactly those of
separate calls made in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

__all__ = ("MAX_BATCH", "Batcher")

MAX_BATCH = 128
Group = TypeVar("Group", bound=Hashable)
Item = TypeVar("Item")
Answer = TypeVar("Answer")
Run = Callable[[Group, Sequence[Item]], Awaitable[Sequence[Answer]]]


class Batcher(Generic[Group, Item, Answer]):
    """Runs ``run(group, items)`` for the items queued per group, one round trip at a time.

    ``run`` must answer one result per item, in order; an exception it raises is raised to
    every caller of that batch.
    """

    def __init__(self, run: Run[Group, Item, Answer], *, max_batch: int = MAX_BATCH) -> None:
        self._run = run
        self._max = max_batch
        self._queued: dict[Group, list[tuple[Item, asyncio.Future[Answer]]]] = {}
        self._drains: set[asyncio.Task[None]] = set()

    async def call(self, group: Group, item: Item) -> Answer:
        """Queue ``item`` for ``group`` and wait for its answer."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        queue = self._queued.get(group)
        if queue is None:  # idle group: start a drain, which picks up whatever queues meanwhile
            self._queued[group] = [(item, future)]
            drain = asyncio.create_task(self._drain(group))
            self._drains.add(drain)
            drain.add_done_callback(self._drains.discard)
        else:
            queue.append((item, future))
        return await future

    async def _drain(self, group: Group) -> None:
        queue = self._queued[group]
        try:
            while queue:
                batch, queue[:] = queue[: self._max], queue[self._max :]
                await self._send(group, batch)
        finally:
            del self._queued[group]
            for _, future in queue:  # only when cancelled (shutdown)
                if not future.done():
                    future.cancel()

    async def _send(self, group: Group, batch: list[tuple[Item, asyncio.Future[Answer]]]) -> None:
        try:
            answers = await self._run(group, [item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 -- handed to every caller of the batch
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), answer in zip(batch, answers, strict=True):
            if not future.done():  # a caller that gave up (client gone) has a cancelled future
                future.set_result(answer)

    async def aclose(self) -> None:
        """Cancel the round trips under way; their callers get ``CancelledError``."""
        for drain in list(self._drains):
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
