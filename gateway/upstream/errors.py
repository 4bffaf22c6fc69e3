"""Transport failures of the upstream client (any HTTP answer is returned, not raised)::

    UpstreamError
    ├── UpstreamUnavailable   nothing usable came back: a submit provably never reached the
    │                         upstream (connect error or timeout, no free pooled connection),
    │                         a GET ran out of attempts or retry budget, the circuit is open,
    │                         or the client is closed
    └── UpstreamAmbiguous     a submit may have been sent but got no answer (read or write
                              timeout, broken connection, protocol error): the job may exist

The split is what the quota needs: an unavailable submit releases its reservation, an ambiguous
one keeps the charge. Messages say what happened ("upstream read timed out after 30.0s on
POST /requests (ReadTimeout)"); they never contain the API key, a header or a URL, and the
httpx exception (whose request carries the Authorization header) is not kept in the chain.
"""

from __future__ import annotations

__all__ = ("UpstreamAmbiguous", "UpstreamError", "UpstreamUnavailable")


class UpstreamError(Exception):
    """Base of the upstream client's errors: catch it to handle any transport failure."""


class UpstreamUnavailable(UpstreamError):
    """Nothing reached the upstream, or nothing usable came back: safe to report and release.

    Attributes:
        retry_after: seconds until the upstream may be tried again, when known (open circuit).
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamAmbiguous(UpstreamError):
    """A submit was possibly received and not answered: the job may exist, never resend it."""
