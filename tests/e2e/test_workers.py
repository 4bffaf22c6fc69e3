"""``serve --workers 2``: one worker that crashes is replaced; the server keeps serving."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import UPSTREAM_KEY, Keys
from tests.support.processes import MIRROR, ServerProcess, start_gateway
from tests.support.redis_server import RedisServer, find_redis_server

pytestmark = pytest.mark.redis


@pytest.fixture
def two_workers(sim: ServerProcess, own_tenants: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    (tmp_path / "tmp").mkdir()
    with RedisServer(find_redis_server()) as redis:
        env = {
            "GATEWAY_REDIS_URL": redis.url,
            "TMPDIR": str(tmp_path / "tmp"),
            "GATEWAY_TENANTS_POLL_SECONDS": "0.2",
        }
        server = start_gateway(
            tmp_path, sim=sim, upstream_key=UPSTREAM_KEY, tenants_file=own_tenants,
            name="respawn", workers=2, extra_env=env,
        )  # fmt: skip
        yield server
        server.stop()


def workers_of(pid: int) -> set[int]:
    """The server's worker processes (not multiprocessing's resource tracker)."""
    found = set()
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.add(int(child))
        except FileNotFoundError:  # it ended meanwhile
            pass
    return found


def crash_a_worker_and_wait(server: ServerProcess, path: str, headers: dict[str, str]) -> None:
    """SIGKILL one of the two workers; return once ten new connections in a row got a 200 on
    ``path`` (so from either worker, the new one included)."""
    assert server.pid is not None
    deadline = time.monotonic() + 10
    while len(before := workers_of(server.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(before) == 2
    crashed = min(before)
    os.kill(crashed, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while len(workers_of(server.pid) - {crashed}) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(workers_of(server.pid) - {crashed}) == 2
    # The new worker's process shows before it listens; once it does, every new connection (to
    # either worker) is answered. Connections caught mid-change may be refused meanwhile.
    in_a_row = 0
    while in_a_row < 10 and time.monotonic() < deadline:
        with httpx.Client(headers=headers) as fresh:  # a new connection each time
            try:
                in_a_row = in_a_row + 1 if fresh.get(server.url + path).is_success else 0
            except httpx.ConnectError:
                in_a_row = 0
                time.sleep(0.1)
    assert in_a_row == 10


def test_a_crashed_worker_is_replaced(two_workers: ServerProcess) -> None:
    """granian used to stop the whole server when one worker died (review finding)."""
    crash_a_worker_and_wait(two_workers, "/healthz", {})


def test_a_worker_respawned_while_the_tenants_file_is_refused_serves_the_last_good_one(
    two_workers: ServerProcess, own_tenants: Path, keys: Keys
) -> None:
    """The respawned worker refused the bad file and stopped, in a loop: granian then stopped
    the healthy worker too, and the pod restarted into a crash loop (review finding)."""
    own_tenants.write_text("tenants: [oops\n")
    deadline = time.monotonic() + 10
    while "gmigw_tenants_file_rejected 1.0" not in httpx.get(two_workers.url + "/metrics").text:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    authorized = {"Authorization": f"Bearer {keys.studio}"}
    crash_a_worker_and_wait(two_workers, MIRROR + "/models", authorized)
    assert "gmigw_tenants_file_rejected 1.0" in httpx.get(two_workers.url + "/metrics").text


def test_the_metrics_scratch_directory_goes_with_the_server(
    two_workers: ServerProcess, tmp_path: Path
) -> None:
    """Each run of serve --workers N left a /tmp/gmigw-metrics-* behind (review finding); the
    last good tenants config kept for the workers goes too."""
    for scratch in ("gmigw-metrics-*", "gmigw-tenants-*"):
        assert len(list((tmp_path / "tmp").glob(scratch))) == 1
    assert two_workers.stop() == 0
    assert list((tmp_path / "tmp").glob("gmigw-*")) == []
