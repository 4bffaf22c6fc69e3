"""Every sentence of ``gateway/store/base.py``, held against both backends."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from gateway.store import JobPage, Store, StoredJob
from tests.store.conftest import RETENTION, FakeClock

AUDIT_RETENTION = 30 * 86400  # both backends' default

M1 = "Kling-Text2Video-V2-Master"
M2 = "Veo3"


async def test_owner_can_get_the_job(store: Store, clock: FakeClock) -> None:
    added = await store.add_job("a", "r1", M1, b'{"status":"queued"}')
    assert added.created_at == clock.now
    job = await store.get_job("a", "r1")
    assert job is not None
    assert (job.tenant, job.request_id, job.model, job.record) == (
        "a",
        "r1",
        M1,
        b'{"status":"queued"}',
    )
    assert job.created_at == clock.now


async def test_unknown_and_foreign_ids_are_none(store: Store) -> None:
    await store.add_job("a", "r1", M1, b"{}")
    assert await store.get_job("b", "r1") is None
    assert await store.get_job("a", "r2") is None


async def test_same_request_id_under_two_tenants_is_two_jobs(store: Store) -> None:
    await store.add_job("a", "same", M1, b"a")
    await store.add_job("b", "same", M2, b"b")
    job_a, job_b = await store.get_job("a", "same"), await store.get_job("b", "same")
    assert job_a is not None
    assert job_b is not None
    assert (job_a.record, job_a.model) == (b"a", M1)
    assert (job_b.record, job_b.model) == (b"b", M2)
    assert await store.update_job_record("b", "same", b"b2")
    job_a = await store.get_job("a", "same")
    assert job_a is not None
    assert job_a.record == b"a"
    for tenant, model in (("a", M1), ("b", M2)):
        page = await store.list_jobs(tenant)
        assert [(j.tenant, j.model) for j in page.jobs] == [(tenant, model)]
        assert page.total == 1


async def test_a_tenant_lists_only_its_own_jobs(store: Store) -> None:
    for n in range(3):
        await store.add_job("a", f"a{n}", M1, b"")
    await store.add_job("b", "b0", M1, b"")
    assert (await store.list_jobs("b")).total == 1
    assert (await store.list_jobs("b", model=M1)).total == 1
    assert (await store.list_jobs("a", model=M1)).total == 3
    assert await store.list_jobs("nobody") == JobPage([], 0)


async def test_re_adding_keeps_created_at_and_position(store: Store, clock: FakeClock) -> None:
    await store.add_job("a", "r1", M1, b"first")
    first_created = clock.now
    clock.advance(10)
    await store.add_job("a", "r2", M1, b"x")
    clock.advance(10)
    again = await store.add_job("a", "r1", M1, b"second")
    assert again.created_at == first_created
    assert again.record == b"second"
    page = await store.list_jobs("a")
    assert [j.request_id for j in page.jobs] == ["r2", "r1"]
    assert page.total == 2


async def test_re_adding_under_another_model_keeps_the_original(
    store: Store, clock: FakeClock
) -> None:
    first = await store.add_job("a", "r1", M1, b"first")
    clock.advance(1)
    again = await store.add_job("a", "r1", M2, b"second")
    assert again == StoredJob("a", "r1", M1, first.created_at, b"second")
    assert await store.get_job("a", "r1") == again
    assert (await store.list_jobs("a", model=M1)).jobs == [again]
    assert await store.list_jobs("a", model=M2) == JobPage([], 0)


async def test_add_answers_what_get_returns(store: Store) -> None:
    added = await store.add_job("a", "r1", M1, b'{"status":"queued"}')
    assert await store.get_job("a", "r1") == added
    assert (await store.list_jobs("a")).jobs == [added]


async def test_a_final_record_is_never_replaced(store: Store) -> None:
    """DESIGN §5: a job's last record is immutable; a slower, older answer arrives too late."""
    await store.add_job("a", "r1", M1, b"queued")
    assert await store.update_job_record("a", "r1", b"processing")
    assert await store.update_job_record("a", "r1", b"success", final=True)
    assert await store.update_job_record("a", "r1", b"processing (late)") is True  # owned
    await store.add_job("a", "r1", M1, b"queued (written back after an outage)")
    job = await store.get_job("a", "r1")
    assert job is not None
    assert job.record == b"success"


async def test_update_replaces_only_owned_records(store: Store) -> None:
    await store.add_job("a", "r1", M1, b"old")
    assert await store.update_job_record("a", "r1", b"new") is True
    assert await store.update_job_record("b", "r1", b"evil") is False
    assert await store.update_job_record("a", "missing", b"x") is False
    job = await store.get_job("a", "r1")
    assert job is not None
    assert job.record == b"new"
    assert await store.get_job("b", "r1") is None
    assert await store.get_job("a", "missing") is None
    assert await store.list_jobs("b") == JobPage([], 0)
    assert (await store.list_jobs("a")).total == 1


async def test_list_is_newest_first_with_larger_id_first_on_ties(
    store: Store, clock: FakeClock
) -> None:
    await store.add_job("a", "old", M1, b"")
    clock.advance(1)
    for request_id in ("b-tie", "c-tie", "a-tie"):
        await store.add_job("a", request_id, M1, b"")
    page = await store.list_jobs("a")
    assert [j.request_id for j in page.jobs] == ["c-tie", "b-tie", "a-tie", "old"]


async def test_model_filter_and_totals(store: Store, clock: FakeClock) -> None:
    for n in range(3):
        await store.add_job("a", f"k{n}", M1, b"")
        clock.advance(1)
    await store.add_job("a", "v", M2, b"")
    only_veo = await store.list_jobs("a", model=M2)
    assert [j.request_id for j in only_veo.jobs] == ["v"]
    assert only_veo.total == 1
    kling = await store.list_jobs("a", model=M1, limit=2)
    assert [j.request_id for j in kling.jobs] == ["k2", "k1"]
    assert kling.total == 3
    assert (await store.list_jobs("a", model="kling-text2video-v2-master")).total == 0
    assert await store.list_jobs("a", model="") == JobPage([], 0)
    assert (await store.list_jobs("a")).total == 4


@pytest.mark.parametrize(
    ("limit", "offset", "expected"),
    [(2, 0, ["j4", "j3"]), (2, 2, ["j2", "j1"]), (10, 4, ["j0"]), (3, 5, []), (1, 99, [])],
)
async def test_limit_and_offset(
    store: Store, clock: FakeClock, limit: int, offset: int, expected: list[str]
) -> None:
    for n in range(5):
        await store.add_job("a", f"j{n}", M1, b"")
        clock.advance(1)
    page = await store.list_jobs("a", limit=limit, offset=offset)
    assert [j.request_id for j in page.jobs] == expected
    assert page.total == 5


async def test_jobs_vanish_after_retention(store: Store, clock: FakeClock) -> None:
    await store.add_job("a", "old", M1, b"")
    clock.advance(RETENTION / 2)
    await store.add_job("a", "new", M1, b"")
    clock.advance(RETENTION / 2 - 0.001)
    assert await store.get_job("a", "old") is not None
    clock.advance(0.001)
    assert await store.get_job("a", "old") is None
    assert await store.update_job_record("a", "old", b"x") is False
    page = await store.list_jobs("a")
    assert [j.request_id for j in page.jobs] == ["new"]
    assert page.total == 1
    assert (await store.list_jobs("a", model=M1)).total == 1


async def test_expired_id_can_be_added_afresh(store: Store, clock: FakeClock) -> None:
    await store.add_job("a", "r", M1, b"old")
    clock.advance(RETENTION)
    again = await store.add_job("a", "r", M2, b"new")
    assert again == StoredJob("a", "r", M2, clock.now, b"new")
    assert await store.list_jobs("a", model=M1) == JobPage([], 0)
    assert await store.list_jobs("a", model=M2) == JobPage([again], 1)
    assert await store.list_jobs("a") == JobPage([again], 1)


async def test_re_adding_does_not_extend_retention(store: Store, clock: FakeClock) -> None:
    await store.add_job("a", "r", M1, b"1")
    clock.advance(RETENTION - 1)
    await store.add_job("a", "r", M1, b"2")
    clock.advance(1)
    assert await store.get_job("a", "r") is None
    assert await store.list_jobs("a") == JobPage([], 0)


# (created_at, retention): instants near created_at + retention where ``created + retention <=
# now`` and ``created <= now - retention`` disagree in floating point. Lookups, the index and
# the totals must still agree with each other at every instant.
FLOAT_EDGES = [
    (0.9014274576114836, 22322.111021323864),
    (0.13436424411240122, 25.50690257394217),
    (93.64405867994596, 507717.2505113161),
]


@pytest.mark.parametrize(
    ("created", "retention"), FLOAT_EDGES, ids=[f"edge{n}" for n in range(len(FLOAT_EDGES))]
)
async def test_retention_edge_is_the_same_for_lookups_and_lists(
    store: Store, clock: FakeClock, created: float, retention: float
) -> None:
    clock.now = created
    await store.add_job("a", "r", M1, b"")
    instant = math.nextafter(created + retention, -math.inf)
    for _ in range(5):
        clock.now = instant
        found = await store.get_job("a", "r") is not None
        page, by_model = await store.list_jobs("a"), await store.list_jobs("a", model=M1)
        assert (page.total, len(page.jobs)) == (int(found), int(found)), instant
        assert (by_model.total, len(by_model.jobs)) == (int(found), int(found)), instant
        instant = math.nextafter(instant, math.inf)
    assert not found


async def test_concurrent_adds_all_land(store: Store) -> None:
    await asyncio.gather(*(store.add_job("a", f"r{n:03}", M1, b"") for n in range(200)))
    page = await store.list_jobs("a", limit=1000)
    assert page.total == 200
    assert len({j.request_id for j in page.jobs}) == 200


async def test_concurrent_re_adds_of_one_id_make_one_job(store: Store) -> None:
    records = [str(n).encode() for n in range(50)]
    added = await asyncio.gather(*(store.add_job("a", "r", M1, rec) for rec in records))
    assert len({job.created_at for job in added}) == 1
    page = await store.list_jobs("a")
    assert page.total == 1
    assert page.jobs[0].record in records


async def test_ping_and_close(store: Store) -> None:
    await store.ping()
    await store.aclose()
    await store.aclose()


async def test_one_refresh_claim_per_window(store: Store, clock: FakeClock) -> None:
    claims = await asyncio.gather(*(store.claim_refresh("a", "r1", ttl=1.0) for _ in range(50)))
    assert claims.count(True) == 1
    assert await store.claim_refresh("a", "r2", ttl=1.0)
    assert await store.claim_refresh("b", "r1", ttl=1.0)
    clock.advance(0.999)
    assert not await store.claim_refresh("a", "r1", ttl=1.0)
    clock.advance(0.001)
    assert await store.claim_refresh("a", "r1", ttl=1.0)


async def test_shared_cache_entries_and_invalidation(store: Store, clock: FakeClock) -> None:
    assert await store.cache_get("models") is None
    before = await store.cache_generation()
    assert await store.cache_put("models", b'{"model_ids":[]}', generation=before)
    assert await store.cache_get("models") == (b'{"model_ids":[]}', clock.now)
    clock.advance(5)
    assert await store.cache_put("models", b"v2", generation=before)
    assert await store.cache_get("models") == (b"v2", clock.now)
    assert await store.cache_invalidate() == before + 1
    assert await store.cache_generation() == before + 1
    assert await store.cache_get("models") is None
    # A value asked for before the invalidation must not bring back what it dropped.
    assert not await store.cache_put("models", b"v2", generation=before)
    assert await store.cache_get("models") is None


async def test_audit_trails_newest_first_with_cursors(store: Store) -> None:
    await store.append_audit([("a", b"1"), ("b", b"2"), (None, b"3")])
    await store.append_audit([("a", b"4")])
    everything = await store.read_audit(None, before=None, count=10)
    assert [body for _, body in everything] == [b"4", b"3", b"2", b"1"]
    first = await store.read_audit("a", before=None, count=1)
    assert [body for _, body in first] == [b"4"]
    rest = await store.read_audit("a", before=first[-1][0], count=10)
    assert [body for _, body in rest] == [b"1"]
    assert await store.read_audit("a", before=rest[-1][0], count=10) == []
    assert await store.read_audit("nobody", before=None, count=10) == []


async def test_audit_entries_appended_before_a_time_can_be_left_out(
    store: Store, clock: FakeClock
) -> None:
    """(Redis stamps entries with its own time, hence the real clock.)"""
    clock.now = time.time()
    await store.append_audit([("a", b"old")])
    await asyncio.sleep(0.01)
    cut = clock.now = time.time()
    await asyncio.sleep(0.01)
    clock.now = time.time()
    await store.append_audit([("a", b"new")])
    found = await store.read_audit("a", before=None, count=10, written_after=cut)
    assert [body for _, body in found] == [b"new"]
    assert await store.read_audit("a", before=found[0][0], count=10, written_after=cut) == []
    for long_ago in (0.0, -60.0):  # since the epoch, less the clock slack
        everything = await store.read_audit("a", before=None, count=10, written_after=long_ago)
        assert [body for _, body in everything] == [b"new", b"old"]


async def test_audit_events_past_the_retention_are_not_read_from_an_idle_trail(
    store: Store, clock: FakeClock
) -> None:
    """Trails are trimmed when appended to; one nobody appends to still honours the
    retention when read. (Redis stamps entries with its own time, hence the real clock.)"""
    clock.now = time.time()
    await store.append_audit([("a", b"1")])
    clock.advance(AUDIT_RETENTION - 60)
    assert [body for _, body in await store.read_audit("a", before=None, count=10)] == [b"1"]
    clock.advance(120)
    assert await store.read_audit("a", before=None, count=10) == []
    assert await store.read_audit(None, before=None, count=10) == []


@pytest.mark.parametrize(("limit", "offset"), [(0, 0), (-1, 0), (1, -1)])
async def test_a_page_the_caller_should_have_refused_is_an_error(
    store: Store, limit: int, offset: int
) -> None:
    await store.add_job("a", "r", M1, b"")
    with pytest.raises(ValueError, match="limit must be"):
        await store.list_jobs("a", limit=limit, offset=offset)


async def test_the_data_id_is_the_first_candidate_offered(store: Store) -> None:
    assert await store.data_id("first") == "first"
    assert await store.data_id("second") == "first"
