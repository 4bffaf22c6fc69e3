"""The ``gmi-gateway`` command: serve | demo | sim | keys new | check-config | openapi."""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import uvicorn
from granian import Granian
from granian.constants import Interfaces, Loops
from granian.log import LogLevels

from gateway.app import create_app
from gateway.log import configure_logging
from gateway.routes.mirror import MIRROR_PREFIX
from gateway.services.tenant_registry import TenantRegistry
from gateway.services.tenants import TenantConfigError, load_tenants, new_key, parse_tenants
from gateway.settings import Secret, Settings, SettingsError
from gateway.sim import SimConfig, create_sim_app
from gateway.store.memory import MemoryStore
from gateway.upstream import UpstreamClient

__all__ = ("main",)

DEFAULT_PORT = 8080
DEFAULT_SIM_PORT = 8081
DRAIN_SECONDS = 20
OPENAPI_FILE = Path("openapi/openapi.json")
DEMO_TENANT = "demo"
DEMO_MODEL = "Kling-Text2Video-V2-Master"


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
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(run=_serve)

    demo = commands.add_parser("demo", help="gateway + built-in simulator, no Redis, no GMI key")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=DEFAULT_PORT)
    demo.add_argument("--time-scale", type=float, default=0.05, help="simulated job speed")
    demo.set_defaults(run=_demo)

    sim = commands.add_parser("sim", help="the upstream simulator alone")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=DEFAULT_SIM_PORT)
    sim.add_argument("--api-key", default=None, help="key clients must send (default: random)")
    sim.add_argument("--time-scale", type=float, default=1.0)
    sim.add_argument(
        "--outcome-shape", choices=("media_urls", "legacy", "both"), default="media_urls"
    )
    sim.add_argument("--seed", type=int, default=None)
    sim.set_defaults(run=_sim)

    keys = commands.add_parser("keys", help="tenant key tools").add_subparsers(required=True)
    new = keys.add_parser("new", help="print a fresh tenant key and the line for the tenants file")
    new.add_argument("--tenant", required=True)
    new.set_defaults(run=_keys_new)

    check = commands.add_parser("check-config", help="validate a tenants file")
    check.add_argument("file", type=Path)
    check.set_defaults(run=_check_config)

    openapi = commands.add_parser("openapi", help=f"write {OPENAPI_FILE} from the app")
    openapi.add_argument("--check", action="store_true", help="fail if the file is out of date")
    openapi.set_defaults(run=_openapi)
    return parser


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env(os.environ)
        load_tenants(settings.tenants_file or "")
    except (SettingsError, TenantConfigError) as exc:
        print(f"gmi-gateway serve: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, secrets=[settings.upstream_api_key.reveal()])
    if args.workers > 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        _prepare_multiprocess_metrics()
    # Workers start as fresh interpreters (not forks), so they import prometheus-client with
    # PROMETHEUS_MULTIPROC_DIR already set and inherit no state of this process.
    multiprocessing.set_start_method("spawn", force=True)
    Granian(
        "gateway.app:app_from_env",
        factory=True,
        interface=Interfaces.ASGI,
        address=args.host,
        port=args.port,
        workers=args.workers,
        loop=Loops.uvloop,
        websockets=False,
        log_level=LogLevels(settings.log_level),
        # Granian's own records go to the root logger: the same redacted JSON lines as ours.
        log_dictconfig={"handlers": {}, "loggers": {"_granian": {"propagate": True}}},
        workers_kill_timeout=DRAIN_SECONDS,
    ).serve()
    return 0


def _prepare_multiprocess_metrics() -> None:
    """Workers write metrics to files in one directory so a scrape of any worker sums them all.

    Uses ``PROMETHEUS_MULTIPROC_DIR`` when set (the chart mounts an emptyDir there), emptied of
    a previous run's files; otherwise a fresh temporary directory.
    """
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        for stale in Path(directory).glob("*.db"):
            stale.unlink()
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gmigw-metrics-")


def _demo(args: argparse.Namespace) -> int:
    sim_key = secrets.token_urlsafe(24)
    sim_app = create_sim_app(SimConfig(api_key=sim_key, time_scale=args.time_scale))
    demo_key, key_entry = new_key(DEMO_TENANT)
    config = parse_tenants(
        f"tenants:\n  - id: {DEMO_TENANT}\n    keys:\n"
        + "".join(f"      {line}\n" for line in key_entry.splitlines())
        + '    models: ["*"]\n'
        + "    limits: {submits_per_minute: 30, max_concurrent_jobs: 5,"
        + " video_seconds_per_day: 600, video_seconds_per_month: 12000}\n",
        source="<demo>",
    )
    settings = Settings(upstream_api_key=Secret(sim_key), upstream_url="http://sim" + MIRROR_PREFIX)
    configure_logging("info", secrets=[sim_key, demo_key])
    upstream = UpstreamClient(
        base_url=settings.upstream_url, api_key=sim_key, transport=httpx.ASGITransport(sim_app)
    )
    app = create_app(
        settings,
        store=MemoryStore(clock=time.time),
        upstream=upstream,
        tenants=TenantRegistry.fixed(config),
    )
    base = f"http://{args.host}:{args.port}{MIRROR_PREFIX}"
    print(_demo_banner(base, demo_key), flush=True)
    server = uvicorn.Server(
        uvicorn.Config(app, host=args.host, port=args.port, log_config=None, access_log=False)
    )
    asyncio.run(server.serve())
    return 0


def _demo_banner(base: str, key: str) -> str:
    root = base.removesuffix(MIRROR_PREFIX)
    auth = f'-H "Authorization: Bearer {key}"'
    body = json.dumps(
        {
            "model": DEMO_MODEL,
            "payload": {"prompt": "A red fox running through snow", "duration": "5"},
        }
    )
    return "\n".join(
        (
            "gmi-gateway demo: gateway + built-in upstream simulator, in-memory store.",
            f"Demo tenant key (shown once): {key}",
            "",
            f"  export GW={base} KEY={key}",
            '  curl -s "$GW/models" -H "Authorization: Bearer $KEY"',
            f'  curl -s -X POST "$GW/requests" -H "Authorization: Bearer $KEY" '
            f"-H 'Content-Type: application/json' -d '{body}'",
            '  curl -s "$GW/requests/<request_id>" -H "Authorization: Bearer $KEY"   # poll',
            '  curl -s "$GW/requests" -H "Authorization: Bearer $KEY"                # list',
            f'  curl -s "{root}/v1/usage" -H "Authorization: Bearer $KEY"  # your quotas',
            "",
            f"(the same commands with the key inline: {auth})",
        )
    )


def _sim(args: argparse.Namespace) -> int:
    key = args.api_key or secrets.token_urlsafe(24)
    if args.api_key is None:
        print(f"gmi-gateway sim: API key {key}", flush=True)
    app = create_sim_app(
        SimConfig(
            api_key=key,
            time_scale=args.time_scale,
            outcome_shape=args.outcome_shape,
            seed=args.seed,
        )
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


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


def _openapi(args: argparse.Namespace) -> int:
    document = openapi_document()
    if args.check:
        current = OPENAPI_FILE.read_text(encoding="utf-8") if OPENAPI_FILE.exists() else ""
        if current != document:
            print(f"{OPENAPI_FILE} is out of date: run `gmi-gateway openapi`", file=sys.stderr)
            return 1
        print(f"{OPENAPI_FILE} is up to date")
        return 0
    OPENAPI_FILE.parent.mkdir(parents=True, exist_ok=True)
    OPENAPI_FILE.write_text(document, encoding="utf-8")
    print(f"wrote {OPENAPI_FILE}")
    return 0


def openapi_document() -> str:
    """The OpenAPI document of the app, as committed (stable key order, trailing newline)."""
    settings = Settings(upstream_api_key=Secret("unused"))
    app = create_app(settings, tenants=TenantRegistry.fixed(parse_tenants("tenants: []\n")))
    schema = app.openapi_schema.to_schema()
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.exit(main())
