"""Transport failures of the upstream client (any HTTP answer is returned, not raised)::

    UpstreamError
    ├── UpstreamUnavailable   nothing usable came back; a submit provably never reached the upstream
    └── UpstreamAmbiguous     a submit may have been sent but got no answer: the job may exist

Messages name the method, path and failure; they never contain the API key or any header.
"""

from __future__ import annotations

__all__ = ("UpstreamAmbiguous", "UpstreamError", "UpstreamUnavailable")


class UpstreamError(Exception):
    """Base of the upstream client's errors."""


class UpstreamUnavailable(UpstreamError):
    """Could not reach the upstream (connect failure, pool timeout, GET retries exhausted, or
    the circuit is open: then ``retry_after`` says when to try again)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamAmbiguous(UpstreamError):
    """A submit was (possibly) sent and not answered: never retry it blindly."""
