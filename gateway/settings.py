"""Settings, built once from an environment mapping.

Only ``app.py`` and ``__main__.py`` read settings; nothing reads the environment at import time.
Secrets are wrapped in :class:`Secret` so a settings object can be logged or printed safely.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import quote, urlsplit

from redis.connection import parse_url

__all__ = (
    "DEFAULT_UPSTREAM_URL",
    "MAX_CONNECT_TIMEOUT",
    "MAX_READ_TIMEOUT",
    "Secret",
    "Settings",
    "SettingsError",
)

DEFAULT_UPSTREAM_URL = "https://console.gmicloud.ai/api/v1/ie/requestqueue/apikey"
LOG_LEVELS = ("debug", "info", "warning", "error")
SWITCHABLE_FEATURES = ("audit", "metrics")
# A submit is sent once, never retried, under an Idempotency-Key claim that lives 120 s
# (IDEMPOTENCY_PENDING_TTL in services/jobs.py): it must end well inside that, or a retry with
# the same key would create, and charge, a second job.
MAX_CONNECT_TIMEOUT = 10.0
MAX_READ_TIMEOUT = 90.0
# Not a setting: where ``serve`` has its workers keep the last good tenants config (see
# ``TenantRegistry``), so one respawned while the file is refused can start.
TENANTS_LAST_GOOD_ENV = "GATEWAY_TENANTS_LAST_GOOD"
_BARE_PASSWORD_LENGTH = 12  # from this length on, the Redis password is scrubbed wherever it is
_STORE_SLACK_SECONDS = 10.0  # the store calls around the upstream one (2 s timeouts each)
_SUBMIT_BOUND = "a submit must end well inside its 120 s Idempotency-Key claim"
# Retention becomes a Redis PEXPIRE in milliseconds, which must stay a sane finite number.
_MAX_RETENTION_DAYS = 36500.0

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Number = TypeVar("Number", int, float)


class SettingsError(Exception):
    """The environment is invalid; the message names the variable."""


class Secret:
    """A string that never shows itself in ``repr``/``str`` (logs, tracebacks, settings dumps)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret; call only where it is sent to its one legitimate destination."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the gateway process is configured with.

    Attributes mirror the environment variables of DESIGN §8 (``GMI_API_KEY``,
    ``GATEWAY_*``); ``from_env`` documents the extra tuning variables.
    """

    upstream_api_key: Secret
    upstream_url: str = DEFAULT_UPSTREAM_URL
    upstream_org_id: str | None = None
    redis_url: Secret | None = None
    tenants_file: Path | None = None
    store_failure_mode: Literal["closed", "open"] = "closed"
    trusted_proxies: tuple[IPNetwork, ...] = field(default_factory=tuple)
    log_level: str = "info"
    max_body_bytes: int = 16 * 1024 * 1024
    body_idle_seconds: float = 30.0
    upstream_connect_timeout: float = 5.0
    upstream_read_timeout: float = 30.0
    # GETs retry only within this long of their first attempt (fast failures), and a replica
    # waits at most this long for another's catalog refresh: serve's drain counts on both.
    # Not read from the environment.
    upstream_retry_window: float = 5.0
    catalog_shared_wait: float = 5.0
    upstream_pool_size: int = 64
    audit_max_events: int = 100_000
    catalog_ttl_seconds: float = 60.0
    job_retention_seconds: float = 30 * 86400.0
    tenants_poll_seconds: float = 2.0
    job_deadline_seconds: float = 3600.0
    ambiguous_hold_seconds: float = 900.0
    reconcile_interval_seconds: float = 5.0
    reconcile_stale_seconds: float = 30.0
    reconcile_read_budget: int = 20
    store_check_seconds: float = 10.0
    status_ttl_seconds: float = 1.0
    circuit_threshold: int = 5
    circuit_cooldown_seconds: float = 10.0
    features_off: frozenset[str] = frozenset()

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, require_tenants_file: bool = True) -> Settings:
        """Build settings from ``env`` (usually ``os.environ``).

        Besides DESIGN §8's variables it reads ``GATEWAY_MAX_BODY_BYTES`` (request body limit),
        ``GATEWAY_BODY_IDLE_SECONDS`` (408 for a body that stops arriving that long),
        ``GATEWAY_UPSTREAM_CONNECT_TIMEOUT`` / ``GATEWAY_UPSTREAM_READ_TIMEOUT`` (seconds, at
        most 10 / 90 so a submit ends inside its Idempotency-Key claim),
        ``GATEWAY_UPSTREAM_POOL_SIZE``, ``GATEWAY_AUDIT_MAX_EVENTS`` (per audit stream),
        ``GATEWAY_CATALOG_TTL`` (seconds),
        ``GATEWAY_JOB_RETENTION_DAYS``, ``GATEWAY_TENANTS_POLL_SECONDS``, and for quotas
        ``GATEWAY_JOB_DEADLINE_SECONDS`` (a job not ended by then is settled as expired),
        ``GATEWAY_AMBIGUOUS_HOLD_SECONDS`` (how long an unanswered submit holds its slot),
        ``GATEWAY_RECONCILE_INTERVAL_SECONDS``, ``GATEWAY_RECONCILE_STALE_SECONDS`` (how long
        unpolled before the reconciler looks) and ``GATEWAY_RECONCILE_READ_BUDGET`` (upstream
        reads per pass); ``GATEWAY_STORE_CHECK_SECONDS`` (how often a worker checks that the
        store has not lost its data); ``GATEWAY_STATUS_TTL_SECONDS`` (at most one upstream
        status call per job per this many seconds, across replicas);
        ``GATEWAY_CIRCUIT_THRESHOLD`` (consecutive upstream failures that open the circuit) and
        ``GATEWAY_CIRCUIT_COOLDOWN_SECONDS``;
        ``GATEWAY_FEATURES_OFF`` (comma-separated ``audit``, ``metrics``: switched off to measure
        what they cost, as the benchmark does; production leaves it unset).

        Every number must be positive and finite (``nan`` or ``inf`` would stop a loop or a
        timeout silently).

        Raises:
            SettingsError: naming the first invalid or missing variable.
        """
        key = _api_key(env)
        tenants = env.get("GATEWAY_TENANTS_FILE") or None
        if require_tenants_file and tenants is None:
            raise SettingsError("GATEWAY_TENANTS_FILE is required: the path of the tenants YAML")
        mode = env.get("GATEWAY_STORE_FAILURE_MODE", "closed")
        if mode not in ("closed", "open"):
            raise SettingsError(f"GATEWAY_STORE_FAILURE_MODE must be closed or open, got {mode!r}")
        level = env.get("GATEWAY_LOG_LEVEL", "info").lower()
        if level not in LOG_LEVELS:
            raise SettingsError(f"GATEWAY_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
        upstream_url = env.get("GATEWAY_UPSTREAM_URL", DEFAULT_UPSTREAM_URL).rstrip("/")
        if not upstream_url.startswith(("http://", "https://")):
            raise SettingsError("GATEWAY_UPSTREAM_URL must be an http:// or https:// URL")
        try:
            parts = urlsplit(upstream_url)
            host, _ = parts.hostname, parts.port  # .port raises for one out of range
        except ValueError as exc:
            raise SettingsError(f"GATEWAY_UPSTREAM_URL is not a valid URL: {exc}") from None
        if not host:
            raise SettingsError("GATEWAY_UPSTREAM_URL has no host")
        org_id = env.get("GATEWAY_UPSTREAM_ORG_ID", "").strip() or None
        if org_id is not None and not _header_safe(org_id):
            raise SettingsError(
                "GATEWAY_UPSTREAM_ORG_ID holds a control or non-ASCII character (a line break?)"
            )
        redis_url = env.get("GATEWAY_REDIS_URL") or None
        if redis_url is not None:
            _check_redis_url(redis_url)
        settings = cls(
            upstream_api_key=key,
            upstream_url=upstream_url,
            upstream_org_id=org_id,
            redis_url=Secret(redis_url) if redis_url else None,
            tenants_file=Path(tenants) if tenants else None,
            store_failure_mode="open" if mode == "open" else "closed",
            trusted_proxies=_networks(env.get("GATEWAY_TRUSTED_PROXIES", "")),
            log_level=level,
            max_body_bytes=_positive(env, "GATEWAY_MAX_BODY_BYTES", 16 * 1024 * 1024, int),
            body_idle_seconds=_positive(env, "GATEWAY_BODY_IDLE_SECONDS", 30.0, float),
            upstream_connect_timeout=_positive(
                env,
                "GATEWAY_UPSTREAM_CONNECT_TIMEOUT",
                5.0,
                float,
                at_most=(MAX_CONNECT_TIMEOUT, _SUBMIT_BOUND),
            ),
            upstream_read_timeout=_positive(
                env,
                "GATEWAY_UPSTREAM_READ_TIMEOUT",
                30.0,
                float,
                at_most=(MAX_READ_TIMEOUT, _SUBMIT_BOUND),
            ),
            upstream_pool_size=_positive(env, "GATEWAY_UPSTREAM_POOL_SIZE", 64, int),
            audit_max_events=_positive(env, "GATEWAY_AUDIT_MAX_EVENTS", 100_000, int),
            catalog_ttl_seconds=_positive(env, "GATEWAY_CATALOG_TTL", 60.0, float),
            job_retention_seconds=_positive(
                env,
                "GATEWAY_JOB_RETENTION_DAYS",
                30.0,
                float,
                at_most=(_MAX_RETENTION_DAYS, "100 years"),
            )
            * 86400,
            tenants_poll_seconds=_positive(env, "GATEWAY_TENANTS_POLL_SECONDS", 2.0, float),
            job_deadline_seconds=_positive(env, "GATEWAY_JOB_DEADLINE_SECONDS", 3600.0, float),
            ambiguous_hold_seconds=_positive(env, "GATEWAY_AMBIGUOUS_HOLD_SECONDS", 900.0, float),
            reconcile_interval_seconds=_positive(
                env, "GATEWAY_RECONCILE_INTERVAL_SECONDS", 5.0, float
            ),
            reconcile_stale_seconds=_positive(env, "GATEWAY_RECONCILE_STALE_SECONDS", 30.0, float),
            reconcile_read_budget=_positive(env, "GATEWAY_RECONCILE_READ_BUDGET", 20, int),
            store_check_seconds=_positive(env, "GATEWAY_STORE_CHECK_SECONDS", 10.0, float),
            status_ttl_seconds=_positive(env, "GATEWAY_STATUS_TTL_SECONDS", 1.0, float),
            circuit_threshold=_positive(env, "GATEWAY_CIRCUIT_THRESHOLD", 5, int),
            circuit_cooldown_seconds=_positive(
                env, "GATEWAY_CIRCUIT_COOLDOWN_SECONDS", 10.0, float
            ),
            features_off=_features_off(env.get("GATEWAY_FEATURES_OFF", "")),
        )
        longest = settings.longest_submit_seconds
        if settings.ambiguous_hold_seconds <= longest:
            raise SettingsError(
                "GATEWAY_AMBIGUOUS_HOLD_SECONDS must exceed the longest a submit can take "
                f"(connect + read timeout + {_STORE_SLACK_SECONDS:g} s = {longest:g} s), got "
                f"{settings.ambiguous_hold_seconds:g}: a slot that expires while its submit is "
                "in flight lets one more job in and loses the refund if the upstream refuses"
            )
        return settings

    @property
    def log_secrets(self) -> list[str]:
        """Values no log line may show: the GMI key, and the Redis password as a URL carries
        it (``:password@``, ``password=``; raw and percent-encoded).

        The bare password too when it is long enough not to be an everyday word: scrubbed
        everywhere, a password such as ``info`` or ``null`` would mangle every line.
        """
        found = [self.upstream_api_key.reveal()]
        if self.redis_url is not None:
            url = self.redis_url.reveal()
            password = _parse_redis_url(url).get("password")
            if isinstance(password, str) and password:
                forms = {password, quote(password, safe=""), urlsplit(url).password or password}
                found += [f":{form}@" for form in forms] + [f"password={form}" for form in forms]
                if len(password) >= _BARE_PASSWORD_LENGTH:
                    found += forms
        return found

    @property
    def longest_submit_seconds(self) -> float:
        """From reserving a submit's quota to recording its job (when the hold ends)."""
        return self.upstream_connect_timeout + self.upstream_read_timeout + _STORE_SLACK_SECONDS


def _check_redis_url(url: str) -> None:
    """Refuse a URL redis-py cannot read, without quoting it: it may hold the password."""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError("GATEWAY_REDIS_URL must start with redis://, rediss:// or unix://")
    try:
        _parse_redis_url(url)
        parsed = True
    except ValueError:
        parsed = False
    database = "" if url.startswith("unix://") else urlsplit(url).path.strip("/")
    if not parsed or (database and not database.isdigit()):  # redis-py would use database 0
        raise SettingsError(
            "GATEWAY_REDIS_URL does not parse (host, port, database number; percent-encode "
            "reserved characters in the password, / as %2F); the value is not shown"
        )


def _parse_redis_url(url: str) -> dict[str, object]:
    """The connection options redis-py reads from ``url`` (raises ``ValueError``)."""
    options: dict[str, object] = parse_url(url)  # type: ignore[no-untyped-call]
    return options


def _api_key(env: Mapping[str, str]) -> Secret:
    value = env.get("GMI_API_KEY")
    path = env.get("GMI_API_KEY_FILE")
    if value and path:
        raise SettingsError("set GMI_API_KEY or GMI_API_KEY_FILE, not both")
    if path:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(f"GMI_API_KEY_FILE: cannot read {path}: {exc.strerror}") from None
    if not value:
        raise SettingsError("GMI_API_KEY or GMI_API_KEY_FILE is required: the shared upstream key")
    if not _header_safe(value.strip()):
        raise SettingsError(
            "GMI_API_KEY holds a control or non-ASCII character (a pasted line break?); "
            "the value is not shown"
        )
    return Secret(value.strip())


def _header_safe(value: str) -> bool:
    """Sendable in an HTTP header as is: printable ASCII (every upstream call would fail)."""
    return value.isascii() and value.isprintable()


def _positive(
    env: Mapping[str, str],
    name: str,
    default: Number,
    kind: type[Number],
    *,
    at_most: tuple[Number, str] | None = None,
) -> Number:
    """``env[name]`` as a positive, finite number, or ``default`` when unset.

    ``at_most`` is an upper bound and the reason for it, for the message. Only a value that
    parsed as a number is quoted back: anything else may be a secret pasted in the wrong place.
    """
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    rule = f"{name} must be a positive {'finite number' if kind is float else 'integer'}"
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{rule}; the value given does not parse (not shown)") from None
    if value <= 0 or not math.isfinite(value):  # nan <= 0 is False: isfinite catches it
        raise SettingsError(f"{rule}, got {raw!r}")
    if at_most is not None and value > at_most[0]:
        raise SettingsError(f"{name} must be at most {at_most[0]:g} ({at_most[1]}), got {raw!r}")
    return value


def _features_off(raw: str) -> frozenset[str]:
    names = frozenset(part.strip() for part in raw.split(",") if part.strip())
    unknown = sorted(names - set(SWITCHABLE_FEATURES))
    if unknown:
        raise SettingsError(
            f"GATEWAY_FEATURES_OFF: unknown feature {unknown[0]!r}"
            f" (known: {', '.join(SWITCHABLE_FEATURES)})"
        )
    return names


def _networks(raw: str) -> tuple[IPNetwork, ...]:
    networks: list[IPNetwork] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            networks.extend(_as_read(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            raise SettingsError(f"GATEWAY_TRUSTED_PROXIES: {part!r} is not a CIDR") from None
    return tuple(networks)


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _as_read(network: IPNetwork) -> tuple[IPNetwork, ...]:
    """The request log reads IPv4-mapped addresses as IPv4 ones, so a range of them must be an
    IPv4 range too: ``::ffff:10.0.0.0/104`` is ``10.0.0.0/8``, and ``::/0`` takes in
    ``0.0.0.0/0``."""
    if not isinstance(network, ipaddress.IPv6Network):
        return (network,)
    if network.subnet_of(_MAPPED):
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None  # within ::ffff:0:0/96
        return (ipaddress.IPv4Network((mapped, network.prefixlen - 96)),)
    if _MAPPED.subnet_of(network):
        return (network, ipaddress.IPv4Network("0.0.0.0/0"))
    return (network,)
