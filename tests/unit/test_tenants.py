"""The tenants file: validation that names tenant and field, hashing, expiry, admin separation."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.errors import Unauthorized
from gateway.services.tenants import (
    Limits,
    TenantConfigError,
    hash_key,
    load_tenants,
    new_key,
    parse_tenants,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
H1 = hashlib.sha256(b"key-one").hexdigest()
H2 = hashlib.sha256(b"key-two").hexdigest()
HA = hashlib.sha256(b"admin-key").hexdigest()

GOOD = f"""
tenants:
  - id: studio-web
    keys:
      - id: studio-web-2026-11
        sha256: "{H1.upper()}"
        expires_at: "2027-06-01T00:00:00Z"
    models: ["*"]
    limits:
      submits_per_minute: 30
      reads_per_minute: 1200
      max_concurrent_jobs: 10
      video_seconds_per_day: 600
      video_seconds_per_month: 12000
    audit:
      store_prompts: true
  - id: mobile
    keys:
      - id: mobile-1
        sha256: "{H2}"
        expires_at: "2026-01-01T00:00:00Z"
    models: ["Kling-Text2Video-V2-Master"]
admins:
  - id: ops
    sha256: "{HA}"
"""


def test_good_file_parses_completely() -> None:
    config = parse_tenants(GOOD)
    studio = config.tenants["studio-web"]
    assert studio.limits == Limits(30, 1200, 10, 600, 12000)
    assert studio.models is None
    assert studio.allows_model("anything")
    assert studio.store_prompts is True
    assert studio.keys[0].sha256 == H1  # normalised to lowercase
    mobile = config.tenants["mobile"]
    assert mobile.limits == Limits()
    assert mobile.allows_model("Kling-Text2Video-V2-Master")
    assert not mobile.allows_model("kling-text2video-v2-master")
    assert config.admins["ops"].sha256 == HA


def test_authentication_by_hash_with_expiry_and_admin_separation() -> None:
    config = parse_tenants(GOOD)
    principal = config.authenticate("key-one", NOW)
    assert (principal.tenant.id, principal.key_id) == ("studio-web", "studio-web-2026-11")
    with pytest.raises(Unauthorized, match="invalid or expired"):
        config.authenticate("nope", NOW)
    with pytest.raises(Unauthorized, match="mobile-1 expired") as expired:
        config.authenticate("key-two", NOW)
    assert "key-two" not in expired.value.message
    with pytest.raises(Unauthorized):
        config.authenticate("admin-key", NOW)
    assert config.authenticate_admin("admin-key").id == "ops"
    with pytest.raises(Unauthorized):
        config.authenticate_admin("key-one")


def test_key_expires_exactly_at_its_time() -> None:
    config = parse_tenants(GOOD)
    expiry = datetime(2027, 6, 1, tzinfo=UTC)
    config.authenticate("key-one", expiry - timedelta(microseconds=1))
    with pytest.raises(Unauthorized):
        config.authenticate("key-one", expiry)


def tenant(**fields: str) -> str:
    body = {"id": "t1", "keys": f'[{{id: k1, sha256: "{H1}"}}]', "models": '["*"]', **fields}
    lines = "\n".join(f"    {k}: {v}" for k, v in body.items() if v != "DROP")
    return f"tenants:\n  - {lines.strip()}\n"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("tenants: [", "not valid YAML at line"),
        ("- a list", "must be a mapping"),
        ("tenant: []", "unknown top-level key 'tenant'"),
        ("admins: []", "'tenants' must be a list"),
        (tenant(id="Studio_Web"), "tenants[0]: id: required, [a-z0-9-]"),
        (tenant(keys="DROP"), "tenants[0] (t1): keys: required"),
        (tenant(keys="[]"), "tenants[0] (t1): keys: required"),
        (
            tenant(keys='[{id: k1, sha256: "abc"}]'),
            "tenants[0] (t1): keys[0]: sha256: required, 64 hex",
        ),
        (tenant(keys=f'[{{id: "bad id", sha256: "{H1}"}}]'), "keys[0]: id: required"),
        (tenant(keys=f'[{{id: k1, sha256: "{H1}", note: x}}]'), "keys[0]: unknown field 'note'"),
        (
            tenant(keys=f'[{{id: k1, sha256: "{H1}", expires_at: "2027-01-01T00:00:00"}}]'),
            "needs a timezone",
        ),
        (tenant(keys=f'[{{id: k1, sha256: "{H1}", expires_at: "soon"}}]'), "not an RFC 3339 time"),
        (tenant(models="DROP"), "tenants[0] (t1): models: required"),
        (tenant(models="[]"), "tenants[0] (t1): models: required"),
        (tenant(models='["*", "Veo3"]'), "cannot be mixed"),
        (tenant(models="[1]"), "models: every entry must be a non-empty string"),
        (tenant(limits="{submit_per_minute: 3}"), "limits: unknown limit 'submit_per_minute'"),
        (
            tenant(limits="{submits_per_minute: -3}"),
            "limits.submits_per_minute: must be a positive integer, got -3",
        ),
        (
            tenant(limits="{max_concurrent_jobs: true}"),
            "limits.max_concurrent_jobs: must be a positive",
        ),
        (
            tenant(limits="{video_seconds_per_day: 1.5}"),
            "limits.video_seconds_per_day: must be a positive",
        ),
        (tenant(limits="[]"), "limits: must be a mapping"),
        (tenant(audit="{store_prompts: yes please}"), "audit.store_prompts: must be true or false"),
        (tenant(audit="{log: all}"), "audit: only 'store_prompts'"),
        (tenant(colour="blue"), "tenants[0] (t1): unknown field 'colour'"),
        (
            tenant() + f'admins:\n  - {{id: ops, sha256: "{H1}"}}\n',
            "sha256: the same key is already used by k1",
        ),
        (tenant() + "admins:\n  - {id: ops}\n", "admins[0] (ops): sha256: required"),
        (tenant() + tenant().replace("tenants:\n", ""), "id: duplicate tenant id"),
    ],
)
def test_every_problem_names_tenant_and_field(text: str, problem: str) -> None:
    with pytest.raises(TenantConfigError) as caught:
        parse_tenants(text)
    assert any(problem in p for p in caught.value.problems), caught.value.problems


def test_all_problems_are_reported_at_once() -> None:
    text = tenant(limits="{submits_per_minute: 0, reads_per_minute: x}", models="[]")
    with pytest.raises(TenantConfigError) as caught:
        parse_tenants(text)
    assert len(caught.value.problems) == 3


def test_empty_tenant_list_is_valid() -> None:
    assert parse_tenants("tenants: []\n").tenants == {}


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(TenantConfigError, match="cannot read"):
        load_tenants(tmp_path / "missing.yaml")


def test_new_key_entry_pastes_into_a_file_and_authenticates() -> None:
    key, entry = new_key("studio-web")
    assert len(key) > 40
    assert hash_key(key) in entry
    assert key not in entry
    indented = "\n".join(f"      {line}" for line in entry.splitlines())
    config = parse_tenants(
        f'tenants:\n  - id: studio-web\n    keys:\n{indented}\n    models: ["*"]\n'
    )
    assert config.authenticate(key, NOW).tenant.id == "studio-web"
    assert new_key("studio-web")[0] != key


def test_new_key_rejects_a_bad_tenant_id() -> None:
    with pytest.raises(ValueError, match="must match"):
        new_key("Bad_Tenant")
