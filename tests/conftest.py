"""A simulator and a gateway on real sockets, shared by the API and end-to-end tests of a session.

Session-scoped fixtures start only when a test asks for them, so unit tests pay nothing.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.processes import MIRROR, ServerProcess, start_gateway, start_sim

UPSTREAM_KEY = "gmi-upstream-" + secrets.token_hex(20)
MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class Keys:
    studio: str
    rival: str
    narrow: str
    expired: str
    admin: str


def utf8_key(keys: Keys) -> str:
    """A second key of the studio tenant, not all ASCII (its hash is of its UTF-8 bytes)."""
    return f"{keys.studio}-äü"


def tenants_yaml(keys: Keys) -> str:
    def sha(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    return f"""
tenants:
  - id: studio
    keys:
      - id: studio-k1
        sha256: "{sha(keys.studio)}"
      - id: studio-utf8
        sha256: "{sha(utf8_key(keys))}"
    models: ["*"]
  - id: rival
    keys:
      - id: rival-k1
        sha256: "{sha(keys.rival)}"
    models: ["*"]
  - id: narrow
    keys:
      - id: narrow-k1
        sha256: "{sha(keys.narrow)}"
      - id: narrow-old
        sha256: "{sha(keys.expired)}"
        expires_at: "2020-01-01T00:00:00Z"
    models: ["Kling-Text2Video-V2-Master"]
admins:
  - id: ops
    sha256: "{sha(keys.admin)}"
"""


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(*(f"test-{name}-{secrets.token_urlsafe(24)}" for name in Keys.__annotations__))


@pytest.fixture(scope="session")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def sim(logdir: Path) -> Iterator[ServerProcess]:
    server = start_sim(logdir, api_key=UPSTREAM_KEY, time_scale=0.005)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tenants_file(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Path:
    path = tmp_path_factory.mktemp("config") / "tenants.yaml"
    path.write_text(tenants_yaml(keys))
    return path


@pytest.fixture
def own_tenants(tmp_path: Path, keys: Keys) -> Path:
    """The session's tenants, in a file of the test's own, to edit or break."""
    path = tmp_path / "tenants.yaml"
    path.write_text(tenants_yaml(keys))
    return path


@pytest.fixture(scope="session")
def gateway(logdir: Path, sim: ServerProcess, tenants_file: Path) -> Iterator[ServerProcess]:
    server = start_gateway(
        logdir,
        sim=sim,
        upstream_key=UPSTREAM_KEY,
        tenants_file=tenants_file,
        extra_env={
            "GATEWAY_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
            # Many tests inject upstream faults; with the default threshold the circuit would
            # open for whichever test came next. test_circuit.py runs a gateway of its own.
            "GATEWAY_CIRCUIT_THRESHOLD": "10000",
        },
    )
    yield server
    server.stop()


class SimControl:
    """The simulator's test controls (not part of the upstream API)."""

    def __init__(self, sim: ServerProcess) -> None:
        self._http = httpx.Client(
            base_url=sim.url, headers={"Authorization": f"Bearer {UPSTREAM_KEY}"}, timeout=10
        )

    def calls(self) -> dict[str, int]:
        calls: dict[str, int] = self._http.get("/_sim/stats").raise_for_status().json()["calls"]
        return calls

    def fault(self, route: str, **fault: object) -> None:
        self._http.post("/_sim/faults", json={"route": route, **fault}).raise_for_status()

    def clear_faults(self) -> None:
        self._http.delete("/_sim/faults").raise_for_status()

    def cancel(self, request_id: str) -> None:
        self._http.post(f"/_sim/requests/{request_id}/cancel").raise_for_status()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SimControl:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@pytest.fixture
def sim_control(sim: ServerProcess) -> Iterator[SimControl]:
    control = SimControl(sim)
    yield control
    control.clear_faults()
    control.close()


def client_for(server: ServerProcess, key: str | None) -> httpx.Client:
    """A client as a frontend would hold one: the mirror base URL and a bearer key."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server.url + MIRROR, headers=headers, timeout=30)


@pytest.fixture
def studio(gateway: ServerProcess, keys: Keys) -> Iterator[httpx.Client]:
    with client_for(gateway, keys.studio) as client:
        yield client


@pytest.fixture
def rival(gateway: ServerProcess, keys: Keys) -> Iterator[httpx.Client]:
    with client_for(gateway, keys.rival) as client:
        yield client


@pytest.fixture
def narrow(gateway: ServerProcess, keys: Keys) -> Iterator[httpx.Client]:
    with client_for(gateway, keys.narrow) as client:
        yield client


pytest_plugins = ("tests.support.redis_server",)
