"""The aiohttp transport on real loopback sockets: answers pass through, failures are told apart
by whether the request can have left, and no aiohttp exception (which may carry the request and
its Authorization header) is chained."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from gateway.upstream import UpstreamAmbiguous, UpstreamClient, UpstreamUnavailable
from gateway.upstream.transport import AiohttpTransport
from tests.support.processes import free_port

KEY = "upstream-key-that-must-not-leak-0123456789"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Server:
    """A raw HTTP/1.1 server whose behaviour each test chooses."""

    url: str
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


def answer(status: int, body: bytes, *headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", *headers, "", ""]
    return "\r\n".join(lines).encode() + body


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[Server]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> Server:
        server = Server(f"http://127.0.0.1:{free_port()}")

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            server.connections += 1
            try:
                await handler(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        port = int(server.url.rsplit(":", 1)[1])
        servers.append(await asyncio.start_server(on_connect, "127.0.0.1", port))
        return server

    yield start
    for one in servers:
        one.close()
        await one.wait_closed()


def upstream_for(url: str, **options: float) -> UpstreamClient:
    return UpstreamClient(base_url=url, api_key=KEY, get_attempts=1, **options)  # type: ignore[arg-type]


def chained(exc: BaseException) -> list[BaseException]:
    found = []
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        found.append(exc)
    return found


async def test_answers_pass_through_on_kept_alive_connections(
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            server.requests.append(await read_request(reader))
            writer.write(answer(429, b'{"error":"slow down"}', "Retry-After: 7"))
            await writer.drain()

    server = await serve(handler)
    upstream = upstream_for(server.url)
    try:
        first = await upstream.submit(b'{"model":"m","payload":{}}')
        second = await upstream.get_request("r1")
    finally:
        await upstream.aclose()
    assert (first.status, first.body, first.retry_after) == (429, b'{"error":"slow down"}', "7")
    assert second.status == 429
    assert server.connections == 1
    sent = server.requests[0]
    assert sent.startswith(b"POST /requests HTTP/1.1\r\n")
    assert f"\r\nauthorization: bearer {KEY}\r\n".encode() in sent.lower()
    assert sent.endswith(b'\r\n\r\n{"model":"m","payload":{}}')
    assert server.requests[1].startswith(b"GET /requests/r1 HTTP/1.1\r\n")


async def test_a_compressed_answer_is_decoded(
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(200, gzip.compress(b'{"model_ids":[]}'), "Content-Encoding: gzip"))
        await writer.drain()

    upstream = upstream_for((await serve(handler)).url)
    try:
        assert (await upstream.list_models()).body == b'{"model_ids":[]}'
    finally:
        await upstream.aclose()


async def test_a_refused_connection_means_nothing_was_sent() -> None:
    upstream = upstream_for(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(UpstreamUnavailable, match="could not connect") as caught:
            await upstream.submit(b"{}")
    finally:
        await upstream.aclose()
    assert chained(caught.value) == []


async def test_a_proxy_that_refuses_the_tunnel_means_nothing_was_sent(
    serve: Callable[[Handler], Awaitable[Server]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An egress proxy without the GMI host in its allow list, or wanting credentials: every
    submit was "ambiguous" (a 504 that kept its charge and slot), though none left the proxy."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"CONNECT ")
        writer.write(answer(403, b""))
        await writer.drain()

    proxy = await serve(handler)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    upstream = upstream_for("https://console.example")
    try:
        with pytest.raises(UpstreamUnavailable, match=r"proxy refused the tunnel.*status 403"):
            await upstream.submit(b"{}")
    finally:
        await upstream.aclose()
    assert proxy.connections == 1


async def test_waiting_for_a_pooled_connection_means_nothing_was_sent(
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    async def handler(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)  # holds the only connection

    upstream = upstream_for(
        (await serve(handler)).url, pool_size=1, connect_timeout=0.2, read_timeout=5.0
    )
    try:
        hog = asyncio.create_task(upstream.get_request("r1"))
        await asyncio.sleep(0.05)
        with pytest.raises(UpstreamUnavailable, match="connect timed out"):
            await upstream.submit(b"{}")
        hog.cancel()
    finally:
        await upstream.aclose()


@pytest.mark.parametrize("behaviour", ["close", "reset", "garbage"])
async def test_a_connection_lost_after_sending_is_ambiguous(
    serve: Callable[[Handler], Awaitable[Server]], behaviour: str
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if behaviour == "reset":
            writer.transport.abort()
        elif behaviour == "garbage":
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
            await writer.drain()

    upstream = upstream_for((await serve(handler)).url)
    try:
        with pytest.raises(UpstreamAmbiguous, match="broke the HTTP exchange") as caught:
            await upstream.submit(b"{}")
    finally:
        await upstream.aclose()
    assert chained(caught.value) == []
    assert KEY not in str(caught.value)


async def test_no_answer_in_time_is_ambiguous(
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    async def handler(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    upstream = upstream_for((await serve(handler)).url, read_timeout=0.2)
    try:
        with pytest.raises(UpstreamAmbiguous, match="read timed out"):
            await upstream.submit(b"{}")
    finally:
        await upstream.aclose()


async def test_the_transport_alone_raises_httpx_errors_without_a_chain() -> None:
    transport = AiohttpTransport(pool_size=2)
    request = httpx.Request("GET", f"http://127.0.0.1:{free_port()}/x")
    request.extensions["timeout"] = {"connect": 1.0, "read": 1.0, "write": 1.0, "pool": 1.0}
    try:
        with pytest.raises(httpx.ConnectError) as caught:
            await transport.handle_async_request(request)
    finally:
        await transport.aclose()
    assert caught.value.request is request
    assert chained(caught.value) == []


def test_proxies_come_from_the_environment_once_per_origin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "bypassed.internal")
    transport = AiohttpTransport(pool_size=1)
    assert transport._proxy_for(httpx.URL("https://console.example/x")) == (
        "http://proxy.internal:3128"
    )
    assert transport._proxy_for(httpx.URL("https://bypassed.internal/x")) is None
    assert transport._proxy_for(httpx.URL("http://plain.example/x")) is None
    monkeypatch.delenv("HTTPS_PROXY")
    assert transport._proxy_for(httpx.URL("https://console.example/y")) == (
        "http://proxy.internal:3128"
    )


async def test_an_answer_trickled_past_the_whole_bound_is_ambiguous(
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    """Each byte comes within the read timeout, but the whole answer would take seconds: a
    submit must still end within connect + read (its Idempotency-Key claim counts on it)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        for byte in answer(200, b"{}" * 100):
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.02)

    upstream = upstream_for((await serve(handler)).url, connect_timeout=0.2, read_timeout=0.3)
    try:
        with pytest.raises(UpstreamAmbiguous, match="read timed out"):
            await upstream.submit(b"{}")
    finally:
        await upstream.aclose()
