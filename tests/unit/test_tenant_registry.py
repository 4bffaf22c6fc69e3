"""The live tenants config: reloads, refusals, and Kubernetes-style symlink swaps."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.services.tenant_registry import TenantRegistry
from gateway.services.tenants import TenantConfigError, parse_tenants


def tenants_text(*ids: str) -> str:
    entries = "".join(
        f"  - id: {t}\n    keys:\n      - id: {t}-k\n"
        f'        sha256: "{hashlib.sha256(t.encode()).hexdigest()}"\n    models: ["*"]\n'
        for t in ids
    )
    return "tenants:\n" + entries if ids else "tenants: []\n"


async def wait_for(condition: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def test_a_bad_initial_file_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text("tenants: [{id: BAD}]\n")
    with pytest.raises(TenantConfigError):
        TenantRegistry(path)


def test_reload_good_unchanged_and_bad(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(tenants_text("a"))
    registry = TenantRegistry(path)
    assert registry.reload().changed is False
    path.write_text(tenants_text("a", "b"))
    assert registry.reload().changed is True
    assert set(registry.current.tenants) == {"a", "b"}
    path.write_text("tenants: [{id: a}]\n")
    result = registry.reload()
    assert result.changed is False
    assert result.error is not None
    assert "keys: required" in result.error
    assert set(registry.current.tenants) == {"a", "b"}
    path.unlink()
    assert "cannot read" in (registry.reload().error or "")
    assert set(registry.current.tenants) == {"a", "b"}


def test_fixed_registry_never_reloads() -> None:
    registry = TenantRegistry.fixed(parse_tenants(tenants_text("a")))
    assert registry.reload().changed is False
    assert set(registry.current.tenants) == {"a"}


async def test_watch_follows_a_kubernetes_secret_symlink_swap(tmp_path: Path) -> None:
    mount = tmp_path / "mount"
    mount.mkdir()
    first = mount / "..2026_11_23_1"
    first.mkdir()
    (first / "tenants.yaml").write_text(tenants_text("a"))
    (mount / "..data").symlink_to(first.name)
    (mount / "tenants.yaml").symlink_to("..data/tenants.yaml")
    registry = TenantRegistry(mount / "tenants.yaml")
    with capture_logs() as logs:
        watcher = asyncio.create_task(registry.watch(0.01))
        second = mount / "..2026_11_23_2"
        second.mkdir()
        (second / "tenants.yaml").write_text(tenants_text("a", "b"))
        (mount / "..data_tmp").symlink_to(second.name)
        os.replace(mount / "..data_tmp", mount / "..data")  # atomic, as kubelet does
        await wait_for(lambda: "b" in registry.current.tenants)
        (second / "tenants.yaml").write_text("not: [valid")
        await wait_for(lambda: any(e["event"] == "tenants_reload_failed" for e in logs))
        watcher.cancel()
    assert set(registry.current.tenants) == {"a", "b"}
    assert [e["event"] for e in logs].count("tenants_reloaded") == 1
    assert not any("sha256" in str(e) for e in logs)
