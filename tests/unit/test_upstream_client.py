"""The upstream client via httpx.MockTransport: headers, retries, budget, never-retried submits."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Callable
from importlib.metadata import version

import httpx
import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from gateway.upstream import (
    UpstreamAmbiguous,
    UpstreamClient,
    UpstreamError,
    UpstreamResponse,
    UpstreamUnavailable,
)
from gateway.upstream import retry as retry_module
from gateway.upstream.retry import RetryBudget, backoff_delay
from gateway.upstream.transport import AiohttpTransport

KEY = "gmi-secret-key-value-1234567890"
BASE = "https://upstream.test/api/v1/ie/requestqueue/apikey"
PREFIX = b"/api/v1/ie/requestqueue/apikey"

RETRYABLE = [429, 500, 502, 503, 504]
# Transport failures, each built with the key in its text: a leak would show.
NOT_SENT: list[type[httpx.TransportError]] = [
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
]
MAYBE_SENT: list[type[httpx.TransportError]] = [
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.WriteError,
    httpx.ReadError,
    httpx.RemoteProtocolError,
]


class Recorder:
    """A scripted upstream: answers (or raises) in order, repeating the last, recording requests."""

    def __init__(self, *answers: httpx.Response | BaseException) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer


def client(
    recorder: Callable[[httpx.Request], httpx.Response],
    sleeps: list[float] | None = None,
    clock: Callable[[], float] = lambda: 0.0,
    **options: float | str | None,
) -> UpstreamClient:
    """An UpstreamClient on a MockTransport, whose sleeps are recorded instead of slept."""
    recorded = sleeps if sleeps is not None else []

    async def sleep(seconds: float) -> None:
        recorded.append(seconds)

    settings: dict[str, float | str | None] = {"org_id": "org-7", **options}
    return UpstreamClient(
        base_url=BASE,
        api_key=KEY,
        transport=httpx.MockTransport(recorder),
        sleep=sleep,
        clock=clock,
        **settings,  # type: ignore[arg-type]
    )


async def invoke(upstream: UpstreamClient, call: str) -> UpstreamResponse:
    """One submit or one GET, by name (for tests parametrized over both)."""
    if call == "submit":
        return await upstream.submit(b"{}")
    return await upstream.get_request("r1")


def leaked(exc: BaseException) -> list[str]:
    """Every place in the exception, its chain and its rendered traceback that shows the key."""
    places = []
    for name, text in (
        ("str", str(exc)),
        ("repr", repr(exc)),
        ("traceback", "".join(traceback.format_exception(exc))),
    ):
        if KEY in text:
            places.append(name)
    linked: BaseException | None = exc.__cause__ or exc.__context__
    while linked is not None:
        if KEY in str(linked) or KEY in repr(linked) or KEY in repr(vars(linked)):
            places.append(f"chain:{type(linked).__name__}")
        linked = linked.__cause__ or linked.__context__
    return places


# --- what is sent, what comes back ------------------------------------------------------------


async def test_default_headers_and_pass_through_of_any_answer() -> None:
    body = b'{"error": "teapot", "x":  [1,2]}\n'  # odd spacing: must come back byte for byte
    recorder = Recorder(httpx.Response(418, content=body, headers={"Retry-After": "7"}))
    upstream = client(recorder)
    response = await upstream.list_models()
    assert (response.status, response.body, response.retry_after) == (418, body, "7")
    assert response.elapsed >= 0.0
    sent = recorder.requests[0]
    assert sent.method == "GET"
    assert sent.url.raw_path == PREFIX + b"/models"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["accept"] == "application/json"
    assert sent.headers["user-agent"] == f"gmi-gateway/{version('gmi-gateway')}"
    assert sent.headers["x-organization-id"] == "org-7"


async def test_no_organization_header_without_org_id() -> None:
    recorder = Recorder(httpx.Response(200))
    await client(recorder, org_id=None).list_models()
    assert "x-organization-id" not in recorder.requests[0].headers


async def test_submit_sends_the_body_as_is_as_json() -> None:
    body = b'{"model":"Kling-Text2Video-V2-Master",  "payload":{"prompt":"\\u00e9"}}'
    recorder = Recorder(httpx.Response(200, content=b'{"request_id":"r1"}'))
    response = await client(recorder).submit(body)
    assert (response.status, response.body) == (200, b'{"request_id":"r1"}')
    post = recorder.requests[0]
    assert post.method == "POST"
    assert post.url.raw_path == PREFIX + b"/requests"
    assert post.headers["content-type"] == "application/json"
    assert post.headers["authorization"] == f"Bearer {KEY}"
    assert post.content == body


async def test_list_requests_passes_the_query_parameters() -> None:
    recorder = Recorder(httpx.Response(200))
    await client(recorder).list_requests({"model_id": "a&b=c", "limit": "5"})
    url = recorder.requests[0].url
    assert url.raw_path.split(b"?")[0] == PREFIX + b"/requests"
    assert url.params == httpx.QueryParams({"model_id": "a&b=c", "limit": "5"})


@pytest.mark.parametrize(
    ("value", "segment"),
    [
        ("Kling-Text2Video-V2-Master", b"Kling-Text2Video-V2-Master"),
        ("../x", b"..%2Fx"),
        ("a/b", b"a%2Fb"),
        ("..", b"%2E%2E"),
        (".", b"%2E"),
        ("a?b#c", b"a%3Fb%23c"),
        ("%2F", b"%252F"),
        ("a b", b"a%20b"),
    ],
)
async def test_path_parameters_cannot_change_the_path(value: str, segment: bytes) -> None:
    recorder = Recorder(httpx.Response(200))
    upstream = client(recorder)
    await upstream.get_model(value)
    await upstream.get_request(value)
    assert recorder.requests[0].url.raw_path == PREFIX + b"/models/" + segment
    assert recorder.requests[1].url.raw_path == PREFIX + b"/requests/" + segment


async def test_redirects_are_returned_not_followed() -> None:
    recorder = Recorder(httpx.Response(302, headers={"Location": "https://elsewhere.test/"}))
    response = await client(recorder).get_request("r1")
    assert response.status == 302
    assert len(recorder.requests) == 1


async def test_one_pool_with_keep_alive_equal_to_its_size_and_all_timeouts() -> None:
    upstream = UpstreamClient(
        base_url=BASE, api_key=KEY, connect_timeout=1.5, read_timeout=9.0, pool_size=7
    )
    try:
        assert upstream._http.timeout == httpx.Timeout(connect=1.5, read=9.0, write=9.0, pool=1.5)
        assert upstream._http.follow_redirects is False
        transport = upstream._http._transport
        assert isinstance(transport, AiohttpTransport)
        assert transport._pool_size == 7
    finally:
        await upstream.aclose()


# --- GET retries ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", RETRYABLE)
async def test_gets_are_retried_on_retryable_statuses(status: int) -> None:
    recorder = Recorder(httpx.Response(status), httpx.Response(200, content=b"ok"))
    sleeps: list[float] = []
    response = await client(recorder, sleeps).get_request("r1")
    assert (response.status, response.body) == (200, b"ok")
    assert len(recorder.requests) == 2
    assert len(sleeps) == 1


@pytest.mark.parametrize("error", [*NOT_SENT, *MAYBE_SENT])
async def test_gets_are_retried_on_transport_errors(error: type[httpx.TransportError]) -> None:
    recorder = Recorder(error("boom"), httpx.Response(200, content=b"ok"))
    sleeps: list[float] = []
    response = await client(recorder, sleeps).get_model("m")
    assert (response.status, response.body) == (200, b"ok")
    assert len(recorder.requests) == 2
    assert len(sleeps) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409])
async def test_client_errors_are_not_retried(status: int) -> None:
    recorder = Recorder(httpx.Response(status, content=b'{"error":"x"}'))
    sleeps: list[float] = []
    response = await client(recorder, sleeps).get_request("r1")
    assert (response.status, response.body) == (status, b'{"error":"x"}')
    assert len(recorder.requests) == 1
    assert sleeps == []


async def test_last_retryable_answer_is_returned_after_all_attempts() -> None:
    recorder = Recorder(httpx.Response(503, content=b"busy", headers={"Retry-After": "0.5"}))
    sleeps: list[float] = []
    response = await client(recorder, sleeps, get_attempts=3).list_models()
    assert (response.status, response.body, response.retry_after) == (503, b"busy", "0.5")
    assert len(recorder.requests) == 3
    assert sleeps == [0.5, 0.5]  # Retry-After honoured


async def test_a_get_retries_fast_failures_only_so_it_takes_one_attempts_time() -> None:
    """serve's drain counts on it: three attempts at a hanging upstream took three timeouts."""
    now = [0.0]

    def slow_503(request: httpx.Request) -> httpx.Response:
        recorder.requests.append(request)
        now[0] += 6.0  # a failure that took longer than the retry window
        return httpx.Response(503)

    recorder = Recorder(httpx.Response(503))
    response = await client(slow_503, clock=lambda: now[0], get_attempts=3).get_request("r1")
    assert response.status == 503
    assert len(recorder.requests) == 1
    fast = Recorder(httpx.Response(503))
    assert (await client(fast, get_attempts=3).get_request("r1")).status == 503
    assert len(fast.requests) == 3


async def test_retry_after_is_capped_at_backoff_max() -> None:
    recorder = Recorder(httpx.Response(429, headers={"Retry-After": "30"}), httpx.Response(200))
    sleeps: list[float] = []
    await client(recorder, sleeps, backoff_max=2.0).list_models()
    assert sleeps == [2.0]


async def test_backoff_is_full_jitter_under_a_growing_capped_ceiling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ceilings: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        ceilings.append((low, high))
        return high / 2

    monkeypatch.setattr(retry_module.random, "uniform", uniform)
    # An HTTP-date Retry-After is not a number of seconds: the jittered backoff applies.
    busy = httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    sleeps: list[float] = []
    upstream = client(Recorder(busy), sleeps, get_attempts=5, backoff_base=0.5, backoff_max=1.5)
    assert (await upstream.list_models()).status == 503
    assert ceilings == [(0.0, 0.5), (0.0, 1.0), (0.0, 1.5), (0.0, 1.5)]
    assert sleeps == [0.25, 0.5, 0.75, 0.75]


def test_backoff_delay_stays_within_its_ceiling() -> None:
    for attempt in range(1, 8):
        ceiling = min(2.0, 0.1 * 2 ** (attempt - 1))
        for _ in range(50):
            assert 0.0 <= backoff_delay(attempt, base=0.1, maximum=2.0) <= ceiling
    assert backoff_delay(1, base=0.1, maximum=2.0, retry_after="-3") == 0.0


async def test_transport_errors_on_gets_end_in_unavailable() -> None:
    recorder = Recorder(httpx.ConnectError("refused"))
    with pytest.raises(UpstreamUnavailable) as caught:
        await client(recorder, get_attempts=3).list_models()
    assert (
        str(caught.value)
        == "could not connect to the upstream on GET /models (ConnectError, 3 attempts)"
    )
    assert len(recorder.requests) == 3


async def test_a_transport_error_after_a_5xx_is_what_gets_reported() -> None:
    recorder = Recorder(httpx.Response(503), httpx.ReadTimeout("slow"))
    with pytest.raises(UpstreamUnavailable, match=r"read timed out after 30\.0s on GET /requests"):
        await client(recorder, get_attempts=2).list_requests({})


# --- retry budget -----------------------------------------------------------------------------


async def test_retry_budget_stops_retries_during_an_outage() -> None:
    recorder = Recorder(httpx.Response(503))
    upstream = client(
        recorder,
        retry_budget_ratio=0.0,
        retry_budget_min_per_second=0.0,
        circuit_threshold=10_000,
    )
    for _ in range(150):
        assert (await upstream.list_models()).status == 503
    # The bucket starts with 100 tokens and nothing refills it: at most 100 retries in all.
    assert len(recorder.requests) == 150 + 100


async def test_an_exhausted_budget_raises_the_first_transport_error_without_sleeping() -> None:
    recorder = Recorder(httpx.ConnectError("refused"))
    sleeps: list[float] = []
    upstream = client(
        recorder, sleeps, retry_budget_ratio=0.0, retry_budget_min_per_second=0.0,
        circuit_threshold=10_000, get_attempts=2,
    )  # fmt: skip
    upstream._budget = RetryBudget(ratio=0.0, min_per_second=0.0, clock=lambda: 0.0, cap=0.0)
    with pytest.raises(UpstreamUnavailable, match=r"\(ConnectError\)$"):
        await upstream.list_models()
    assert len(recorder.requests) == 1
    assert sleeps == []


def test_budget_deposits_refills_with_the_clock_and_is_capped() -> None:
    now = [0.0]
    budget = RetryBudget(ratio=0.5, min_per_second=0.25, clock=lambda: now[0], cap=2.0)
    assert budget.try_withdraw()
    assert budget.try_withdraw()
    assert not budget.try_withdraw()  # starts full at the cap, then empty
    budget.deposit()
    assert not budget.try_withdraw()  # half a token
    budget.deposit()
    assert budget.try_withdraw()  # two first attempts pay for one retry
    now[0] = 4.0  # 4 s x 0.25/s
    assert budget.try_withdraw()
    assert not budget.try_withdraw()
    now[0] = 1000.0
    budget.deposit()
    assert [budget.try_withdraw() for _ in range(3)] == [True, True, False]  # capped at 2


# --- submits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", RETRYABLE)
async def test_submit_is_never_retried_on_an_answer(status: int) -> None:
    recorder = Recorder(httpx.Response(status, content=b"e"), httpx.Response(200))
    sleeps: list[float] = []
    response = await client(recorder, sleeps).submit(b"{}")
    assert (response.status, response.body) == (status, b"e")
    assert len(recorder.requests) == 1
    assert sleeps == []


@pytest.mark.parametrize("error", NOT_SENT)
async def test_submit_that_never_left_is_unavailable(error: type[httpx.TransportError]) -> None:
    recorder = Recorder(error("refused"), httpx.Response(200))
    sleeps: list[float] = []
    with pytest.raises(UpstreamUnavailable) as caught:
        await client(recorder, sleeps).submit(b"{}")
    assert not isinstance(caught.value, UpstreamAmbiguous)
    assert "POST /requests" in str(caught.value)
    assert len(recorder.requests) == 1
    assert sleeps == []


@pytest.mark.parametrize("error", MAYBE_SENT)
async def test_submit_without_an_answer_is_ambiguous(error: type[httpx.TransportError]) -> None:
    recorder = Recorder(error("lost"), httpx.Response(200))
    sleeps: list[float] = []
    with pytest.raises(UpstreamAmbiguous) as caught:
        await client(recorder, sleeps).submit(b"{}")
    assert "POST /requests" in str(caught.value)
    assert len(recorder.requests) == 1
    assert sleeps == []


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (httpx.ReadTimeout, "upstream read timed out after 30.0s on POST /requests (ReadTimeout)"),
        (httpx.WriteTimeout, "upstream write timed out after 30.0s on POST /requests"),
        (httpx.ConnectTimeout, "upstream connect timed out after 5.0s on POST /requests"),
        (httpx.PoolTimeout, "no upstream connection free within 5.0s on POST /requests"),
        (httpx.RemoteProtocolError, "upstream broke the HTTP exchange on POST /requests"),
    ],
)
async def test_messages_say_what_happened(error: type[httpx.TransportError], message: str) -> None:
    with pytest.raises(UpstreamError) as caught:
        await client(Recorder(error("x"))).submit(b"{}")
    assert str(caught.value).startswith(message)


# --- secrets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [*NOT_SENT, *MAYBE_SENT])
@pytest.mark.parametrize("call", ["submit", "get"])
async def test_errors_never_carry_the_key(error: type[httpx.TransportError], call: str) -> None:
    upstream = client(Recorder(error(f"Authorization: Bearer {KEY}")), get_attempts=1)
    with pytest.raises(UpstreamError) as caught:
        await invoke(upstream, call)
    assert leaked(caught.value) == []
    # Not even a suppressed link: the httpx error's request carries the Authorization header.
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None


def test_the_key_is_not_in_the_clients_repr() -> None:
    upstream = UpstreamClient(base_url=BASE, api_key=KEY, org_id="org-7")
    assert KEY not in repr(upstream)
    assert KEY not in str(upstream)
    assert BASE in repr(upstream)


# --- lifecycle --------------------------------------------------------------------------------


async def test_aclose_is_idempotent_and_a_closed_client_sends_nothing() -> None:
    recorder = Recorder(httpx.Response(200))
    upstream = client(recorder)
    await upstream.aclose()
    await upstream.aclose()
    for call in (upstream.submit, upstream.get_request):
        with pytest.raises(UpstreamUnavailable, match="closed"):
            await call("x")  # type: ignore[operator]
    assert recorder.requests == []


# --- circuit breaker --------------------------------------------------------------------------


async def test_circuit_opens_fails_fast_and_recovers_through_one_probe() -> None:
    now = [0.0]
    recorder = Recorder(httpx.Response(503))
    upstream = client(
        recorder, clock=lambda: now[0], get_attempts=1, circuit_threshold=3, circuit_cooldown=10.0
    )
    latencies = REGISTRY.get_sample_value(
        "gmigw_upstream_request_duration_seconds_count", {"endpoint": "GET /models"}
    )
    with capture_logs() as logs:
        for _ in range(3):
            assert (await upstream.list_models()).status == 503
        assert upstream.circuit.state == "open"
        with pytest.raises(UpstreamUnavailable, match="circuit open") as caught:
            await upstream.list_models()
        assert caught.value.retry_after == 10.0
        with pytest.raises(UpstreamUnavailable, match="circuit open"):
            await upstream.submit(b"{}")
        assert len(recorder.requests) == 3  # nothing more reached the upstream
        now[0] = 10.0
        recorder.answers = [httpx.Response(200, content=b"{}")]
        assert upstream.circuit.state == "half_open"
        assert (await upstream.list_models()).status == 200
        assert upstream.circuit.state == "closed"
    # Each change of state is logged once; refused calls took no time, so they add no latency.
    assert [e["event"] for e in logs] == ["upstream_circuit_opened", "upstream_circuit_closed"]
    assert (
        REGISTRY.get_sample_value(
            "gmigw_upstream_request_duration_seconds_count", {"endpoint": "GET /models"}
        )
        == (latencies or 0) + 4
    )


async def test_a_refused_gmi_key_is_logged_for_the_operator_once_a_minute() -> None:
    now = [0.0]
    upstream = client(Recorder(httpx.Response(401)), clock=lambda: now[0], circuit_threshold=100)
    with capture_logs() as logs:
        for second in (0.0, 1.0, 59.0, 60.0):
            now[0] = second
            assert (await upstream.list_models()).status == 401
    assert [(e["event"], e["log_level"]) for e in logs] == [("upstream_auth_rejected", "error")] * 2


async def test_a_failed_probe_reopens_the_circuit() -> None:
    now = [0.0]
    recorder = Recorder(httpx.ConnectError("down"))
    upstream = client(
        recorder, clock=lambda: now[0], get_attempts=1, circuit_threshold=2, circuit_cooldown=5.0
    )
    for _ in range(2):
        with pytest.raises(UpstreamUnavailable):
            await upstream.get_request("r")
    now[0] = 5.0
    with pytest.raises(UpstreamUnavailable, match="ConnectError"):
        await upstream.get_request("r")  # the probe
    assert upstream.circuit.state == "open"
    assert len(recorder.requests) == 3


@pytest.mark.parametrize("call", ["submit", "get"])
async def test_a_cancelled_probe_does_not_wedge_the_circuit(call: str) -> None:
    now = [0.0]
    recorder = Recorder(httpx.Response(503))
    upstream = client(
        recorder, clock=lambda: now[0], get_attempts=1, circuit_threshold=1, circuit_cooldown=5.0
    )
    assert (await upstream.list_models()).status == 503
    now[0] = 5.0
    recorder.answers = [asyncio.CancelledError()]
    with pytest.raises(asyncio.CancelledError):
        await invoke(upstream, call)
    now[0] = 10.0  # one more cooldown, and a new probe must be let through
    recorder.answers = [httpx.Response(200)]
    assert (await upstream.list_models()).status == 200
    assert upstream.circuit.state == "closed"


async def test_a_circuit_that_opens_mid_retry_returns_the_last_answer() -> None:
    recorder = Recorder(httpx.Response(503, content=b"busy"))
    upstream = client(recorder, get_attempts=3, circuit_threshold=2)
    response = await upstream.list_models()
    assert (response.status, response.body) == (503, b"busy")
    assert len(recorder.requests) == 2


async def test_client_errors_do_not_open_the_circuit() -> None:
    upstream = client(Recorder(httpx.Response(404)), get_attempts=1, circuit_threshold=2)
    for _ in range(5):
        await upstream.get_request("r")
    assert upstream.circuit.state == "closed"
