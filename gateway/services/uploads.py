"""Presigned upload slots (spec E6): how image-to-video clients hand the upstream an input file.

``POST /upload-url`` with ``{"file_type": ...}`` answers a signed PUT URL and the public URL to
put in the payload. Nothing is billed, so the gateway checks the body, forwards it as it came
with the GMI key, and relays the answer; a tenant pays one read for it.
"""

from __future__ import annotations

from gateway.errors import InvalidPayload
from gateway.services.payload import object_fields
from gateway.services.relay import relayed_error, unavailable
from gateway.upstream import UpstreamClient, UpstreamError

__all__ = ("FILE_TYPES", "Uploads")

FILE_TYPES = ("jpeg", "jpg", "png", "mp4", "mp3", "wav")  # spec E6


class Uploads:
    """The upload-slot pass-through."""

    def __init__(self, upstream: UpstreamClient) -> None:
        self._upstream = upstream

    @staticmethod
    def check(body: bytes) -> None:
        """Refuse a body that is not ``{"file_type": <one of FILE_TYPES>}``.

        Raises:
            InvalidJSON, InvalidPayload: naming the problem.
        """
        if not body.strip():
            raise InvalidPayload("invalid payload: request body is empty; expected {file_type}")
        if object_fields(body, ("file_type",)).get("file_type") not in FILE_TYPES:
            types = ", ".join(FILE_TYPES)
            raise InvalidPayload(f"invalid payload: file_type must be one of {types}")

    async def slot(self, body: bytes) -> bytes:
        """The upstream's ``{"upload_url", "public_url"}`` for a body ``check`` accepted."""
        try:
            response = await self._upstream.upload_url(body)
        except UpstreamError as exc:
            raise unavailable(exc) from None
        if response.status != 200:
            raise relayed_error(response)
        return response.body
