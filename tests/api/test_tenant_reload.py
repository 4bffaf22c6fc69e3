"""DESIGN §3: the tenants file is re-read on change and on POST /admin/reload; bad files refused."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import UPSTREAM_KEY, Keys, client_for
from tests.support.processes import ServerProcess, start_gateway


@pytest.fixture
def reloading_gateway(
    sim: ServerProcess, own_tenants: Path, tmp_path: Path
) -> Iterator[ServerProcess]:
    server = start_gateway(
        tmp_path, sim=sim, upstream_key=UPSTREAM_KEY, tenants_file=own_tenants, name="reload"
    )
    yield server
    server.stop()


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def status_with(server: ServerProcess, key: str) -> int:
    with client_for(server, key) as client:
        return client.get("/models").status_code


def test_revoked_key_stops_working_when_the_file_changes(
    reloading_gateway: ServerProcess, own_tenants: Path, keys: Keys
) -> None:
    assert status_with(reloading_gateway, keys.rival) == 200
    text = own_tenants.read_text()
    start = text.index("  - id: rival")
    end = text.index("  - id: narrow")
    own_tenants.write_text(text[:start] + text[end:])
    assert eventually(lambda: status_with(reloading_gateway, keys.rival) == 401)
    assert status_with(reloading_gateway, keys.studio) == 200


def test_deleting_a_tenants_last_key_revokes_it(
    reloading_gateway: ServerProcess, own_tenants: Path, keys: Keys
) -> None:
    """Before, an empty keys list was refused and the leaked key kept working."""
    assert status_with(reloading_gateway, keys.rival) == 200
    text = own_tenants.read_text()
    start = text.index("    keys:", text.index("  - id: rival"))
    end = text.index("    models:", start)
    own_tenants.write_text(text[:start] + "    keys: []\n" + text[end:])
    assert eventually(lambda: status_with(reloading_gateway, keys.rival) == 401)
    admin = {"Authorization": f"Bearer {keys.admin}"}
    tenants = httpx.get(reloading_gateway.url + "/admin/tenants", headers=admin).json()
    assert "rival" in str(tenants)


def test_bad_file_keeps_the_old_config_and_reload_says_why(
    reloading_gateway: ServerProcess, own_tenants: Path, keys: Keys
) -> None:
    good = own_tenants.read_text()
    without_rival = good[: good.index("  - id: rival")] + good[good.index("  - id: narrow") :]
    own_tenants.write_text(without_rival.replace('models: ["*"]', "models: []", 1))
    admin = {"Authorization": f"Bearer {keys.admin}"}
    response = httpx.post(reloading_gateway.url + "/admin/reload", headers=admin)
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_tenants_file"
    assert "studio" in body["error"]
    assert "models" in body["error"]
    time.sleep(0.5)  # the file watcher has seen the bad file too by now, and refused it
    assert status_with(reloading_gateway, keys.rival) == 200  # the bad file would drop rival
    assert rejected(reloading_gateway) == "1.0"
    own_tenants.write_text(good + "\n# touched\n")
    ok = httpx.post(reloading_gateway.url + "/admin/reload", headers=admin)
    assert ok.status_code == 200
    assert ok.json()["tenants"] == 3
    assert rejected(reloading_gateway) == "0.0"


def rejected(server: ServerProcess) -> str:
    """The value of gmigw_tenants_file_rejected, as scraped."""
    scrape = httpx.get(server.url + "/metrics").text
    line = next(line for line in scrape.splitlines() if line.startswith("gmigw_tenants_file_rej"))
    return line.split()[-1]


def test_usage_shows_jobs_held_before_a_limit_was_lowered(
    reloading_gateway: ServerProcess, own_tenants: Path, keys: Keys
) -> None:
    """Lowering a limit does not hide what is already in use: ``used`` can exceed ``limit``."""
    admin = {"Authorization": f"Bearer {keys.admin}"}
    original = own_tenants.read_text()

    def limit_studio(limits: str) -> None:
        anchor = "  - id: rival"
        own_tenants.write_text(original.replace(anchor, f"    limits: {{{limits}}}\n{anchor}", 1))
        reloaded = httpx.post(reloading_gateway.url + "/admin/reload", headers=admin)
        assert reloaded.status_code == 200, reloaded.text

    limit_studio("max_concurrent_jobs: 3, video_seconds_per_day: 100")
    job = {"model": "Kling-Text2Video-V2-Master", "payload": {"prompt": "a kite [sim:stuck]"}}
    with client_for(reloading_gateway, keys.studio) as studio:
        for _ in range(2):
            studio.post("/requests", json=job).raise_for_status()
        limit_studio("max_concurrent_jobs: 1, video_seconds_per_day: 5")
        limits = studio.get(reloading_gateway.url + "/v1/usage").json()["limits"]
    assert (
        limits["max_concurrent_jobs"] | {"limit": 1, "used": 2, "remaining": 0}
        == limits["max_concurrent_jobs"]
    )
    day = limits["video_seconds_per_day"]
    assert (day["limit"], day["used"], day["remaining"]) == (5, 10, 0)


def test_a_removed_tenants_jobs_in_flight_gauge_goes(
    reloading_gateway: ServerProcess, own_tenants: Path, keys: Keys
) -> None:
    """Left at its last value, a removed tenant would keep dashboards and alerts going."""

    def in_flight() -> float | None:
        scrape = httpx.get(reloading_gateway.url + "/metrics").text
        for line in scrape.splitlines():
            if line.startswith('gmigw_jobs_in_flight{tenant="rival"}'):
                return float(line.rsplit(" ", 1)[1])
        return None

    job = {"model": "Kling-Text2Video-V2-Master", "payload": {"prompt": "a kite [sim:stuck]"}}
    with client_for(reloading_gateway, keys.rival) as rival:
        rival.post("/requests", json=job).raise_for_status()
    assert in_flight() == 1
    text = own_tenants.read_text()
    own_tenants.write_text(
        text[: text.index("  - id: rival")] + text[text.index("  - id: narrow") :]
    )
    admin = {"Authorization": f"Bearer {keys.admin}"}
    httpx.post(reloading_gateway.url + "/admin/reload", headers=admin).raise_for_status()
    assert in_flight() is None
