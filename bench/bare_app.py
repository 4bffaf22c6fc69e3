"""The baselines for GET /models: a bare Litestar handler returning the gateway's bytes.

Same framework, same server and flags as the gateway (granian, ASGI, uvloop, one worker, no
access log), nothing else: what the gateway adds is everything above this. The body is read from
``BENCH_BARE_BODY`` (a file), so it is byte for byte what the gateway answers. With
``BENCH_BARE_REDIS_URL`` set, the handler also makes one Redis script call per request (a
counter, through redis-py asyncio with hiredis): the floor of an exact per-request rate limit,
which a limited tenant's GET /models must pay (DESIGN §4).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import redis.asyncio as redis
from litestar import Litestar, Response, get

BODY = Path(os.environ["BENCH_BARE_BODY"]).read_bytes()
REDIS_URL = os.environ.get("BENCH_BARE_REDIS_URL")
COUNT = "return redis.call('INCR', KEYS[1])"
client = redis.Redis.from_url(REDIS_URL) if REDIS_URL else None
count = client.register_script(COUNT) if client else None


@get("/api/v1/ie/requestqueue/apikey/models")
async def models() -> Response[bytes]:
    if count is not None:
        await count(keys=["bench:bare:reads"])
    return Response(BODY, media_type="application/json")


@asynccontextmanager
async def close_redis(_: Litestar) -> AsyncIterator[None]:
    yield
    if client is not None:
        await client.aclose()


app = Litestar([models], lifespan=[close_redis], logging_config=None)
