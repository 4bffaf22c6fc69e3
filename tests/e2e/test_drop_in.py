"""DESIGN §1: an existing upstream client works against the gateway by changing URL and key."""

from __future__ import annotations

from tests.conftest import UPSTREAM_KEY, Keys
from tests.e2e.drop_in_client import generate_video
from tests.support.processes import MIRROR, ServerProcess


def test_the_client_works_against_the_simulator_itself(sim: ServerProcess) -> None:
    result = generate_video(sim.url + MIRROR, UPSTREAM_KEY, "a lighthouse at dusk")
    assert result.status == "success"
    assert result.video_url.startswith("https://")
    assert result.listed


def test_the_same_client_works_through_the_gateway(gateway: ServerProcess, keys: Keys) -> None:
    result = generate_video(gateway.url + MIRROR, keys.studio, "a red fox running through snow")
    assert result.status == "success"
    assert result.video_url.startswith("https://storage.googleapis.com/")
    assert result.listed
