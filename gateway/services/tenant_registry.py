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
from collections.abc import Iterator
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
_UNORDERED = 2**63  # above every ticket


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
        self._read_at = 0  # the ticket of the read the serving config came from (see _KeptCopy)
        self._lock = threading.Lock()  # reload runs in a worker thread (watch) and in handlers
        self._refusal: tuple[str | None, str] | None = None  # (digest, error) last logged
        if initial is None:
            if self._path is None:
                raise ValueError("a tenants file path or an initial config is required")
            digest = None
            try:
                ticket, text = self._read()
                digest = hash_key(text)
                initial = parse_tenants(text, source=str(self._path))
                self._confirm(ticket, text)
            except TenantConfigError as refused:
                kept = self._copy.read() if self._copy is not None else None
                if kept is None:
                    raise
                self._read_at, text = kept
                self._current = parse_tenants(text, source="the last good copy")
                self._refused(digest, str(refused))
                return
        self._current = initial

    def _read(self) -> tuple[int, str]:
        """The file's text, and the ticket of this read (0 with no copy kept).

        Raises:
            TenantConfigError: the file is missing or unreadable.
        """
        assert self._path is not None
        if self._copy is None:
            return 0, read_tenants_text(self._path)
        return self._copy.read_file(self._path)

    def _confirm(self, ticket: int, text: str) -> None:
        """``text``, read with ``ticket``, is good and serves: keep it, unless newer is kept.
        New content read without a ticket cannot be ordered: no copy is taken up after it."""
        self._read_at = ticket if ticket else _UNORDERED
        if self._copy is not None:
            self._copy.keep(ticket, text)

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
                ticket, text = self._read()
            except TenantConfigError as exc:
                return self._refused(None, str(exc))
            digest = hash_key(text)
            if digest == self._current.digest:
                if ticket:  # still the newest good file: the copy says so
                    self._confirm(ticket, text)
                self._recovered()
                return ReloadResult(changed=False)
            if self._refusal is not None and self._refusal[0] == digest:  # same bad file
                return ReloadResult(changed=self._caught_up(), error=self._refusal[1])
            try:
                config = parse_tenants(text, source=os.fspath(self._path))
            except TenantConfigError as exc:
                return self._refused(digest, str(exc))
            self._confirm(ticket, text)
            self._current = config
            self._refusal = None
            metrics.TENANTS_FILE_REJECTED.set(0)
        _loaded(os.fspath(self._path), config)
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
        """Whether a copy of a file read after this config's replaced it: a worker that missed
        a good version between two polls, the file refused since, kept an older config than
        its siblings, a revoked key included."""
        kept = self._copy.read() if self._copy is not None else None
        if kept is None or kept[0] <= self._read_at:
            return False
        ticket, text = kept
        try:
            config = parse_tenants(text, source="the last good copy")
        except TenantConfigError:  # kept only once valid: a copy damaged since
            return False
        self._read_at = ticket
        if config.digest == self._current.digest:
            return False
        self._current = config
        _loaded("the last good copy", config)
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


def _loaded(source: str, config: TenantsConfig) -> None:
    _log.info(
        "tenants_reloaded",
        path=source,
        tenants=len(config.tenants),
        admins=len(config.admins),
        digest=config.digest[:12],
    )


class _KeptCopy:
    """The newest good tenants text the workers of one ``serve`` read, in a file they share.

    Every read of the tenants file takes a ticket, under a lock the workers share, so a later
    read always has a higher one; the copy keeps the text of the highest ticket that was good.
    Contents alone cannot order versions (a file reverted on purpose comes back), and a
    worker that read an older file may be slower to keep it than a sibling that read a newer.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._tickets = path.with_name(f"{path.name}.tickets")
        self._warned = False

    def read_file(self, source: Path) -> tuple[int, str]:
        """``source``'s text and this read's ticket (0 if tickets cannot be kept here).

        Raises:
            TenantConfigError: the file is missing or unreadable.
        """
        try:
            with self._locked():
                kept = self.read()
                ticket = max(self._last_ticket(), kept[0] if kept else 0) + 1
                self._tickets.write_text(str(ticket), encoding="ascii")
                return ticket, read_tenants_text(source)
        except OSError as exc:
            self._warn(exc)
            return 0, read_tenants_text(source)

    def keep(self, ticket: int, text: str) -> None:
        """Keep ``text`` (read with ``ticket``, and good) unless a later read's is kept. A copy
        that cannot be written is removed: left behind, it would be older than it says."""
        if ticket == 0:
            return
        try:
            with self._locked():
                kept = self.read()
                if kept is not None and kept[0] >= ticket:
                    return
                written = self._path.with_name(f"{self._path.name}.{os.getpid()}")
                try:
                    written.write_text(f"{ticket}\n{text}", encoding="utf-8")
                    written.replace(self._path)  # atomic: a worker never reads half a copy
                except OSError:
                    self._path.unlink(missing_ok=True)  # older than this read: not to be taken
                    raise
        except OSError as exc:  # no lock, no copy of this read; another's stays
            self._warn(exc)

    def read(self) -> tuple[int, str] | None:
        """The copy's ticket and text, if one is kept."""
        try:
            ticket, _, text = read_tenants_text(self._path).partition("\n")
        except TenantConfigError:
            return None
        return (int(ticket), text) if ticket.isascii() and ticket.isdigit() else None

    def _warn(self, exc: OSError) -> None:
        """Once: a worker polls every few seconds."""
        if not self._warned:
            self._warned = True
            _log.warning("tenants_copy_not_kept", error=exc.strerror or type(exc).__name__)

    def _last_ticket(self) -> int:
        try:
            return int(self._tickets.read_text(encoding="ascii") or 0)
        except (OSError, ValueError):
            return 0

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self._path.with_name(f"{self._path.name}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            yield
