"""Settings from the environment: defaults, validation naming the variable, secrets hidden."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.services.jobs import IDEMPOTENCY_PENDING_TTL
from gateway.settings import (
    DEFAULT_UPSTREAM_URL,
    MAX_CONNECT_TIMEOUT,
    MAX_READ_TIMEOUT,
    Settings,
    SettingsError,
)

BASE = {"GMI_API_KEY": "gmi-key-value", "GATEWAY_TENANTS_FILE": "/etc/gmi/tenants.yaml"}


def test_defaults() -> None:
    settings = Settings.from_env(BASE)
    assert settings.upstream_url == DEFAULT_UPSTREAM_URL
    assert settings.upstream_api_key.reveal() == "gmi-key-value"
    assert settings.redis_url is None
    assert settings.store_failure_mode == "closed"
    assert settings.tenants_file == Path("/etc/gmi/tenants.yaml")
    assert settings.audit_max_events == 100_000
    sized = Settings.from_env({**BASE, "GATEWAY_AUDIT_MAX_EVENTS": "2000000"})
    assert sized.audit_max_events == 2_000_000


def test_secrets_never_show_in_repr() -> None:
    settings = Settings.from_env({**BASE, "GATEWAY_REDIS_URL": "redis://:hunter2@redis:6379/0"})
    assert "gmi-key-value" not in repr(settings)
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.redis_url)


def test_key_from_file(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    env = {"GMI_API_KEY_FILE": str(key_file), "GATEWAY_TENANTS_FILE": "t.yaml"}
    assert Settings.from_env(env).upstream_api_key.reveal() == "from-file"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"GATEWAY_TENANTS_FILE": "t"}, "GMI_API_KEY"),
        ({**BASE, "GMI_API_KEY_FILE": "/x"}, "not both"),
        ({"GMI_API_KEY_FILE": "/does/not/exist", "GATEWAY_TENANTS_FILE": "t"}, "GMI_API_KEY_FILE"),
        ({"GMI_API_KEY": "k"}, "GATEWAY_TENANTS_FILE"),
        ({**BASE, "GATEWAY_STORE_FAILURE_MODE": "ajar"}, "GATEWAY_STORE_FAILURE_MODE"),
        ({**BASE, "GATEWAY_LOG_LEVEL": "loud"}, "GATEWAY_LOG_LEVEL"),
        ({**BASE, "GATEWAY_UPSTREAM_URL": "ftp://x"}, "GATEWAY_UPSTREAM_URL"),
        ({**BASE, "GATEWAY_UPSTREAM_URL": "http://[::1"}, "GATEWAY_UPSTREAM_URL"),
        ({**BASE, "GATEWAY_UPSTREAM_URL": "https://"}, "GATEWAY_UPSTREAM_URL"),
        # A trailing line break, as helm --set-file gives: every upstream call would fail.
        ({**BASE, "GATEWAY_UPSTREAM_ORG_ID": "0f1e-org\nx"}, "GATEWAY_UPSTREAM_ORG_ID"),
        ({**BASE, "GMI_API_KEY": "gmi-k\ney"}, "GMI_API_KEY holds a control"),
        ({**BASE, "GATEWAY_REDIS_URL": "http://x"}, "GATEWAY_REDIS_URL"),
        ({**BASE, "GATEWAY_REDIS_URL": "redis://127.0.0.1:6379/O"}, "GATEWAY_REDIS_URL"),
        ({**BASE, "GATEWAY_TRUSTED_PROXIES": "10.0.0.0/8,nope"}, "GATEWAY_TRUSTED_PROXIES"),
        ({**BASE, "GATEWAY_MAX_BODY_BYTES": "-1"}, "GATEWAY_MAX_BODY_BYTES"),
        ({**BASE, "GATEWAY_AUDIT_MAX_EVENTS": "0"}, "GATEWAY_AUDIT_MAX_EVENTS"),
        ({**BASE, "GATEWAY_UPSTREAM_READ_TIMEOUT": "soon"}, "GATEWAY_UPSTREAM_READ_TIMEOUT"),
    ],
)
def test_invalid_environment_names_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GATEWAY_TENANTS_POLL_SECONDS", "nan"),  # asyncio.sleep(nan) never returns
        ("GATEWAY_TENANTS_POLL_SECONDS", "inf"),
        ("GATEWAY_UPSTREAM_READ_TIMEOUT", "NaN"),
        ("GATEWAY_UPSTREAM_CONNECT_TIMEOUT", "nan"),
        ("GATEWAY_JOB_RETENTION_DAYS", "nan"),
        ("GATEWAY_JOB_RETENTION_DAYS", "1e999"),  # parses as inf
        ("GATEWAY_JOB_DEADLINE_SECONDS", "Infinity"),
        ("GATEWAY_STORE_CHECK_SECONDS", "nan"),
        ("GATEWAY_BODY_IDLE_SECONDS", "inf"),
    ],
)
def test_numbers_must_be_finite(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"^{variable} must be a positive finite number"):
        Settings.from_env({**BASE, variable: value})


def test_huge_retention_is_refused_before_it_overflows_to_infinity() -> None:
    with pytest.raises(SettingsError, match="GATEWAY_JOB_RETENTION_DAYS must be at most 36500"):
        Settings.from_env({**BASE, "GATEWAY_JOB_RETENTION_DAYS": "1e305"})  # * 86400 is inf
    settings = Settings.from_env({**BASE, "GATEWAY_JOB_RETENTION_DAYS": "36500"})
    assert settings.job_retention_seconds == 36500 * 86400


@pytest.mark.parametrize(
    ("variable", "attribute", "too_long", "longest"),
    [
        ("GATEWAY_UPSTREAM_READ_TIMEOUT", "upstream_read_timeout", "90.5", 90.0),
        ("GATEWAY_UPSTREAM_CONNECT_TIMEOUT", "upstream_connect_timeout", "11", 10.0),
    ],
)
def test_upstream_timeouts_keep_a_submit_inside_its_idempotency_claim(
    variable: str, attribute: str, too_long: str, longest: float
) -> None:
    with pytest.raises(SettingsError, match=f"^{variable} must be at most .*Idempotency-Key"):
        Settings.from_env({**BASE, variable: too_long})
    assert getattr(Settings.from_env({**BASE, variable: str(longest)}), attribute) == longest


def test_the_timeout_bounds_leave_room_inside_the_idempotency_claim() -> None:
    """A submit is never retried, so one connect plus one read is its longest wait."""
    assert MAX_CONNECT_TIMEOUT + MAX_READ_TIMEOUT <= IDEMPOTENCY_PENDING_TTL - 20


def test_the_ambiguous_hold_outlasts_the_longest_submit() -> None:
    """A slot that expired while its submit was in flight let one more job in past the limit,
    and the upstream's refusal then found no slot to refund (review finding)."""
    env = {**BASE, "GATEWAY_UPSTREAM_CONNECT_TIMEOUT": "2", "GATEWAY_UPSTREAM_READ_TIMEOUT": "10"}
    hold = "GATEWAY_AMBIGUOUS_HOLD_SECONDS"
    with pytest.raises(SettingsError, match=rf"^{hold} must exceed .* = 22 s\), got 22:"):
        Settings.from_env({**env, hold: "22"})
    assert Settings.from_env({**env, hold: "22.5"}).ambiguous_hold_seconds == 22.5


def test_a_value_that_is_not_a_number_is_never_echoed() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**BASE, "GATEWAY_UPSTREAM_READ_TIMEOUT": "gmi-secret-value"})
    assert "GATEWAY_UPSTREAM_READ_TIMEOUT" in str(caught.value)
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["redis://:S3CRETPW/Zq9+b64@10.0.0.5:6379/0", "redis://10.0.0.5:S3CRETPW/0"]
)
def test_a_redis_url_that_does_not_parse_is_refused_without_echoing_it(url: str) -> None:
    """An unencoded "/" in a base64 password broke the URL; redis-py's error then carried the
    password into the logs (review finding)."""
    with pytest.raises(SettingsError, match=r"^GATEWAY_REDIS_URL does not parse") as caught:
        Settings.from_env({**BASE, "GATEWAY_REDIS_URL": url})
    assert "S3CRETPW" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "secrets"),
    [
        ("redis://10.0.0.5:6379/0", []),
        ("redis://user:info@10.0.0.5/0", [":info@", "password=info"]),
        (
            "redis://:pa%2Fss-word@10.0.0.5:6379/0",
            [":pa/ss-word@", ":pa%2Fss-word@", "password=pa/ss-word", "password=pa%2Fss-word"],
        ),
        (
            "redis://10.0.0.5/0?password=0123456789ab",
            [":0123456789ab@", "password=0123456789ab", "0123456789ab"],
        ),
    ],
)
def test_the_redis_password_is_among_the_log_secrets(url: str, secrets: list[str]) -> None:
    """The bare password only from 12 characters on: a password "info" or "null" scrubbed
    wherever it appeared turned every line's level or nulls into [REDACTED] (review
    finding)."""
    settings = Settings.from_env({**BASE, "GATEWAY_REDIS_URL": url})
    assert set(settings.log_secrets) == {"gmi-key-value", *secrets}


def test_features_can_be_switched_off_for_measuring() -> None:
    assert Settings.from_env(BASE).features_off == frozenset()
    settings = Settings.from_env({**BASE, "GATEWAY_FEATURES_OFF": " audit, metrics "})
    assert settings.features_off == {"audit", "metrics"}
    with pytest.raises(SettingsError, match="GATEWAY_FEATURES_OFF: unknown feature 'quotas'"):
        Settings.from_env({**BASE, "GATEWAY_FEATURES_OFF": "audit,quotas"})


@pytest.mark.parametrize(
    ("raw", "networks"),
    [
        ("10.0.0.0/8, 2001:db8::/32", ["10.0.0.0/8", "2001:db8::/32"]),
        ("::ffff:10.0.0.0/104", ["10.0.0.0/8"]),  # as the request log reads mapped peers
        ("::ffff:10.1.2.3", ["10.1.2.3/32"]),
        ("::/0", ["::/0", "0.0.0.0/0"]),
    ],
)
def test_trusted_proxies_match_addresses_as_the_request_log_reads_them(
    raw: str, networks: list[str]
) -> None:
    settings = Settings.from_env({**BASE, "GATEWAY_TRUSTED_PROXIES": raw})
    assert [str(n) for n in settings.trusted_proxies] == networks
