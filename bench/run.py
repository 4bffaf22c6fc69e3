"""Side-by-side load benchmark: the gateway against the simulator, nginx and a bare Litestar app.

Starts a redis-server, the simulator (fast mode; it must out-run the gateway, and its own
throughput is reported as ``direct``), nginx as a plain keep-alive reverse proxy to the simulator
with the upstream key injected, a bare Litestar handler returning the gateway's GET /models
bytes (alone, and with the one Redis script call an exact read limit costs), and the gateway in
several configurations:

- ``gw-w1`` / ``gw-w2``: everything on (a tenant with every limit, audit, metrics), 1 and 2
  workers;
- ``gw-w1-no-audit``, ``gw-w1-no-metrics``: one feature switched off (``GATEWAY_FEATURES_OFF``);
- ``gw-w1-no-quotas``: a tenant without limits, audit and metrics on;
- ``gw-w1-off``: quotas (a tenant without limits), audit and metrics all off.

Each path is driven by wrk at a fixed connection count, in rounds: every round measures every
baseline and configuration once, and each figure is the round with the median throughput, so
a slow minute on the shared machine moves one round, not one configuration. Then the in-flight
status poll is paced at half the ``gw-w1`` peak rate to measure the latency added over direct
and over nginx; last, a memory soak loads every hot-path route of ``gw-w1`` at full rate.
Prints a table and the targets of issue 6, and writes everything (each round too) as JSON under
``bench/results/``. The machine is shared and noisy: compare figures within one run (the
ratios), not across runs.

Run with ``make bench`` (``BENCH_ROUNDS``, ``BENCH_SECONDS``, ``BENCH_CONNECTIONS``,
``BENCH_SOAK_SECONDS`` tune it; ``BENCH_SOAK_SECONDS=0`` skips the soak). Needs redis-server,
nginx and wrk (Debian packages): installs them with apt-get when run as root, otherwise says
what is missing.
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
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
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
    round: int | None = None


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
    Config("gw-w1-no-quotas", 1, UNLIMITED_KEY),
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


def worker_rss_kib(pid: int) -> int:
    """Resident size of the server's worker processes (granian spawns them as children of a
    small supervisor), in KiB."""
    total = 0
    for one in process_tree(pid):
        with contextlib.suppress(FileNotFoundError):
            if b"spawn_main" not in Path(f"/proc/{one}/cmdline").read_bytes():
                continue
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
    round_number: int | None = None,
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
        None if cpu is None else round(cpu, 3), non2xx, connections, rate, round_number,
    )  # fmt: skip
    show(result)
    return result


def show(r: Result) -> None:
    paced = f" (paced at {r.paced_rate:.0f}/s)" if r.paced_rate else ""
    print(
        f"  {r.target:<19} {r.path:<24} {r.requests_per_second:>8.0f} req/s"
        f"  p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms"
        f"  cpu {r.cpu_ms_per_request or 0:6.3f} ms/req  non-2xx {r.non_2xx}{paced}",
        flush=True,
    )


def median_of_rounds(results: list[Result]) -> list[Result]:
    """Per target and path, the round with the median throughput (all its figures together)."""
    rounds: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        if r.round is not None:
            rounds.setdefault((r.target, r.path), []).append(r)
    return [
        sorted(runs, key=lambda r: r.requests_per_second)[len(runs) // 2]
        for runs in rounds.values()
    ]


def tenants_yaml() -> str:
    def sha(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    # Every limit configured (so every check runs) and never reached: rates at their cap of a
    # million a minute (~16,700/s, above any rate measured here), the rest higher still.
    limits = ", ".join(
        f"{name}: {value}"
        for name, value in (
            ("submits_per_minute", 10**6),
            ("reads_per_minute", 10**6),
            ("max_concurrent_jobs", 10**9),
            ("video_seconds_per_day", 10**9),
            ("video_seconds_per_month", 10**9),
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

    def gateway(self, config: Config) -> ServerProcess:
        """A fresh gateway on a flushed store: no configuration inherits another's jobs."""
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

    def run_config(self, config: Config, round_number: int) -> None:
        """Measure every path of ``config`` once."""
        gateway = self.gateway(config)
        urls, tenant = gateway_urls(gateway, config.key)
        print(f"{config.name} (workers {config.workers}, off: {config.features_off or '-'}):")
        for path in PATHS:
            if path == SUBMIT:  # a key and an Idempotency-Key per request: post.lua
                script, env, headers = BENCH / "post.lua", {"BENCH_KEY": config.key}, None
            else:
                script, env, headers = None, None, tenant
            self.results.append(
                measure(
                    config.name,
                    path,
                    urls[path],
                    gateway.pid,
                    headers=headers,
                    script=script,
                    env=env,
                    round_number=round_number,
                )
            )
        gateway.stop()

    def paced_polls_and_soak(
        self, config: Config, baselines: list[tuple[str, str, int | None, dict[str, str]]]
    ) -> None:
        """The in-flight poll at half ``config``'s median peak, against the baselines; the soak."""
        peak = {(r.target, r.path): r for r in median_of_rounds(self.results)}[config.name, POLL]
        rate = max(100.0, round(peak.requests_per_second / 2, -1))
        gateway = self.gateway(config)
        urls, tenant = gateway_urls(gateway, config.key)
        print(f"paced status polls at {rate:.0f}/s (half the {config.name} peak):")
        for target, url, pid, headers in (
            *baselines,
            (config.name, urls[POLL], gateway.pid, tenant),
        ):
            self.results.append(
                measure(
                    target,
                    POLL,
                    url,
                    pid,
                    headers=headers,
                    connections=PACED_CONNECTIONS,
                    rate=rate,
                )
            )
        if SOAK_SECONDS and gateway.pid:
            self.soak = soak(gateway, config.key, [urls[MODELS], urls[POLL], urls[DONE]])
        gateway.stop()


def gateway_urls(gateway: ServerProcess, key: str) -> tuple[dict[str, str], dict[str, str]]:
    """Each path's URL on a started gateway (with its jobs prepared), and the tenant's header."""
    base = gateway.url + MIRROR
    tenant = {"Authorization": f"Bearer {key}"}
    in_flight, done = prepare_jobs(base, tenant)
    urls = {
        MODELS: f"{base}/models",
        POLL: f"{base}/requests/{in_flight}",
        DONE: f"{base}/requests/{done}",
        SUBMIT: f"{base}/requests",
    }
    return urls, tenant


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
        samples.append(worker_rss_kib(gateway.pid))
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


def fast_sim(workdir: Path) -> ServerProcess:
    """The simulator at a thousandth of the spec's timings, started: it must out-run the gateway."""
    return ServerProcess(
        "sim",
        ["sim", "--api-key", UPSTREAM_KEY, "--time-scale", "0.001"],
        port=free_port(),
        env={},
        logdir=workdir,
        ready_path="/",
    ).start()


def main() -> int:
    for program, package in (("wrk", "wrk"), ("nginx", "nginx-light")):
        need(program, package)
    redis_binary = need("redis-server", "redis-server")
    workdir = Path(tempfile.mkdtemp(prefix="gmigw-bench-"))
    (workdir / "tenants.yaml").write_text(tenants_yaml())
    redis = RedisServer(redis_binary).start()
    sim = fast_sim(workdir)
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
        bare = [sys.executable, "-m", "granian", "--interface", "asgi", "--loop", "uvloop"]
        bare += ["--no-ws", "--log-level", "warning", "--working-dir", str(BENCH)]
        bare += ["bare_app:app", "--port"]
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
            direct = f"{sim.url}{MIRROR}"
            bare_url = f"http://127.0.0.1:{bare_port}{MIRROR}/models"
            bare_redis_url = f"http://127.0.0.1:{bare_redis_port}{MIRROR}/models"
            baselines = [
                ("direct", MODELS, f"{direct}/models", sim.pid, upstream),
                ("direct", POLL, f"{direct}/requests/{stuck}", sim.pid, upstream),
                ("nginx", MODELS, f"{nginx_url}/models", nginx_pid, {}),
                ("nginx", POLL, f"{nginx_url}/requests/{stuck}", nginx_pid, {}),
                ("bare-litestar", MODELS, bare_url, bare_pid, {}),
                ("bare-litestar-redis", MODELS, bare_redis_url, bare_redis_pid, {}),
            ]
            for round_number in range(1, ROUNDS + 1):
                print(f"round {round_number} of {ROUNDS}, baselines:")
                for target, path, url, pid, headers in baselines:
                    bench.results.append(
                        measure(target, path, url, pid, headers=headers, round_number=round_number)
                    )
                for config in CONFIGS:
                    bench.run_config(config, round_number)
            bench.paced_polls_and_soak(
                CONFIGS[0],
                [
                    (target, url, pid, headers)
                    for target, path, url, pid, headers in baselines
                    if path == POLL
                ],
            )
    finally:
        sim.stop()
        redis.stop()
    figures = [*median_of_rounds(bench.results), *(r for r in bench.results if r.paced_rate)]
    print("medians of the rounds, and the paced polls:")
    for result in figures:
        show(result)
    found = ratios(figures)
    report: dict[str, object] = {
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": cpu_model(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "note": "one shared machine runs wrk, nginx, redis, the simulator and the gateway",
        },
        "rounds": ROUNDS,
        "seconds_per_measurement": SECONDS,
        "connections": CONNECTIONS,
        "results": [asdict(r) for r in figures],
        "every_round": [asdict(r) for r in bench.results if r.round is not None],
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
    for off in ("gw-w1-no-audit", "gw-w1-no-metrics", "gw-w1-no-quotas", "gw-w1-off"):
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
