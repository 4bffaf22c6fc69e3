"""The upstream's model catalog, cached in-process with single-flight refreshes.

Model ids and model details change rarely and every submit needs the model's parameter schema,
so they are fetched once per TTL. Concurrent misses for the same key share one upstream call,
and an upstream failure while refreshing serves the last good copy rather than failing. Details
are fetched only for ids the model list contains, so clients cannot grow the cache with made-up
ids or make the gateway ask the upstream about them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import structlog

from gateway.errors import GatewayError, UnknownModel, UpstreamRelayedError, UpstreamUnavailable
from gateway.services.payload import ParameterSpec
from gateway.services.relay import relayed_error
from gateway.upstream import UpstreamClient, UpstreamError, UpstreamResponse

__all__ = ("Catalog", "ModelEntry")

_log = structlog.get_logger("gateway.catalog")
_T = TypeVar("_T")


class _ModelIds(msgspec.Struct):
    model_ids: list[str]


class _ModelDetail(msgspec.Struct):
    parameters: list[ParameterSpec] = msgspec.field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """A model detail as the upstream sent it (``raw``) and its parsed parameter schema."""

    model_id: str
    raw: bytes
    parameters: tuple[ParameterSpec, ...]


@dataclass(frozen=True, slots=True)
class _Cached:
    value: Any
    expires_at: float


class Catalog:
    """Cached access to ``GET /models`` and ``GET /models/{id}``."""

    def __init__(self, upstream: UpstreamClient, *, ttl: float, clock: Callable[[], float]) -> None:
        self._upstream = upstream
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self._inflight: dict[str, asyncio.Future[Any]] = {}

    async def model_ids(self) -> tuple[str, ...]:
        """All model ids the upstream offers, in its order."""
        ids: tuple[str, ...] = await self._get("models", self._fetch_ids)
        return ids

    async def model(self, model_id: str) -> ModelEntry:
        """The model's detail and schema.

        Raises:
            UnknownModel: the upstream does not offer this id (ids are case-sensitive).
        """
        if model_id not in await self.model_ids():
            raise UnknownModel(f"model {model_id} does not exist")
        entry: ModelEntry = await self._get(
            f"model:{model_id}", lambda: self._fetch_model(model_id)
        )
        return entry

    def invalidate(self) -> None:
        """Forget everything; the next call fetches afresh."""
        self._cache.clear()

    async def _get(self, key: str, fetch: Callable[[], Awaitable[Any]]) -> Any:
        cached = self._cache.get(key)
        if cached is not None and cached.expires_at > self._clock():
            return cached.value
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._refresh(key, fetch, cached))
            self._inflight[key] = pending
            pending.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(pending)

    async def _refresh(
        self, key: str, fetch: Callable[[], Awaitable[Any]], stale: _Cached | None
    ) -> Any:
        try:
            value = await fetch()
        except GatewayError as exc:
            if stale is None or not (exc.status == 429 or exc.status >= 500):
                raise
            _log.warning("catalog_refresh_failed", cache_key=key, error=exc.message, served="stale")
            return stale.value
        self._cache[key] = _Cached(value, self._clock() + self._ttl)
        return value

    async def _fetch_ids(self) -> tuple[str, ...]:
        response = await self._call(self._upstream.list_models())
        if response.status != 200:
            raise relayed_error(response)
        return tuple(_decode(response.body, _ModelIds, "model list").model_ids)

    async def _fetch_model(self, model_id: str) -> ModelEntry:
        response = await self._call(self._upstream.get_model(model_id))
        if response.status != 200:
            raise relayed_error(response, not_found=UnknownModel)
        detail = _decode(response.body, _ModelDetail, "model detail")
        return ModelEntry(model_id, response.body, tuple(detail.parameters))

    @staticmethod
    async def _call(request: Awaitable[UpstreamResponse]) -> UpstreamResponse:
        try:
            return await request
        except UpstreamError as exc:
            raise UpstreamUnavailable(f"upstream unavailable: {exc}") from None


def _decode(body: bytes, kind: type[_T], what: str) -> _T:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.MsgspecError as exc:
        raise UpstreamRelayedError(
            f"the upstream sent a malformed {what}: {exc}", status=502, code="upstream_error"
        ) from None
