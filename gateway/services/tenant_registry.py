"""The live tenants config of this process, re-read when the file changes.

Kubernetes updates a Secret volume by swapping a ``..data`` symlink, which can leave mtimes
unchanged, so the watcher compares the file's content digest instead. A file that fails
validation is refused and the previous config keeps serving; key revocation therefore takes
effect within one poll interval on every replica, with no longer-lived key cache anywhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import structlog

from gateway.services.tenants import TenantConfigError, TenantsConfig, load_tenants

__all__ = ("ReloadResult", "TenantRegistry")

_log = structlog.get_logger("gateway.tenants")


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """``changed``: a new config is now serving; ``error``: why the file was refused."""

    changed: bool
    error: str | None = None


class TenantRegistry:
    """Holds the current :class:`TenantsConfig` for a file (or a fixed one, for the demo)."""

    def __init__(
        self, path: str | os.PathLike[str] | None, *, initial: TenantsConfig | None = None
    ) -> None:
        self._path = Path(path) if path is not None else None
        if initial is None:
            if self._path is None:
                raise ValueError("a tenants file path or an initial config is required")
            initial = load_tenants(self._path)
        self._current = initial

    @classmethod
    def fixed(cls, config: TenantsConfig) -> TenantRegistry:
        """A registry that never reloads (no file behind it)."""
        return cls(None, initial=config)

    @property
    def current(self) -> TenantsConfig:
        return self._current

    def reload(self) -> ReloadResult:
        """Re-read the file now; an invalid file keeps the current config."""
        if self._path is None:
            return ReloadResult(changed=False)
        try:
            digest = hashlib.sha256(self._path.read_bytes()).hexdigest()
        except OSError as exc:
            return self._refused(f"cannot read {self._path}: {exc.strerror}")
        if digest == self._current.digest:
            return ReloadResult(changed=False)
        try:
            config = load_tenants(self._path)
        except TenantConfigError as exc:
            return self._refused(str(exc))
        self._current = config
        _log.info("tenants_reloaded", tenants=len(config.tenants), admins=len(config.admins))
        return ReloadResult(changed=True)

    async def watch(self, interval: float) -> None:
        """Reload on every content change, checking each ``interval`` seconds, until cancelled."""
        if self._path is None:
            return
        last_error: str | None = None
        while True:
            await asyncio.sleep(interval)
            result = self.reload()
            if result.error != last_error and result.error is not None:
                _log.error("tenants_reload_failed", error=result.error, serving="previous config")
            last_error = result.error

    def _refused(self, error: str) -> ReloadResult:
        return ReloadResult(changed=False, error=error)
