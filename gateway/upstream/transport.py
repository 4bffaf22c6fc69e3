"""httpx's transport interface over an aiohttp connection pool.

The upstream client keeps httpx's API (requests, timeouts, ``MockTransport`` in unit tests);
only the bytes move through aiohttp. Measured here, one process posting to the simulator at
32 concurrent calls: httpx's own pool spent ~920 µs of CPU per call (it polls every idle
connection's socket before each request, encode/httpx#3215), this transport ~230 µs.

Failures become httpx exceptions by one rule that the submit path depends on: only a failure
that provably happened before the request left is a connect error (``ConnectError``,
``ConnectTimeout``); anything later (a dropped connection, a reset, a read timeout, a malformed
answer) is a read-side error, so a submit that hit it is treated as possibly received. aiohttp
never retries a POST on its own (it retries only idempotent methods on a reused connection).
No aiohttp exception is chained: some carry the request, and so the Authorization header.
"""

from __future__ import annotations

import urllib.request

import aiohttp
import httpx

__all__ = ("AiohttpTransport",)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """A pooled HTTP/1.1 transport: up to ``pool_size`` connections, all kept alive between
    calls for ``keepalive_seconds`` (httpx's default: an idle connection the upstream may be
    about to close is not worth the risk of a submit lost on it)."""

    def __init__(self, *, pool_size: int, keepalive_seconds: float = 5.0) -> None:
        self._pool_size = pool_size
        self._keepalive = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str, int | None], str | None] = {}

    def _open(self) -> aiohttp.ClientSession:
        """The session, made on first use: aiohttp wants a running event loop."""
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._pool_size,
                limit_per_host=self._pool_size,
                keepalive_timeout=self._keepalive,
                ssl=httpx.create_ssl_context(),  # the same trust store as httpx (certifi)
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),  # never replay an upstream cookie
                auto_decompress=False,  # httpx decodes, by the response's own headers
            )
        return self._session

    def _proxy_for(self, url: httpx.URL) -> str | None:
        """The environment's proxy for this origin (``HTTPS_PROXY``, ``NO_PROXY``…), as httpx
        honours it; looked up once per origin, not per call as aiohttp's ``trust_env`` would."""
        origin = (url.scheme, url.host, url.port)
        if origin not in self._proxies:
            proxy = urllib.request.getproxies().get(url.scheme)
            bypass = proxy is None or urllib.request.proxy_bypass(url.host)
            self._proxies[origin] = None if bypass else proxy
        return self._proxies[origin]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        failure: httpx.TransportError | None = None
        try:
            async with self._open().request(
                request.method,
                str(request.url),
                headers=list(request.headers.multi_items()),
                data=request.content or None,
                allow_redirects=False,
                proxy=self._proxy_for(request.url),
                timeout=aiohttp.ClientTimeout(
                    total=_total(timeout.get("pool"), timeout.get("read")),
                    connect=timeout.get("pool"),  # waiting for a pooled connection, or a new one
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            ) as answer:
                body = await answer.read()
                status, headers = answer.status, answer.raw_headers
        except aiohttp.ConnectionTimeoutError:
            failure = httpx.ConnectTimeout("timed out before sending", request=request)
        except aiohttp.ClientConnectorError:
            failure = httpx.ConnectError("could not connect; nothing sent", request=request)
        except aiohttp.ClientHttpProxyError as exc:  # the tunnel was refused: nothing went on
            failure = httpx.ProxyError(f"status {exc.status}", request=request)
        except aiohttp.SocketTimeoutError:
            failure = httpx.ReadTimeout("timed out waiting for the answer", request=request)
        except TimeoutError:  # the total: the answer came, but too slowly
            failure = httpx.ReadTimeout("the answer took too long in all", request=request)
        except (aiohttp.ClientError, OSError) as exc:
            message = f"exchange broken after sending ({type(exc).__name__})"
            failure = httpx.RemoteProtocolError(message, request=request)
        if failure is not None:
            raise failure  # outside the handler: no aiohttp exception in the chain
        return httpx.Response(
            status, headers=headers, stream=httpx.ByteStream(body), request=request
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _total(connecting: float | None, reading: float | None) -> float | None:
    """The whole exchange's bound: ``sock_read`` bounds each wait for bytes, so an upstream
    trickling its answer would otherwise hold a submit past its Idempotency-Key claim."""
    return None if connecting is None or reading is None else connecting + reading
