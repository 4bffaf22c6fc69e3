"""Client of the GMI request-queue API; knows nothing of tenants."""

from gateway.upstream.client import UpstreamClient, UpstreamResponse
from gateway.upstream.errors import UpstreamAmbiguous, UpstreamError, UpstreamUnavailable

__all__ = (
    "UpstreamAmbiguous",
    "UpstreamClient",
    "UpstreamError",
    "UpstreamResponse",
    "UpstreamUnavailable",
)
