"""Every Prometheus metric of the gateway, in base units, with bounded label values.

Label values come only from bounded sets: route templates (never raw paths), HTTP methods,
status classes, configured tenant ids (``unknown`` before authentication), model ids the
upstream catalog offers, and fixed enums. With several worker processes
(``PROMETHEUS_MULTIPROC_DIR`` set, as ``serve --workers N`` does) one scrape sums them all.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import REGISTRY

__all__ = (
    "AUDIT_EVENTS_DROPPED",
    "CACHE_LOOKUPS",
    "CONTENT_TYPE_LATEST",
    "HTTP_REQUESTS",
    "HTTP_REQUEST_DURATION",
    "JOBS_FINISHED",
    "JOBS_IN_FLIGHT",
    "JOBS_SUBMITTED",
    "QUOTA_REJECTIONS",
    "STORE_DATA_LOST",
    "STORE_ERRORS",
    "TENANTS_FILE_REJECTED",
    "UNCHECKED_REQUESTS",
    "UPSTREAM_CIRCUIT_STATE",
    "UPSTREAM_REQUESTS",
    "UPSTREAM_REQUEST_DURATION",
    "VIDEO_SECONDS_CHARGED",
    "VIDEO_SECONDS_REFUNDED",
    "exposition",
    "forget_dead_workers",
    "status_class",
    "switch_off",
)

UNKNOWN = "unknown"
_SUBSECOND = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5)
# Up to the longest call the settings allow (a read timeout of 90 s; a submit of 125 s).
_LATENCY_BUCKETS = (*_SUBSECOND, 1, 2.5, 5, 10, 30, 60, 90, 120, 150)

HTTP_REQUESTS = Counter(
    "gmigw_http_requests_total",
    "HTTP requests answered, by route template, method, status class and tenant.",
    ["route", "method", "status_class", "tenant"],
)
HTTP_REQUEST_DURATION = Histogram(
    "gmigw_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template, method, status class and tenant.",
    ["route", "method", "status_class", "tenant"],
    buckets=_LATENCY_BUCKETS,
)
UPSTREAM_REQUESTS = Counter(
    "gmigw_upstream_requests_total",
    "Calls to the upstream request-queue API by endpoint and HTTP status (or error kind).",
    ["endpoint", "status"],
)
UPSTREAM_REQUEST_DURATION = Histogram(
    "gmigw_upstream_request_duration_seconds",
    "Latency of upstream calls by endpoint.",
    ["endpoint"],
    buckets=_LATENCY_BUCKETS,
)
QUOTA_REJECTIONS = Counter(
    "gmigw_quota_rejections_total",
    "Requests refused by a tenant limit, by tenant and limit.",
    ["tenant", "limit"],
)
CACHE_LOOKUPS = Counter(
    "gmigw_cache_lookups_total",
    "Cache lookups by cache and result (hit, miss, stale; status polls also coalesced).",
    ["cache", "result"],
)
JOBS_SUBMITTED = Counter(
    "gmigw_jobs_submitted_total",
    "Jobs the upstream accepted, by tenant and model.",
    ["tenant", "model"],
)
JOBS_FINISHED = Counter(
    "gmigw_jobs_finished_total",
    "Jobs settled, by tenant, model and final status (success, failed, cancelled, expired).",
    ["tenant", "model", "status"],
)
VIDEO_SECONDS_CHARGED = Counter(
    "gmigw_video_seconds_charged_total",
    "Seconds of video reserved at submit, by tenant.",
    ["tenant"],
)
VIDEO_SECONDS_REFUNDED = Counter(
    "gmigw_video_seconds_refunded_total",
    "Seconds of video given back for failed, cancelled or expired jobs, by tenant.",
    ["tenant"],
)
JOBS_IN_FLIGHT = Gauge(
    "gmigw_jobs_in_flight",
    "Jobs submitted and not yet ended, by tenant, read from the shared store at each scrape "
    "(every replica reports the same count: aggregate with max, not sum).",
    ["tenant"],
    multiprocess_mode="mostrecent",  # the worker that serves the scrape has just set it
)
UPSTREAM_CIRCUIT_STATE = Gauge(
    "gmigw_upstream_circuit_state",
    "The upstream circuit breaker: 0 closed, 1 half-open (the next call probes), 2 open"
    " (failing fast, a probe's wait included).",
    multiprocess_mode="livemax",
)
AUDIT_EVENTS_DROPPED = Counter(
    "gmigw_audit_events_dropped_total",
    "Audit events a sink never got or failed to write: a full buffer, a sink error, shutdown.",
)
STORE_ERRORS = Counter(
    "gmigw_store_errors_total", "Failed calls to the shared store, by error kind.", ["kind"]
)
STORE_DATA_LOST = Counter(
    "gmigw_store_data_lost_total",
    "Times a worker found the shared store had lost its data (restarted empty, flushed): job "
    "ownership, quota counters and Idempotency-Key answers written before are gone.",
)
TENANTS_FILE_REJECTED = Gauge(
    "gmigw_tenants_file_rejected",
    "1 while the tenants file is refused (unreadable or invalid) and the previous config keeps "
    "serving: a revoked key still works, a new tenant is not admitted yet.",
    multiprocess_mode="livemax",
)
UNCHECKED_REQUESTS = Counter(
    "gmigw_unchecked_requests_total",
    "Store operations answered from the per-replica fallback in open failure mode.",
    ["operation"],
)


class _Off:
    """Stands in for every metric once metrics are switched off: takes updates, keeps nothing."""

    def labels(self, *_values: str) -> _Off:
        return self

    def inc(self, _amount: float = 1) -> None:
        return None

    def dec(self, _amount: float = 1) -> None:
        return None

    def set(self, _value: float) -> None:
        return None

    def observe(self, _value: float) -> None:
        return None


def switch_off() -> None:
    """Make every metric of this process a no-op (``GATEWAY_FEATURES_OFF=metrics``).

    For measuring what the metrics cost; the scrape then shows only the client's own collectors.
    Call sites read ``metrics.NAME`` at call time, so rebinding the names reaches them all.
    """
    off = _Off()
    for name, value in list(globals().items()):
        if isinstance(value, Counter | Gauge | Histogram):
            globals()[name] = off


def switched_off() -> bool:
    """Whether ``switch_off`` ran (then nothing is worth reading for a scrape)."""
    return isinstance(JOBS_IN_FLIGHT, _Off)


def status_class(status: int) -> str:
    return f"{status // 100}xx"


def exposition(tenants: Collection[str] | None = None) -> bytes:
    """The scrape body: this process's metrics, or every worker's in multiprocess mode.

    With ``tenants``, ``gmigw_jobs_in_flight`` shows only those: a tenant removed from the
    tenants file would otherwise keep its last value for ever (in any worker that set it, a
    crashed one's file included).
    """
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    if tenants is None:
        return generate_latest(registry)
    return generate_latest(_OnlyTenants(registry, frozenset(tenants)))


class _OnlyTenants:
    """A registry's families, with the jobs-in-flight samples of other tenants left out."""

    def __init__(self, registry: CollectorRegistry, tenants: frozenset[str]) -> None:
        self._registry = registry
        self._tenants = tenants

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            if family.name == "gmigw_jobs_in_flight":
                family.samples = [s for s in family.samples if s.labels["tenant"] in self._tenants]
            yield family


def forget_dead_workers() -> None:
    """Drop the live gauges of worker processes that are gone (multiprocess mode only).

    A worker that crashed never says so, and its last ``gmigw_jobs_in_flight`` and circuit
    state would be summed into every scrape; a worker calls this when it starts, which is also
    when granian replaces a crashed one.
    """
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = path.stem.rsplit("_", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            multiprocess.mark_process_dead(int(pid), directory)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
