"""The one pooled HTTP client to the GMI request-queue API.

Any HTTP answer is returned as an :class:`UpstreamResponse` (the gateway decides what a 4xx or
5xx means); only transport failures raise. GETs are retried with backoff within a retry budget;
``POST /requests`` is never retried, because a submit that reached the upstream may have created
a billed job.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from urllib.parse import quote

import httpx

from gateway import metrics
from gateway.upstream.circuit import CircuitBreaker
from gateway.upstream.errors import UpstreamAmbiguous, UpstreamError, UpstreamUnavailable
from gateway.upstream.retry import RETRYABLE_STATUSES, RetryBudget, backoff_delay

__all__ = ("UpstreamClient", "UpstreamResponse")

try:
    _VERSION = version("gmi-gateway")
except PackageNotFoundError:
    _VERSION = "0.0.0"

_SUBMIT = "POST /requests"
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    """An upstream answer: status, raw body (passed through unchanged), Retry-After, latency."""

    status: int
    body: bytes
    retry_after: str | None
    elapsed: float


class UpstreamClient:
    """Calls the upstream's five request-queue routes with the shared key."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        org_id: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        pool_size: int = 64,
        get_attempts: int = 3,
        backoff_base: float = 0.1,
        backoff_max: float = 2.0,
        retry_budget_ratio: float = 0.2,
        retry_budget_min_per_second: float = 5.0,
        circuit_threshold: int = 5,
        circuit_cooldown: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "User-Agent": f"gmi-gateway/{_VERSION}",
        }
        if org_id:
            headers["X-Organization-ID"] = org_id
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(
                connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
            ),
            limits=httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size),
            follow_redirects=False,
            transport=transport,
        )
        self._read_timeout = read_timeout
        self._get_attempts = max(1, get_attempts)
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._budget = RetryBudget(
            ratio=retry_budget_ratio, min_per_second=retry_budget_min_per_second, clock=clock
        )
        self._sleep = sleep
        self._clock = clock
        self.circuit = CircuitBreaker(
            threshold=circuit_threshold, cooldown=circuit_cooldown, clock=clock
        )

    def __repr__(self) -> str:
        return f"UpstreamClient(base_url={str(self._http.base_url)!r})"

    async def list_models(self) -> UpstreamResponse:
        return await self._get("GET /models", "/models")

    async def get_model(self, model_id: str) -> UpstreamResponse:
        return await self._get("GET /models/{model_id}", f"/models/{_segment(model_id)}")

    async def get_request(self, request_id: str) -> UpstreamResponse:
        return await self._get("GET /requests/{request_id}", f"/requests/{_segment(request_id)}")

    async def list_requests(self, params: Mapping[str, str]) -> UpstreamResponse:
        return await self._get("GET /requests", "/requests", params)

    async def submit(self, body: bytes) -> UpstreamResponse:
        """``POST /requests`` once.

        Raises:
            UpstreamUnavailable: the request never reached the upstream (safe to report as such).
            UpstreamAmbiguous: it may have reached the upstream; the job may exist.
        """
        self._check_circuit(_SUBMIT)
        started = self._clock()
        try:
            response = await self._http.post(
                "/requests", content=body, headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            _observe(_SUBMIT, type(exc).__name__, self._clock() - started)
            self.circuit.record(ok=False)
            raise self._submit_error(exc) from None
        result = _response(response, self._clock() - started)
        _observe(_SUBMIT, str(result.status), result.elapsed)
        self.circuit.record(ok=result.status not in RETRYABLE_STATUSES)
        return result

    def _check_circuit(self, endpoint: str) -> None:
        wait = self.circuit.wait_before_call()
        if wait is not None:
            _observe(endpoint, "circuit_open", 0.0)
            raise UpstreamUnavailable(
                f"upstream circuit open after repeated failures; retry in {wait:.0f}s",
                retry_after=wait,
            )

    def _submit_error(self, exc: httpx.HTTPError) -> UpstreamError:
        """Sort a failed submit: provably never sent, or possibly sent (ambiguous)."""
        if isinstance(exc, _NOT_SENT):
            return UpstreamUnavailable(_describe("POST /requests", exc))
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamAmbiguous(
                f"upstream did not answer POST /requests within {self._read_timeout}s "
                f"({type(exc).__name__})"
            )
        return UpstreamAmbiguous(_describe("POST /requests", exc))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _get(
        self, endpoint: str, path: str, params: Mapping[str, str] | None = None
    ) -> UpstreamResponse:
        self._budget.deposit()
        attempt = 0
        while True:
            attempt += 1
            self._check_circuit(endpoint)
            started = self._clock()
            retry_after: str | None = None
            try:
                response = await self._http.get(path, params=params)
            except httpx.HTTPError as exc:
                _observe(endpoint, type(exc).__name__, self._clock() - started)
                self.circuit.record(ok=False)
                if attempt >= self._get_attempts or not self._budget.try_withdraw():
                    raise UpstreamUnavailable(_describe(endpoint, exc)) from None
            else:
                result = _response(response, self._clock() - started)
                _observe(endpoint, str(result.status), result.elapsed)
                self.circuit.record(ok=result.status not in RETRYABLE_STATUSES)
                if result.status not in RETRYABLE_STATUSES or attempt >= self._get_attempts:
                    return result
                if not self._budget.try_withdraw():
                    return result
                retry_after = result.retry_after
            await self._sleep(
                backoff_delay(
                    attempt,
                    base=self._backoff_base,
                    maximum=self._backoff_max,
                    retry_after=retry_after,
                )
            )


def _observe(endpoint: str, status: str, elapsed: float) -> None:
    metrics.UPSTREAM_REQUESTS.labels(endpoint, status).inc()
    metrics.UPSTREAM_REQUEST_DURATION.labels(endpoint).observe(elapsed)


def _segment(value: str) -> str:
    """Percent-encode a path parameter so it can never change the path (``..``, ``/``)."""
    encoded = quote(value, safe="")
    return encoded.replace(".", "%2E") if encoded in {".", ".."} else encoded


def _response(response: httpx.Response, elapsed: float) -> UpstreamResponse:
    return UpstreamResponse(
        status=response.status_code,
        body=response.content,
        retry_after=response.headers.get("retry-after"),
        elapsed=elapsed,
    )


def _describe(what: str, exc: httpx.HTTPError) -> str:
    """A message without URLs or headers: the class name says what failed."""
    return f"upstream {what} failed: {type(exc).__name__}"
