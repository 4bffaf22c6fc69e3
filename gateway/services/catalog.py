"""The upstream's model catalog behind two cache levels: this process, then the shared store.

Model ids and details change rarely and every submit needs the model's parameter schema.
An entry is fresh for ``ttl`` seconds after it was fetched from the upstream. When it goes
stale, one refresh runs (single-flight within the process, and across replicas through a store
lease) while callers keep getting the stale copy; an upstream failure during a refresh serves
the stale copy too. Each answer says where it came from: ``HIT`` (a fresh cached copy),
``MISS`` (fetched from the upstream for this call) or ``STALE``. Details are fetched only for
ids the model list contains, so clients cannot grow the cache with made-up ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
import structlog

from gateway import metrics
from gateway.errors import GatewayError, StoreUnavailable, UnknownModel, UpstreamRelayedError
from gateway.services.payload import ParameterSpec
from gateway.services.relay import relayed_error, unavailable
from gateway.store import Store, StoreError
from gateway.upstream import UpstreamClient, UpstreamError, UpstreamResponse

__all__ = ("Cached", "Catalog", "ModelEntry", "etag_of")

MODELS_KEY = "models"
GENERATION_CHECK_SECONDS = 1.0

_log = structlog.get_logger("gateway.catalog")
_T = TypeVar("_T")


class _ModelIds(msgspec.Struct):
    model_ids: list[str]


class _ModelDetail(msgspec.Struct):
    parameters: list[Any] | None = None  # each entry is read on its own: see _parameter


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """A model detail as the upstream sent it (``raw``), its ETag and parsed schema."""

    model_id: str
    raw: bytes
    etag: str
    parameters: tuple[ParameterSpec, ...]


@dataclass(frozen=True, slots=True)
class Cached(Generic[_T]):
    value: _T
    cache: str  # HIT | MISS | STALE


@dataclass(frozen=True, slots=True)
class _Entry:
    value: Any
    fetched_at: float
    generation: int


def etag_of(body: bytes) -> str:
    """A strong ETag for a response body."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


class Catalog:
    """Cached access to ``GET /models`` and ``GET /models/{id}``."""

    def __init__(
        self,
        upstream: UpstreamClient,
        store: Store,
        *,
        ttl: float,
        clock: Callable[[], float],
        holder: str,
        shared_wait: float = 5.0,
    ) -> None:
        self._upstream = upstream
        self._store = store
        self._ttl = ttl
        self._shared_wait = shared_wait
        self._clock = clock
        self._holder = holder
        self._local: dict[str, _Entry] = {}
        self._inflight: dict[str, asyncio.Future[Cached[Any]]] = {}
        self._generation = 0
        self._generation_checked = float("-inf")

    async def model_ids(self) -> Cached[tuple[str, ...]]:
        """All model ids the upstream offers, in its order."""
        found: Cached[tuple[str, ...]] = await self._get(MODELS_KEY, self._fetch_ids, _parse_ids)
        metrics.CACHE_LOOKUPS.labels("models", found.cache.lower()).inc()
        return found

    async def model(self, model_id: str) -> Cached[ModelEntry]:
        """The model's detail and schema.

        Raises:
            UnknownModel: the upstream does not offer this id (ids are case-sensitive).
        """
        if model_id not in (await self.model_ids()).value:
            raise UnknownModel(f"model {model_id} does not exist")
        found: Cached[ModelEntry] = await self._get(
            f"model:{model_id}",
            lambda: self._fetch_model(model_id),
            lambda raw: _parse_model(model_id, raw),
        )
        metrics.CACHE_LOOKUPS.labels("model_detail", found.cache.lower()).inc()
        return found

    async def invalidate(self) -> None:
        """Forget every copy, here and shared; other replicas follow within a second.

        Raises:
            StoreUnavailable: only this replica's copies could be dropped.
        """
        self._local.clear()
        try:
            self._generation = await self._store.cache_invalidate()
        except StoreError as exc:
            _log.warning("cache_invalidate_failed", error=str(exc))
            raise StoreUnavailable(
                "the model cache was dropped on this replica only: the shared store is "
                "unavailable, so other replicas keep their copies until the TTL runs out; retry"
            ) from None

    async def _get(
        self, key: str, fetch: Callable[[], Awaitable[bytes]], parse: Callable[[bytes], Any]
    ) -> Cached[Any]:
        await self._follow_generation()
        local = self._local.get(key)
        if local is not None and self._fresh(local.fetched_at):
            return Cached(local.value, "HIT")
        pending = self._inflight.get(key)
        if pending is None:
            # A refresh behind a stale answer belongs to no request: run it outside this one's
            # context, or its upstream call would land in this request's audit note.
            context = None if local is None else contextvars.Context()
            refresh = self._refresh(key, fetch, parse, local)
            pending = asyncio.get_running_loop().create_task(refresh, context=context)
            self._inflight[key] = pending
            pending.add_done_callback(lambda done: self._settle(key, done))
        if local is not None:
            return Cached(local.value, "STALE")  # stale-while-revalidate
        return await asyncio.shield(pending)

    def _settle(self, key: str, done: asyncio.Future[Cached[Any]]) -> None:
        self._inflight.pop(key, None)
        if not done.cancelled() and done.exception() is not None and key in self._local:
            _log.warning("catalog_refresh_failed", cache_key=key, error=str(done.exception()))

    async def _refresh(
        self,
        key: str,
        fetch: Callable[[], Awaitable[bytes]],
        parse: Callable[[bytes], Any],
        stale: _Entry | None,
    ) -> Cached[Any]:
        shared = await self._shared(key)
        if shared is not None and self._fresh(shared[1]):
            return Cached(self._adopt(key, parse(shared[0]), shared[1]), "HIT")
        if stale is None and shared is not None:  # a new replica: the shared copy, even stale
            self._adopt(key, parse(shared[0]), shared[1])
            stale = self._local[key]
        leased = await self._lease(key)
        if not leased:
            if stale is not None:  # another replica is refreshing it: serve stale meanwhile
                return Cached(stale.value, "STALE")
            waited = await self._wait_for_other_replica(key, parse)
            if isinstance(waited, Cached):
                return waited
            leased = waited
        try:
            return await self._fetch_and_share(key, fetch, parse, stale, leased=leased)
        finally:
            if leased:  # once the copy is shared: freed before, it let another replica refetch
                await self._unlease(key)

    async def _fetch_and_share(
        self,
        key: str,
        fetch: Callable[[], Awaitable[bytes]],
        parse: Callable[[bytes], Any],
        stale: _Entry | None,
        *,
        leased: bool,
    ) -> Cached[Any]:
        if leased:  # a refresh another replica ended just before this one took the lease
            landed = await self._shared(key)
            if landed is not None and self._fresh(landed[1]):
                return Cached(self._adopt(key, parse(landed[0]), landed[1]), "HIT")
        generation = await self._store_generation()
        try:
            raw = await fetch()
            value = parse(raw)  # refuse to cache what cannot be read
        except GatewayError as exc:
            if stale is None or not (exc.status == 429 or exc.status >= 500):
                raise
            _log.warning("catalog_upstream_failed", cache_key=key, error=exc.message)
            return Cached(stale.value, "STALE")
        try:
            shared = await self._store.cache_put(key, raw, generation=generation)
        except StoreError as exc:
            _log.warning("catalog_share_failed", cache_key=key, error=str(exc))
            shared = True  # only this replica's copy: kept, unless invalidated here meanwhile
        if shared and generation >= self._generation:
            self._adopt(key, value, self._clock())
        # Else the cache was invalidated while the upstream answered, maybe just before the
        # change it was invalidated for: this caller gets the answer, nobody keeps it.
        return Cached(value, "MISS")

    async def _wait_for_other_replica(
        self, key: str, parse: Callable[[bytes], Any]
    ) -> Cached[Any] | bool:
        """Another replica holds the refresh lease: its result when it lands; else whether
        the lease became this replica's meanwhile (that refresh ended without sharing one:
        it failed, or an invalidation dropped its answer), so as to refresh at once rather
        than at the end of the wait."""
        waited = 0.0
        while waited < self._shared_wait:
            await asyncio.sleep(0.05)
            waited += 0.05
            shared = await self._shared(key)
            if shared is not None and self._fresh(shared[1]):
                return Cached(self._adopt(key, parse(shared[0]), shared[1]), "HIT")
            if await self._lease(key):
                return True
        return False

    def _adopt(self, key: str, value: Any, fetched_at: float) -> Any:
        self._local[key] = _Entry(value, fetched_at, self._generation)
        return value

    def _fresh(self, fetched_at: float) -> bool:
        return self._clock() - fetched_at < self._ttl

    async def _shared(self, key: str) -> tuple[bytes, float] | None:
        try:
            return await self._store.cache_get(key)
        except StoreError:
            return None

    async def _lease(self, key: str) -> bool:
        try:
            return await self._store.acquire_lease(f"catalog:{key}", self._holder, ttl=10.0)
        except StoreError:
            return True  # no store to coordinate through: refresh ourselves

    async def _unlease(self, key: str) -> None:
        """Free the lease once the refresh is over, so another replica that needs one (after an
        invalidation, or a failed refresh here) need not wait for it to expire."""
        with contextlib.suppress(StoreError):  # it expires on its own
            await self._store.release_lease(f"catalog:{key}", self._holder)

    async def _store_generation(self) -> int:
        """The cache generation now (this replica's view when the store cannot say)."""
        try:
            return await self._store.cache_generation()
        except StoreError:
            return self._generation

    async def _follow_generation(self) -> None:
        """Drop local copies after an invalidation on any replica (checked once a second)."""
        now = self._clock()
        if now - self._generation_checked < GENERATION_CHECK_SECONDS:
            return
        self._generation_checked = now
        try:
            generation = await self._store.cache_generation()
        except StoreError:
            return
        if generation != self._generation:
            self._generation = generation
            self._local.clear()

    async def _fetch_ids(self) -> bytes:
        response = await self._call(self._upstream.list_models())
        if response.status != 200:
            raise relayed_error(response)
        return response.body

    async def _fetch_model(self, model_id: str) -> bytes:
        response = await self._call(self._upstream.get_model(model_id))
        if response.status != 200:
            raise relayed_error(response, not_found=UnknownModel)
        return response.body

    @staticmethod
    async def _call(request: Awaitable[UpstreamResponse]) -> UpstreamResponse:
        try:
            return await request
        except UpstreamError as exc:
            raise unavailable(exc) from None


def _parse_ids(raw: bytes) -> tuple[str, ...]:
    return tuple(_decode(raw, _ModelIds, "model list").model_ids)


def _parse_model(model_id: str, raw: bytes) -> ModelEntry:
    detail = _decode(raw, _ModelDetail, "model detail")
    specs = (_parameter(model_id, entry) for entry in detail.parameters or ())
    return ModelEntry(model_id, raw, etag_of(raw), tuple(s for s in specs if s is not None))


_SPEC_FIELDS = ParameterSpec.__struct_fields__
_CHECKED_FIELDS = frozenset({"type", "options", "min_value", "max_value", "max_length"})


def _parameter(model_id: str, entry: Any) -> ParameterSpec | None:
    """One parameter spec, read leniently: the upstream's schema is only partly documented, and
    one odd field must not take a whole model out of service.

    Numbers, booleans and integers sent as strings are accepted (``"min_value": "0"``). An
    unreadable field (or a NaN bound) is dropped and logged, and the rest kept: ``required``,
    and ``default_value``, which may set the charge. If it was a field the value is checked
    against, the parameter goes unchecked (the upstream checks it): half its checks could
    refuse what the upstream takes. A spec without a name is skipped.
    """
    name = entry.get("name") if isinstance(entry, dict) else None
    if not isinstance(name, str):
        _log.warning("catalog_parameter_unreadable", model=model_id, error="no name")
        return None
    kept = {field: entry[field] for field in _SPEC_FIELDS if _readable(name, field, entry)}
    spec = msgspec.convert(kept, ParameterSpec, strict=False)
    dropped = sorted(set(entry).intersection(_SPEC_FIELDS) - set(kept))
    if dropped:
        _log.warning("catalog_parameter_unreadable", model=model_id, parameter=name, fields=dropped)
    if _CHECKED_FIELDS.intersection(dropped):
        spec = msgspec.structs.replace(spec, type="unchecked", options=None)
    return spec


def _readable(name: str, field: str, entry: dict[str, Any]) -> bool:
    """Whether ``entry[field]`` is there and reads as that field of a ParameterSpec."""
    if field not in entry:
        return False
    try:
        alone = msgspec.convert({"name": name, field: entry[field]}, ParameterSpec, strict=False)
    except msgspec.ValidationError:
        return False
    value = getattr(alone, field)
    return not (isinstance(value, float) and math.isnan(value))


def _decode(body: bytes, kind: type[_T], what: str) -> _T:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.MsgspecError as exc:
        raise UpstreamRelayedError(
            f"the upstream sent a malformed {what}: {exc}", status=502, code="upstream_error"
        ) from None
