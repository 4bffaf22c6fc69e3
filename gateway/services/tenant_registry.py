"""The live tenants config of this process, re-read when the file changes.

Kubernetes updates a Secret volume by atomically swapping a ``..data`` symlink, which can leave
mtimes and inode numbers of the visible path unchanged, so the watcher re-reads the file through
its path and compares the content digest instead. A file that fails validation is refused and the
previous config keeps serving (``gmigw_tenants_file_rejected`` says so); key revocation therefore
takes effect within one poll interval on every replica, with no longer-lived key cache anywhere.
"""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import structlog

from gateway import metrics
from gateway.services.tenants import (
    TenantConfigError,
    TenantsConfig,
    hash_key,
    load_tenants,
    parse_tenants,
    read_tenants_text,
)

__all__ = ("ReloadResult", "TenantRegistry")

_log = structlog.get_logger("gateway.tenants")


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """``changed``: a new config is now serving; ``error``: why the file was refused."""

    changed: bool
    error: str | None = None


class TenantRegistry:
    """Holds the current :class:`TenantsConfig` for a file (or a fixed one, for the demo).

    Readers take :attr:`current` once per request and use that snapshot throughout; a reload
    swaps the whole immutable config, so no request sees half of an old file and half of a new.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        initial: TenantsConfig | None = None,
        last_good: str | os.PathLike[str] | None = None,
    ) -> None:
        """Load ``path`` now unless ``initial`` is given.

        With ``last_good``, a copy of every config that loads is kept there, and a file refused
        now is served from that copy instead: ``serve`` gives its workers one, so a worker
        respawned while the file is bad starts with the config its siblings serve (it stopped
        in a loop, and granian took the healthy workers down with it).

        Raises:
            TenantConfigError: the file is unreadable or invalid, and no good copy is kept (the
                gateway must not start).
            ValueError: neither a path nor an initial config.
        """
        self._path = Path(path) if path is not None else None
        self._last_good = Path(last_good) if last_good is not None else None
        self._lock = threading.Lock()  # reload runs in a worker thread (watch) and in handlers
        self._refusal: tuple[str | None, str] | None = None  # (digest, error) last logged
        if initial is None:
            if self._path is None:
                raise ValueError("a tenants file path or an initial config is required")
            digest = None
            try:
                text = read_tenants_text(self._path)
                digest = hash_key(text)
                initial = self._accept(text)
            except TenantConfigError as refused:
                if self._last_good is None or not self._last_good.exists():
                    raise
                self._current = load_tenants(self._last_good)
                self._refused(digest, str(refused))
                return
        self._current = initial

    def _accept(self, text: str) -> TenantsConfig:
        """The file's config, a copy of it kept as the last good one (if one is kept).

        Raises:
            TenantConfigError: the text is invalid.
        """
        config = parse_tenants(text, source=str(self._path))
        if self._last_good is not None:
            kept = self._last_good.with_name(f"{self._last_good.name}.{os.getpid()}")
            try:
                kept.write_text(text, encoding="utf-8")
                kept.replace(self._last_good)  # atomic: a worker never reads half a copy
            except OSError as exc:  # serving goes on; only a respawn would miss the copy
                _log.warning("tenants_copy_not_kept", error=exc.strerror or type(exc).__name__)
        return config

    @classmethod
    def fixed(cls, config: TenantsConfig) -> TenantRegistry:
        """A registry with no file behind it: reloads change nothing, ``watch`` returns at once."""
        return cls(None, initial=config)

    @property
    def path(self) -> Path | None:
        """The watched file, or ``None`` for a fixed registry."""
        return self._path

    @property
    def current(self) -> TenantsConfig:
        """The config serving now."""
        return self._current

    def reload(self) -> ReloadResult:
        """Re-read the file now; an unreadable or invalid file keeps the current config.

        Each distinct refusal is logged once (``tenants_reload_failed``), so a watcher polling a
        bad file every few seconds does not flood the log; the result always carries the error.
        """
        if self._path is None:
            return ReloadResult(changed=False)
        with self._lock:
            try:
                text = read_tenants_text(self._path)
            except TenantConfigError as exc:
                return self._refused(None, str(exc))
            digest = hash_key(text)
            if digest == self._current.digest:
                self._recovered()
                return ReloadResult(changed=False)
            if self._refusal is not None and self._refusal[0] == digest:
                return ReloadResult(changed=False, error=self._refusal[1])  # same bad file
            try:
                config = self._accept(text)
            except TenantConfigError as exc:
                return self._refused(digest, str(exc))
            self._current = config
            self._refusal = None
            metrics.TENANTS_FILE_REJECTED.set(0)
        _log.info(
            "tenants_reloaded",
            path=os.fspath(self._path),
            tenants=len(config.tenants),
            admins=len(config.admins),
            digest=config.digest[:12],
        )
        return ReloadResult(changed=True)

    async def watch(self, interval: float = 2.0) -> None:
        """Reload on every content change, checking every ``interval`` seconds, until cancelled.

        Survives the file going missing for a while (the previous config keeps serving) and any
        unexpected error, which is logged: a dead watcher would silently stop key revocation.
        """
        if self._path is None:
            return
        while True:
            await asyncio.sleep(interval)
            try:
                # A thread, so a slow volume never stalls the event loop.
                await asyncio.to_thread(self.reload)
            except Exception as exc:  # noqa: BLE001 -- the watcher must outlive any surprise
                _log.error(
                    "tenants_reload_failed",
                    path=os.fspath(self._path),
                    error=f"unexpected {type(exc).__name__}: {str(exc)[:200]}",
                    serving="previous config",
                )

    def _caught_up(self) -> bool:
        """Whether the kept copy (the newest config any worker accepted) replaced this one's:
        a worker that missed a good version between two polls, the file refused since, kept
        an older config than its siblings, a revoked key included."""
        if self._last_good is None:
            return False
        try:
            text = read_tenants_text(self._last_good)
            if hash_key(text) == self._current.digest:
                return False
            self._current = parse_tenants(text, source=str(self._last_good))
        except TenantConfigError:  # no copy yet, or an unreadable one: keep what serves
            return False
        _log.info(
            "tenants_reloaded",
            path=os.fspath(self._last_good),
            tenants=len(self._current.tenants),
            admins=len(self._current.admins),
            digest=self._current.digest[:12],
        )
        return True

    def _refused(self, digest: str | None, error: str) -> ReloadResult:
        metrics.TENANTS_FILE_REJECTED.set(1)
        caught_up = self._caught_up()
        if self._refusal != (digest, error):
            self._refusal = (digest, error)
            _log.error(
                "tenants_reload_failed",
                path=os.fspath(self._path) if self._path else None,
                error=error,
                serving="previous config",
                tenants=len(self._current.tenants),
            )
        return ReloadResult(changed=caught_up, error=error)

    def _recovered(self) -> None:
        """The file is back to the serving content after a refusal (e.g. briefly missing)."""
        if self._refusal is not None:
            self._refusal = None
            metrics.TENANTS_FILE_REJECTED.set(0)
            _log.info(
                "tenants_reload_recovered", path=os.fspath(self._path) if self._path else None
            )
