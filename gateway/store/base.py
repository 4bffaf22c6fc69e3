"""The shared-state contract every backend honours.

The gateway keeps the state that must agree across replicas behind this interface: which tenant
owns which upstream request id, and each tenant's job index (newest first, filterable by model)
with the last upstream record seen for each job. The docstrings here *are* the contract; the
contract suite in ``tests/store/`` holds both backends to every sentence of them.

Time is an argument: backends take a clock (``Callable[[], float]``, unix seconds) at
construction and never read the wall clock themselves, so a fake clock drives both identically.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

__all__ = ("JobPage", "Store", "StoreError", "StoredJob")


class StoreError(Exception):
    """The backend could not be reached or answered with an error.

    Every backend wraps its own failures (connection refused, timeouts, script errors) in this one
    type so callers never import a backend's exception classes. The message never contains a URL
    with credentials.
    """


@dataclass(frozen=True, slots=True)
class StoredJob:
    """One job the gateway accepted, as the store keeps it.

    Attributes:
        tenant: id of the owning tenant.
        request_id: the upstream request id.
        model: the model id the job was submitted for.
        created_at: gateway clock (unix seconds, float) when the job was recorded.
        record: the latest upstream JSON record of the job, as raw bytes (passed through to
            clients unchanged).
    """

    tenant: str
    request_id: str
    model: str
    created_at: float
    record: bytes


@dataclass(frozen=True, slots=True)
class JobPage:
    """A page of a tenant's job index: ``jobs`` newest first and ``total`` matching jobs."""

    jobs: list[StoredJob]
    total: int


class Store(abc.ABC):
    """Shared state of the gateway.

    Keys are scoped by tenant: one tenant can never see, overwrite or count another tenant's
    jobs, even when two tenants use the same request id string.
    """

    @abc.abstractmethod
    async def add_job(self, tenant: str, request_id: str, model: str, record: bytes) -> StoredJob:
        """Record that ``tenant`` owns ``request_id`` and add it to the tenant's job index.

        ``created_at`` is taken from the store's clock. Adding an id the tenant already owns
        keeps the original ``created_at`` and index position and replaces only the record.
        A job is retained for the store's ``job_retention_seconds`` after it was added; after
        that it is gone from lookups, the index and the totals.
        """

    @abc.abstractmethod
    async def get_job(self, tenant: str, request_id: str) -> StoredJob | None:
        """Return the job if ``tenant`` owns ``request_id``, else ``None`` (unknown or foreign)."""

    @abc.abstractmethod
    async def update_job_record(self, tenant: str, request_id: str, record: bytes) -> bool:
        """Replace the stored record of an owned job; return ``False`` (and write nothing) if
        ``tenant`` does not own ``request_id``."""

    @abc.abstractmethod
    async def list_jobs(
        self, tenant: str, *, model: str | None = None, limit: int = 100, offset: int = 0
    ) -> JobPage:
        """Return the tenant's jobs newest first (ties: larger request id first).

        ``model`` filters to jobs of that model id (exact, case-sensitive). ``total`` counts every
        matching job, not just the page. ``limit`` >= 1 and ``offset`` >= 0 are the caller's to
        validate; an offset past the end gives an empty page with the true total.
        """

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise ``StoreError`` unless the backend can serve requests now."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release connections. Idempotent."""
