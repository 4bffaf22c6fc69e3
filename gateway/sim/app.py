"""The simulator's ASGI app: the upstream's routes plus the ``/_sim`` test controls.

A raw ASGI app with pre-encoded bodies, so the simulator always out-runs the gateway in a
benchmark. Every route needs the configured bearer key, like the upstream.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl

import msgspec

from gateway.sim.catalog import load_catalog
from gateway.sim.jobs import JobBook, OutcomeShape
from gateway.sim.validation import payload_problem

__all__ = ("SimConfig", "create_sim_app")

PREFIX = "/api/v1/ie/requestqueue/apikey"
ROUTES = (
    "GET /models",
    "GET /models/{model_id}",
    "POST /requests",
    "GET /requests",
    "GET /requests/{request_id}",
    "POST /upload-url",
)
UPLOAD_TYPES = ("jpeg", "jpg", "png", "mp4", "mp3", "wav")  # spec E6
UPLOAD_BUCKET = "https://storage.googleapis.com/gmi-sim-uploads"
FAULT_BODIES = {
    429: {"error": "rate limit exceeded"},
    500: {"error": "Backend error (400). Please try again."},
    503: {"error": "Upstream capacity temporarily exhausted; please retry later"},
}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Answer = tuple[int, bytes, tuple[tuple[bytes, bytes], ...]]


@dataclass(frozen=True, slots=True)
class SimConfig:
    """How the simulated upstream behaves; defaults follow the spec's §13 assumptions."""

    api_key: str
    time_scale: float = 1.0
    outcome_shape: OutcomeShape = "media_urls"
    failure_rate: float = 0.0
    seed: int | None = None
    require_prompt: bool = True
    strict_payload: bool = False
    error_form: Literal["object", "string"] = "object"
    enable_delete: bool = False
    failed_record_on_500: bool = False
    requests_per_hour: int | None = None
    catalog_file: Path | None = None  # None: the built-in catalog


class _Envelope(msgspec.Struct):
    model: Any = None
    payload: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)  # verbatim, for the echo


class _Fault(msgspec.Struct, forbid_unknown_fields=True):
    route: str
    status: int | None = None
    rate: float = 1.0
    latency_ms: int = 0


def _json(status: int, body: Any, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Answer:
    return status, msgspec.json.encode(body), headers


def _error(status: int, message: str) -> Answer:
    return _json(status, {"error": message})


class _Simulator:
    def __init__(self, config: SimConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self.rng = random.Random(config.seed)  # noqa: S311 - simulated timings, not secrets
        self.catalog = load_catalog(config.catalog_file)
        self.auth = f"Bearer {config.api_key}".encode()
        self.reset()

    def reset(self) -> None:
        self.book = JobBook(
            time_scale=self.config.time_scale, failure_rate=self.config.failure_rate, rng=self.rng
        )
        self.calls = dict.fromkeys(ROUTES, 0)
        self.faults: dict[str, _Fault] = {}
        self.recent: deque[float] = deque()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        status, payload, headers = await self.answer(scope, body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), *headers],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def answer(self, scope: Scope, body: bytes) -> Answer:
        method: str = scope["method"]
        path: str = scope["path"]
        route, params = _route(method, path)
        if route in self.calls:
            self.calls[route] += 1
        if dict(scope["headers"]).get(b"authorization") != self.auth:
            return _error(401, "unauthorized: invalid or expired API key")
        if route is None:
            return _error(404, f"no route {method} {path}")
        if route.startswith("405 ") or (
            route == "DELETE /requests/{request_id}" and not self.config.enable_delete
        ):
            return _error(405, f"method {method} not allowed on {path}")
        limited = self._rate_limited()
        if limited is not None:
            return limited
        fault = self.faults.get(route)
        if fault is not None and self.rng.random() < fault.rate:
            if fault.latency_ms:
                await asyncio.sleep(fault.latency_ms / 1000)
            if fault.status is not None:
                return self._fault(fault.status, route, body)
        if route == "GET /requests":
            params = (dict(parse_qsl(scope["query_string"].decode("latin-1"))),)
        handler = getattr(self, _HANDLERS[route])
        answer: Answer = handler(body, *params)
        return answer

    def _rate_limited(self) -> Answer | None:
        limit = self.config.requests_per_hour
        if limit is None:
            return None
        now = self.clock()
        while self.recent and self.recent[0] <= now - 3600:
            self.recent.popleft()
        if len(self.recent) >= limit:
            wait = max(1, int(self.recent[0] + 3600 - now) + 1)
            return _json(429, FAULT_BODIES[429], ((b"retry-after", str(wait).encode()),))
        self.recent.append(now)
        return None

    def _fault(self, status: int, route: str, body: bytes) -> Answer:
        payload = dict(FAULT_BODIES[status])
        if status == 503:
            payload["request_id"] = _uuid(self.rng)
        if status == 500 and route == "POST /requests" and self.config.failed_record_on_500:
            self._leave_failed_record(body)
        headers = ((b"retry-after", b"1"),) if status == 429 else ()
        return _json(status, payload, headers)

    def _leave_failed_record(self, body: bytes) -> None:
        try:
            envelope = msgspec.json.decode(body, type=_Envelope)
        except msgspec.MsgspecError:
            return
        if isinstance(envelope.model, str) and envelope.payload:
            self.book.create(envelope.model, envelope.payload, "", self.clock(), fate="rejected")

    # --- upstream routes -------------------------------------------------------------------

    def list_models(self, _body: bytes) -> Answer:
        return 200, self.catalog.ids_body, ()

    def get_model(self, _body: bytes, model_id: str) -> Answer:
        detail = self.catalog.detail_bodies.get(model_id)
        if detail is None:
            return _error(404, f"model {model_id} does not exist")
        return 200, detail, ()

    def submit(self, body: bytes) -> Answer:
        try:
            envelope = msgspec.json.decode(body, type=_Envelope)
            payload = msgspec.json.decode(envelope.payload) if envelope.payload else None
        except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
            return _error(400, "invalid payload: request body must be a JSON object")
        if not isinstance(envelope.model, str) or not envelope.model:
            return _error(400, "invalid payload: model is required")
        if not envelope.payload:
            return _error(400, "invalid payload: payload is required")
        if not isinstance(payload, dict):
            return _error(400, "invalid payload: payload must be an object")
        specs = self.catalog.parameters.get(envelope.model)
        if specs is None:
            return _error(404, f"model {envelope.model} does not exist")
        problem = payload_problem(
            payload,
            specs,
            require_prompt=self.config.require_prompt,
            strict=self.config.strict_payload,
        )
        if problem:
            return _error(400, f"invalid payload: {problem}")
        now = self.clock()
        prompt = payload.get("prompt")
        sync = envelope.model in self.catalog.sync_models
        job = self.book.create(
            envelope.model,
            envelope.payload,
            prompt if isinstance(prompt, str) else "",
            now,
            sync=sync,
        )
        if sync:  # spec §3: the whole record once done, or a 400 that names the job
            record = self._record(job)
            if record["status"] == "success":
                return _json(200, record)
            error = record["outcome"]["error"]
            message = error["message"] if isinstance(error, dict) else error
            return _json(400, {"error": message, "request_id": job.request_id})
        created = int(now)
        return _json(
            200,
            {
                "request_id": job.request_id,
                "model": job.model,
                "status": "queued",
                "created_at": created,
                "updated_at": created,
                "queued_at": created,
            },
        )

    def upload_url(self, body: bytes) -> Answer:
        """Spec E6: a signed GCS PUT URL (15 min) and the object's public URL. Nothing is
        stored: the simulator only answers the API."""
        try:
            request = msgspec.json.decode(body)
        except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
            return _error(400, "invalid request: body must be a JSON object")
        if not isinstance(request, dict):
            return _error(400, "invalid request: body must be a JSON object")
        file_type = request.get("file_type")
        if file_type not in UPLOAD_TYPES:
            return _error(400, f"invalid file_type: must be one of {', '.join(UPLOAD_TYPES)}")
        public_url = f"{UPLOAD_BUCKET}/{_uuid(self.rng)}.{file_type}"
        signature = f"{self.rng.getrandbits(256):064x}"
        upload_url = (
            f"{public_url}?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Expires=900"
            f"&X-Goog-SignedHeaders=content-type%3Bhost&X-Goog-Signature={signature}"
        )
        return _json(200, {"upload_url": upload_url, "public_url": public_url})

    def get_request(self, _body: bytes, request_id: str) -> Answer:
        job = self.book.jobs.get(request_id)
        if job is None:
            return _error(404, "request not found")
        return _json(200, self._record(job))

    def list_requests(self, _body: bytes, query: dict[str, str]) -> Answer:
        try:
            limit = _non_negative(query.get("limit", query.get("page_size", "100")), "limit")
            offset = _non_negative(query.get("offset", "0"), "offset")
        except ValueError as exc:
            return _error(400, str(exc))
        model = query.get("model_id")
        jobs = [j for j in reversed(self.book.jobs.values()) if model is None or j.model == model]
        page = jobs[offset : offset + limit]
        return _json(
            200,
            {
                "requests": [self._record(j) for j in page],
                "total": len(jobs),
                "has_more": offset + len(page) < len(jobs),
            },
        )

    def delete_request(self, _body: bytes, request_id: str) -> Answer:
        return self._cancel(request_id, allowed=("queued", "dispatched"))

    # --- simulator controls -----------------------------------------------------------------

    def stats(self, _body: bytes) -> Answer:
        return _json(200, {"calls": self.calls})

    def cancel(self, _body: bytes, request_id: str) -> Answer:
        return self._cancel(request_id, allowed=("queued", "dispatched", "processing"))

    def set_fault(self, body: bytes) -> Answer:
        try:
            fault = msgspec.json.decode(body, type=_Fault)
        except msgspec.MsgspecError as exc:
            return _error(400, f"invalid fault: {exc}")
        if fault.route not in ROUTES:
            return _error(400, f"invalid fault: route must be one of {', '.join(ROUTES)}")
        if fault.status is not None and fault.status not in FAULT_BODIES:
            return _error(400, "invalid fault: status must be 429, 500 or 503")
        if not 0.0 <= fault.rate <= 1.0 or fault.latency_ms < 0:
            return _error(400, "invalid fault: rate must be in [0, 1] and latency_ms >= 0")
        self.faults[fault.route] = fault
        return _json(200, {"faults": list(self.faults.values())})

    def clear_faults(self, _body: bytes) -> Answer:
        self.faults.clear()
        return _json(200, {"faults": []})

    def reset_all(self, _body: bytes) -> Answer:
        self.reset()
        return _json(200, {"reset": True})

    def _cancel(self, request_id: str, *, allowed: tuple[str, ...]) -> Answer:
        job = self.book.jobs.get(request_id)
        if job is None:
            return _error(404, "request not found")
        now = self.clock()
        status, _ = job.status_at(now)
        if status not in allowed:
            return _error(409, f"request is {status} and cannot be cancelled")
        job.cancelled_at = now
        return _json(200, self._record(job))

    def _record(self, job: Any) -> dict[str, Any]:
        record: dict[str, Any] = job.record(
            self.clock(),
            shape=self.config.outcome_shape,
            string_errors=self.config.error_form == "string",
        )
        return record


_HANDLERS = {
    "GET /models": "list_models",
    "GET /models/{model_id}": "get_model",
    "POST /requests": "submit",
    "GET /requests": "list_requests",
    "GET /requests/{request_id}": "get_request",
    "DELETE /requests/{request_id}": "delete_request",
    "POST /upload-url": "upload_url",
    "GET /_sim/stats": "stats",
    "POST /_sim/requests/{request_id}/cancel": "cancel",
    "POST /_sim/faults": "set_fault",
    "DELETE /_sim/faults": "clear_faults",
    "POST /_sim/reset": "reset_all",
}
_PATHS: dict[str, dict[str, str]] = {}
for _name in _HANDLERS:
    _verb, _path = _name.split(" ", 1)
    _PATHS.setdefault(_path, {})[_verb] = _name


def _route(method: str, path: str) -> tuple[str | None, tuple[Any, ...]]:
    """The route name and its parameters; ``"405 …"`` for a known path with another method."""
    if path.startswith(PREFIX + "/"):
        template, params = _template(path[len(PREFIX) :])
    elif path.startswith("/_sim/"):
        template, params = _template(path)
    else:
        return None, ()
    methods = _PATHS.get(template)
    if methods is None:
        return None, ()
    name = methods.get(method)
    return (name, params) if name is not None else (f"405 {method}", ())


def _template(path: str) -> tuple[str, tuple[Any, ...]]:
    """Match a path (below the prefix) to a route template and its path parameters."""
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[0] == "models" and parts[1]:
        return "/models/{model_id}", (parts[1],)
    if len(parts) == 2 and parts[0] == "requests" and parts[1]:
        return "/requests/{request_id}", (parts[1],)
    if len(parts) == 4 and parts[:2] == ["_sim", "requests"] and parts[3] == "cancel":
        return "/_sim/requests/{request_id}/cancel", (parts[2],)
    return "/" + "/".join(parts), ()


def _non_negative(raw: str, name: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise ValueError(f"{name} must be a non-negative integer")
    return int(raw)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_sim_app(
    config: SimConfig, *, clock: Callable[[], float] = time.time
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The simulated upstream as an ASGI app; ``clock`` drives every job's progress."""
    return _Simulator(config, clock)
