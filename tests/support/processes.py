"""Real processes on real sockets: the simulator and gateway replicas the API tests talk to.

Each server is the ``gmi-gateway`` CLI in a subprocess on a free loopback port, exactly as an
operator would start it; its stdout and stderr are kept in files so tests can read every log line.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

MIRROR = "/api/v1/ie/requestqueue/apikey"
STARTUP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """One CLI server subprocess; ``url`` is its base URL once ``start`` returns."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        port: int,
        env: Mapping[str, str],
        logdir: Path,
        ready_path: str,
    ) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._args = [sys.executable, "-m", "gateway", *args, "--port", str(port)]
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("GMI_", "GATEWAY_"))}
        self._env = {**inherited, **env}
        self._ready_path = ready_path
        self.stdout_path = logdir / f"{name}.stdout"
        self.stderr_path = logdir / f"{name}.stderr"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            self._proc = subprocess.Popen(self._args, env=self._env, stdout=out, stderr=err)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self._proc.returncode}:\n{self.output()}")
            try:
                response = httpx.get(self.url + self._ready_path, timeout=1.0)
                if response.status_code < 500:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not start in {STARTUP_TIMEOUT}s:\n{self.output()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self._proc is None or self._proc.poll() is not None:
            return None if self._proc is None else self._proc.returncode
        self._proc.send_signal(sig)
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            return self._proc.wait(timeout)

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def send(self, sig: int) -> None:
        assert self._proc is not None
        self._proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self._proc is not None
        return self._proc.wait(timeout)

    def output(self) -> str:
        """Everything the process printed so far (stdout then stderr)."""
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(
            errors="replace"
        )


def start_sim(
    logdir: Path,
    *,
    api_key: str,
    time_scale: float,
    name: str = "sim",
    extra_args: Sequence[str] = (),
) -> ServerProcess:
    args = ["sim", "--host", "127.0.0.1", "--api-key", api_key, "--time-scale", str(time_scale)]
    args += extra_args
    return ServerProcess(
        name,
        args,
        port=free_port(),
        env={},
        logdir=logdir,
        ready_path="/",  # any answer means it is listening; "/" is not an upstream route
    ).start()


def start_gateway(
    logdir: Path,
    *,
    sim: ServerProcess,
    upstream_key: str,
    tenants_file: Path,
    name: str = "gateway",
    extra_env: Mapping[str, str] | None = None,
    workers: int = 1,
) -> ServerProcess:
    env = {
        "GMI_API_KEY": upstream_key,
        "GATEWAY_UPSTREAM_URL": sim.url + MIRROR,
        "GATEWAY_TENANTS_FILE": str(tenants_file),
        "GATEWAY_TENANTS_POLL_SECONDS": "0.2",
        "GATEWAY_LOG_LEVEL": "debug",
        **(extra_env or {}),
    }
    args = ["serve", "--host", "127.0.0.1", "--workers", str(workers)]
    return ServerProcess(
        name, args, port=free_port(), env=env, logdir=logdir, ready_path="/healthz"
    ).start()
