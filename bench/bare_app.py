"""The baseline for GET /models: a bare Litestar handler returning the gateway's bytes.

Same framework, same server and flags as the gateway (uvicorn, uvloop, httptools, no access
log), nothing else: what the gateway adds is everything above this. The body is read from
``BENCH_BARE_BODY`` (a file), so it is byte for byte what the gateway answers.
"""

from __future__ import annotations

import os
from pathlib import Path

from litestar import Litestar, Response, get

BODY = Path(os.environ["BENCH_BARE_BODY"]).read_bytes()


@get("/api/v1/ie/requestqueue/apikey/models")
async def models() -> Response[bytes]:
    return Response(BODY, media_type="application/json")


app = Litestar([models], logging_config=None)
