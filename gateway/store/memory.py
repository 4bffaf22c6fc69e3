"""In-process store for the demo and single-replica use; same answers as Redis under one clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from gateway.store.base import JobPage, Store, StoredJob

__all__ = ("MemoryStore",)


class MemoryStore(Store):
    """Keeps everything in dicts; safe within one event loop (no awaits inside an operation)."""

    def __init__(
        self, *, clock: Callable[[], float], job_retention_seconds: float = 30 * 86400
    ) -> None:
        self._clock = clock
        self._retention = job_retention_seconds
        self._jobs: dict[str, dict[str, StoredJob]] = {}

    async def add_job(self, tenant: str, request_id: str, model: str, record: bytes) -> StoredJob:
        jobs = self._jobs.setdefault(tenant, {})
        existing = self._live(jobs.get(request_id))
        job = (
            replace(existing, record=record)
            if existing is not None
            else StoredJob(tenant, request_id, model, self._clock(), record)
        )
        jobs[request_id] = job
        return job

    async def get_job(self, tenant: str, request_id: str) -> StoredJob | None:
        return self._live(self._jobs.get(tenant, {}).get(request_id))

    async def update_job_record(self, tenant: str, request_id: str, record: bytes) -> bool:
        job = await self.get_job(tenant, request_id)
        if job is None:
            return False
        self._jobs[tenant][request_id] = replace(job, record=record)
        return True

    async def list_jobs(
        self, tenant: str, *, model: str | None = None, limit: int = 100, offset: int = 0
    ) -> JobPage:
        jobs = self._jobs.get(tenant, {})
        for request_id in [rid for rid, job in jobs.items() if self._live(job) is None]:
            del jobs[request_id]
        matching = [j for j in jobs.values() if model is None or j.model == model]
        matching.sort(key=lambda j: (j.created_at, j.request_id), reverse=True)
        return JobPage(matching[offset : offset + limit], len(matching))

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def _live(self, job: StoredJob | None) -> StoredJob | None:
        if job is None or job.created_at + self._retention <= self._clock():
            return None
        return job
