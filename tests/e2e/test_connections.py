"""What a client can do to the server's connections must not stop it answering others."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx

from tests.conftest import UPSTREAM_KEY, Keys, SimControl
from tests.support.processes import MIRROR, ServerProcess, start_gateway


def test_idle_connections_do_not_stop_the_gateway_answering(
    sim: ServerProcess, tenants_file: Path, tmp_path: Path
) -> None:
    """1,024 connections that send nothing (granian's default backpressure) made every other
    request, /healthz included, wait for ever: anyone who can reach the pod could stall it."""
    server = start_gateway(
        tmp_path, sim=sim, upstream_key=UPSTREAM_KEY, tenants_file=tenants_file, name="idle"
    )
    idle: list[socket.socket] = []
    try:
        idle.extend(socket.create_connection(("127.0.0.1", server.port)) for _ in range(1100))
        time.sleep(0.5)
        assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
    finally:
        for connection in idle:
            connection.close()
        server.stop()


def test_a_body_that_stops_arriving_is_408_and_audited(
    sim: ServerProcess, sim_control: SimControl, tenants_file: Path, keys: Keys, tmp_path: Path
) -> None:
    """The server times out only header reads: a client that went quiet mid-body kept its
    request open, unaudited, and held the pod's shutdown until granian killed the worker."""
    server = start_gateway(
        tmp_path,
        sim=sim,
        upstream_key=UPSTREAM_KEY,
        tenants_file=tenants_file,
        name="stalled",
        extra_env={"GATEWAY_BODY_IDLE_SECONDS": "0.5"},
    )
    head = (
        f"POST {MIRROR}/requests HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {keys.studio}\r\n"
        "Content-Type: application/json\r\nX-Request-ID: stalled-1\r\n"
    )
    body = b'{"model": "Kling-Text2Video-V2-Master", "payload": {"prompt": "slow but steady"}}'
    submits = sim_control.calls()["POST /requests"]
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as stalled:
            stalled.sendall(f"{head}Content-Length: 100\r\n\r\n".encode() + b'{"model":')
            answer = stalled.recv(65536).decode()
        assert answer.startswith("HTTP/1.1 408")
        assert '"code":"request_timeout"' in answer
        assert "\r\nconnection: close\r\n" in answer.lower()  # the rest is not a request
        assert sim_control.calls()["POST /requests"] == submits  # nothing sent, nothing charged
        # Slow is not stalled: the limit is on silence, not on the whole body.
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as slow:
            slow.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode())
            for start in range(0, len(body), 20):
                time.sleep(0.2)
                slow.sendall(body[start : start + 20])
            assert slow.recv(65536).decode().startswith("HTTP/1.1 200")
    finally:
        server.stop()
    audited = [line for line in server.output().splitlines() if '"request_id":"stalled-1"' in line]
    assert any('"status":408' in line and '"event":"audit"' in line for line in audited)
