"""A finished JSON answer, handed to the server as it is.

Litestar passes an ASGI app that a handler returns straight through, so the mirror routes
answer with a :class:`Reply` rather than a ``Response``: no header normalisation, media-type
resolution or re-encoding per request. Measured on GET /models: ~15 µs of ~60 µs in-process.
Errors still go through ``Response`` (the exception handlers in ``app.py``): they are rare.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from litestar.types import Receive, Scope, Send

__all__ = ("Reply",)

Headers = Iterable[tuple[bytes, bytes]]
_JSON = (b"content-type", b"application/json")
_BODYLESS = frozenset({204, 304})


class Reply:
    """Status, headers (lower-case, encoded) and a JSON body; ``Content-Length`` is added."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, body: bytes, *, status: int = 200, headers: Headers = ()) -> None:
        self.status = status
        if status in _BODYLESS:
            self.body = b""
            self.headers = list(headers)
        else:
            self.body = body
            self.headers = [_JSON, (b"content-length", b"%d" % len(body)), *headers]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start: Any = {"type": "http.response.start", "status": self.status, "headers": self.headers}
        await send(start)
        await send({"type": "http.response.body", "body": self.body, "more_body": False})
