"""Side-by-side load benchmark: the gateway against the simulator directly and against nginx.

Starts a redis-server, the simulator (fast mode), nginx as a plain keep-alive reverse proxy to
the simulator with the upstream key injected, and the gateway with 1 and then 2 workers; drives
each path with wrk at a fixed connection count; prints one table and writes it as JSON under
bench/results/. Figures are ratios measured in one run: these machines are shared and noisy.

Run with ``make bench``. Needs redis-server, nginx and wrk (Debian packages); installs them
with apt-get when run as root, otherwise says what is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.processes import MIRROR, ServerProcess, free_port
from tests.support.redis_server import RedisServer

UPSTREAM_KEY = "bench-upstream-key-0123456789"
TENANT_KEY = "bench-tenant-key-0123456789"
MODEL = "Kling-Text2Video-V2-Master"
DURATION = os.environ.get("BENCH_SECONDS", "8")
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
SOAK_SECONDS = int(os.environ.get("BENCH_SOAK_SECONDS", "300"))  # 0 skips the memory soak
RESULTS = Path(__file__).parent / "results"
POST_SCRIPT = """
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
counter = 0
request = function()
  counter = counter + 1
  local body = '{"model":"%s","payload":{"prompt":"bench %%d [sim:stuck]","duration":"5"}}'
  return wrk.format("POST", nil, {["Content-Type"]="application/json",
    ["Authorization"]="Bearer %s", ["Idempotency-Key"]="k" .. tid .. "-" .. counter},
    string.format(body, counter))
end
"""


@dataclass
class Result:
    target: str
    path: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: float | None
    non_2xx: int


def need(program: str, package: str) -> str:
    found = shutil.which(program)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True)
        found = shutil.which(program)
    if not found:
        sys.exit(f"bench: {program} not found: install the Debian package {package}")
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (workers), from /proc."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    pids = [pid] + [
        int(p)
        for p in subprocess.run(
            ["pgrep", "-P", str(pid)], check=False, capture_output=True, text=True
        ).stdout.split()
    ]
    for one in pids:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def wrk(
    url: str, *, headers: dict[str, str], script: str | None = None, connections: int = CONNECTIONS
) -> tuple[float, float, float, int]:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{DURATION}s", "--latency"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    if script is not None:
        args += ["-s", script]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)) else 0
    return rps, _ms(out, "50%"), _ms(out, "99%"), non2xx


def _ms(out: str, pct: str) -> float:
    value, unit = re.search(rf"{pct}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def measure(name: str, path: str, url: str, pid: int | None, **options: object) -> Result:
    before = cpu_seconds(pid) if pid else None
    rps, p50, p99, non2xx = wrk(url, **options)  # type: ignore[arg-type]
    cpu = None
    if pid and before is not None:
        cpu = (cpu_seconds(pid) - before) * 1000 / max(1.0, rps * float(DURATION))
    result = Result(
        name, path, round(rps, 1), round(p50, 3), round(p99, 3), cpu and round(cpu, 3), non2xx
    )
    print(
        f"  {name:<12} {path:<26} {rps:>9.0f} req/s  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  "
        f"cpu {cpu or 0:6.3f} ms/req  non-2xx {non2xx}",
        flush=True,
    )
    return result


def rss_kib(pid: int) -> int:
    """Resident size of a process and its children (the workers), in KiB."""
    children = subprocess.run(
        ["pgrep", "-P", str(pid)], check=False, capture_output=True, text=True
    ).stdout.split()
    total = 0
    for one in [str(pid), *children]:
        status = Path(f"/proc/{one}/status")
        if status.exists():
            match = re.search(r"VmRSS:\s+(\d+) kB", status.read_text())
            total += int(match.group(1)) if match else 0
    return total


def soak(url: str, pid: int, headers: dict[str, str], seconds: int) -> dict[str, object]:
    """Load one path for ``seconds`` at full rate, sampling the resident size every 30 s."""
    args = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    load = subprocess.Popen([*args, url], stdout=subprocess.PIPE, text=True)
    samples = []
    while load.poll() is None:
        samples.append(rss_kib(pid))
        time.sleep(min(30, seconds / 10))
    out = load.stdout.read() if load.stdout else ""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    settled = samples[1:] or samples
    growth = (max(settled) - min(settled)) / min(settled)
    print(f"  soak {seconds}s: {rps:.0f} req/s, RSS KiB {samples}, growth {growth:.1%}")
    return {"seconds": seconds, "requests_per_second": rps, "rss_kib": samples, "growth": growth}


def nginx_config(workdir: Path, port: int, sim_port: int) -> Path:
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/body; proxy_temp_path {workdir}/proxy;
  fastcgi_temp_path {workdir}/fcgi; uwsgi_temp_path {workdir}/uwsgi; scgi_temp_path {workdir}/scgi;
  upstream sim {{ server 127.0.0.1:{sim_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://sim;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer {UPSTREAM_KEY}";
    }}
  }}
}}
""")
    return conf


def main() -> int:
    need("wrk", "wrk")
    need("nginx", "nginx")
    need("redis-server", "redis-server")
    workdir = Path(tempfile.mkdtemp(prefix="gmigw-bench-"))
    results: list[Result] = []
    soaked: dict[str, object] | None = None
    redis = RedisServer(shutil.which("redis-server") or "redis-server").start()
    sim = ServerProcess(
        "sim",
        ["sim", "--api-key", UPSTREAM_KEY, "--time-scale", "0.001"],
        port=free_port(),
        env={},
        logdir=workdir,
        ready_path="/",
    ).start()
    nginx_port = free_port()
    nginx = subprocess.Popen(["nginx", "-c", str(nginx_config(workdir, nginx_port, sim.port))])
    tenants = workdir / "tenants.yaml"
    digest = hashlib.sha256(TENANT_KEY.encode()).hexdigest()
    big = 10**9
    tenants.write_text(
        f'tenants:\n  - id: bench\n    keys: [{{id: b-k, sha256: "{digest}"}}]\n    models: ["*"]\n'
        f"    limits: {{submits_per_minute: {big}, reads_per_minute: {big},"
        f" max_concurrent_jobs: {big}, video_seconds_per_day: {big},"
        f" video_seconds_per_month: {big}}}\n"
    )
    script = workdir / "post.lua"
    script.write_text(POST_SCRIPT % (MODEL, TENANT_KEY))
    upstream = {"Authorization": f"Bearer {UPSTREAM_KEY}"}
    tenant = {"Authorization": f"Bearer {TENANT_KEY}"}
    try:
        time.sleep(0.5)
        stuck = httpx.post(
            f"{sim.url}{MIRROR}/requests",
            headers=upstream,
            json={"model": MODEL, "payload": {"prompt": "x [sim:stuck]"}},
        ).json()["request_id"]
        print("direct (simulator) and nginx:")
        results.append(
            measure(
                "direct",
                "GET /models",
                f"{sim.url}{MIRROR}/models",
                sim.pid,
                headers=upstream,
            )
        )
        results.append(
            measure(
                "direct",
                "GET /requests/{id}",
                f"{sim.url}{MIRROR}/requests/{stuck}",
                sim.pid,
                headers=upstream,
            )
        )
        results.append(
            measure(
                "nginx",
                "GET /models",
                f"http://127.0.0.1:{nginx_port}{MIRROR}/models",
                nginx.pid,
                headers={},
            )
        )
        results.append(
            measure(
                "nginx",
                "GET /requests/{id}",
                f"http://127.0.0.1:{nginx_port}{MIRROR}/requests/{stuck}",
                nginx.pid,
                headers={},
            )
        )
        for workers in (1, 2):
            redis.flush()
            env = {
                "GMI_API_KEY": UPSTREAM_KEY,
                "GATEWAY_UPSTREAM_URL": sim.url + MIRROR,
                "GATEWAY_TENANTS_FILE": str(tenants),
                "GATEWAY_REDIS_URL": redis.url,
                "GATEWAY_LOG_LEVEL": "warning",
            }
            gateway = ServerProcess(
                f"gateway{workers}",
                ["serve", "--host", "127.0.0.1", "--workers", str(workers)],
                port=free_port(),
                env=env,
                logdir=workdir,
                ready_path="/healthz",
            ).start()
            pid = gateway.pid
            base = gateway.url + MIRROR
            in_flight = httpx.post(
                f"{base}/requests",
                headers=tenant,
                json={"model": MODEL, "payload": {"prompt": "y [sim:stuck]"}},
            ).json()["request_id"]
            done = httpx.post(
                f"{base}/requests",
                headers=tenant,
                json={"model": MODEL, "payload": {"prompt": "z"}},
            ).json()["request_id"]
            while (
                httpx.get(f"{base}/requests/{done}", headers=tenant).json()["status"] != "success"
            ):
                time.sleep(0.1)
            name = f"gateway-w{workers}"
            print(f"gateway, {workers} worker(s):")
            results.append(measure(name, "GET /models", f"{base}/models", pid, headers=tenant))
            results.append(
                measure(
                    name, "GET /requests/{id}", f"{base}/requests/{in_flight}", pid, headers=tenant
                )
            )
            results.append(
                measure(
                    name, "GET /requests/{id} done", f"{base}/requests/{done}", pid, headers=tenant
                )
            )
            results.append(
                measure(
                    name, "POST /requests", f"{base}/requests", pid, headers={}, script=str(script)
                )
            )
            results.append(
                measure(
                    name,
                    "GET /requests/{id} c4",
                    f"{base}/requests/{in_flight}",
                    pid,
                    headers=tenant,
                    connections=4,
                )
            )
            if workers == 1 and SOAK_SECONDS and pid:
                soaked = soak(f"{base}/models", pid, tenant, SOAK_SECONDS)
            gateway.stop()
        results.append(
            measure(
                "nginx",
                "GET /requests/{id} c4",
                f"http://127.0.0.1:{nginx_port}{MIRROR}/requests/{stuck}",
                nginx.pid,
                headers={},
                connections=4,
            )
        )
    finally:
        nginx.terminate()
        sim.stop()
        redis.stop()
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "duration_seconds": float(DURATION),
        "connections": CONNECTIONS,
        "results": [asdict(r) for r in results],
        "ratios": ratios(results),
        "soak_get_models_1_worker": soaked,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["ratios"], indent=2))
    print(f"wrote {out}")
    return 0


def ratios(results: list[Result]) -> dict[str, float]:
    by = {(r.target, r.path): r for r in results}
    found: dict[str, float] = {}
    for workers in (1, 2):
        gw = f"gateway-w{workers}"
        for path in ("GET /models", "GET /requests/{id}"):
            if (gw, path) in by:
                found[f"{gw} {path} / nginx"] = round(
                    by[gw, path].requests_per_second / by["nginx", path].requests_per_second, 3
                )
                found[f"{gw} {path} / direct"] = round(
                    by[gw, path].requests_per_second / by["direct", path].requests_per_second, 3
                )
        key = (gw, "GET /requests/{id} c4")
        if key in by:
            found[f"{gw} added p50 ms at c4 over nginx"] = round(
                by[key].p50_ms - by["nginx", "GET /requests/{id} c4"].p50_ms, 3
            )
            found[f"{gw} added p99 ms at c4 over nginx"] = round(
                by[key].p99_ms - by["nginx", "GET /requests/{id} c4"].p99_ms, 3
            )
    return found


if __name__ == "__main__":
    sys.exit(main())
