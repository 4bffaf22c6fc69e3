"""The commands that run the app in this process: ``demo``, ``sim`` and ``openapi``.

Kept apart from ``__main__`` so that ``serve`` (its supervisor, and every worker, which
re-imports the main module) never loads the simulator, uvicorn or a second copy of the app.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from pathlib import Path

import httpx
import uvicorn

from gateway.app import create_app
from gateway.listening import listen
from gateway.log import configure_logging
from gateway.routes.mirror import MIRROR_PREFIX
from gateway.services.tenant_registry import TenantRegistry
from gateway.services.tenants import new_key, parse_tenants
from gateway.settings import Secret, Settings
from gateway.sim import SimConfig, create_sim_app
from gateway.store.memory import MemoryStore
from gateway.upstream import UpstreamClient

__all__ = ("OPENAPI_FILE", "demo", "http_url", "openapi", "openapi_document", "sim")

OPENAPI_FILE = Path("openapi/openapi.json")
DEMO_TENANT = "demo"
DEMO_MODEL = "Kling-Text2Video-V2-Master"


def demo(args: argparse.Namespace) -> int:
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
    listening = listen("demo", args.host, args.port)
    if listening is None:
        return 2
    base = http_url(args.host, args.port) + MIRROR_PREFIX
    print(_demo_banner(base, demo_key), flush=True)
    server = uvicorn.Server(
        uvicorn.Config(app, host=args.host, port=args.port, log_config=None, access_log=False)
    )
    asyncio.run(server.serve(sockets=[listening]))
    return 0


def http_url(host: str, port: int) -> str:
    """``http://host:port``, an IPv6 host in brackets (as curl and browsers need it)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


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


def sim(args: argparse.Namespace) -> int:
    key = args.api_key or secrets.token_urlsafe(24)
    config = SimConfig(
        api_key=key,
        time_scale=args.time_scale,
        outcome_shape=args.outcome_shape,
        seed=args.seed,
        catalog_file=args.catalog,
    )
    try:
        app = create_sim_app(config)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"gmi-gateway sim: cannot read the catalog {args.catalog}: {exc!r}", file=sys.stderr)
        return 2
    listening = listen("sim", args.host, args.port)
    if listening is None:
        return 2
    if args.api_key is None:
        print(f"gmi-gateway sim: API key {key}", flush=True)
    server = uvicorn.Server(
        uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    )
    asyncio.run(server.serve(sockets=[listening]))
    return 0


def openapi(args: argparse.Namespace) -> int:
    document = openapi_document()
    if args.check:
        if not OPENAPI_FILE.exists():
            print(f"{OPENAPI_FILE} not found: run this from the repository root", file=sys.stderr)
            return 1
        if OPENAPI_FILE.read_text(encoding="utf-8") != document:
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
