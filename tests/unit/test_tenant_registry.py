"""The live tenants config: reloads, refusals, and Kubernetes-style symlink swaps."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from gateway.errors import Unauthorized
from gateway.services import tenant_registry
from gateway.services.tenant_registry import ReloadResult, TenantRegistry, _KeptCopy
from gateway.services.tenants import TenantConfigError, parse_tenants

NOW = datetime(2026, 11, 23, tzinfo=UTC)
INTERVAL = 0.05


def key_of(tenant_id: str) -> str:
    """Each test tenant's key is ``key-<id>``."""
    return f"key-{tenant_id}"


def tenants_text(*ids: str) -> str:
    entries = "".join(
        f"  - id: {t}\n    keys:\n      - id: {t}-k\n"
        f'        sha256: "{hashlib.sha256(key_of(t).encode()).hexdigest()}"\n'
        '    models: ["*"]\n'
        for t in ids
    )
    return "tenants:\n" + entries if ids else "tenants: []\n"


def sample(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


def events(logs: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


def assert_no_key_material(logs: Sequence[Mapping[str, Any]], *ids: str) -> None:
    text = repr(logs)
    for t in ids:
        assert key_of(t) not in text
        assert hashlib.sha256(key_of(t).encode()).hexdigest() not in text


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` until true; fail after ``timeout`` seconds rather than hang."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@asynccontextmanager
async def watching(registry: TenantRegistry) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(registry.watch(INTERVAL))
    try:
        yield task
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.fixture
def tenants_file(tmp_path: Path) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text(tenants_text("a"))
    return path


def test_a_bad_or_missing_initial_file_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text("tenants: [{id: BAD}]\n")
    with pytest.raises(TenantConfigError, match=r"tenants\[0\]: id: must be"):
        TenantRegistry(path)
    with pytest.raises(TenantConfigError, match="cannot read"):
        TenantRegistry(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="required"):
        TenantRegistry(None)


def test_a_registry_refused_its_file_at_start_serves_the_last_good_copy(
    tenants_file: Path, tmp_path: Path
) -> None:
    """How ``serve`` respawns a worker while the file is refused: its siblings keep serving the
    last good config, and so does it (raising, it stopped in a loop and granian took the
    healthy workers down with it)."""
    copy = tmp_path / "kept" / "tenants.yaml"
    copy.parent.mkdir()
    TenantRegistry(tenants_file, last_good=copy)  # a worker at start: the copy is kept
    tenants_file.write_text(tenants_text("a", "b"))
    sibling = TenantRegistry(tenants_file, last_good=copy)
    tenants_file.write_text("tenants: [oops\n")
    assert sibling.reload().error is not None
    with capture_logs() as logs:
        respawned = TenantRegistry(tenants_file, last_good=copy)
    assert sorted(respawned.current.tenants) == ["a", "b"]  # the newest good config
    assert events(logs, "tenants_reload_failed")[0]["serving"] == "previous config"
    assert sample("gmigw_tenants_file_rejected") == 1
    tenants_file.write_text(tenants_text("b"))
    assert respawned.reload().changed
    assert sorted(respawned.current.tenants) == ["b"]
    assert sample("gmigw_tenants_file_rejected") == 0
    tenants_file.write_text("tenants: [oops\n")
    with pytest.raises(TenantConfigError):  # nothing kept (not under serve): no start
        TenantRegistry(tenants_file, last_good=tmp_path / "none" / "tenants.yaml")


def test_a_worker_that_missed_a_good_file_catches_up_with_its_siblings_copy(
    tenants_file: Path, tmp_path: Path
) -> None:
    """A valid edit (revoking b's key) that one worker took before the file went bad, the
    other between two polls never saw: it kept serving the revoked key (review finding)."""
    copy = tmp_path / "tenants.kept.yaml"
    tenants_file.write_text(tenants_text("a", "b"))
    first, second = (TenantRegistry(tenants_file, last_good=copy) for _ in range(2))
    tenants_file.write_text(tenants_text("a"))  # b's key revoked
    assert first.reload().changed
    tenants_file.write_text("tenants: [oops\n")
    with capture_logs() as logs:
        result = second.reload()
        assert not second.reload().changed  # its next poll: nothing new, nothing logged
    assert (result.changed, result.error is not None) == (True, True)
    assert sorted(second.current.tenants) == ["a"]
    with pytest.raises(Unauthorized):
        second.current.authenticate(key_of("b"), NOW)
    assert len(events(logs, "tenants_reload_failed")) == 1
    with capture_logs() as logs:  # a respawn: one refusal logged, not one more at its next poll
        respawned = TenantRegistry(tenants_file, last_good=copy)
        respawned.reload()
    assert len(events(logs, "tenants_reload_failed")) == 1


def test_a_copy_that_could_not_be_kept_is_never_taken_for_a_newer_one(
    tenants_file: Path, tmp_path: Path
) -> None:
    """Left behind older than the config serving, a copy was adopted at the next refusal and
    a revoked key worked again (review finding)."""
    copy = tmp_path / "tenants.kept.yaml"
    tenants_file.write_text(tenants_text("a", "b"))
    worker = TenantRegistry(tenants_file, last_good=copy)
    (tmp_path / f"tenants.kept.yaml.{os.getpid()}").mkdir()  # the next copy cannot be written
    tenants_file.write_text(tenants_text("a"))  # b's key revoked
    with capture_logs() as logs:
        assert worker.reload().changed
    assert events(logs, "tenants_copy_not_kept")
    tenants_file.write_text("tenants: [oops\n")
    assert not worker.reload().changed
    with pytest.raises(Unauthorized):
        worker.current.authenticate(key_of("b"), NOW)


def test_a_slower_worker_never_puts_an_older_file_back_in_the_copy(
    tenants_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One worker read a file, another read the newer one that replaced it and kept it; the
    first, slower, then kept the older file over it, and the second took it back at the next
    refusal: a revoked key worked again (review finding)."""
    copy = tmp_path / "tenants.kept.yaml"
    tenants_file.write_text(tenants_text("a", "b"))
    slow, fast = (TenantRegistry(tenants_file, last_good=copy) for _ in range(2))
    tenants_file.write_text(tenants_text("a", "c"))
    parse = tenant_registry.parse_tenants

    def while_parsing_the_newer_file_lands(text: str, *, source: str) -> Any:
        config = parse(text, source=source)
        if "id: c" in text and "id: b" in text:  # once, during the slow worker's parse
            tenants_file.write_text(tenants_text("a"))  # b's key revoked
            assert fast.reload().changed
        return config

    tenants_file.write_text(tenants_text("a", "b", "c"))
    monkeypatch.setattr(tenant_registry, "parse_tenants", while_parsing_the_newer_file_lands)
    assert slow.reload().changed  # it serves what it read
    monkeypatch.undo()
    tenants_file.write_text("tenants: [oops\n")
    fast.reload()
    with pytest.raises(Unauthorized):
        fast.current.authenticate(key_of("b"), NOW)
    slow.reload()  # the slower worker catches up with the newer file instead
    assert sorted(slow.current.tenants) == ["a"]


def works(registry: TenantRegistry, tenant: str) -> bool:
    try:
        registry.current.authenticate(key_of(tenant), NOW)
    except Unauthorized:
        return False
    return True


def test_a_file_reverted_on_purpose_is_the_newest_one(tenants_file: Path, tmp_path: Path) -> None:
    """Versions told apart by content: a worker already serving the reverted file kept nothing,
    and the copy of the version it undid brought a revoked key back (review finding)."""
    copy = tmp_path / "tenants.kept.yaml"
    first, second = (TenantRegistry(tenants_file, last_good=copy) for _ in range(2))
    tenants_file.write_text(tenants_text("a", "b"))
    assert first.reload().changed  # the second worker misses it
    tenants_file.write_text(tenants_text("a"))  # reverted: b's key revoked
    assert not second.reload().changed
    tenants_file.write_text("tenants: [oops\n")
    for worker in (first, second, TenantRegistry(tenants_file, last_good=copy)):
        worker.reload()
        assert not works(worker, "b")


def test_a_good_file_read_just_before_a_bad_one_lands_is_kept(
    tenants_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kept only while the file still held it, a version the next (broken) edit replaced
    within a read was never kept: siblings that missed it kept a revoked key (review finding)."""
    copy = tmp_path / "tenants.kept.yaml"
    tenants_file.write_text(tenants_text("a", "b"))
    first, second = (TenantRegistry(tenants_file, last_good=copy) for _ in range(2))
    parse = tenant_registry.parse_tenants

    def the_bad_edit_lands(text: str, *, source: str) -> Any:
        if source == str(tenants_file):
            tenants_file.write_text("tenants: [oops\n")
        return parse(text, source=source)

    tenants_file.write_text(tenants_text("a"))  # b's key revoked
    monkeypatch.setattr(tenant_registry, "parse_tenants", the_bad_edit_lands)
    assert first.reload().changed
    monkeypatch.undo()
    second.reload()
    assert not works(second, "b")
    assert not works(TenantRegistry(tenants_file, last_good=copy), "b")


def no_lock(_: Any) -> Any:
    raise OSError(errno.EMFILE, "Too many open files")


def test_a_worker_that_cannot_take_the_lock_leaves_a_siblings_copy(
    tenants_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its failed keep removed the copy, a sibling's newer one included: a worker that missed
    that version kept a revoked key, and a respawn could not start (review finding)."""
    copy = tmp_path / "tenants.kept.yaml"
    tenants_file.write_text(tenants_text("a", "b"))
    first, second, third = (TenantRegistry(tenants_file, last_good=copy) for _ in range(3))
    tenants_file.write_text(tenants_text("a", "b", "c"))
    parse = tenant_registry.parse_tenants

    def a_sibling_keeps_a_newer_file(text: str, *, source: str) -> Any:
        if source == str(tenants_file) and "id: c" in text:
            tenants_file.write_text(tenants_text("a"))  # b's key revoked
            assert second.reload().changed
            monkeypatch.setattr(_KeptCopy, "_locked", no_lock)  # for the first's keep
        return parse(text, source=source)

    monkeypatch.setattr(tenant_registry, "parse_tenants", a_sibling_keeps_a_newer_file)
    assert first.reload().changed
    monkeypatch.undo()
    tenants_file.write_text("tenants: [oops\n")
    third.reload()
    assert not works(third, "b")
    assert not works(TenantRegistry(tenants_file, last_good=copy), "b")


def test_a_poll_without_a_ticket_does_not_stop_a_worker_catching_up(
    tenants_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One unchanged poll that could not take a ticket marked the worker's config unordered,
    and it never took up the revocation it missed (review finding)."""
    copy = tmp_path / "tenants.kept.yaml"
    tenants_file.write_text(tenants_text("a", "b"))
    first, second = (TenantRegistry(tenants_file, last_good=copy) for _ in range(2))
    monkeypatch.setattr(_KeptCopy, "_locked", no_lock)
    assert not first.reload().changed
    monkeypatch.undo()
    tenants_file.write_text(tenants_text("a"))  # b's key revoked; the first misses it
    assert second.reload().changed
    tenants_file.write_text("tenants: [oops\n")
    first.reload()
    assert not works(first, "b")


def test_initial_config_is_used_without_reading_the_file(tmp_path: Path) -> None:
    config = parse_tenants(tenants_text("a"))
    registry = TenantRegistry(tmp_path / "not-yet.yaml", initial=config)
    assert registry.current is config
    assert registry.path == tmp_path / "not-yet.yaml"


def test_reload_unchanged_good_and_bad(tenants_file: Path) -> None:
    registry = TenantRegistry(tenants_file)
    first = registry.current
    with capture_logs() as logs:
        assert registry.reload() == ReloadResult(changed=False)
        assert registry.current is first
        tenants_file.write_text(tenants_text("a", "b"))
        assert registry.reload() == ReloadResult(changed=True)
        assert set(registry.current.tenants) == {"a", "b"}
        tenants_file.write_text("tenants: [{id: a}]\n")
        bad = registry.reload()
        assert bad.changed is False
        assert bad.error is not None
        assert "tenants[0] (a): keys: required" in bad.error
        assert set(registry.current.tenants) == {"a", "b"}
        assert registry.reload() == bad  # the same bad file: same answer, logged once
    assert [e["event"] for e in logs] == ["tenants_reloaded", "tenants_reload_failed"]
    reloaded, failed = logs
    assert (reloaded["tenants"], reloaded["admins"], reloaded["log_level"]) == (2, 0, "info")
    assert failed["error"] == bad.error
    assert failed["log_level"] == "error"
    assert_no_key_material(logs, "a", "b")


def test_a_missing_file_keeps_the_config_and_recovers(tenants_file: Path) -> None:
    registry = TenantRegistry(tenants_file)
    content = tenants_file.read_text()
    with capture_logs() as logs:
        tenants_file.unlink()
        missing = registry.reload()
        assert missing.changed is False
        assert missing.error == f"{tenants_file}: cannot read: No such file or directory"
        assert registry.reload() == missing
        registry.current.authenticate(key_of("a"), NOW)
        tenants_file.write_text(content)
        assert registry.reload() == ReloadResult(changed=False)
    assert [e["event"] for e in logs] == ["tenants_reload_failed", "tenants_reload_recovered"]


def test_a_revoked_key_stops_working_after_reload(tenants_file: Path) -> None:
    registry = TenantRegistry(tenants_file)
    registry.current.authenticate(key_of("a"), NOW)
    tenants_file.write_text(tenants_text("b"))
    assert registry.reload().changed
    with pytest.raises(Unauthorized):
        registry.current.authenticate(key_of("a"), NOW)
    assert registry.current.authenticate(key_of("b"), NOW).tenant.id == "b"


async def test_fixed_registry_never_reloads_and_has_nothing_to_watch() -> None:
    config = parse_tenants(tenants_text("a"))
    registry = TenantRegistry.fixed(config)
    assert registry.path is None
    assert registry.reload() == ReloadResult(changed=False)
    assert registry.current is config
    async with asyncio.timeout(1):
        await registry.watch(INTERVAL)  # returns at once


async def test_watch_picks_up_a_change(tenants_file: Path) -> None:
    registry = TenantRegistry(tenants_file)
    with capture_logs() as logs:
        async with watching(registry):
            tenants_file.write_text(tenants_text("a", "b"))
            await wait_for(lambda: "b" in registry.current.tenants)
    assert [e["tenants"] for e in events(logs, "tenants_reloaded")] == [2]


async def test_watch_survives_a_briefly_missing_file(tenants_file: Path) -> None:
    registry = TenantRegistry(tenants_file)
    with capture_logs() as logs:
        async with watching(registry):
            tenants_file.unlink()
            await wait_for(lambda: bool(events(logs, "tenants_reload_failed")))
            assert set(registry.current.tenants) == {"a"}
            tenants_file.write_text(tenants_text("a", "c"))
            await wait_for(lambda: "c" in registry.current.tenants)
    assert len(events(logs, "tenants_reload_failed")) == 1


async def test_watch_survives_an_unexpected_error(
    tenants_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = TenantRegistry(tenants_file)
    real_reload = registry.reload
    calls = 0

    def flaky() -> ReloadResult:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("disk on fire")
        return real_reload()

    monkeypatch.setattr(registry, "reload", flaky)
    with capture_logs() as logs:
        async with watching(registry):
            await wait_for(lambda: calls >= 1)
            tenants_file.write_text(tenants_text("a", "b"))
            await wait_for(lambda: "b" in registry.current.tenants)
    [failed] = events(logs, "tenants_reload_failed")
    assert failed["error"] == "unexpected RuntimeError: disk on fire"


async def test_watch_follows_a_kubernetes_secret_symlink_swap(tmp_path: Path) -> None:
    # The kubelet's layout: tenants.yaml -> ..data/tenants.yaml, ..data -> ..<timestamp>/
    mount = tmp_path / "mount"
    mount.mkdir()
    first = mount / "..2026_11_23_12_00_00.1"
    first.mkdir()
    (first / "tenants.yaml").write_text(tenants_text("a"))
    (mount / "..data").symlink_to(first.name)
    (mount / "tenants.yaml").symlink_to("..data/tenants.yaml")
    registry = TenantRegistry(mount / "tenants.yaml")

    def swap(name: str, text: str) -> None:
        target = mount / name
        target.mkdir()
        (target / "tenants.yaml").write_text(text)
        (mount / "..data_tmp").symlink_to(target.name)
        os.replace(mount / "..data_tmp", mount / "..data")  # atomic rename, as the kubelet does

    with capture_logs() as logs:
        async with watching(registry):
            swap("..2026_11_23_12_01_00.2", tenants_text("a", "b"))
            await wait_for(lambda: "b" in registry.current.tenants)
            swap("..2026_11_23_12_02_00.3", "tenants: [valid")
            await wait_for(lambda: bool(events(logs, "tenants_reload_failed")))
            assert set(registry.current.tenants) == {"a", "b"}
            swap("..2026_11_23_12_03_00.4", tenants_text("b"))
            await wait_for(lambda: "a" not in registry.current.tenants)
    assert [e["tenants"] for e in events(logs, "tenants_reloaded")] == [2, 1]
    assert "not valid YAML at line 1" in events(logs, "tenants_reload_failed")[0]["error"]
    assert_no_key_material(logs, "a", "b")
