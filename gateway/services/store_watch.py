"""Notices a shared store that lost its data, which Redis itself never reports.

A Redis restarted without persistence, flushed, or failed over to an empty replica answers as
if nothing happened: tenants' jobs answer 404, budgets start again from 0, a replayed
Idempotency-Key makes a second job. The store keeps an id of its data (``Store.data_id``); a
worker that sees it change says so, loudly, once per loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import structlog

from gateway import metrics
from gateway.store import Store, StoreError

__all__ = ("StoreWatch",)

_log = structlog.get_logger("gateway.store_watch")


class StoreWatch:
    """Compares the store's data id with the one this worker saw last."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._seen: str | None = None

    async def run(self, interval: float) -> None:
        """Until cancelled: a check every ``interval`` seconds (an unreachable store is skipped:
        its errors are counted where they happen)."""
        while True:
            with contextlib.suppress(StoreError):
                _ = await self.check()
            await asyncio.sleep(interval)

    async def check(self) -> bool:
        """Whether the store lost its data since the last check (never on the first one)."""
        current = await self._store.data_id(uuid.uuid4().hex)
        lost = self._seen is not None and current != self._seen
        self._seen = current
        if lost:
            metrics.STORE_DATA_LOST.inc()
            _log.error(
                "store_data_lost",
                detail="the shared store no longer holds what it held: job ownership, quota "
                "usage, concurrency slots and Idempotency-Key answers written before are gone "
                "(Redis restarted without persistence, was flushed, or failed over to an empty "
                "replica)",
            )
        return lost
