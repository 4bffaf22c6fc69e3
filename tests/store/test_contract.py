"""Every sentence of ``gateway/store/base.py``, held against both backends."""

from __future__ import annotations

import asyncio

import pytest

from gateway.store import Store
from tests.store.conftest import RETENTION, FakeClock

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
    assert (await store.list_jobs("a")).total == 1


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
    assert again.created_at == clock.now
    assert again.model == M2


async def test_concurrent_adds_all_land(store: Store) -> None:
    await asyncio.gather(*(store.add_job("a", f"r{n:03}", M1, b"") for n in range(200)))
    page = await store.list_jobs("a", limit=1000)
    assert page.total == 200
    assert len({j.request_id for j in page.jobs}) == 200


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
    await store.cache_put("models", b'{"model_ids":[]}')
    assert await store.cache_get("models") == (b'{"model_ids":[]}', clock.now)
    clock.advance(5)
    await store.cache_put("models", b"v2")
    assert await store.cache_get("models") == (b"v2", clock.now)
    before = await store.cache_generation()
    assert await store.cache_invalidate() == before + 1
    assert await store.cache_generation() == before + 1
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
