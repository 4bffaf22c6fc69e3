"""CPU per GET /models inside the app: what each feature costs, without a server or wrk.

``make bench`` measures through granian and wrk on a shared machine, where a feature that costs
5 µs is lost in the noise. This drives the ASGI app in-process instead (32 requests at a time,
uvloop, a real redis-server and the simulator) and reports CPU µs per request for each
one-worker configuration of ``run.py`` and for the bare Litestar handler (alone, and with its
one Redis call). The difference between two rows is what a feature costs the app; the
difference to the same configuration's ``cpu_ms_per_request`` in ``make bench`` is the server's
share. Each configuration runs in a fresh interpreter (metrics and logging are per process),
three times in turn; each figure is the median. Results go to ``bench/results/app-cpu-*.json``.

Run with ``.venv/bin/python bench/app_cpu.py`` (needs redis-server; ``BENCH_APP_REQUESTS`` sets
the requests per measurement).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.run import CONFIGS, RESULTS, UPSTREAM_KEY, cpu_model, fast_sim, need, tenants_yaml
from gateway.app import app_from_env
from tests.support.processes import MIRROR
from tests.support.redis_server import RedisServer

BENCH = Path(__file__).resolve().parent
REQUESTS = int(os.environ.get("BENCH_APP_REQUESTS", "30000"))
CONCURRENCY = 32
ROUNDS = 3


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="gmigw-app-cpu-"))
    (workdir / "tenants.yaml").write_text(tenants_yaml())
    redis = RedisServer(need("redis-server", "redis-server")).start()
    sim = fast_sim(workdir)
    try:
        upstream = f"{sim.url}{MIRROR}"
        body = workdir / "models.json"
        auth = {"Authorization": f"Bearer {UPSTREAM_KEY}"}
        body.write_bytes(httpx.get(f"{upstream}/models", headers=auth).content)
        gateway_env = {
            "GMI_API_KEY": UPSTREAM_KEY,
            "GATEWAY_UPSTREAM_URL": upstream,
            "GATEWAY_TENANTS_FILE": str(workdir / "tenants.yaml"),
            "GATEWAY_REDIS_URL": redis.url,
        }
        runs: dict[str, tuple[dict[str, str], str]] = {
            "bare-litestar": ({"BENCH_BARE_BODY": str(body)}, ""),
            "bare-litestar-redis": (
                {"BENCH_BARE_BODY": str(body), "BENCH_BARE_REDIS_URL": redis.url},
                "",
            ),
        }
        for config in CONFIGS:
            if config.workers == 1:
                env = {**gateway_env, "GATEWAY_FEATURES_OFF": config.features_off}
                runs[config.name] = (env, config.key)
        figures: dict[str, list[float]] = {name: [] for name in runs}
        for round_number in range(1, ROUNDS + 1):
            print(f"round {round_number} of {ROUNDS}", flush=True)
            for name, (env, key) in runs.items():
                figures[name].append(measure(name, env, key))
        medians = {name: round(statistics.median(values), 1) for name, values in figures.items()}
        print(f"\nCPU µs per GET /models in-process (median of {ROUNDS}, {REQUESTS} requests):")
        bare = medians["bare-litestar"]
        for name, median in medians.items():
            print(f"  {name:<22} {median:6.1f}   {median - bare:+6.1f} over bare")
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"app-cpu-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
        report = {"machine": cpu_model(), "requests": REQUESTS, "cpu_us_per_request": medians}
        out.write_text(json.dumps({**report, "every_round": figures}, indent=2) + "\n")
        print(f"wrote {out}")
    finally:
        sim.stop()
        redis.stop()
    return 0


def measure(name: str, env: dict[str, str], key: str) -> float:
    """One configuration in a fresh interpreter; its app's output is discarded."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("GMI_", "GATEWAY_"))}
    done = subprocess.run(
        [sys.executable, __file__, "drive", name, key],
        env={**inherited, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr}")
    return float(done.stderr.strip().splitlines()[-1])


def drive(name: str, key: str) -> None:
    """Run the app's lifespan, then ``REQUESTS`` GET /models; print CPU µs per request."""
    if name.startswith("bare"):
        sys.path.insert(0, str(BENCH))
        from bare_app import app  # noqa: PLC0415 -- it reads the environment on import
    else:
        app = app_from_env()

    path = f"{MIRROR}/models"
    headers = [(b"host", b"bench"), (b"authorization", f"Bearer {key}".encode())]

    async def request() -> None:
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8080),
            "state": {},
        }
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        if sent[0]["status"] != 200:
            raise RuntimeError(f"{name}: status {sent[0]['status']}: {sent[-1].get('body')!r}")

    async def load(count: int) -> None:
        async def client(share: int) -> None:
            for _ in range(share):
                await request()

        await asyncio.gather(*(client(count // CONCURRENCY) for _ in range(CONCURRENCY)))

    async def run() -> None:
        to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        lifespan = asyncio.create_task(app(scope, to_app.get, from_app.put))
        await to_app.put({"type": "lifespan.startup"})
        started = await from_app.get()
        if started["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"{name}: {started}")
        await load(CONCURRENCY * 20)  # warm: catalog, scripts, connections
        before = time.process_time()
        await load(REQUESTS)
        spent = time.process_time() - before
        await to_app.put({"type": "lifespan.shutdown"})
        await from_app.get()
        await lifespan
        print(f"{spent / (REQUESTS // CONCURRENCY * CONCURRENCY) * 1e6:.2f}", file=sys.stderr)

    uvloop.run(run())


if __name__ == "__main__":
    if sys.argv[1:2] == ["drive"]:
        drive(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
