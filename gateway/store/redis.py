"""Redis backend: one Lua script per atomic operation, every key tagged with its tenant."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from gateway.store.base import JobPage, Store, StoredJob, StoreError
from gateway.store.keys import tenant_key

__all__ = ("RedisStore",)

_T = TypeVar("_T")
Arg = bytes | str | int | float


def _script(client: aioredis.Redis, name: str) -> AsyncScript:
    source = files("gateway.store").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
    return client.register_script(source)


class RedisStore(Store):
    """Shared state in Redis (or Redis Cluster: one tenant's keys share one slot)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        clock: Callable[[], float],
        job_retention_seconds: float = 30 * 86400,
        prefix: str = "gmigw",
    ) -> None:
        self._redis = client
        self._clock = clock
        self._retention = job_retention_seconds
        self._prefix = prefix
        self._add_job = _script(client, "add_job")
        self._update_job = _script(client, "update_job")
        self._list_jobs = _script(client, "list_jobs")

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        clock: Callable[[], float],
        job_retention_seconds: float = 30 * 86400,
        prefix: str = "gmigw",
        max_connections: int = 64,
    ) -> RedisStore:
        """A store over a new connection pool with short timeouts (a dead Redis fails fast).

        The pool blocks (up to the socket timeout) when all ``max_connections`` are busy rather
        than failing, so a burst of requests queues for a connection instead of erroring.
        """
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=2.0,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            health_check_interval=15,
        )
        client = aioredis.Redis.from_pool(pool)  # the client owns (and closes) the pool
        return cls(client, clock=clock, job_retention_seconds=job_retention_seconds, prefix=prefix)

    def _key(self, tenant: str, *parts: str) -> str:
        return tenant_key(self._prefix, tenant, *parts)

    async def add_job(self, tenant: str, request_id: str, model: str, record: bytes) -> StoredJob:
        keys = [
            self._key(tenant, "job", request_id),
            self._key(tenant, "jobs"),
            self._key(tenant, "jobs", "model", model),
        ]
        args: list[Arg] = [request_id, model, record, self._clock(), self._retention]
        created = await self._call(self._add_job(keys=keys, args=args))
        stored = await self.get_job(tenant, request_id)
        if stored is not None:
            return stored
        return StoredJob(tenant, request_id, model, float(created), record)

    async def get_job(self, tenant: str, request_id: str) -> StoredJob | None:
        fields: list[Any] = await self._call(
            self._redis.hmget(self._key(tenant, "job", request_id), "model", "created_at", "record")
        )
        return self._job(tenant, request_id, fields)

    async def update_job_record(self, tenant: str, request_id: str, record: bytes) -> bool:
        keys = [self._key(tenant, "job", request_id)]
        args: list[Arg] = [record, self._clock(), self._retention]
        return bool(await self._call(self._update_job(keys=keys, args=args)))

    async def list_jobs(
        self, tenant: str, *, model: str | None = None, limit: int = 100, offset: int = 0
    ) -> JobPage:
        index = self._key(tenant, "jobs", "model", model) if model else self._key(tenant, "jobs")
        args: list[Arg] = [self._clock(), self._retention, offset, limit]
        total, ids = await self._call(self._list_jobs(keys=[index], args=args))
        if not ids:
            return JobPage([], int(total))
        pipe = self._redis.pipeline(transaction=False)
        for raw_id in ids:
            _ = pipe.hmget(
                self._key(tenant, "job", raw_id.decode()), "model", "created_at", "record"
            )
        rows = await self._call(pipe.execute())
        jobs = [
            job
            for raw_id, fields in zip(ids, rows, strict=True)
            if (job := self._job(tenant, raw_id.decode(), fields)) is not None
        ]
        return JobPage(jobs, int(total))

    async def ping(self) -> None:
        await self._call(self._redis.ping())

    async def aclose(self) -> None:
        await self._redis.aclose()

    def _job(self, tenant: str, request_id: str, fields: list[Any]) -> StoredJob | None:
        model, created, record = fields
        if model is None or created is None or record is None:
            return None
        created_at = float(created)
        if created_at + self._retention <= self._clock():
            return None
        return StoredJob(tenant, request_id, model.decode(), created_at, bytes(record))

    @staticmethod
    async def _call(operation: Awaitable[_T]) -> _T:
        """Run one Redis operation, wrapping every backend failure in ``StoreError``."""
        try:
            return await operation
        except (RedisError, OSError) as exc:
            raise StoreError(
                f"redis {type(exc).__name__}: {_without_credentials(str(exc))}"
            ) from None


def _without_credentials(message: str) -> str:
    """redis-py messages name host and port, never the password; drop any URL to be sure."""
    return " ".join("<url>" if "://" in word else word for word in message.split())
