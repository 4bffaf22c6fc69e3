"""Structured JSON logs, the request-id middleware and secret redaction.

structlog's production chain (contextvars, ISO timestamps, JSON) writes one line per event to
stdout. Every request gets an id (``X-Request-ID`` accepted when well-formed, generated
otherwise) bound into the log context and returned on the response, and one canonical line
when it ends: the audit event's (``audit``), or for requests that are not audited (probes,
the scrape) a ``request`` line. A redaction processor scrubs every registered secret value from
every log line, whatever path it took to get there.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import ipaddress
import logging
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from datetime import UTC, datetime
from select import PIPE_BUF
from typing import Any, BinaryIO

import msgspec
import structlog

from gateway import audit, metrics

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = (
    "REQUEST_ID_HEADER",
    "RequestContextMiddleware",
    "audit_sink",
    "configure_logging",
    "request_id_of",
)

REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_REDACTED = "[REDACTED]"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_SENSITIVE_FIELDS = frozenset({"authorization", "api_key", "key", "password", "token"})


class _RedactedJSON:
    """structlog's last processor: the event as one JSON line, sensitive fields masked and every
    known secret value scrubbed from the finished line, wherever it was (a value, a nested one,
    a traceback). One substring search per secret on the line, not one per field."""

    def __init__(self, secrets: Iterable[str], *, text: bool = False) -> None:
        # A string appears in the line JSON-escaped, so that is the form searched for.
        self._secrets = tuple({msgspec.json.encode(s)[1:-1] for s in secrets if len(s) >= 4})
        self._text = text

    def __call__(self, _logger: object, _name: str, event: MutableMapping[str, Any]) -> bytes | str:
        for field in _SENSITIVE_FIELDS.intersection(event):
            event[field] = _REDACTED
        line = self.scrub(msgspec.json.encode(event, enc_hook=str))
        return line.decode() if self._text else line

    def scrub(self, line: bytes) -> bytes:
        """``line`` with every known secret value replaced."""
        for secret in self._secrets:
            if secret in line:
                line = line.replace(secret, _REDACTED.encode())
        return line


class _LineWriter:
    """structlog's output: the lines rendered in one event-loop iteration go out together.

    A write and flush per line cost more than rendering the line. Batching per iteration keeps
    the lines in order and holds none past the current iteration; with no running loop (the
    CLI, start-up) and at exit, lines are written at once. A batch goes out in writes of at most
    ``PIPE_BUF`` bytes, split between lines: the workers of ``serve --workers N`` share one
    stdout pipe, where only writes that small are atomic, so larger ones could interleave
    mid-line under back-pressure. A line longer than that goes alone.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._pending: list[bytes] = []
        atexit.register(self.flush)

    def msg(self, line: bytes) -> None:
        if not self._pending:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop in this thread
                self._out.write(line + b"\n")
                self._out.flush()
                return
        self._pending.append(line)

    debug = info = warning = error = critical = exception = msg

    def flush(self) -> None:
        lines, self._pending = self._pending, []
        start = size = 0
        for end, line in enumerate(lines):
            if end > start and size + len(line) + 1 > PIPE_BUF:  # the line and its newline
                self._write(lines[start:end])
                start, size = end, 0
            size += len(line) + 1
        if lines:
            self._write(lines[start:])

    def _write(self, lines: list[bytes]) -> None:
        # Flushed each time: the buffered stream must not merge chunks into one larger write.
        self._out.write(b"\n".join(lines) + b"\n")
        self._out.flush()


_audit_out: tuple[_LineWriter, _RedactedJSON] | None = None  # set by configure_logging


def configure_logging(level: str = "info", *, secrets: Iterable[str] = ()) -> None:
    """Set up structlog (JSON lines on stdout) and route stdlib logging at ``level``.

    Args:
        level: minimum level name (``debug`` … ``error``).
        secrets: values that must never appear in a log line (the GMI key); scrubbed everywhere.
    """
    global _audit_out  # noqa: PLW0603 -- the process's one stdout, like structlog's own config
    numeric = logging.getLevelName(level.upper())
    secrets = tuple(secrets)
    writer = _LineWriter(sys.stdout.buffer)
    _audit_out = (writer, _RedactedJSON(secrets))
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            _RedactedJSON(secrets),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=lambda *_: writer,
        cache_logger_on_first_use=True,
    )
    # Other libraries' stdlib records (granian, asyncio) become the same redacted JSON lines.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _RedactedJSON(secrets, text=True),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    logging.getLogger("httpx").setLevel(max(numeric, logging.WARNING))  # a line per call is noise


async def audit_sink(events: Sequence[audit.AuditEvent]) -> None:
    """The audit trail on stdout: one JSON line per event, at any log level (DESIGN §6).

    For an audited request this is its canonical log line (the middleware writes no other).
    The line is the one ``logger.info("audit", **event)`` gives (the event's set fields, then
    ``event``, ``level``, ``timestamp``), but rendered by msgspec straight from the event and
    stamped once per batch: structlog's processor chain cost ~7 µs a line, a tenth of a whole
    GET /models. The events carry no sensitive field (only key ids); secret values are
    scrubbed as on every other line.
    """
    global _audit_out  # noqa: PLW0603
    if _audit_out is None:  # logging not configured (a test app): JSON lines all the same
        _audit_out = (_LineWriter(sys.stdout.buffer), _RedactedJSON(()))
    writer, redact = _audit_out
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")  # structlog's TimeStamper
    tail = b'"event":"audit","level":"info","timestamp":"%s"}' % stamp.encode()
    for event in events:
        fields = msgspec.json.encode(event)[:-1]  # never "{}": time, kind, outcome are set
        writer.info(redact.scrub(fields + b"," + tail))


def request_id_of(scope: Scope) -> str:
    """Return the request id the middleware assigned to this connection ("" if none)."""
    state = scope.get("state") or {}
    return str(state.get("request_id", ""))


class RequestContextMiddleware:
    """Outermost ASGI layer: request id, log context, and the canonical ``request`` log line.

    It wraps Litestar's exception handling (see ``app.py``) so unknown routes, 405s and error
    responses get an ``X-Request-ID`` too, and so the error body can quote the same id. Headers
    a handler left in ``scope["state"]["response_headers"]`` (the RateLimit headers) are added
    to whatever response goes out, error or not.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        trusted_proxies: Sequence[IPNetwork] = (),
        unaudited: frozenset[str] = frozenset(),
    ) -> None:
        self._app = app
        self._log = structlog.get_logger("gateway.request")
        self._trusted = tuple(trusted_proxies)
        self._unaudited = unaudited
        self._series: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or os.urandom(16).hex()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        note = audit.begin_note()
        header = (REQUEST_ID_HEADER.encode(), request_id.encode())
        status = 500
        started = time.perf_counter()
        head = scope["method"] == "HEAD"
        if head:  # answered as the GET it asks about, without the body (RFC 9110 §9.3.2);
            scope = {**scope, "method": "GET"}  # a copy: the server must still see HEAD

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                extra = [
                    (k.lower().encode(), v.encode())
                    for k, v in state.get("response_headers", {}).items()
                ]
                message["headers"] = [*message.get("headers", ()), header, *extra]
            elif head:
                message = {**message, "body": b""}
            await send(message)

        try:
            await self._app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or "<unmatched>"
            method = "HEAD" if head else scope["method"] if scope["method"] in _METHODS else "OTHER"
            tenant = state.get("tenant")
            labels = (route, method, metrics.status_class(status), tenant or metrics.UNKNOWN)
            series = self._series.get(labels)
            if series is None:  # label values are bounded, and so is this cache
                series = self._series[labels] = (
                    metrics.HTTP_REQUESTS.labels(*labels),
                    metrics.HTTP_REQUEST_DURATION.labels(*labels),
                )
            series[0].inc()
            series[1].observe(elapsed)
            sink = getattr(getattr(scope.get("app"), "state", None), "audit", None)
            if sink is None or scope["path"] in self._unaudited:
                # Probes and scrapes come every few seconds: worth a line only when they fail.
                probe = scope["path"] in self._unaudited and status < 400
                log = self._log.debug if probe else self._log.info
                log(
                    "request",
                    method=method,
                    route=route,
                    status=status,
                    duration_ms=round(elapsed * 1000, 3),
                    tenant=tenant,
                    key_id=state.get("key_id"),
                )
            else:  # the audit event's log line is the request's one canonical line
                sink.emit(
                    self._event(
                        scope,
                        state,
                        note,
                        method=method,
                        route=route,
                        status=status,
                        elapsed=elapsed,
                    )
                )

    def _event(
        self,
        scope: Scope,
        state: dict[str, Any],
        note: audit.AuditNote,
        *,
        method: str,
        route: str,
        status: int,
        elapsed: float,
    ) -> audit.AuditEvent:
        code = state.get("error_code")
        outcome = note.outcome or ("ok" if code is None else code)
        return audit.AuditEvent(
            time=datetime.now(UTC).isoformat(timespec="milliseconds"),
            kind="request",
            outcome=outcome,
            tenant=state.get("tenant"),
            key_id=state.get("key_id"),
            request_id=state.get("request_id"),
            client_ip=client_address(scope, self._trusted),
            method=method,
            route=route,
            status=status,
            latency_ms=round(elapsed * 1000, 3),
            model=note.model,
            upstream_request_id=note.upstream_request_id,
            upstream_status=note.upstream_status,
            upstream_latency_ms=note.upstream_latency_ms,
            video_seconds_charged=note.video_seconds_charged,
            prompt_sha256=note.prompt_sha256,
            prompt_length=note.prompt_length,
            prompt=note.prompt,
        )


def client_address(scope: Scope, trusted: Sequence[IPNetwork]) -> str | None:
    """The client's address: the peer, or, when the peer is a trusted proxy, the nearest
    ``X-Forwarded-For`` hop that is not itself a trusted proxy (never a spoofable leftmost).

    Addresses are read as proxies write them (``1.2.3.4:5555``, ``[2001:db8::1]:443``) and an
    IPv4 address mapped into IPv6 (a dual-stack socket's ``::ffff:10.0.0.9``) as the IPv4 one,
    so it matches IPv4 ranges.
    """
    peer = scope.get("client")
    if not peer:
        return None
    address, shown = _peer(peer[0])
    if address is None or not trusted or not _within(address, trusted):
        return shown
    forwarded = ",".join(
        value.decode("latin-1") for name, value in scope["headers"] if name == b"x-forwarded-for"
    )
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        ip = _ip(hop)
        if ip is None:  # not an address: nothing from here on can be believed
            return shown
        if not _within(ip, trusted):
            return str(ip)
    return shown


@functools.lru_cache(maxsize=4096)
def _peer(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address | None, str]:
    """A peer's address and how the trail shows it, remembered: every request has a peer,
    most from a few proxies, and parsing one costs more than the rest of this module's work."""
    ip = _ip(text)
    return ip, text if ip is None else str(ip)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``text`` as an address (a port and IPv6 brackets dropped, IPv4-mapped unmapped)."""
    if text.startswith("["):  # [v6] or [v6]:port
        text, _, port = text[1:].partition("]")
        if port and not (port.startswith(":") and _is_port(port[1:])):
            return None
    elif text.count(":") == 1:  # v4:port
        text, _, port = text.partition(":")
        if not _is_port(port):
            return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _within(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, trusted: Sequence[IPNetwork]
) -> bool:
    return any(ip in network for network in trusted)


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _VALID_REQUEST_ID.fullmatch(text) else None
    return None
