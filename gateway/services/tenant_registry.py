"""The live tenants config of this process, re-read when the file changes.

Kubernetes updates a Secret volume by atomically swapping a ``..data`` symlink, which can leave
mtimes and inode numbers of the visible path unchanged, so the watcher re-reads the file through
its path and compares the content digest instead. A file that fails validation is refused and the
previous config keeps serving (``gmigw_tenants_file_rejected`` says so); key revocation therefore
takes effect within one poll interval on every replica, with no longer-lived key cache anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
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

        With ``last_good``, the last good file is kept there (``_KeptCopy``), and a file refused
        now is served from that copy instead: ``serve`` gives its workers one, so a worker
        respawned while the file is bad starts with the config its siblings serve (it stopped
        in a loop, and granian took the healthy workers down with it).

        Raises:
            TenantConfigError: the file is unreadable or invalid, and no good copy is kept (the
                gateway must not start).
            ValueError: neither a path nor an initial config.
        """
        self._path = Path(path) if path is not None else None
        self._copy = _KeptCopy(Path(last_good)) if last_good is not None else None
        self._copy_seen: str | None = None  # a copy with this digest is no newer than ours
        self._lock = threading.Lock()  # reload runs in a worker thread (watch) and in handlers
        self._refusal: tuple[str | None, str] | None = None  # (digest, error) last logged
        if initial is None:
            if self._path is None:
                raise ValueError("a tenants file path or an initial config is required")
            digest = None
            try:
                before = self._copy_digest()
                text = read_tenants_text(self._path)
                digest = hash_key(text)
                initial = self._accept(text, before)
            except TenantConfigError as refused:
                kept = self._copy.read() if self._copy is not None else None
                if kept is None:
                    raise
                self._current = parse_tenants(kept, source="the last good copy")
                self._copy_seen = self._current.digest
                self._refused(digest, str(refused))
                return
        self._current = initial

    def _accept(self, text: str, before: str | None) -> TenantsConfig:
        """The file's config, kept as the last good copy (if one is kept). ``before``: the
        copy's digest before the file was read; one kept since then is of a newer file.

        Raises:
            TenantConfigError: the text is invalid.
        """
        config = parse_tenants(text, source=str(self._path))
        if self._copy is not None and self._path is not None:
            kept = self._copy.keep(text, self._path)
            self._copy_seen = config.digest if kept else before
        return config

    def _copy_digest(self) -> str | None:
        kept = self._copy.read() if self._copy is not None else None
        return None if kept is None else hash_key(kept)

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
            before = self._copy_digest()
            try:
                text = read_tenants_text(self._path)
            except TenantConfigError as exc:
                return self._refused(None, str(exc))
            digest = hash_key(text)
            if digest == self._current.digest:
                self._recovered()
                return ReloadResult(changed=False)
            if self._refusal is not None and self._refusal[0] == digest:  # same bad file
                return ReloadResult(changed=self._caught_up(), error=self._refusal[1])
            try:
                config = self._accept(text, before)
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
        """Whether a copy another worker kept since this one read its file replaced its
        config: a worker that missed a good version between two polls, the file refused
        since, kept an older config than its siblings, a revoked key included. A copy that has
        not changed since is this worker's own, or older: never taken."""
        kept = self._copy.read() if self._copy is not None else None
        if kept is None or hash_key(kept) in (self._current.digest, self._copy_seen):
            return False
        try:
            self._current = parse_tenants(kept, source="the last good copy")
        except TenantConfigError:  # kept only once valid: a copy damaged since
            return False
        self._copy_seen = self._current.digest
        _log.info(
            "tenants_reloaded",
            path="the last good copy",
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
                serving="the last good copy" if caught_up else "previous config",
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


class _KeptCopy:
    """The last good tenants text, kept in a file the workers of one ``serve`` share."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def read(self) -> str | None:
        try:
            return read_tenants_text(self._path)
        except TenantConfigError:  # none kept yet
            return None

    def keep(self, text: str, source: Path) -> bool:
        """Keep ``text`` if it is still ``source``'s; whether it was kept.

        Under a lock the workers share, and only while the file still holds ``text``, so a
        copy is always of a file newer than any read before it was kept: a worker that read an
        older file, slower than a sibling that read a newer one, must not put the older back
        (a revoked key would return). A copy that cannot be written is removed: left older
        than the config serving, it would be taken for a newer one.
        """
        try:
            with open(self._path.with_name(f"{self._path.name}.lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
                try:
                    if read_tenants_text(source) != text:
                        return False  # the file moved on: kept by whoever reads it next
                except TenantConfigError:
                    return False
                written = self._path.with_name(f"{self._path.name}.{os.getpid()}")
                written.write_text(text, encoding="utf-8")
                written.replace(self._path)  # atomic: a worker never reads half a copy
        except OSError as exc:
            _log.warning("tenants_copy_not_kept", error=exc.strerror or type(exc).__name__)
            with contextlib.suppress(OSError):
                self._path.unlink(missing_ok=True)
            return False
        return True
