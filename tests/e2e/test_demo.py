"""README's first command: `gmi-gateway demo` serves the printed key and curl lines as written."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import ServerProcess, free_port


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(
        "demo",
        ["demo", "--time-scale", "0.005"],
        port=free_port(),
        env={},
        logdir=tmp_path,
        ready_path="/healthz",
    ).start()
    yield server
    server.stop()


def test_demo_banner_commands_work(demo: ServerProcess) -> None:
    banner = demo.output()
    exported = re.search(r"export GW=(\S+) KEY=(\S+)", banner)
    assert exported is not None, banner
    base, key = exported.groups()
    assert base == f"{demo.url}/api/v1/ie/requestqueue/apikey"
    submit_line = next(line for line in banner.splitlines() if "-X POST" in line)
    body = shlex.split(submit_line)[-1]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    with httpx.Client(base_url=base, headers=headers) as client:
        assert "Kling-Text2Video-V2-Master" in client.get("/models").json()["model_ids"]
        request_id = client.post("/requests", content=body).raise_for_status().json()["request_id"]
        deadline = time.monotonic() + 30
        while (status := client.get(f"/requests/{request_id}").json()["status"]) != "success":
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
        assert client.get("/requests").json()["total"] == 1
    assert key not in demo.output().split("(the same commands", 1)[1].split("\n", 1)[1]


def test_head_works_on_the_demo_server_too(demo: ServerProcess) -> None:
    """uvicorn (the demo's server) checks the method itself: it must still see HEAD."""
    for path in ("/healthz", "/api/v1/ie/requestqueue/apikey/models"):  # 200, and a 401
        got, head = httpx.get(demo.url + path), httpx.head(demo.url + path)
        assert head.status_code == got.status_code
        assert head.content == b""
        assert head.headers["content-length"] == str(len(got.content))
    assert "Traceback" not in demo.output()


@pytest.mark.parametrize("command", ["demo", "sim", "serve"])
def test_a_busy_port_is_refused_before_a_key_is_printed(command: str, tmp_path: Path) -> None:
    """A banner for a port another server holds would send its key and curl lines there; a
    second ``serve`` started there too (granian binds with SO_REUSEPORT, as the holder here
    does) and the kernel split the connections between two gateways."""
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants: []\n")
    env = {**os.environ, "GMI_API_KEY": "gmi-key-value", "GATEWAY_TENANTS_FILE": str(tenants)}
    env.pop("GATEWAY_REDIS_URL", None)
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = subprocess.run(
            [sys.executable, "-m", "gateway", command, "--host", "127.0.0.1", "--port", port],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert done.stdout == ""
