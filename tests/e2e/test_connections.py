"""What a client can do to the server's connections must not stop it answering others."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx

from tests.conftest import UPSTREAM_KEY
from tests.support.processes import ServerProcess, start_gateway


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
