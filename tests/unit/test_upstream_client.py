"""The upstream client via httpx.MockTransport: headers, retries, budget, never-retried submits."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from gateway.upstream import UpstreamAmbiguous, UpstreamClient, UpstreamUnavailable

KEY = "gmi-secret-key-value-1234567890"
BASE = "https://upstream.test/api/v1/ie/requestqueue/apikey"


class Recorder:
    """A scripted upstream: answers (or raises) in order, and records every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def client(
    recorder: Callable[[httpx.Request], httpx.Response],
    sleeps: list[float],
    clock: Callable[[], float] = lambda: 0.0,
    **options: float,
) -> UpstreamClient:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return UpstreamClient(
        base_url=BASE,
        api_key=KEY,
        org_id="org-7",
        transport=httpx.MockTransport(recorder),
        sleep=sleep,
        clock=clock,
        **options,  # type: ignore[arg-type]
    )


async def test_headers_paths_and_pass_through() -> None:
    recorder = Recorder(httpx.Response(200, content=b'{"model_ids":["x"]}'))
    upstream = client(recorder, [])
    response = await upstream.get_model("../requests/a b")
    assert response.status == 200
    assert response.body == b'{"model_ids":["x"]}'
    sent = recorder.requests[0]
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["x-organization-id"] == "org-7"
    assert sent.headers["user-agent"].startswith("gmi-gateway/")
    assert sent.url.raw_path == b"/api/v1/ie/requestqueue/apikey/models/..%2Frequests%2Fa%20b"
    await upstream.submit(b'{"model":"m","payload":{}}')
    post = recorder.requests[1]
    assert post.method == "POST"
    assert post.headers["content-type"] == "application/json"
    assert post.content == b'{"model":"m","payload":{}}'
    await upstream.list_requests({"model_id": "m", "limit": "5"})
    assert recorder.requests[2].url.params == httpx.QueryParams({"model_id": "m", "limit": "5"})
    await upstream.aclose()
    await upstream.aclose()


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
async def test_gets_are_retried_on_retryable_statuses(status: int) -> None:
    recorder = Recorder(httpx.Response(status), httpx.Response(200, content=b"ok"))
    sleeps: list[float] = []
    response = await client(recorder, sleeps).get_request("r1")
    assert response.status == 200
    assert len(recorder.requests) == 2
    assert len(sleeps) == 1


@pytest.mark.parametrize("status", [400, 401, 404])
async def test_client_errors_are_not_retried(status: int) -> None:
    recorder = Recorder(httpx.Response(status, content=b'{"error":"x"}'))
    response = await client(recorder, []).get_request("r1")
    assert response.status == status
    assert len(recorder.requests) == 1


async def test_last_retryable_answer_is_returned_after_all_attempts() -> None:
    recorder = Recorder(httpx.Response(503, headers={"Retry-After": "0.5"}))
    sleeps: list[float] = []
    response = await client(recorder, sleeps, get_attempts=3).list_models()
    assert response.status == 503
    assert response.retry_after == "0.5"
    assert len(recorder.requests) == 3
    assert sleeps == [0.5, 0.5]  # Retry-After honoured


async def test_transport_errors_on_gets_are_retried_then_unavailable() -> None:
    recorder = Recorder(httpx.ConnectError("refused"))
    with pytest.raises(UpstreamUnavailable, match="GET /models failed: ConnectError"):
        await client(recorder, [], get_attempts=2).list_models()
    assert len(recorder.requests) == 2


async def test_retry_budget_stops_retries_during_an_outage() -> None:
    recorder = Recorder(httpx.Response(503))
    upstream = client(
        recorder,
        [],
        retry_budget_ratio=0.0,
        retry_budget_min_per_second=0.0,
        circuit_threshold=10_000,
    )
    for _ in range(150):
        await upstream.list_models()
    # The bucket starts with 100 tokens and nothing refills it: at most 100 retries in all.
    assert len(recorder.requests) == 150 + 100


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_submit_is_never_retried_on_an_answer(status: int) -> None:
    recorder = Recorder(httpx.Response(status))
    response = await client(recorder, []).submit(b"{}")
    assert response.status == status
    assert len(recorder.requests) == 1


async def test_submit_that_never_left_is_unavailable() -> None:
    recorder = Recorder(httpx.ConnectError("refused"))
    with pytest.raises(UpstreamUnavailable):
        await client(recorder, []).submit(b"{}")
    assert len(recorder.requests) == 1


@pytest.mark.parametrize(
    "error", [httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("reset"), httpx.ReadError("x")]
)
async def test_submit_without_an_answer_is_ambiguous(error: Exception) -> None:
    recorder = Recorder(error)
    with pytest.raises(UpstreamAmbiguous):
        await client(recorder, []).submit(b"{}")
    assert len(recorder.requests) == 1


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError(f"Bearer {KEY}"),
        httpx.ReadTimeout(f"Authorization: Bearer {KEY}"),
    ],
)
async def test_errors_never_carry_the_key(error: Exception) -> None:
    upstream = client(Recorder(error), [], get_attempts=1)
    assert KEY not in repr(upstream)
    for call in (upstream.submit(b"{}"), upstream.list_models()):
        with pytest.raises((UpstreamAmbiguous, UpstreamUnavailable)) as caught:
            await call
        assert KEY not in str(caught.value)
        assert KEY not in repr(caught.value)
        assert caught.value.__cause__ is None
        assert caught.value.__suppress_context__


async def test_circuit_opens_fails_fast_and_recovers_through_one_probe() -> None:
    now = [0.0]
    recorder = Recorder(httpx.Response(503))
    upstream = client(
        recorder, [], lambda: now[0], get_attempts=1, circuit_threshold=3, circuit_cooldown=10.0
    )
    for _ in range(3):
        assert (await upstream.list_models()).status == 503
    assert upstream.circuit.state == "open"
    for call in (upstream.list_models(), upstream.submit(b"{}")):
        with pytest.raises(UpstreamUnavailable, match="circuit open") as caught:
            await call
        assert caught.value.retry_after == 10.0
    assert len(recorder.requests) == 3  # nothing more reached the upstream
    now[0] = 10.0
    recorder.answers = [httpx.Response(200, content=b"{}")]
    assert upstream.circuit.state == "half_open"
    assert (await upstream.list_models()).status == 200
    assert upstream.circuit.state == "closed"


async def test_a_failed_probe_reopens_the_circuit() -> None:
    now = [0.0]
    recorder = Recorder(httpx.ConnectError("down"))
    upstream = client(
        recorder, [], lambda: now[0], get_attempts=1, circuit_threshold=2, circuit_cooldown=5.0
    )
    for _ in range(2):
        with pytest.raises(UpstreamUnavailable):
            await upstream.get_request("r")
    now[0] = 5.0
    with pytest.raises(UpstreamUnavailable, match="ConnectError"):
        await upstream.get_request("r")  # the probe
    assert upstream.circuit.state == "open"
    assert len(recorder.requests) == 3


async def test_client_errors_do_not_open_the_circuit() -> None:
    upstream = client(Recorder(httpx.Response(404)), [], get_attempts=1, circuit_threshold=2)
    for _ in range(5):
        await upstream.get_request("r")
    assert upstream.circuit.state == "closed"
