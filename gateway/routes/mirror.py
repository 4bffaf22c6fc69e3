"""The upstream's own routes, same paths and shapes, for tenant keys (DESIGN §2.1)."""

from __future__ import annotations

import functools
from typing import Any

import msgspec
from litestar import Request, Router, get, post
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, RequestBody, Schema
from litestar.params import FromPath

from gateway.audit import current_note
from gateway.errors import (
    BadRequest,
    NotFound,
    UnknownModel,
)
from gateway.routes.deps import (
    header,
    note_ratelimit,
    read_body,
    refusal_with_ratelimit,
    services,
    single_header,
    spend_read,
    tenant_principal,
    tenant_read,
)
from gateway.routes.docs import (
    RATELIMIT_HEADERS,
    TENANT_ERRORS,
    documented,
    documented_operation,
    error,
    query,
)
from gateway.routes.docs import (
    header as header_parameter,
)
from gateway.routes.reply import Reply
from gateway.schemas import (
    ModelIdList,
    RequestList,
    RequestRecord,
    SubmitRecord,
    UploadSlot,
)
from gateway.services.catalog import etag_of
from gateway.services.uploads import FILE_TYPES

__all__ = ("MIRROR_PREFIX", "mirror_router")

MIRROR_PREFIX = "/api/v1/ie/requestqueue/apikey"
MAX_LIST_LIMIT = 100
EXAMPLE_MODEL = "Kling-Text2Video-V2-Master"
_JSON = "application/json"
_ERRORS = {
    400: error("invalid_payload, invalid_json, incomplete_body or bad_request"),
    **TENANT_ERRORS,
    404: error(
        "unknown_model (no such model, or one this key may not use), or not_found: a request"
        " id this tenant does not own"
    ),
    429: error(
        "rate_limited, concurrency_exceeded or budget_exhausted (your limits), or"
        " upstream_rate_limited; wait Retry-After"
    ),
    500: error("upstream_error (the upstream's own 5xx, relayed), or internal_error"),
    502: error("upstream_auth_failed, or upstream_error: an answer the gateway cannot read"),
    503: error(
        "upstream_unavailable (unreachable, or the circuit is open: see Retry-After),"
        " store_unavailable, or upstream_error (the upstream's own 503)"
    ),
}
_TOO_LARGE = {
    408: error("request_timeout: the body stopped arriving mid-way"),
    413: error("payload_too_large: the body is over the gateway's limit"),
}
_CATALOG = documented_operation(
    parameters=[
        header_parameter(
            "If-None-Match", "ETags of copies you hold: 304 without a body if one is current"
        )
    ],
    headers={
        **RATELIMIT_HEADERS,
        "ETag": "this answer's entity tag",
        "X-Cache": "HIT, MISS or STALE (served while one refresh runs, or the upstream fails)",
    },
)
_NOT_MODIFIED = {304: documented(None, "Not modified: your If-None-Match holds the current ETag")}

AnyRequest = Request[Any, Any, Any]


def _cacheable(request: AnyRequest, body: bytes, etag: str, cache: str) -> Reply:
    """A catalog answer: ``ETag``, ``X-Cache``, and 304 when the client's copy is current."""
    headers = (
        (b"etag", etag.encode()),
        (b"x-cache", cache.encode()),
        (b"cache-control", b"private, max-age=0"),
    )
    wanted = header(request, b"if-none-match")
    if wanted:
        tags = {tag.strip().removeprefix("W/") for tag in wanted.split(",")}
        if etag in tags or "*" in tags:
            return Reply(b"", status=304, headers=headers)
    return Reply(body, headers=headers)


@get(
    "/models",
    responses={200: documented(ModelIdList), **_NOT_MODIFIED, **_ERRORS},
    operation_class=_CATALOG,
)
async def list_models(request: AnyRequest) -> Reply:
    """Model ids this tenant may use."""
    tenant = (await tenant_read(request)).tenant
    ids = await services(request).catalog.model_ids()
    body, etag = _model_list(ids.value, tenant.models)
    return _cacheable(request, body, etag, ids.cache)


@functools.lru_cache(maxsize=256)
def _model_list(ids: tuple[str, ...], allowed: frozenset[str] | None) -> tuple[bytes, str]:
    """The body and ETag of one tenant's model list (memoised: the same for every request
    while the catalog and the tenant's models stay the same)."""
    body = msgspec.json.encode({"model_ids": [m for m in ids if allowed is None or m in allowed]})
    return body, etag_of(body)


@get(
    "/models/{model_id:str}",
    responses={200: documented(dict), **_NOT_MODIFIED, **_ERRORS},
    operation_class=_CATALOG,
)
async def get_model(request: AnyRequest, model_id: FromPath[str]) -> Reply:
    """A model's detail and parameter schema (404 for models this tenant may not use)."""
    tenant = (await tenant_read(request)).tenant
    if not tenant.allows_model(model_id):
        raise UnknownModel(f"model {model_id} does not exist")
    entry = await services(request).catalog.model(model_id)
    current_note().model = model_id  # one that exists: no client text in the trail
    return _cacheable(request, entry.value.raw, entry.value.etag, entry.cache)


def _json_object(**fields: Schema) -> RequestBody:
    """A required JSON object body with these required ``fields`` (the route reads it raw)."""
    schema = Schema(type=OpenAPIType.OBJECT, required=list(fields), properties=dict(fields))
    return RequestBody(required=True, content={_JSON: OpenAPIMediaType(schema=schema)})


_SUBMIT = documented_operation(
    parameters=[
        header_parameter(
            "Idempotency-Key",
            "Replays within 24 h return the stored answer without a second job or charge"
            " (Idempotent-Replayed: true); the same key with another body is 422, while the"
            " first is in flight 409.",
            Schema(type=OpenAPIType.STRING, max_length=255),
        )
    ],
    body=_json_object(
        model=Schema(type=OpenAPIType.STRING, examples=[EXAMPLE_MODEL]),
        payload=Schema(
            type=OpenAPIType.OBJECT,
            description="checked against GET /models/{model} parameters",
        ),
    ),
    headers={**RATELIMIT_HEADERS, "Idempotent-Replayed": "true on a replay of an earlier answer"},
)


@post(
    "/requests",
    responses={
        200: documented(SubmitRecord),
        **_ERRORS,
        **_TOO_LARGE,
        409: error("idempotency_conflict: this Idempotency-Key is in flight"),
        422: error(
            "idempotency_key_reused (another body), or job_exceeds_budget (the job alone costs"
            " more than a whole budget period: no Retry-After)"
        ),
        504: error(
            "upstream_timeout: the submit got no answer; the job may exist and be billed, do"
            " not resubmit blindly"
        ),
    },
    status_code=200,
    operation_class=_SUBMIT,
)
async def submit_request(request: AnyRequest) -> Reply:
    """Submit a job; the payload is validated against the model's schema before it is sent."""
    principal = tenant_principal(request)
    found = services(request)
    async with refusal_with_ratelimit(request, principal):  # before or after the reservation
        body = await read_body(request)
        idempotency_key = single_header(request, b"idempotency-key")
        result = await found.jobs.submit(principal, body, idempotency_key)
    note_ratelimit(request, result.decision or await found.quotas.peek(principal.tenant))
    replayed = ((b"idempotent-replayed", b"true"),) if result.replayed else ()
    return Reply(result.body, status=result.status, headers=replayed)


@get(
    "/requests/{request_id:str}",
    responses={200: documented(RequestRecord), **_ERRORS},
    operation_class=documented_operation(),
)
async def get_request(request: AnyRequest, request_id: FromPath[str]) -> Reply:
    """One of this tenant's jobs (404 for any id it does not own)."""
    principal = tenant_principal(request)
    jobs = services(request).jobs
    poll = await jobs.poll(principal, request_id)
    note_ratelimit(request, poll.read)
    if poll.job is None:
        raise NotFound("request not found")
    return Reply(await jobs.current(poll.job, claimed=poll.claimed))


_COUNT = Schema(type=OpenAPIType.INTEGER, minimum=0)


@get(
    "/requests",
    responses={200: documented(RequestList), **_ERRORS},
    operation_class=documented_operation(
        parameters=[
            query("model_id", "only jobs of this model (exact, case-sensitive)"),
            query("limit", "jobs per page, at most 100 (more is 100); 0: only total", _COUNT),
            query("page_size", "the same as limit", _COUNT),
            query("offset", "jobs to skip, newest first", _COUNT),
        ]
    ),
)
async def list_requests(request: AnyRequest) -> Reply:
    """This tenant's jobs, newest first: query ``model_id``, ``limit`` (max 100; 0 gives only
    ``total``, as the upstream does), ``offset``."""
    principal = tenant_principal(request)
    query = request.query_params
    async with refusal_with_ratelimit(request, principal):
        limit = _int_param(query.get("limit") or query.get("page_size"), "limit", default=100)
        offset = _int_param(query.get("offset"), "offset", default=0)
    await spend_read(request, principal)
    body = await services(request).jobs.list(
        principal,
        model=query.get("model_id") or None,
        limit=min(limit, MAX_LIST_LIMIT),
        offset=offset,
    )
    return Reply(body)


@post(
    "/upload-url",
    responses={200: documented(UploadSlot), **_ERRORS, **_TOO_LARGE},
    status_code=200,
    operation_class=documented_operation(
        body=_json_object(file_type=Schema(type=OpenAPIType.STRING, enum=list(FILE_TYPES)))
    ),
)
async def create_upload_url(request: AnyRequest) -> Reply:
    """A presigned upload slot for an image-to-video input file (costs one read)."""
    principal = tenant_principal(request)
    uploads = services(request).uploads
    async with refusal_with_ratelimit(request, principal):
        body = await read_body(request)
        uploads.check(body)
    await spend_read(request, principal)
    return Reply(await uploads.slot(body))


_MAX_COUNT = 999_999_999


def _int_param(raw: str | None, name: str, *, default: int) -> int:
    """A non-negative integer; a huge one (``limit=9007199254740991``: "everything") stops at
    ``_MAX_COUNT``, as the upstream takes any size and no tenant has that many jobs."""
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()):  # isdigit alone takes "²", which int refuses
        raise BadRequest(f"{name} must be a non-negative integer, got {raw!r}")
    digits = raw.lstrip("0")
    return int(digits or "0") if len(digits) <= 9 else _MAX_COUNT


mirror_router = Router(
    path=MIRROR_PREFIX,
    route_handlers=[
        list_models,
        get_model,
        submit_request,
        get_request,
        list_requests,
        create_upload_url,
    ],
    tags=["mirror"],
)
