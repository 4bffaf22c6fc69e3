"""Side-by-side load benchmark: the gateway against the simulator, nginx and a bare Litestar app.

Starts a redis-server, the simulator (fast mode; it must out-run the gateway, and its own
throughput is reported as ``direct``), nginx as a plain keep-alive reverse proxy to the simulator
with the upstream key injected, a bare Litestar handler returning the gateway's GET /models
bytes (alone, and with the one Redis script call an exact read limit costs), and the gateway in
several configurations:

- ``gw-w1`` / ``gw-w2``: everything on (a tenant with every limit, audit, metrics), 1 and 2
  workers;
- ``gw-w1-no-audit``, ``gw-w1-no-metrics``: one feature switched off (``GATEWAY_FEATURES_OFF``);
- ``gw-w1-off``: quotas (a tenant without limits), audit and metrics all off.

Each path is driven by wrk at a fixed connection count; then the in-flight status poll is
paced at half the ``gw-w1`` peak rate to measure the latency added over direct and over nginx;
last, a memory soak loads every hot-path route of ``gw-w1`` at full rate. Prints a table and
the targets of issue 6, and writes everything as JSON under ``bench/results/``. The machine is
shared and noisy: compare figures within one run (the ratios), not across runs.

Run with ``make bench`` (``BENCH_SECONDS``, ``BENCH_CONNECTIONS``, ``BENCH_SOAK_SECONDS`` tune
it; ``BENCH_SOAK_SECONDS=0`` skips the soak). Needs redis-server, nginx and wrk (Debian
packages): installs them with apt-get when run as root, otherwise says what is missing.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.processes import MIRROR, ServerProcess, free_port
from tests.support.redis_server import RedisServer

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
UPSTREAM_KEY = "bench-upstream-key-0123456789"
LIMITED_KEY = "bench-limited-key-0123456789"
UNLIMITED_KEY = "bench-unlimited-key-0123456789"
MODEL = "Kling-Text2Video-V2-Master"
SECONDS = int(os.environ.get("BENCH_SECONDS", "8"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
PACED_CONNECTIONS = 16
SOAK_SECONDS = int(os.environ.get("BENCH_SOAK_SECONDS", "300"))
PATHS = MODELS, POLL, DONE, SUBMIT = (
    "GET /models",
    "GET /requests/{id}",
    "GET /requests/{id} done",
    "POST /requests",
)


@dataclass
class Result:
    target: str
    path: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: float | None
    non_2xx: int
    connections: int
    paced_rate: float | None = None


@dataclass(frozen=True)
class Config:
    """One gateway configuration: its name, workers, tenant key and switched-off features."""

    name: str
    workers: int
    key: str
    features_off: str = ""


CONFIGS = (
    Config("gw-w1", 1, LIMITED_KEY),
    Config("gw-w2", 2, LIMITED_KEY),
    Config("gw-w1-no-audit", 1, LIMITED_KEY, "audit"),
    Config("gw-w1-no-metrics", 1, LIMITED_KEY, "metrics"),
    Config("gw-w1-off", 1, UNLIMITED_KEY, "audit,metrics"),
)


def need(program: str, package: str) -> str:
    found = shutil.which(program)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True)
        found = shutil.which(program)
    if found is None:
        sys.exit(f"bench: {program} not found: install the Debian package {package}")
    return found


def process_tree(pid: int) -> list[int]:
    children = subprocess.run(
        ["pgrep", "-P", str(pid)], check=False, capture_output=True, text=True
    ).stdout.split()
    return [pid, *(int(child) for child in children)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (the workers), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for one in process_tree(pid):
        with contextlib.suppress(FileNotFoundError):
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def rss_kib(pid: int) -> int:
    """Resident size of a process and its children, in KiB."""
    total = 0
    for one in process_tree(pid):
        with contextlib.suppress(FileNotFoundError):
            found = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{one}/status").read_text())
            total += int(found.group(1)) if found else 0
    return total


def wrk_args(
    headers: dict[str, str], connections: int, seconds: int, script: Path | None
) -> list[str]:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    return [*args, "-s", str(script)] if script is not None else args


def parse_wrk(out: str) -> tuple[float, float, float, int]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)) else 0
    return rps, _ms(out, "50%"), _ms(out, "99%"), non2xx


def _ms(out: str, pct: str) -> float:
    value, unit = re.search(rf"{pct}\s+([\d.]+)(us|ms|s)\b", out).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def measure(
    target: str,
    path: str,
    url: str,
    pid: int | None,
    *,
    headers: dict[str, str] | None = None,
    script: Path | None = None,
    env: dict[str, str] | None = None,
    connections: int = CONNECTIONS,
    rate: float | None = None,
) -> Result:
    """One wrk run; ``rate`` paces it (paced.lua) instead of running flat out."""
    args = wrk_args(headers or {}, connections, SECONDS, BENCH / "paced.lua" if rate else script)
    args += [url, *([str(rate)] if rate else [])]
    before = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(
        args, capture_output=True, text=True, check=True, env={**os.environ, **(env or {})}
    ).stdout
    rps, p50, p99, non2xx = parse_wrk(out)
    cpu = (cpu_seconds(pid) - before) * 1000 / max(1.0, rps * SECONDS) if pid else None
    result = Result(
        target, path, round(rps, 1), round(p50, 3), round(p99, 3),
        None if cpu is None else round(cpu, 3), non2xx, connections, rate,
    )  # fmt: skip
    paced = f" (paced at {rate:.0f}/s)" if rate else ""
    print(
        f"  {target:<17} {path:<24} {rps:>8.0f} req/s  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms"
        f"  cpu {cpu or 0:6.3f} ms/req  non-2xx {non2xx}{paced}",
        flush=True,
    )
    return result


def tenants_yaml() -> str:
    def sha(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    big = 10**9
    limits = ", ".join(
        f"{name}: {big}"
        for name in (
            "submits_per_minute",
            "reads_per_minute",
            "max_concurrent_jobs",
            "video_seconds_per_day",
            "video_seconds_per_month",
        )
    )
    return (
        "tenants:\n"
        f'  - {{id: limited, keys: [{{id: l-k, sha256: "{sha(LIMITED_KEY)}"}}], models: ["*"],'
        f" limits: {{{limits}}}}}\n"
        f'  - {{id: unlimited, keys: [{{id: u-k, sha256: "{sha(UNLIMITED_KEY)}"}}],'
        ' models: ["*"]}\n'
    )


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


@contextlib.contextmanager
def process(args: list[str], workdir: Path, name: str, env: dict[str, str]) -> Iterator[int]:
    """A plain subprocess (nginx, the bare app) for the duration of the block."""
    with (workdir / f"{name}.log").open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=log, env={**os.environ, **env})
    try:
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def wait_for(url: str, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, headers=headers, timeout=1).status_code < 500:
                return
        time.sleep(0.1)
    sys.exit(f"bench: {url} did not answer")


class Bench:
    """The processes of one run and the results they gave."""

    def __init__(self, workdir: Path, redis: RedisServer, sim: ServerProcess) -> None:
        self.workdir = workdir
        self.redis = redis
        self.sim = sim
        self.results: list[Result] = []
        self.soak: dict[str, object] | None = None
        self.poll_baselines: list[tuple[str, str, int | None, dict[str, str]]] = []

    def gateway(self, config: Config) -> ServerProcess:
        self.redis.flush()
        env = {
            "GMI_API_KEY": UPSTREAM_KEY,
            "GATEWAY_UPSTREAM_URL": self.sim.url + MIRROR,
            "GATEWAY_TENANTS_FILE": str(self.workdir / "tenants.yaml"),
            "GATEWAY_REDIS_URL": self.redis.url,
            "GATEWAY_FEATURES_OFF": config.features_off,
        }
        return ServerProcess(
            config.name,
            ["serve", "--host", "127.0.0.1", "--workers", str(config.workers)],
            port=free_port(),
            env=env,
            logdir=self.workdir,
            ready_path="/healthz",
        ).start()

    def run_config(self, config: Config) -> None:
        """Measure every path of ``config``; for the first, also the paced polls and the soak."""
        gateway = self.gateway(config)
        base = gateway.url + MIRROR
        tenant = {"Authorization": f"Bearer {config.key}"}
        in_flight, done = prepare_jobs(base, tenant)
        pid = gateway.pid
        print(f"{config.name} (workers {config.workers}, off: {config.features_off or '-'}):")
        urls = {
            MODELS: f"{base}/models",
            POLL: f"{base}/requests/{in_flight}",
            DONE: f"{base}/requests/{done}",
        }
        poll_rate = 0.0
        for path in PATHS:
            if path == SUBMIT:
                result = measure(
                    config.name,
                    path,
                    f"{base}/requests",
                    pid,
                    script=BENCH / "post.lua",
                    env={"BENCH_KEY": config.key},
                )
            else:
                result = measure(config.name, path, urls[path], pid, headers=tenant)
            if path == POLL:
                poll_rate = result.requests_per_second
            self.results.append(result)
        if config is CONFIGS[0]:
            self.paced_polls(config.name, urls[POLL], pid, tenant, rate=poll_rate / 2)
            if SOAK_SECONDS and pid:
                self.soak = soak(gateway, config.key, [urls[MODELS], urls[POLL], urls[DONE]])
        gateway.stop()

    def paced_polls(
        self, name: str, url: str, pid: int | None, headers: dict[str, str], *, rate: float
    ) -> None:
        """The in-flight poll at a fixed moderate rate: direct, through nginx, the gateway."""
        rate = max(100.0, round(rate, -1))
        print(f"paced status polls at {rate:.0f}/s (half the {name} peak):")
        for target, base_url, base_pid, base_headers in (
            *self.poll_baselines,
            (name, url, pid, headers),
        ):
            self.results.append(
                measure(
                    target,
                    POLL,
                    base_url,
                    base_pid,
                    headers=base_headers,
                    connections=PACED_CONNECTIONS,
                    rate=rate,
                )
            )


def prepare_jobs(base: str, tenant: dict[str, str]) -> tuple[str, str]:
    """A job that stays in flight and one that has finished, both the tenant's own."""
    in_flight = httpx.post(
        f"{base}/requests",
        headers=tenant,
        json={"model": MODEL, "payload": {"prompt": "y [sim:stuck]"}},
    ).json()["request_id"]
    done = httpx.post(
        f"{base}/requests", headers=tenant, json={"model": MODEL, "payload": {"prompt": "z"}}
    ).json()["request_id"]
    while httpx.get(f"{base}/requests/{done}", headers=tenant).json()["status"] != "success":
        time.sleep(0.1)
    httpx.get(f"{base}/models", headers=tenant)  # warm the catalog
    return in_flight, done


def soak(gateway: ServerProcess, key: str, urls: list[str]) -> dict[str, object]:
    """Every hot-path route at full rate for SOAK_SECONDS; resident size sampled 20 times."""
    assert gateway.pid is not None
    paths = [httpx.URL(url).raw_path.decode() for url in urls]
    env = {
        **os.environ,
        "BENCH_KEY": key,
        "BENCH_PATHS": ",".join(paths),
        "BENCH_SUBMIT": MIRROR + "/requests",
    }
    args = [*wrk_args({}, CONNECTIONS, SOAK_SECONDS, BENCH / "mixed.lua"), gateway.url]
    load = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
    samples: list[int] = []
    while load.poll() is None:
        samples.append(rss_kib(gateway.pid))
        time.sleep(SOAK_SECONDS / 20)
    rps, _, _, non2xx = parse_wrk(load.stdout.read() if load.stdout else "")
    warm = samples[2:] or samples  # the first samples include start-up growth
    growth = (warm[-1] - warm[0]) / warm[0]
    print(
        f"  soak {SOAK_SECONDS}s mixed: {rps:.0f} req/s, non-2xx {non2xx}, RSS MiB "
        f"{samples[0] / 1024:.1f} -> {warm[0] / 1024:.1f} -> {samples[-1] / 1024:.1f}"
        f" (growth after warm-up {growth:.1%})",
        flush=True,
    )
    return {
        "seconds": SOAK_SECONDS,
        "requests_per_second": rps,
        "non_2xx": non2xx,
        "rss_kib": samples,
        "growth_after_warmup": round(growth, 4),
    }


def main() -> int:
    for program, package in (("wrk", "wrk"), ("nginx", "nginx-light")):
        need(program, package)
    redis_binary = need("redis-server", "redis-server")
    workdir = Path(tempfile.mkdtemp(prefix="gmigw-bench-"))
    (workdir / "tenants.yaml").write_text(tenants_yaml())
    redis = RedisServer(redis_binary).start()
    sim = ServerProcess(
        "sim",
        ["sim", "--api-key", UPSTREAM_KEY, "--time-scale", "0.001"],
        port=free_port(),
        env={},
        logdir=workdir,
        ready_path="/",
    ).start()
    bench = Bench(workdir, redis, sim)
    upstream = {"Authorization": f"Bearer {UPSTREAM_KEY}"}
    nginx_port, bare_port, bare_redis_port = free_port(), free_port(), free_port()
    nginx_url = f"http://127.0.0.1:{nginx_port}{MIRROR}"
    models_body = workdir / "models.json"
    try:
        stuck = httpx.post(
            f"{sim.url}{MIRROR}/requests",
            headers=upstream,
            json={"model": MODEL, "payload": {"prompt": "x [sim:stuck]"}},
        ).json()["request_id"]
        models_body.write_bytes(httpx.get(f"{sim.url}{MIRROR}/models", headers=upstream).content)
        nginx = ["nginx", "-c", str(nginx_config(workdir, nginx_port, sim.port))]
        bare = [sys.executable, "-m", "uvicorn", "--app-dir", str(BENCH), "bare_app:app"]
        bare += ["--log-level", "warning", "--no-access-log", "--port"]
        bare_env = {"BENCH_BARE_BODY": str(models_body)}
        with (
            process(nginx, workdir, "nginx", {}) as nginx_pid,
            process([*bare, str(bare_port)], workdir, "bare", bare_env) as bare_pid,
            process(
                [*bare, str(bare_redis_port)],
                workdir,
                "bare-redis",
                {**bare_env, "BENCH_BARE_REDIS_URL": redis.url},
            ) as bare_redis_pid,
        ):
            wait_for(f"{nginx_url}/models")
            for port in (bare_port, bare_redis_port):
                wait_for(f"http://127.0.0.1:{port}{MIRROR}/models")
            print("baselines:")
            direct = f"{sim.url}{MIRROR}"
            for target, url, pid, headers in (
                ("direct", direct, sim.pid, upstream),
                ("nginx", nginx_url, nginx_pid, {}),
            ):
                poll = f"{url}/requests/{stuck}"
                bench.results.append(measure(target, MODELS, f"{url}/models", pid, headers=headers))
                bench.results.append(measure(target, POLL, poll, pid, headers=headers))
                bench.poll_baselines.append((target, poll, pid, headers))
            for target, port, pid in (
                ("bare-litestar", bare_port, bare_pid),
                ("bare-litestar-redis", bare_redis_port, bare_redis_pid),
            ):
                bare_url = f"http://127.0.0.1:{port}{MIRROR}/models"
                bench.results.append(measure(target, MODELS, bare_url, pid))
            for config in CONFIGS:
                bench.run_config(config)
    finally:
        sim.stop()
        redis.stop()
    found = ratios(bench.results)
    report: dict[str, object] = {
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": cpu_model(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "note": "one shared machine runs wrk, nginx, redis, the simulator and the gateway",
        },
        "seconds_per_measurement": SECONDS,
        "connections": CONNECTIONS,
        "results": [asdict(r) for r in bench.results],
        "ratios": found,
        "soak": bench.soak,
        "targets": targets(found, bench.soak),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"ratios": report["ratios"], "targets": report["targets"]}, indent=2))
    print(f"wrote {out}")
    return 0


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def ratios(results: list[Result]) -> dict[str, float]:
    flat = {(r.target, r.path): r for r in results if r.paced_rate is None}
    paced = {(r.target, r.path): r for r in results if r.paced_rate is not None}
    found: dict[str, float] = {}

    def ratio(name: str, a: tuple[str, str], b: tuple[str, str]) -> None:
        if a in flat and b in flat:
            found[name] = round(flat[a].requests_per_second / flat[b].requests_per_second, 3)

    for gw in ("gw-w1", "gw-w2"):
        for path in (MODELS, POLL):
            ratio(f"{gw} {path} / direct", (gw, path), ("direct", path))
            ratio(f"{gw} {path} / nginx", (gw, path), ("nginx", path))
    for gw in ("gw-w1", "gw-w1-off"):
        for bare in ("bare-litestar", "bare-litestar-redis"):
            ratio(f"{gw} {MODELS} / {bare}", (gw, MODELS), (bare, MODELS))
    ratio(
        f"bare-litestar-redis {MODELS} / bare-litestar",
        ("bare-litestar-redis", MODELS),
        ("bare-litestar", MODELS),
    )
    for off in ("gw-w1-no-audit", "gw-w1-no-metrics", "gw-w1-off"):
        for path in (MODELS, POLL, SUBMIT):
            ratio(f"gw-w1 {path} / {off}", ("gw-w1", path), (off, path))
    for base in ("direct", "nginx"):
        if ("gw-w1", POLL) in paced and (base, POLL) in paced:
            for pct in ("p50_ms", "p99_ms"):
                added = getattr(paced["gw-w1", POLL], pct) - getattr(paced[base, POLL], pct)
                found[f"gw-w1 paced poll added {pct.removesuffix('_ms')} ms over {base}"] = round(
                    added, 3
                )
    return found


def targets(found: dict[str, float], soaked: dict[str, object] | None) -> dict[str, object]:
    """Issue 6's targets, each with the figure reached and whether it was met."""

    def check(figure: float | None, ok: bool) -> dict[str, object]:
        return {"figure": figure, "met": ok if figure is not None else None}

    models = found.get(f"gw-w1 {MODELS} / bare-litestar")
    poll = found.get(f"gw-w1 {POLL} / nginx")
    p50 = found.get("gw-w1 paced poll added p50 ms over direct")
    p99 = found.get("gw-w1 paced poll added p99 ms over direct")
    submit = found.get(f"gw-w1 {SUBMIT} / gw-w1-off")
    growth = soaked.get("growth_after_warmup") if soaked else None
    return {
        "GET /models >= 0.7x bare Litestar": check(models, (models or 0) >= 0.7),
        "status poll >= 1/8 of nginx": check(poll, (poll or 0) >= 0.125),
        "added p50 < 2 ms at half peak": check(p50, p50 is not None and p50 < 2),
        "added p99 < 10 ms at half peak": check(p99, p99 is not None and p99 < 10),
        "POST all on >= 60% of all off": check(submit, (submit or 0) >= 0.6),
        "RSS flat within 10% over the soak": check(
            growth if isinstance(growth, float) else None,
            isinstance(growth, float) and abs(growth) <= 0.10,
        ),
    }


if __name__ == "__main__":
    sys.exit(main())
