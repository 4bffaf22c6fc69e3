"""A real ``redis-server`` on a free loopback port, owned by the tests so they can kill it.

When the binary is missing the tests that need it skip with a clear message, except under
``CI=true`` where a missing redis-server fails the run (a skipped store suite would prove nothing).

This module is also a pytest plugin (the root ``conftest.py`` lists it in ``pytest_plugins``):
it provides the session-scoped ``redis_server`` fixture.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from types import TracebackType

import pytest
import redis

from tests.support.processes import free_port

MISSING = "redis-server not found: install the Debian package redis-server (make tools does)"
READY_TIMEOUT = 10.0


def find_redis_server() -> str:
    """The ``redis-server`` on PATH; skips the test without one (fails it under ``CI=true``)."""
    path = shutil.which("redis-server")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(MISSING, pytrace=False)
        pytest.skip(MISSING)
    return path


class RedisServer:
    """One redis-server process; ``stop`` kills it, ``start`` brings it back on the same port.

    Usable as a context manager (``with RedisServer() as server:``), which starts it and, on
    the way out, kills it and removes its directory. Nothing is persisted: no RDB, no AOF.
    """

    def __init__(self, binary: str | None = None, *, password: str | None = None) -> None:
        self.binary = binary if binary is not None else find_redis_server()
        self.port = free_port()
        self.password = password
        self._dir = tempfile.mkdtemp(prefix="gmigw-redis-")
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_once = False

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start (or restart, on the same port) and return once the server answers.

        The first start moves to another free port if the chosen one was taken meanwhile;
        a restart never does, as the fault tests reconnect the same client to the same port.
        """
        attempts = 1 if self._started_once else 3
        for attempt in range(attempts):
            if attempt:
                self.port = free_port()
            if self._launch():
                self._started_once = True
                return self
        raise RuntimeError(f"redis-server exited {self._exit_code()} on port {self.port}")

    def stop(self) -> None:
        """Kill the server (SIGKILL: the way a crashed or partitioned Redis looks to clients)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open and what clients send waits in
        its buffers, to run on ``resume`` (a Redis stalled by a slow fork or a paused VM)."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        """Stop and remove the working directory; the object cannot be started again."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def flush(self) -> None:
        """Drop every key (scripts stay cached), so each test starts from an empty database."""
        with redis.Redis.from_url(self.url) as client:
            client.flushall()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _launch(self) -> bool:
        """Run redis-server; ``True`` once it answers, ``False`` if it exited first."""
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", self._dir, "--daemonize", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + READY_TIMEOUT
        with redis.Redis.from_url(self.url, socket_timeout=0.5) as client:
            while time.monotonic() < deadline:
                try:
                    # Our process, not another server that took the port in the meantime.
                    if client.info("server")["process_id"] == self._proc.pid:
                        return True
                except redis.RedisError:
                    pass
                if self._proc.poll() is not None:
                    return False
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer within {READY_TIMEOUT:.0f} s")

    def _exit_code(self) -> int | None:
        return None if self._proc is None else self._proc.returncode


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server for the whole session; tests that kill it start their own instance."""
    with RedisServer() as server:
        yield server
