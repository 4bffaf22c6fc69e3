"""Reservations whose fate Redis never confirmed, given back once it answers again.

A script whose reply is lost (a read timeout, a dropped connection) may still run: Redis
executes what reached it, even after a stall of seconds and even if the client has hung up.
A submit answered 503 because its reservation's reply was lost would then hold a slot and
budget that no job refers to, so nothing would ever give them back; a refund whose reply was
lost may not have happened. Each such reservation waits here until an undo of it gets a
reply. The undo also voids the token, so it is right in whichever order it and a late
reservation reach Redis, and frees the Idempotency-Key the late reservation claimed (a client
retrying the 503 with it would get 409 until the claim expired).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import structlog

from gateway.store.base import Charge, StoreError

__all__ = ("Reservation", "UndoQueue")

_log = structlog.get_logger("gateway.store")
FIRST_DELAY_SECONDS = 0.1
MAX_DELAY_SECONDS = 5.0
LAST_TRY_SECONDS = 2.0  # at shutdown, inside the audit flush's share of the grace period
MAX_PENDING = 10_000  # one per failed submit; beyond, one is logged and left to its hold


@dataclass(frozen=True, slots=True)
class Reservation:
    tenant: str
    charge: Charge
    idempotency_key: str | None = None  # the key its submit claimed, if it had one


class UndoQueue:
    """Undo each reservation added, in order, retrying with backoff until the store answers."""

    def __init__(self, undo: Callable[[Reservation], Awaitable[bool]]) -> None:
        self._undo = undo
        self._pending: deque[Reservation] = deque()
        self._drain: asyncio.Task[None] | None = None

    def add(self, reservation: Reservation) -> None:
        tenant, token = reservation.tenant, reservation.charge.token
        if len(self._pending) >= MAX_PENDING:
            _log.error("reservation_undo_dropped", tenant=tenant, token=token)
            return
        self._pending.append(reservation)
        _log.warning("reservation_undo_pending", tenant=tenant, token=token)
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._run())

    def keep_claim(self, token: str) -> None:
        """Undo the reservation of ``token`` but leave its Idempotency-Key claimed: its submit
        went on elsewhere, and a retry with the key must not make a second job."""
        self._pending = deque(
            replace(r, idempotency_key=None) if r.charge.token == token else r
            for r in self._pending
        )

    def __len__(self) -> int:
        return len(self._pending)

    async def aclose(self) -> None:
        """Stop retrying after one last, bounded try: a pod stopping just after Redis came
        back would otherwise keep those charges. What is left after it stays reserved (its
        slot expires at its hold; its budget is not refunded)."""
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._undo_all(), LAST_TRY_SECONDS)
        if self._pending:
            _log.error("reservations_left_undone", count=len(self._pending))

    async def _run(self) -> None:
        delay = FIRST_DELAY_SECONDS
        while not await self._undo_all():
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_SECONDS)

    async def _undo_all(self) -> bool:
        """Undo what is pending, in order; ``False`` at the first one the store fails."""
        while self._pending:
            reservation = self._pending[0]
            try:
                released = await self._undo(reservation)
            except StoreError:
                return False
            self._pending.popleft()
            _log.info(
                "reservation_undone",
                tenant=reservation.tenant,
                token=reservation.charge.token,
                released=released,
            )
        return True
