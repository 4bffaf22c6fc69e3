"""Client addresses behind proxies, and secret redaction in log lines."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import re
import select
import subprocess
import sys
from typing import Any

import pytest

from gateway.log import _LineWriter, _RedactedJSON, client_address

PROXIES = (ipaddress.ip_network("10.0.0.0/8"),)


def scope(peer: str, forwarded: str | None = None) -> dict[str, Any]:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded is not None else []
    return {"client": (peer, 5000), "headers": headers}


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("203.0.113.9", None, PROXIES, "203.0.113.9"),
        ("203.0.113.9", "1.2.3.4", PROXIES, "203.0.113.9"),  # not a trusted peer: header ignored
        ("10.1.2.3", "198.51.100.7", PROXIES, "198.51.100.7"),
        ("10.1.2.3", "6.6.6.6, 198.51.100.7, 10.9.9.9", PROXIES, "198.51.100.7"),  # spoofed left
        ("10.1.2.3", "10.4.4.4", PROXIES, "10.1.2.3"),  # nothing untrusted: the peer
        ("10.1.2.3", "198.51.100.7", (), "10.1.2.3"),  # no trusted proxies configured
        ("10.1.2.3", "not-an-ip, 198.51.100.7", PROXIES, "198.51.100.7"),
        ("10.1.2.3", "198.51.100.7, " + "x" * 3000, PROXIES, "10.1.2.3"),  # never garbage
        # As proxies and dual-stack sockets write them:
        ("::ffff:10.1.2.3", "198.51.100.7", PROXIES, "198.51.100.7"),  # a mapped trusted peer
        ("::ffff:203.0.113.9", None, PROXIES, "203.0.113.9"),
        ("10.1.2.3", "198.51.100.7, ::ffff:10.9.9.9", PROXIES, "198.51.100.7"),
        ("10.1.2.3", "198.51.100.7:5555", PROXIES, "198.51.100.7"),  # Azure's ip:port
        ("10.1.2.3", "[2001:db8::1]:443", PROXIES, "2001:db8::1"),
        ("10.1.2.3", "[2001:db8::1]", PROXIES, "2001:db8::1"),
        ("10.1.2.3", "2001:db8::1", PROXIES, "2001:db8::1"),
        ("10.1.2.3", "198.51.100.7:x", PROXIES, "10.1.2.3"),  # a broken port: not an address
        ("10.1.2.3", "[2001:db8::1]x", PROXIES, "10.1.2.3"),
        ("10.1.2.3", "[2001:db8::1]:", PROXIES, "10.1.2.3"),
    ],
)
def test_client_address(
    peer: str, forwarded: str | None, trusted: tuple[Any, ...], expected: str
) -> None:
    assert client_address(scope(peer, forwarded), trusted) == expected


def test_redaction_scrubs_secret_values_and_sensitive_fields() -> None:
    render = _RedactedJSON(["gmi-super-secret-key", 'quote"d-secret'])
    event = {
        "event": "boom Bearer gmi-super-secret-key",
        "authorization": "x",
        "nested": {"detail": ["gmi-super-secret-key"]},
        "quoted": 'a quote"d-secret here',
        "ok": "fine",
    }
    line = render(None, "info", event)
    assert isinstance(line, bytes)
    assert json.loads(line) == {
        "event": "boom Bearer [REDACTED]",
        "authorization": "[REDACTED]",
        "nested": {"detail": ["[REDACTED]"]},
        "quoted": "a [REDACTED] here",
        "ok": "fine",
    }


def test_stdlib_and_structlog_lines_are_json_and_redacted() -> None:
    """In a fresh interpreter, as the CLI configures it, so this process's logging is untouched."""
    program = """
import logging, structlog
from gateway.log import configure_logging
configure_logging("info", secrets=["gmi-chain-secret"])
structlog.get_logger("gateway.x").info("direct gmi-chain-secret", detail="gmi-chain-secret")
logging.getLogger("uvicorn.error").info("stdlib %s", "gmi-chain-secret")
try:
    raise ValueError("gmi-chain-secret in a traceback")
except ValueError:
    logging.getLogger("asyncio").exception("crash")
"""
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["event"] for line in lines] == ["direct [REDACTED]", "stdlib [REDACTED]", "crash"]
    assert "gmi-chain-secret" not in done.stdout + done.stderr
    assert lines[2]["exception"].endswith("ValueError: [REDACTED] in a traceback")


def test_audit_lines_pass_any_log_level_as_structlog_would_render_them() -> None:
    """DESIGN §6: the audit sink writes to stdout always, even at GATEWAY_LOG_LEVEL=error; its
    lines (rendered without structlog's chain) have the shape and redaction of every other."""
    program = """
import asyncio, msgspec, structlog
from gateway.audit import AuditEvent
from gateway.log import audit_sink, configure_logging
configure_logging("error", secrets=["gmi-audit-secret"])
structlog.get_logger("gateway.x").info("filtered out")
event = AuditEvent(time="t", kind="request", outcome="ok", status=200, prompt="a gmi-audit-secret")
asyncio.run(audit_sink([event, event]))
structlog.get_logger("gateway.x").error("audit", **msgspec.to_builtins(event))
"""
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    assert "gmi-audit-secret" not in done.stdout
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 3
    sunk, _, logged = lines
    assert (sunk["event"], sunk["outcome"], sunk["status"]) == ("audit", "ok", 200)
    assert sunk["prompt"] == "a [REDACTED]"
    assert list(sunk) == list(logged)  # the same fields in the same order
    assert {k: v for k, v in sunk.items() if k not in ("level", "timestamp")} == {
        k: v for k, v in logged.items() if k not in ("level", "timestamp")
    }
    assert sunk["level"] == "info"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", sunk["timestamp"])


class CountingBuffer(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: Any) -> int:
        self.writes += 1
        return super().write(data)


def test_lines_of_one_loop_iteration_go_out_in_one_write_in_order() -> None:
    out = CountingBuffer()
    writer = _LineWriter(out)
    writer.info(b"before the loop")  # no running loop: written at once
    assert (out.getvalue(), out.writes) == (b"before the loop\n", 1)

    async def burst() -> None:
        for n in range(3):
            writer.info(b"line %d" % n)
        assert out.writes == 1  # held until the end of this iteration
        await asyncio.sleep(0)
        assert out.writes == 2
        writer.info(b"at exit")

    asyncio.run(burst())
    writer.flush()  # what the atexit hook does for lines still held
    assert out.getvalue().splitlines() == [
        b"before the loop",
        b"line 0",
        b"line 1",
        b"line 2",
        b"at exit",
    ]


class RecordingPipe(io.RawIOBase):
    """The file descriptor under a buffered stdout: what each write system call would carry."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.writes.append(bytes(data))
        return len(data)


def test_batches_reach_the_pipe_in_atomic_writes_of_whole_lines() -> None:
    """Workers share one stdout pipe: a write over PIPE_BUF could interleave with another's."""
    pipe = RecordingPipe()
    writer = _LineWriter(io.BufferedWriter(pipe))  # buffered, as sys.stdout.buffer is
    lines = [b"%03d " % n + b"x" * (n * 37 % 500) for n in range(60)]
    lines.insert(30, b"long " + b"y" * select.PIPE_BUF)  # a line that cannot fit alone

    async def one_iteration() -> None:
        for line in lines:
            writer.info(line)
        await asyncio.sleep(0)  # the end of the iteration flushes

    asyncio.run(one_iteration())
    assert b"".join(pipe.writes) == b"".join(line + b"\n" for line in lines)  # whole, in order
    for write in pipe.writes:
        assert write.endswith(b"\n")
        assert len(write) <= select.PIPE_BUF or write.count(b"\n") == 1
    for write, following in zip(pipe.writes, pipe.writes[1:], strict=False):
        # Still batched: no write could have taken the next line too.
        assert len(write) + following.index(b"\n") + 1 > select.PIPE_BUF
