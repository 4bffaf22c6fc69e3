"""gmi-gateway: a tenant-keyed REST gateway in front of GMI Cloud's request-queue API."""

__all__ = ()
