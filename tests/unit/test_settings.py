"""Settings from the environment: defaults, validation naming the variable, secrets hidden."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import DEFAULT_UPSTREAM_URL, Settings, SettingsError

BASE = {"GMI_API_KEY": "gmi-key-value", "GATEWAY_TENANTS_FILE": "/etc/gmi/tenants.yaml"}


def test_defaults() -> None:
    settings = Settings.from_env(BASE)
    assert settings.upstream_url == DEFAULT_UPSTREAM_URL
    assert settings.upstream_api_key.reveal() == "gmi-key-value"
    assert settings.redis_url is None
    assert settings.store_failure_mode == "closed"
    assert settings.tenants_file == Path("/etc/gmi/tenants.yaml")


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
        ({**BASE, "GATEWAY_REDIS_URL": "http://x"}, "GATEWAY_REDIS_URL"),
        ({**BASE, "GATEWAY_TRUSTED_PROXIES": "10.0.0.0/8,nope"}, "GATEWAY_TRUSTED_PROXIES"),
        ({**BASE, "GATEWAY_MAX_BODY_BYTES": "-1"}, "GATEWAY_MAX_BODY_BYTES"),
        ({**BASE, "GATEWAY_UPSTREAM_READ_TIMEOUT": "soon"}, "GATEWAY_UPSTREAM_READ_TIMEOUT"),
    ],
)
def test_invalid_environment_names_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env(env)


def test_features_can_be_switched_off_for_measuring() -> None:
    assert Settings.from_env(BASE).features_off == frozenset()
    settings = Settings.from_env({**BASE, "GATEWAY_FEATURES_OFF": " audit, metrics "})
    assert settings.features_off == {"audit", "metrics"}
    with pytest.raises(SettingsError, match="GATEWAY_FEATURES_OFF: unknown feature 'quotas'"):
        Settings.from_env({**BASE, "GATEWAY_FEATURES_OFF": "audit,quotas"})
