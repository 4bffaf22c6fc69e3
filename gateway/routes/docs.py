"""OpenAPI for what the handlers read and write themselves.

The routes read their query, headers and bodies raw (the mirror forwards bodies byte for byte,
and Litestar would refuse a bad value in its own error shape) and set their headers on raw
replies, so Litestar cannot see any of it. These helpers add it to the generated operations:
documentation only, nothing here runs per request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from litestar.enums import ParamType
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIHeader,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    RequestBody,
    Schema,
)

from gateway.schemas import ErrorBody

__all__ = (
    "ADMIN_ERRORS",
    "BEARER",
    "RATELIMIT_HEADERS",
    "TENANT_ERRORS",
    "documented",
    "documented_operation",
    "error",
    "header",
    "query",
)

BEARER = "bearerAuth"
RATELIMIT_HEADERS = {
    "RateLimit": 'the limit closest to running out: "<name>";r=<remaining>;t=<seconds to reset>',
    "RateLimit-Policy": 'that limit: "<name>";q=<quota>;w=<window seconds>',
    "X-Request-ID": "the gateway's id for this request (also in error bodies and the audit)",
}


def documented(container: Any, description: str = "Success") -> ResponseSpec:
    """An OpenAPI response description (no generated examples: they vary between runs)."""
    return ResponseSpec(container, generate_examples=False, description=description)


def error(description: str) -> ResponseSpec:
    """An error answer: ``{"error", "code", "request_id"}``; ``description`` names the codes."""
    return documented(ErrorBody, description)


TENANT_ERRORS = {
    401: error("unauthorized: a missing, unknown or expired tenant key"),
    503: error("store_unavailable: the gateway's Redis cannot be reached; retry"),
}
ADMIN_ERRORS = {
    401: error("unauthorized: a missing or unknown admin key"),
    403: error("forbidden: a tenant key on an admin route"),
    503: error("store_unavailable: the gateway's Redis cannot be reached; retry"),
}


def query(name: str, description: str, schema: Schema | None = None) -> Parameter:
    return _optional(ParamType.QUERY, name, description, schema)


def header(name: str, description: str, schema: Schema | None = None) -> Parameter:
    return _optional(ParamType.HEADER, name, description, schema)


def _optional(place: ParamType, name: str, description: str, schema: Schema | None) -> Parameter:
    return Parameter(
        name=name,
        param_in=place,
        required=False,
        description=description,
        schema=schema or Schema(type=OpenAPIType.STRING),
    )


def documented_operation(
    *,
    parameters: Sequence[Parameter] = (),
    body: RequestBody | None = None,
    headers: Mapping[str, str] = RATELIMIT_HEADERS,
) -> type[Operation]:
    """An operation class adding ``parameters``, the request ``body``, and the response
    ``headers`` (name: description) of every 2xx answer."""

    @dataclass
    class _Documented(Operation):
        def __post_init__(self) -> None:
            self.parameters = [*(self.parameters or []), *parameters]
            if body is not None:
                self.request_body = body
            for status, response in (self.responses or {}).items():
                if status.startswith("2") and isinstance(response, OpenAPIResponse):
                    response.headers = {
                        **(response.headers or {}),
                        **{
                            name: OpenAPIHeader(
                                schema=Schema(type=OpenAPIType.STRING), description=text
                            )
                            for name, text in headers.items()
                        },
                    }

    return _Documented
