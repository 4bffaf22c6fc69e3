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
import structlog

from gateway import metrics
from gateway.audit import current_note
from gateway.upstream.circuit import CircuitBreaker
from gateway.upstream.errors import UpstreamAmbiguous, UpstreamError, UpstreamUnavailable
from gateway.upstream.retry import RETRYABLE_STATUSES, RetryBudget, backoff_delay
from gateway.upstream.transport import AiohttpTransport

__all__ = ("UpstreamClient", "UpstreamResponse")

try:
    _VERSION = version("gmi-gateway")
except PackageNotFoundError:  # running from a checkout that was never installed
    _VERSION = "0.0.0"

_SUBMIT = "POST /requests"
_UPLOAD = "POST /upload-url"
# A submit's 500 is mostly the vendor refusing that payload ("Backend error (400)", spec §8):
# one tenant's bad payloads must not open the circuit for everyone. Polls still count 500s.
# (The same rule serves the other POST, /upload-url.)
_POST_FAILURES = RETRYABLE_STATUSES - {500}
_log = structlog.get_logger("gateway.upstream")
# Failures raised before a single byte of the request left: a submit that hit one is safe to
# report as "not sent". Everything else (read/write timeouts, broken connections, protocol
# errors) may come after the upstream received the request.
_NOT_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,  # the egress proxy refused the tunnel
    httpx.UnsupportedProtocol,
)


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    """An upstream answer: status, raw body (passed through unchanged), Retry-After, latency.

    ``elapsed`` is the duration of the attempt that produced this answer, in seconds.
    """

    status: int
    body: bytes
    retry_after: str | None
    elapsed: float


class UpstreamClient:
    """Calls the upstream's request-queue routes with the gateway's one shared key.

    One ``httpx.AsyncClient`` per instance over a pooled aiohttp transport (keep-alive = pool
    size, so a burst never closes connections it is about to need again; see ``transport``);
    build one per process and share it.
    """

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
        retry_window: float = 5.0,
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
        # A write that stalls is as slow as a read that does; waiting for a pooled connection
        # is bounded like opening one.
        self._timeout = httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
        )
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=self._timeout,
            follow_redirects=False,
            transport=transport or AiohttpTransport(pool_size=pool_size),
        )
        self._pool_size = pool_size
        self._get_attempts = max(1, get_attempts)
        self._retry_window = retry_window
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._budget = RetryBudget(
            ratio=retry_budget_ratio, min_per_second=retry_budget_min_per_second, clock=clock
        )
        self._sleep = sleep
        self._clock = clock
        self._closed = False
        self._auth_logged_at = float("-inf")
        self.circuit = CircuitBreaker(
            threshold=circuit_threshold, cooldown=circuit_cooldown, clock=clock
        )

    def __repr__(self) -> str:
        # The default repr would reach the headers, hence the key.
        return f"UpstreamClient(base_url={str(self._http.base_url)!r})"

    async def list_models(self) -> UpstreamResponse:
        """``GET /models``, retried."""
        return await self._get("GET /models", "/models")

    async def get_model(self, model_id: str) -> UpstreamResponse:
        """``GET /models/{model_id}``, retried; the id can never change the path."""
        return await self._get("GET /models/{model_id}", f"/models/{_segment(model_id)}")

    async def get_request(self, request_id: str) -> UpstreamResponse:
        """``GET /requests/{request_id}``, retried; the id can never change the path."""
        return await self._get("GET /requests/{request_id}", f"/requests/{_segment(request_id)}")

    async def list_requests(self, params: Mapping[str, str]) -> UpstreamResponse:
        """``GET /requests`` with the given query parameters, retried."""
        return await self._get("GET /requests", "/requests", params)

    async def submit(self, body: bytes) -> UpstreamResponse:
        """``POST /requests`` exactly once, ``body`` sent as-is; never retried.

        Raises:
            UpstreamUnavailable: the request provably never reached the upstream (or the circuit
                is open, or the client is closed): nothing was created.
            UpstreamAmbiguous: the request may have reached the upstream; the job may exist and
                be billed.
        """
        return await self._post_once(_SUBMIT, "/requests", body)

    async def upload_url(self, body: bytes) -> UpstreamResponse:
        """``POST /upload-url`` (a presigned upload slot) once, ``body`` sent as-is; raises as
        :meth:`submit` does, though a slot that may exist costs nothing."""
        return await self._post_once(_UPLOAD, "/upload-url", body)

    async def _post_once(self, endpoint: str, path: str, body: bytes) -> UpstreamResponse:
        probe = self._admit(endpoint)
        started = self._clock()
        failure: UpstreamError | None = None
        try:
            response = await self._http.post(
                path, content=body, headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            _observe(endpoint, type(exc).__name__, self._clock() - started)
            self.circuit.record(ok=False)
            message = self._describe(endpoint, exc)
            sent = not isinstance(exc, _NOT_SENT)
            failure = UpstreamAmbiguous(message) if sent else UpstreamUnavailable(message)
        except BaseException:
            self._abandon(probe)
            raise
        if failure is not None:
            # Raised outside the handler so neither __cause__ nor __context__ keeps the httpx
            # exception, whose request carries the Authorization header.
            raise failure
        result = _response(response, self._clock() - started)
        self._answered(endpoint, result)
        self.circuit.record(ok=result.status not in _POST_FAILURES)
        return result

    async def aclose(self) -> None:
        """Close the pool; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        await self._http.aclose()

    async def _get(
        self, endpoint: str, path: str, params: Mapping[str, str] | None = None
    ) -> UpstreamResponse:
        """GET with retries on transport errors and 429/5xx, each retry paid from the budget,
        and only within ``retry_window`` seconds of the first attempt: retries are for failures
        that come fast, so a GET takes at most that window plus one attempt (connect + read),
        which ``serve``'s drain counts on.

        The last answer is returned, even a 5xx: the gateway relays it. Transport failures
        raise :class:`UpstreamUnavailable` once no retry is left (attempts, budget, circuit).
        """
        self._budget.deposit()
        first = self._clock()
        attempt = 0
        last: UpstreamResponse | None = None
        failure: UpstreamUnavailable | None = None
        while True:
            attempt += 1
            if attempt == 1:
                probe = self._admit(endpoint)
            else:
                gate = self._gate()
                if gate is None:
                    break  # closed, or the circuit opened while we retried: report what we have
                probe = gate
            started = self._clock()
            try:
                response = await self._http.get(path, params=params)
            except httpx.HTTPError as exc:
                _observe(endpoint, type(exc).__name__, self._clock() - started)
                self.circuit.record(ok=False)
                last = None
                failure = UpstreamUnavailable(self._describe(endpoint, exc, attempts=attempt))
            except BaseException:
                self._abandon(probe)
                raise
            else:
                last = _response(response, self._clock() - started)
                failure = None
                self._answered(endpoint, last)
                self.circuit.record(ok=last.status not in RETRYABLE_STATUSES)
                if last.status not in RETRYABLE_STATUSES:
                    return last
            if attempt >= self._get_attempts:
                break
            delay = backoff_delay(
                attempt,
                base=self._backoff_base,
                maximum=self._backoff_max,
                retry_after=last.retry_after if last is not None else None,
            )
            if self._clock() - first + delay > self._retry_window:
                break  # a slow failure is not tried again: a GET takes one attempt's time
            if not self._budget.try_withdraw():
                break
            await self._sleep(delay)
        if last is not None:
            return last
        assert failure is not None  # the loop only breaks after an attempt
        raise failure  # outside any handler: no httpx exception (or its headers) in the chain

    def _answered(self, endpoint: str, result: UpstreamResponse) -> None:
        """Count an answer. A refused GMI key is logged too, at most once a minute: every call
        fails with it, and only the operator can fix it."""
        _observe(endpoint, str(result.status), result.elapsed)
        if result.status in (401, 403) and self._clock() - self._auth_logged_at >= 60:
            self._auth_logged_at = self._clock()
            _log.error("upstream_auth_rejected", endpoint=endpoint, status=result.status)

    def _admit(self, endpoint: str) -> bool:
        """Raise when the call must not go out; otherwise say whether it is the circuit's probe."""
        if self._closed:
            raise UpstreamUnavailable(f"upstream client is closed; {endpoint} not sent")
        half_open = self.circuit.state == "half_open"
        wait = self.circuit.wait_before_call()
        if wait is not None:  # counted, but no latency: no call was made
            metrics.UPSTREAM_REQUESTS.labels(endpoint, "circuit_open").inc()
            raise UpstreamUnavailable(
                f"upstream circuit open after repeated failures; retry in {wait:.0f}s",
                retry_after=wait,
            )
        return half_open

    def _gate(self) -> bool | None:
        """Like :meth:`_admit` for a retry: ``None`` (stop retrying) instead of raising."""
        if self._closed:
            return None
        half_open = self.circuit.state == "half_open"
        return half_open if self.circuit.wait_before_call() is None else None

    def _abandon(self, probe: bool) -> None:
        """A call ended without an outcome (cancelled, unexpected error).

        If it was the circuit's only probe, count it as a failure: otherwise the breaker would
        wait for that probe's verdict forever and never let another call through.
        """
        if probe:
            self.circuit.record(ok=False)

    def _describe(self, endpoint: str, exc: httpx.HTTPError, *, attempts: int = 1) -> str:
        """Say what failed, in words, without the URL, the headers or the exception's text."""
        timeout = self._timeout
        match exc:
            case httpx.ConnectTimeout():
                what = f"upstream connect timed out after {timeout.connect}s on {endpoint}"
            case httpx.PoolTimeout():
                what = (
                    f"no upstream connection free within {timeout.pool}s on {endpoint} "
                    f"(all {self._pool_size} busy)"
                )
            case httpx.ReadTimeout():
                what = f"upstream read timed out after {timeout.read}s on {endpoint}"
            case httpx.WriteTimeout():
                what = f"upstream write timed out after {timeout.write}s on {endpoint}"
            case httpx.ConnectError():
                what = f"could not connect to the upstream on {endpoint}"
            case httpx.ProxyError():  # the message is the transport's own: the proxy's status
                what = f"the egress proxy refused the tunnel to the upstream on {endpoint}: {exc}"
            case httpx.RemoteProtocolError():
                what = (
                    f"upstream broke the HTTP exchange on {endpoint} (connection closed or reset)"
                )
            case httpx.UnsupportedProtocol():
                what = f"upstream URL has an unsupported scheme; {endpoint} not sent"
            case _:
                what = f"upstream transport failed on {endpoint}"
        attempted = f", {attempts} attempts" if attempts > 1 else ""
        return f"{what} ({type(exc).__name__}{attempted})"


def _observe(endpoint: str, status: str, elapsed: float) -> None:
    """Count an attempt, and note it for the audit of the request that made it (the last
    attempt wins: a submit on a cold catalog is audited with its POST)."""
    metrics.UPSTREAM_REQUESTS.labels(endpoint, status).inc()
    metrics.UPSTREAM_REQUEST_DURATION.labels(endpoint).observe(elapsed)
    note = current_note()
    note.upstream_status = int(status) if status.isdigit() else None
    note.upstream_latency_ms = round(elapsed * 1000, 3)


def _segment(value: str) -> str:
    """Percent-encode a path parameter so it can never change the path (``/``, ``?``, ``..``).

    ``quote`` leaves dots alone and httpx removes ``.``/``..`` segments, hence the extra step.
    """
    encoded = quote(value, safe="")
    return encoded.replace(".", "%2E") if encoded in {".", ".."} else encoded


def _response(response: httpx.Response, elapsed: float) -> UpstreamResponse:
    return UpstreamResponse(
        status=response.status_code,
        body=response.content,
        retry_after=response.headers.get("retry-after"),
        elapsed=elapsed,
    )
