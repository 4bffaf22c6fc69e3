"""What only the Redis backend can do wrong: lost scripts, a dead server, cluster slots."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from redis.asyncio.connection import AbstractConnection

from gateway.store import StoreError
from gateway.store.base import Charge, Decision, Idempotency, Settlement, SubmitLimits
from gateway.store.redis import RedisStore
from gateway.store.undo import Reservation
from tests.store.conftest import FakeClock
from tests.support.redis_server import RedisServer, find_redis_server

pytestmark = pytest.mark.redis
PASSWORD = "s3cret-redis-password"


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A redis-server this test may kill and restart (with a password, to check messages)."""
    server = RedisServer(find_redis_server(), password=PASSWORD).start()
    yield server
    server.stop()


@pytest.fixture
async def store(own_server: RedisServer, clock: FakeClock) -> AsyncIterator[RedisStore]:
    backend = RedisStore.from_url(own_server.url, clock=clock)
    yield backend
    await backend.aclose()


async def test_scripts_are_reloaded_after_script_flush(
    store: RedisStore, own_server: RedisServer
) -> None:
    await store.add_job("a", "r1", "m", b"1")
    client = redis.Redis.from_url(own_server.url)
    client.script_flush()
    client.close()
    await store.add_job("a", "r2", "m", b"2")
    assert await store.update_job_record("a", "r1", b"one") is True
    assert (await store.list_jobs("a")).total == 2


async def test_job_indexes_expire_a_retention_after_their_newest_job(
    own_server: RedisServer, clock: FakeClock
) -> None:
    """A tenant (or model) that stops submitting leaves no index behind for ever."""
    backend = RedisStore.from_url(own_server.url, clock=clock, job_retention_seconds=600)
    await backend.add_job("a", "r1", "m", b"1")
    with redis.Redis.from_url(own_server.url) as client:
        for index in ("gmigw:{a}:jobs", "gmigw:{a}:jobs:model:m"):
            assert 590_000 < client.pttl(index) <= 600_000, index
    await backend.aclose()


async def test_a_script_error_is_a_store_error(store: RedisStore, own_server: RedisServer) -> None:
    with redis.Redis.from_url(own_server.url) as client:
        client.set("gmigw:{a}:job:r1", "not a hash")
    with pytest.raises(StoreError, match="WRONGTYPE"):
        await store.add_job("a", "r1", "m", b"")
    with pytest.raises(StoreError, match="WRONGTYPE"):
        await store.get_job("a", "r1")


async def test_a_redis_out_of_memory_refuses_the_reservation_itself(
    store: RedisStore, own_server: RedisServer, clock: FakeClock
) -> None:
    """Once a script has written, Redis lets it write on past maxmemory: a reservation whose
    first write was a prune got through, and only recording the job failed, after the upstream
    had taken it. The submit must fail before anything is sent."""
    limits = SubmitLimits(max_concurrent_jobs=5, video_seconds_per_day=100)
    cost = Charge("t1", 5, "2026-11-24", "2026-11", clock.now + 600, clock.now + 6000)
    await store.begin_submit("a", cost, limits, hold_until=clock.now + 1)  # an expired slot
    clock.advance(10)
    with redis.Redis.from_url(own_server.url) as client:
        client.config_set("maxmemory", 1)  # below what is used: every denied write is refused
        try:
            late = Charge("t2", 5, "2026-11-24", "2026-11", clock.now + 600, clock.now + 6000)
            with pytest.raises(StoreError, match="OutOfMemoryError"):
                await store.begin_submit("a", late, limits, hold_until=clock.now + 60)
        finally:
            client.config_set("maxmemory", 0)
    states, in_use = await store.usage("a", limits, None, cost)
    assert in_use == 0
    assert {s.name: s.used for s in states}["video_seconds_per_day"] == 5  # t2 left nothing


class _Proxy:
    """A TCP endpoint that forwards each new connection to ``target`` (a port), as a managed
    Redis endpoint does after a failover: old connections stay where they were."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
            sink.close()

        await asyncio.gather(
            pipe(reader, upstream_writer), pipe(upstream_reader, writer), return_exceptions=True
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


async def test_after_a_failover_the_store_leaves_the_demoted_server(
    own_server: RedisServer, clock: FakeClock
) -> None:
    """Connections kept to the old primary, now a replica, failed every write until restarted."""
    with RedisServer(find_redis_server()) as other:
        proxy = _Proxy(own_server.port)
        await proxy.start()
        url = f"redis://:{PASSWORD}@127.0.0.1:{proxy.port}/0"
        store = RedisStore.from_url(url, clock=clock)
        try:
            await store.add_job("a", "r1", "m", b"1")  # a pooled connection to own_server
            with redis.Redis.from_url(own_server.url) as demoted:
                demoted.replicaof("127.0.0.1", other.port)  # the failover: now a replica
            proxy.target = other.port  # the endpoint leads to the new primary
            with pytest.raises(StoreError, match="ReadOnlyError"):
                await store.add_job("a", "r2", "m", b"2")
            await store.add_job("a", "r3", "m", b"3")  # on a fresh connection, to the primary
            with redis.Redis.from_url(f"redis://127.0.0.1:{other.port}/0") as primary:
                assert primary.exists("gmigw:{a}:job:r3")
        finally:
            await store.aclose()
            await proxy.stop()


async def test_a_wrong_password_is_a_store_error_without_it(
    own_server: RedisServer, clock: FakeClock
) -> None:
    wrong = "not-the-password-4f2a"
    url = own_server.url.replace(PASSWORD, wrong)
    backend = RedisStore.from_url(url, clock=clock)
    with pytest.raises(StoreError) as caught:
        await backend.ping()
    await backend.aclose()
    assert wrong not in str(caught.value)
    assert url not in str(caught.value)


async def test_dead_server_is_a_store_error_without_credentials(
    store: RedisStore, own_server: RedisServer
) -> None:
    await store.ping()
    own_server.stop()
    for operation in (
        store.ping(),
        store.get_job("a", "r"),
        store.add_job("a", "r", "m", b""),
        store.list_jobs("a"),
    ):
        with pytest.raises(StoreError) as caught:
            await operation
        assert PASSWORD not in str(caught.value)
        assert own_server.url not in str(caught.value)
        assert caught.value.__cause__ is None


async def test_same_store_recovers_when_redis_comes_back(
    store: RedisStore, own_server: RedisServer
) -> None:
    await store.add_job("a", "before", "m", b"")
    port = own_server.port
    own_server.stop()
    with pytest.raises(StoreError):
        await store.ping()
    own_server.start()
    assert own_server.port == port
    await store.ping()
    assert await store.get_job("a", "before") is None  # nothing persisted: a fresh server
    await store.add_job("a", "r", "m", b"x")
    assert await store.get_job("a", "r") is not None


async def test_every_key_carries_the_tenant_hash_tag(
    store: RedisStore, own_server: RedisServer, clock: FakeClock
) -> None:
    tenant, model = "studio-web", "Kling-Text2Video-V2-Master"
    await store.add_job(tenant, "r1", model, b"")
    await store.add_job(tenant, "r2", "Veo3", b"")
    await store.update_job_record(tenant, "r1", b"{}")
    await store.get_job(tenant, "r1")
    await store.list_jobs(tenant, model=model)
    await store.poll_job(tenant, "r1", reads_per_minute=10, refresh_ttl=1.0)
    day = Charge("tok", 5, "2026-11-23", "2026-11", clock.now + 10, clock.now + 100)
    limits = SubmitLimits(submits_per_minute=5, max_concurrent_jobs=2, video_seconds_per_day=50)
    idem = Idempotency("idem", "fp", 60)
    start = await store.begin_submit(
        tenant, day, limits, hold_until=clock.now + 60, idempotency=idem
    )
    assert start.decision is not None
    assert start.decision.allowed
    client = aioredis.Redis.from_url(own_server.url)
    keys = sorted(key.decode() for key in await client.keys("*"))
    await client.aclose()
    assert len(keys) >= 10, keys
    assert all(key.startswith("gmigw:{studio-web}:") for key in keys), keys
    assert "gmigw:{studio-web}:job:r1" in keys


def count_round_trips(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """From now on, count what the client sends (a command or a whole pipeline is one)."""
    sent = 0
    send = AbstractConnection.send_packed_command

    async def counting(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        nonlocal sent
        sent += 1
        await send(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return lambda: sent


@pytest.mark.parametrize("operation", ["add", "get", "update", "list", "list_by_model"])
async def test_job_operations_are_one_round_trip(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch, operation: str
) -> None:
    for n in range(5):
        await store.add_job("a", f"r{n}", "m", b"")
    assert await store.update_job_record("a", "r0", b"")  # every script is loaded by now
    await store.list_jobs("a")
    sent = count_round_trips(monkeypatch)
    if operation == "add":
        await store.add_job("a", "r9", "m", b"")
    elif operation == "get":
        assert await store.get_job("a", "r1") is not None
    elif operation == "update":
        assert await store.update_job_record("a", "r1", b"x")
    else:
        model = "m" if operation == "list_by_model" else None
        assert (await store.list_jobs("a", model=model, limit=3)).total == 5
    assert sent() == 1


async def test_a_submit_costs_two_round_trips_even_after_a_script_flush(
    store: RedisStore, own_server: RedisServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One before the upstream call (key claim + reservation), one after (job, key's answer,
    reconcile entry); a Redis that lost its scripts costs one reload, not a failure."""
    limits = SubmitLimits(submits_per_minute=5, max_concurrent_jobs=5, video_seconds_per_day=50)

    async def submit(n: int) -> None:
        charge = Charge(f"tok{n}", 5, "2026-11-23", "2026-11", clock.now + 10, clock.now + 100)
        idem = Idempotency(f"k{n}", "fp", 60)
        start = await store.begin_submit(
            "a", charge, limits, hold_until=clock.now + 60, idempotency=idem
        )
        assert start.decision is not None
        assert start.decision.allowed
        await store.add_job("a", f"r{n}", "m", b"{}", charge=charge, idempotency=idem)

    await submit(0)  # loads the scripts
    sent = count_round_trips(monkeypatch)
    await submit(1)
    assert sent() == 2
    monkeypatch.undo()
    with redis.Redis.from_url(own_server.url) as client:
        client.script_flush()
    await submit(2)
    due = await store.jobs_to_reconcile(checked_before=clock.now + 1, limit=10)
    assert sorted(r for _, r, _ in due) == ["r0", "r1", "r2"]


async def test_an_audit_batch_is_one_round_trip_even_after_a_script_flush(
    store: RedisStore, own_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every stream the batch touches (the global trail, each tenant's) in one pipeline; a
    Redis that lost its scripts costs one reload, and no event lands twice."""
    await store.append_audit([("a", b"0")])  # loads the script
    sent = count_round_trips(monkeypatch)
    await store.append_audit([("a", b"1"), ("b", b"2"), (None, b"3")])
    assert sent() == 1
    monkeypatch.undo()
    with redis.Redis.from_url(own_server.url) as client:
        client.script_flush()
    await store.append_audit([("a", b"4"), ("b", b"5")])

    async def trail(tenant: str | None) -> list[bytes]:
        return [body for _, body in await store.read_audit(tenant, before=None, count=10)]

    assert await trail(None) == [b"5", b"4", b"3", b"2", b"1", b"0"]
    assert await trail("a") == [b"4", b"1", b"0"]
    assert await trail("b") == [b"5", b"2"]


async def test_scripts_lost_midway_through_an_audit_batch_write_no_event_twice(
    store: RedisStore, own_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipeline is not a transaction: if the script cache is flushed (or reloaded by
    another replica) between its calls, the streams that took the batch must not get it
    again when the others are retried."""
    await store.append_audit([("a", b"0")])  # loads the script
    execute = aioredis.client.Pipeline.execute
    flushed = False

    async def flush_after_the_first_call(
        pipe: aioredis.client.Pipeline, raise_on_error: bool = True
    ) -> list[Any]:
        nonlocal flushed
        if flushed or len(pipe.command_stack) < 2:
            return await execute(pipe, raise_on_error)
        flushed = True
        first, rest = pipe.command_stack[:1], pipe.command_stack[1:]
        pipe.command_stack = first
        replies = await execute(pipe, raise_on_error)
        with redis.Redis.from_url(own_server.url) as client:  # between the pipeline's calls
            client.script_flush()
        pipe.command_stack = rest
        return [*replies, *await execute(pipe, raise_on_error)]

    monkeypatch.setattr(aioredis.client.Pipeline, "execute", flush_after_the_first_call)
    await store.append_audit([("a", b"1"), (None, b"2")])
    assert flushed

    async def trail(tenant: str | None) -> list[bytes]:
        return [body for _, body in await store.read_audit(tenant, before=None, count=10)]

    assert await trail(None) == [b"2", b"1", b"0"]
    assert await trail("a") == [b"1", b"0"]


async def test_concurrent_reads_of_a_tenant_share_round_trips(
    store: RedisStore, own_server: RedisServer
) -> None:
    """Exactly the limit passes, as with separate calls, in far fewer script calls."""
    await store.add_job("a", "r1", "m", b"{}")
    with redis.Redis.from_url(own_server.url) as client:
        client.config_resetstat()
    reads = [store.take_read("a", 30) for _ in range(25)]
    polls = [store.poll_job("a", "r1", reads_per_minute=30, refresh_ttl=1.0) for _ in range(25)]
    answers = await asyncio.gather(*reads, *polls)
    with redis.Redis.from_url(own_server.url) as client:
        calls = client.info("commandstats")["cmdstat_evalsha"]["calls"]
    decisions = [a if isinstance(a, Decision) else a.read for a in answers]
    assert sum(d is not None and d.allowed for d in decisions) == 30
    assert calls <= 5, f"{calls} script calls for 50 concurrent reads"


RECONCILE = "gmigw:reconcile"


async def charged_job(store: RedisStore, clock: FakeClock, request_id: str) -> Charge:
    charge = Charge(
        f"tok-{request_id}", 5, "2026-11-23", "2026-11", clock.now + 10, clock.now + 100
    )
    start = await store.begin_submit("a", charge, SubmitLimits(), hold_until=clock.now + 60)
    assert start.decision is not None
    assert start.decision.allowed
    await store.add_job("a", request_id, "m", b"{}", charge=charge, deadline=clock.now + 60)
    return charge


async def test_a_settled_job_left_in_the_reconcile_set_is_dropped_not_listed(
    store: RedisStore, own_server: RedisServer, clock: FakeClock
) -> None:
    """What a lost cleanup leaves behind: a settled job's member, sorted first. Listing it would
    cost the reconciler an upstream read per pass (all of them, with a budget of one)."""
    await charged_job(store, clock, "r1")
    await charged_job(store, clock, "r2")
    assert await store.settle("a", "r1", refund=False) is not None
    with redis.Redis.from_url(own_server.url) as client:
        client.zadd(RECONCILE, {"a\nr1": 0})
        clock.advance(1)
        due = await store.jobs_to_reconcile(checked_before=clock.now, limit=1)
        assert [r for _, r, _ in due] == ["r2"]
        assert client.zscore(RECONCILE, "a\nr1") is None


async def test_settling_a_settled_job_again_unlists_it(
    store: RedisStore, own_server: RedisServer, clock: FakeClock
) -> None:
    """Every settle attempt cleans the reconcile set, even one with nothing left to settle
    (and after Redis lost its scripts)."""
    await charged_job(store, clock, "r1")
    assert await store.settle("a", "r1", refund=False) is not None
    with redis.Redis.from_url(own_server.url) as client:
        client.zadd(RECONCILE, {"a\nr1": 0})
        client.script_flush()
        assert await store.settle("a", "r1", refund=True) is None
        assert client.zscore(RECONCILE, "a\nr1") is None


async def test_a_settlement_is_reported_even_when_its_cleanup_fails(
    store: RedisStore, own_server: RedisServer, clock: FakeClock
) -> None:
    """The job is settled once the script ran: a failed reconcile-set cleanup must not hide
    that from the caller, who audits and counts the settlement."""
    charge = await charged_job(store, clock, "r1")
    with redis.Redis.from_url(own_server.url) as client:
        client.delete(RECONCILE)
        client.set(RECONCILE, "not a sorted set")  # every ZREM on it now fails
    errors = REGISTRY.get_sample_value("gmigw_store_errors_total", {"kind": "ResponseError"}) or 0
    assert await store.settle("a", "r1", refund=True) == Settlement(5, 5)
    assert REGISTRY.get_sample_value(
        "gmigw_store_errors_total", {"kind": "ResponseError"}
    ) == pytest.approx(errors + 1)
    assert await store.settle("a", "r1", refund=True) is None
    limits = SubmitLimits(max_concurrent_jobs=1, video_seconds_per_day=5)
    states, in_use = await store.usage("a", limits, None, charge)
    assert in_use == 0
    assert {s.name: s.remaining for s in states}["video_seconds_per_day"] == 5


async def test_a_settlement_costs_two_round_trips(
    store: RedisStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The charge's periods, then the script and the reconcile-set cleanup together."""
    await charged_job(store, clock, "r0")
    await charged_job(store, clock, "r1")
    assert await store.settle("a", "r0", refund=True) is not None  # loads the script
    sent = count_round_trips(monkeypatch)
    assert await store.settle("a", "r1", refund=True) is not None
    assert sent() == 2


def stall_charge(clock: FakeClock, token: str) -> Charge:
    return Charge(token, 5, "2026-11-23", "2026-11", clock.now + 10, clock.now + 100)


async def reserved(server: RedisServer) -> tuple[int, int]:
    """Slots in use and day budget used by tenant "a"."""
    async with aioredis.Redis.from_url(server.url) as client:
        slots = await client.zcard("gmigw:{a}:slots")
        used = await client.get("gmigw:{a}:budget:2026-11-23")
    return slots, int(used or 0)


async def until_undone(store: RedisStore) -> None:
    for _ in range(200):
        if store.undo_pending == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{store.undo_pending} reservations still waiting for an undo")


async def test_a_reservation_whose_reply_was_lost_is_given_back(
    own_server: RedisServer, clock: FakeClock
) -> None:
    """A Redis stalled past the client's timeout still runs the script it received: a submit
    answered 503 held a slot and budget that no job refers to, and its Idempotency-Key, so a
    retry with the key got 409 (review finding)."""
    store = RedisStore(aioredis.Redis.from_url(own_server.url, socket_timeout=0.3), clock=clock)
    limits = SubmitLimits(max_concurrent_jobs=1, video_seconds_per_day=10)
    warm = stall_charge(clock, "warm")  # loads both scripts: a stalled NOSCRIPT would not run
    await store.begin_submit("a", warm, limits, hold_until=clock.now + 60)
    await store.release("a", warm)
    key = Idempotency("retry-me", "fp", 120)
    own_server.pause()
    try:
        with pytest.raises(StoreError):
            await store.begin_submit(
                "a", stall_charge(clock, "lost"), limits, hold_until=70, idempotency=key
            )
    finally:
        own_server.resume()
    await until_undone(store)
    assert await reserved(own_server) == (0, 0)
    retry = await store.begin_submit(
        "a", stall_charge(clock, "retry"), limits, hold_until=70, idempotency=key
    )
    assert retry.claim is not None
    assert retry.claim.outcome == "new"
    assert retry.decision is not None
    assert retry.decision.allowed
    await store.aclose()


async def test_an_undo_leaves_a_key_another_submit_holds(
    store: RedisStore, clock: FakeClock
) -> None:
    key = Idempotency("shared", "fp", 120)
    await store.begin_submit("a", stall_charge(clock, "holder"), SubmitLimits(), hold_until=70,
                             idempotency=key)  # fmt: skip
    await store.undo_reservation(Reservation("a", stall_charge(clock, "other"), key.key))
    again = await store.begin_submit(
        "a", stall_charge(clock, "third"), SubmitLimits(), hold_until=70, idempotency=key
    )
    assert again.claim is not None
    assert again.claim.outcome == "pending"


async def test_closing_the_store_tries_the_pending_undos_once_more(
    own_server: RedisServer, clock: FakeClock
) -> None:
    """A pod stopped just after Redis came back, while the undo waited out its backoff, kept
    the charge for good (review finding)."""
    store = RedisStore(aioredis.Redis.from_url(own_server.url, socket_timeout=0.2), clock=clock)
    warm = stall_charge(clock, "warm")
    await store.begin_submit("a", warm, SubmitLimits(), hold_until=70)
    await store.release("a", warm)
    own_server.pause()
    try:
        with pytest.raises(StoreError):
            await store.begin_submit(
                "a", stall_charge(clock, "lost"), SubmitLimits(), hold_until=70
            )
        await asyncio.sleep(1.5)  # the undo fails meanwhile, and backs off
    finally:
        own_server.resume()
    await store.aclose()  # no sleep: the backoff has not run out
    assert store.undo_pending == 0
    assert await reserved(own_server) == (0, 0)


async def test_a_refund_that_failed_is_retried_until_redis_answers(
    store: RedisStore, own_server: RedisServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upstream refused the submit, but the connection broke before the refund left."""
    charge = stall_charge(clock, "refused")
    await store.begin_submit("a", charge, SubmitLimits(), hold_until=clock.now + 60)
    send = AbstractConnection.send_packed_command

    async def broken(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        monkeypatch.setattr(AbstractConnection, "send_packed_command", send)  # only this once
        raise redis.ConnectionError("connection reset before sending")

    monkeypatch.setattr(AbstractConnection, "send_packed_command", broken)
    with pytest.raises(StoreError):
        await store.release("a", charge)
    await until_undone(store)
    assert await reserved(own_server) == (0, 0)


async def test_a_reservation_that_reaches_redis_after_its_undo_reserves_nothing(
    store: RedisStore, own_server: RedisServer, clock: FakeClock
) -> None:
    charge = stall_charge(clock, "late")
    assert await store.undo_reservation(Reservation("a", charge)) is False  # nothing reserved
    with pytest.raises(StoreError, match="given up"):
        await store.begin_submit("a", charge, SubmitLimits(), hold_until=clock.now + 60)
    await until_undone(store)
    assert await reserved(own_server) == (0, 0)


async def append_with_its_reply_lost(
    server: RedisServer, store: RedisStore, batch: list[tuple[str | None, bytes]]
) -> None:
    """An append Redis runs while the client, timed out, takes it for failed."""
    server.pause()
    try:
        with pytest.raises(StoreError):
            await store.append_audit(batch)
    finally:
        server.resume()
    await asyncio.sleep(0.2)  # the stalled call runs before whatever comes next


@pytest.mark.parametrize("skew", [0.0, 120.0, -120.0])
async def test_an_audit_batch_sent_again_after_a_lost_reply_is_added_once(
    own_server: RedisServer, skew: float
) -> None:
    """The audit drain sends a failed batch again; a stalled Redis may have run it anyway.
    Whatever this process's clock says (it was used to look for the batch: two minutes
    ahead of Redis's, the batch was added twice; review finding)."""
    clock = FakeClock(time.time() + skew)
    store = RedisStore(aioredis.Redis.from_url(own_server.url, socket_timeout=0.3), clock=clock)
    await store.append_audit([(None, b'{"n":0}')])  # the script is loaded
    batch = [("a", b'{"n":1}'), (None, b'{"n":2}')]
    await append_with_its_reply_lost(own_server, store, batch)
    await store.append_audit(batch)
    await store.append_audit([("a", b'{"n":3}')])
    with redis.Redis.from_url(own_server.url) as client:
        assert client.xlen("gmigw:audit") == 4
        assert client.xlen("gmigw:{a}:audit") == 2
    await store.aclose()


async def test_an_audit_batch_that_never_reached_redis_is_added_when_sent_again(
    store: RedisStore, own_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.append_audit([(None, b'{"n":0}')])
    send = AbstractConnection.send_packed_command

    async def broken(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        monkeypatch.setattr(AbstractConnection, "send_packed_command", send)  # only this once
        raise redis.ConnectionError("connection reset before sending")

    monkeypatch.setattr(AbstractConnection, "send_packed_command", broken)
    batch = [("a", b'{"n":1}')]
    with pytest.raises(StoreError):
        await store.append_audit(batch)
    await store.append_audit(batch)
    with redis.Redis.from_url(own_server.url) as client:
        assert client.xlen("gmigw:audit") == 2
        assert client.xlen("gmigw:{a}:audit") == 1


async def test_a_resent_audit_batch_the_trim_cut_into_is_not_added_again(
    own_server: RedisServer, clock: FakeClock
) -> None:
    """The length trim took the batch's first events but not the rest: looking for the first
    one only, the resend added the rest a second time (review finding)."""
    url = own_server.url
    me = RedisStore(
        aioredis.Redis.from_url(url, socket_timeout=0.3), clock=clock, audit_max_events=200
    )
    other = RedisStore(aioredis.Redis.from_url(url), clock=clock, audit_max_events=200)
    await other.append_audit([(None, b'{"pre":%d}' % n) for n in range(80)])
    await me.append_audit([(None, b'{"mine":0}')])
    batch = [(None, b'{"b":%d}' % n) for n in range(50)]
    await append_with_its_reply_lost(own_server, me, batch)
    for round_number in range(4):
        await other.append_audit(
            [(None, b'{"o":%d,"r":%d}' % (n, round_number)) for n in range(50)]
        )
    with redis.Redis.from_url(url) as client:
        before = [fields[b"e"] for _, fields in client.xrange("gmigw:audit")]
        await me.append_audit(batch)
        after = [fields[b"e"] for _, fields in client.xrange("gmigw:audit")]
    assert batch[0][1] not in before  # the case at hand: the trim took the first event...
    assert any(body in before for _, body in batch)  # ...and kept some of the batch
    assert all(after.count(body) <= 1 for _, body in batch)
    await me.aclose()
    await other.aclose()


async def test_a_resent_audit_batch_is_looked_for_in_each_stream_from_its_own_ids(
    own_server: RedisServer, clock: FakeClock
) -> None:
    """Global ids ahead of Redis's clock (it stepped back): looking from the global stream's
    last id, a tenant stream missed the batch and held it twice (review finding)."""
    store = RedisStore(aioredis.Redis.from_url(own_server.url, socket_timeout=0.3), clock=clock)
    with redis.Redis.from_url(own_server.url) as client:
        client.xadd("gmigw:audit", {"e": b"{}"}, id=f"{int(time.time() * 1000) + 180_000}-0")
        await store.append_audit([("a", b'{"n":0}')])  # both streams written: the marks
        batch = [("a", b'{"n":1}')]
        await append_with_its_reply_lost(own_server, store, batch)
        await store.append_audit(batch)
        assert client.xlen("gmigw:{a}:audit") == 2
        assert client.xlen("gmigw:audit") == 3
    await store.aclose()


async def test_an_audit_stream_nobody_appends_to_expires_a_retention_after_the_last_event(
    store: RedisStore, own_server: RedisServer
) -> None:
    """Streams are trimmed only when appended to: a removed or idle tenant's trail (prompts
    included) stayed in Redis for ever, past the promised 30 days."""
    await store.append_audit([("gone", b"1"), (None, b"2")])
    retention_ms = 30 * 86400 * 1000
    with redis.Redis.from_url(own_server.url) as client:
        for stream in ("gmigw:{gone}:audit", "gmigw:audit"):
            assert retention_ms - 60_000 < client.pttl(stream) <= retention_ms


async def test_a_rate_key_outlives_its_tat_by_a_window(
    store: RedisStore, own_server: RedisServer
) -> None:
    """Redis expires it by its own clock: kept only until the TAT, a replica whose clock runs
    ahead dropped state the others still counted on (and a frozen test clock saw a burst admit
    one more than its limit when the run stalled for the few ms a rate key then lived)."""
    limits = SubmitLimits(submits_per_minute=600)  # a TAT 0.1 s ahead after one submit
    start = await store.begin_submit(
        "a", Charge("t1", 0, "d", "m", 1e10, 1e10), limits, hold_until=1e10
    )
    assert start.decision is not None
    assert start.decision.allowed
    assert (await store.take_read("a", 600)).allowed
    with redis.Redis.from_url(own_server.url) as client:
        for kind in ("submit", "read"):
            assert client.pttl(f"gmigw:{{a}}:rate:{kind}") > 60_000


async def test_a_slot_set_expires_a_day_after_its_latest_entry(
    store: RedisStore, own_server: RedisServer, clock: FakeClock
) -> None:
    """A tenant that stopped submitting (or was removed) kept its expired slots for ever."""
    day_ms = 86400 * 1000
    ends = clock.now + 86400
    limits = SubmitLimits(max_concurrent_jobs=5)
    await store.begin_submit("a", Charge("t1", 5, "d", "m", ends, ends), limits, hold_until=ends)
    await store.add_job(
        "a", "r1", "m", b"1", charge=Charge("t1", 5, "d", "m", ends, ends), deadline=ends
    )
    # A later submit held for less does not shorten the set's life; one held longer extends it.
    await store.begin_submit(
        "a", Charge("t2", 5, "d", "m", ends, ends), limits, hold_until=clock.now + 60
    )
    with redis.Redis.from_url(own_server.url) as client:
        assert 2 * day_ms - 60_000 < client.pttl("gmigw:{a}:slots") <= 2 * day_ms
        await store.add_job(
            "a", "r2", "m", b"2", charge=Charge("t2", 5, "d", "m", ends, ends), deadline=ends + 3600
        )
        assert client.pttl("gmigw:{a}:slots") > 2 * day_ms + 3_000_000


async def test_connections_redis_closed_while_pooled_are_not_handed_out(
    store: RedisStore, own_server: RedisServer
) -> None:
    """A Redis restart, or its ``timeout`` (or a proxy's) closing idle clients, left every
    pooled connection dead: redis-py 8's maintenance notifications ("auto") skip the check that
    reconnects such a connection, so each failed one request, for as long as the pod ran
    (review finding: 20 of 40 requests answered 503 after 6 s idle)."""

    async def burst() -> None:
        await asyncio.gather(*(store.get_job("a", f"r{n}") for n in range(20)))

    with redis.Redis.from_url(own_server.url) as client:
        client.config_set("timeout", 1)  # the server closes a client idle for 1 s
        try:
            await burst()  # a pool of many connections
            await asyncio.sleep(2.5)  # all closed by the server meanwhile
            await burst()
        finally:
            client.config_set("timeout", 0)
