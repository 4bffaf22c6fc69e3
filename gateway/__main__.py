"""The ``gmi-gateway`` command: serve | demo | sim | keys new | check-config | openapi."""

from __future__ import annotations

import argparse
import importlib
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from granian import Granian
from granian.constants import HTTPModes, Interfaces, Loops
from granian.http import HTTP1Settings
from granian.log import LogLevels

from gateway.audit import AUDIT_SHUTDOWN_SECONDS
from gateway.listening import listen
from gateway.log import configure_logging
from gateway.services.tenants import TenantConfigError, load_tenants, new_key
from gateway.settings import TENANTS_LAST_GOOD_ENV, Settings, SettingsError

__all__ = ("drain_seconds", "main")

BACKLOG = 4096
BACKPRESSURE = 16384  # requests (and connections) a worker takes at once
# Longer than the keep-alive of the proxies in front (ingress-nginx and load balancers keep
# idle upstream connections 60 s): one closed under a proxy's POST would be a 502.
IDLE_CLOSE_SECONDS = 75

DEFAULT_PORT = 8080
DEFAULT_SIM_PORT = 8081


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen command; returns the exit code."""
    args = _parser().parse_args(argv)
    result: int = args.run(args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gmi-gateway", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway (production; env configures it)")
    serve.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a server in a pod listens on all interfaces
    serve.add_argument("--port", type=_port, default=DEFAULT_PORT)
    serve.add_argument("--workers", type=_at_least_one, default=1)
    serve.set_defaults(run=_serve)

    demo = commands.add_parser("demo", help="gateway + built-in simulator, no Redis, no GMI key")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=_port, default=DEFAULT_PORT)
    demo.add_argument("--time-scale", type=_positive, default=0.05, help="simulated job speed")
    demo.set_defaults(run=_in_process("demo"))

    sim = commands.add_parser("sim", help="the upstream simulator alone")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=_port, default=DEFAULT_SIM_PORT)
    sim.add_argument("--api-key", default=None, help="key clients must send (default: random)")
    sim.add_argument("--time-scale", type=_positive, default=1.0)
    sim.add_argument(
        "--outcome-shape", choices=("media_urls", "legacy", "both"), default="media_urls"
    )
    sim.add_argument("--seed", type=int, default=None)
    sim.add_argument(
        "--catalog", type=Path, default=None, help="a catalog JSON file (default: the built-in one)"
    )
    sim.set_defaults(run=_in_process("sim"))

    keys = commands.add_parser("keys", help="tenant key tools").add_subparsers(required=True)
    new = keys.add_parser("new", help="print a fresh tenant key and the line for the tenants file")
    new.add_argument("--tenant", required=True)
    new.set_defaults(run=_keys_new)

    check = commands.add_parser("check-config", help="validate a tenants file")
    check.add_argument("file", type=Path)
    check.set_defaults(run=_check_config)

    openapi = commands.add_parser("openapi", help="write openapi/openapi.json from the app")
    openapi.add_argument("--check", action="store_true", help="fail if the file is out of date")
    openapi.set_defaults(run=_in_process("openapi"))
    return parser


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, got {port}")
    return port


def _at_least_one(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _positive(text: str) -> float:
    number = float(text)
    if not (math.isfinite(number) and number > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return number


def _in_process(name: str) -> Callable[[argparse.Namespace], int]:
    """A command of ``gateway.in_process``, imported only when it runs (see that module)."""

    def run(args: argparse.Namespace) -> int:
        command: Callable[[argparse.Namespace], int]
        command = getattr(importlib.import_module("gateway.in_process"), name)
        return command(args)

    return run


def drain_seconds(settings: Settings) -> int:
    """How long a stopping worker may take: a request in flight gets its whole upstream time
    (a submit cut short would be charged and never recorded), then the audit flush its own.

    The longest request makes three upstream calls in a row: a submit on a cold catalog reads
    the model list, then the model, then posts. Each takes connect + read at most, a GET that
    retried its fast failures ``upstream_retry_window`` more, and each catalog read may first
    wait ``catalog_shared_wait`` for another replica's refresh.
    """
    attempt = settings.upstream_connect_timeout + settings.upstream_read_timeout
    catalog_read = settings.catalog_shared_wait + settings.upstream_retry_window + attempt
    upstream = 2 * catalog_read + attempt
    return math.ceil(upstream + AUDIT_SHUTDOWN_SECONDS)


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env(os.environ)
        load_tenants(settings.tenants_file or "")
    except (SettingsError, TenantConfigError) as exc:
        print(f"gmi-gateway serve: {exc}", file=sys.stderr)
        return 2
    if args.workers > 1 and settings.redis_url is None:
        print(
            "gmi-gateway serve: --workers above 1 needs GATEWAY_REDIS_URL: the in-memory store "
            "is per process, so each worker would keep its own jobs and quotas (a job "
            "submitted through one worker is 404 on the next, and every limit counts N times)",
            file=sys.stderr,
        )
        return 2
    if args.workers > 1 and settings.store_failure_mode == "open":
        print(
            "gmi-gateway serve: --workers above 1 cannot run GATEWAY_STORE_FAILURE_MODE=open: "
            "its fallback store is per process, so while Redis is down every limit counts once "
            "per worker and a job submitted through one worker answers 503 on the others; run "
            "one worker per pod (scale with replicas) or the closed mode",
            file=sys.stderr,
        )
        return 2
    probe = listen("serve", args.host, args.port)
    if probe is None:
        return 2
    probe.close()  # it only proved the address free: granian binds its own
    configure_logging(settings.log_level, secrets=settings.log_secrets)
    scratch = None
    if args.workers > 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        scratch = _prepare_multiprocess_metrics()
    kept = tempfile.mkdtemp(prefix="gmigw-tenants-")  # the workers' last good tenants config
    os.environ[TENANTS_LAST_GOOD_ENV] = os.path.join(kept, "tenants.yaml")
    # Workers start as fresh interpreters (not forks), so they import prometheus-client with
    # PROMETHEUS_MULTIPROC_DIR already set and inherit no state of this process.
    multiprocessing.set_start_method("spawn", force=True)
    server = Granian(
        "gateway.app:app_from_env",
        factory=True,
        interface=Interfaces.ASGI,
        address=args.host,
        port=args.port,
        workers=args.workers,
        loop=Loops.uvloop,
        websockets=False,
        # HTTP/1 only (the ingress and the probes speak it), where granian closes a connection
        # that sends no request for a while: in "auto" mode an idle connection was kept for
        # ever, and 1,024 of them (the default backpressure) stopped a pod answering anything,
        # /healthz included. A high backpressure lets idle connections cost only a socket.
        http=HTTPModes.http1,
        http1_settings=HTTP1Settings(header_read_timeout=IDLE_CLOSE_SECONDS * 1000),
        backlog=BACKLOG,
        backpressure=BACKPRESSURE,
        log_level=LogLevels(settings.log_level),
        # Granian's own records go to the root logger: the same redacted JSON lines as ours.
        log_dictconfig={"handlers": {}, "loggers": {"_granian": {"propagate": True}}},
        workers_kill_timeout=drain_seconds(settings),
        respawn_failed_workers=True,  # one crashed worker must not take the server down
    )
    try:
        server.serve()
    finally:
        for directory in (scratch, kept):
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)
    return 0


def _prepare_multiprocess_metrics() -> str | None:
    """Workers write metrics to files in one directory so a scrape of any worker sums them all.

    Uses ``PROMETHEUS_MULTIPROC_DIR`` when set (the chart mounts an emptyDir there), emptied of
    a previous run's files; otherwise a fresh temporary directory, returned for removal when
    the server stops.
    """
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        for stale in Path(directory).glob("*.db"):
            stale.unlink()
        return None
    scratch = tempfile.mkdtemp(prefix="gmigw-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = scratch
    return scratch


def _keys_new(args: argparse.Namespace) -> int:
    try:
        key, entry = new_key(args.tenant)
    except ValueError as exc:
        print(f"gmi-gateway keys new: {exc}", file=sys.stderr)
        return 2
    print(f"New key for tenant {args.tenant} (shown once; give it to the tenant):\n\n  {key}\n")
    print("Add this under the tenant's `keys:` in the tenants file:\n")
    print("\n".join(f"  {line}" for line in entry.splitlines()))
    return 0


def _check_config(args: argparse.Namespace) -> int:
    try:
        config = load_tenants(args.file)
    except TenantConfigError as exc:
        print(f"{args.file}: invalid\n{exc}", file=sys.stderr)
        return 1
    print(f"{args.file}: OK ({len(config.tenants)} tenants, {len(config.admins)} admins)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
