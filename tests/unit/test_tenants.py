"""The tenants file: validation that names tenant and field, hashing, expiry, admin separation."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
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
TIME_RULE = 'an RFC 3339 time with a timezone, e.g. "2027-06-01T00:00:00Z"'
KEYS_RULE = "keys: required, a list of {id, sha256} entries ([] refuses every request)"
MODELS_RULE = 'a non-empty list of model ids, or ["*"] for every model'

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


def problems_of(text: str) -> tuple[str, ...]:
    with pytest.raises(TenantConfigError) as caught:
        parse_tenants(text)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def tenant(**fields: str) -> str:
    """A one-tenant file (id t1, key k1) with ``fields`` overridden; "DROP" removes a field."""
    body = {"id": "t1", "keys": f'[{{id: k1, sha256: "{H1}"}}]', "models": '["*"]', **fields}
    lines = "\n".join(f"    {k}: {v}" for k, v in body.items() if v != "DROP")
    return f"tenants:\n  - {lines.strip()}\n"


def key(**fields: str) -> str:
    """A keys list of one entry (id k1) with ``fields`` overridden."""
    body = {"id": "k1", "sha256": f'"{H1}"', **fields}
    return "[{" + ", ".join(f"{k}: {v}" for k, v in body.items() if v != "DROP") + "}]"


def test_a_tenant_may_have_no_keys() -> None:
    """How a leaked last key is revoked at once: delete it; the tenant's usage stays readable."""
    assert parse_tenants(tenant(keys="[]")).tenants["t1"].keys == ()


def test_good_file_parses_completely() -> None:
    config = parse_tenants(GOOD)
    studio = config.tenants["studio-web"]
    assert studio.limits == Limits(30, 1200, 10, 600, 12000)
    assert studio.models is None
    assert studio.allows_model("anything")
    assert studio.store_prompts is True
    assert studio.keys[0].sha256 == H1  # normalised to lowercase
    assert studio.keys[0].expires_at == datetime(2027, 6, 1, tzinfo=UTC)
    mobile = config.tenants["mobile"]
    assert mobile.limits == Limits()
    assert mobile.store_prompts is False
    assert mobile.allows_model("Kling-Text2Video-V2-Master")
    assert not mobile.allows_model("kling-text2video-v2-master")
    assert list(config.tenants) == ["studio-web", "mobile"]
    assert config.admins["ops"].sha256 == HA
    assert config.digest == hashlib.sha256(GOOD.encode()).hexdigest()


def test_config_is_immutable() -> None:
    config = parse_tenants(GOOD)
    with pytest.raises(TypeError):
        config.tenants["x"] = config.tenants["mobile"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        config.digest = "x"  # type: ignore[misc]
    assert "sha256" not in repr(config)
    assert H1 not in repr(config)


def test_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(GOOD, encoding="utf-8")
    loaded = load_tenants(path)
    assert loaded.tenants == parse_tenants(GOOD).tenants
    assert loaded.digest == parse_tenants(GOOD).digest


def test_unquoted_yaml_timestamps_and_offsets_are_normalised_to_utc() -> None:
    text = tenant(keys=key(expires_at="2027-06-01T02:00:00+02:00"))
    assert parse_tenants(text).tenants["t1"].keys[0].expires_at == datetime(2027, 6, 1, tzinfo=UTC)
    text = tenant(keys=key(expires_at='"2027-06-01T02:00:00.5+02:00"'))
    expires = parse_tenants(text).tenants["t1"].keys[0].expires_at
    assert expires == datetime(2027, 6, 1, 0, 0, 0, 500000, tzinfo=UTC)


def test_yaml_anchors_and_merge_keys_are_allowed() -> None:
    text = (
        "tenants:\n"
        f'  - {{id: a, keys: [{{id: a1, sha256: "{H1}"}}], models: ["*"],'
        " limits: &base {submits_per_minute: 5, reads_per_minute: 50}}\n"
        f'  - {{id: b, keys: [{{id: b1, sha256: "{H2}"}}], models: ["*"],'
        " limits: {<<: *base, submits_per_minute: 9}}\n"
    )
    config = parse_tenants(text)
    assert config.tenants["b"].limits == Limits(submits_per_minute=9, reads_per_minute=50)


T = "tenants[0] (t1)"
K = f"{T}: keys[0] (k1)"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        # the document
        ("", "<tenants>: must be a mapping with a 'tenants' list (the file is empty)"),
        ("- a list", "<tenants>: must be a mapping with a 'tenants' list (got a list)"),
        ("admins: []", "<tenants>: tenants: required, a list (it may be empty: [])"),
        ("tenants:", "<tenants>: tenants: required, a list (it may be empty: [])"),
        ("tenants: []\nadmins: ops", "<tenants>: admins: must be a list, got 'ops'"),
        (
            "tenants: []\nwebhooks: []",
            "<tenants>: unknown field 'webhooks' (known: tenants, admins, model_weights)",
        ),
        # a tenant
        ("tenants: [web]", "tenants[0]: must be a mapping, got 'web'"),
        (tenant(id="DROP"), "tenants[0]: id: required"),
        (
            tenant(id="Studio_Web"),
            "tenants[0]: id: must be 1-63 characters of [a-z0-9-], starting and ending with a"
            " letter or digit, got 'Studio_Web'",
        ),
        (tenant(id="-web"), "tenants[0]: id: must be 1-63 characters"),
        (tenant(id="a" * 64), "tenants[0]: id: must be 1-63 characters"),
        (
            tenant(id="0123"),  # YAML 1.1 reads it as the octal number 83
            "tenants[0]: id: must be 1-63 characters of [a-z0-9-], starting and ending with a"
            " letter or digit, got 83, which YAML read as a number: put the id in quotes",
        ),
        (
            tenant(colour="blue"),
            f"{T}: unknown field 'colour' (known: id, keys, models, limits, audit)",
        ),
        (
            tenant() + f'  - {{id: t1, keys: [{{id: k2, sha256: "{H2}"}}], models: ["*"]}}\n',
            "tenants[1] (t1): id: duplicate tenant id",
        ),
        # keys
        (tenant(keys="DROP"), f"{T}: {KEYS_RULE}"),
        (tenant(keys="{}"), f"{T}: {KEYS_RULE}"),
        (tenant(keys="[k1]"), f"{T}: keys[0]: must be a mapping with id and sha256"),
        (tenant(keys=key(id="DROP")), f"{T}: keys[0]: id: required"),
        (
            tenant(keys=key(id='"bad id"')),
            f"{T}: keys[0]: id: must be 1-128 characters of [A-Za-z0-9._-], got 'bad id'",
        ),
        (
            tenant(keys=key(id="20261101")),
            f"{T}: keys[0]: id: must be 1-128 characters of [A-Za-z0-9._-], got 20261101,"
            " which YAML read as a number: put the id in quotes",
        ),
        (
            tenant(keys=key(id="yes")),
            f"{T}: keys[0]: id: must be 1-128 characters of [A-Za-z0-9._-], got True,"
            " which YAML read as a boolean: put the id in quotes",
        ),
        (
            tenant(keys=key(note="x")),
            f"{K}: unknown field 'note' (known: id, sha256, expires_at)",
        ),
        (
            tenant(keys=key(sha256="DROP")),
            f"{K}: sha256: required (the SHA-256 of the key, 64 hex characters)",
        ),
        (
            tenant(keys=key(sha256='"abc"')),
            f"{K}: sha256: must be 64 hex characters, got 3 characters",
        ),
        (tenant(keys=key(sha256="12")), f"{K}: sha256: must be 64 hex characters, got int"),
        (
            tenant(keys=key(sha256=f'"{hashlib.sha256(b"").hexdigest()}"')),
            f"{K}: sha256: is the hash of an empty key",
        ),
        (
            tenant(keys=f'[{{id: k1, sha256: "{H1}"}}, {{id: k1, sha256: "{H2}"}}]'),
            f"{T}: keys[1] (k1): id: 'k1' is already used by {K}",
        ),
        (
            tenant(keys=f'[{{id: k1, sha256: "{H1}"}}, {{id: k2, sha256: "{H1.upper()}"}}]'),
            f"{T}: keys[1] (k2): sha256: the same key is already used by {K}",
        ),
        (
            tenant(keys=key(expires_at='"2027-01-01T00:00:00"')),
            f"{K}: expires_at: needs a timezone: {TIME_RULE}",
        ),
        (
            tenant(keys=key(expires_at="2027-01-01T00:00:00")),  # unquoted: YAML parses it naive
            f"{K}: expires_at: needs a timezone: {TIME_RULE}",
        ),
        (
            tenant(keys=key(expires_at="2027-01-01")),  # unquoted: kept as text, not a date
            f"{K}: expires_at: must be {TIME_RULE}, got '2027-01-01'",
        ),
        (
            tenant(keys=key(expires_at='"soon"')),
            f"{K}: expires_at: must be {TIME_RULE}, got 'soon'",
        ),
        (
            tenant(keys=key(expires_at='"20270101T000000Z"')),  # ISO 8601 basic, not RFC 3339
            f"{K}: expires_at: must be {TIME_RULE}, got '20270101T000000Z'",
        ),
        (
            tenant(keys=key(expires_at='"2027-02-30T00:00:00Z"')),
            f"{K}: expires_at: not a valid date/time, got '2027-02-30T00:00:00Z'",
        ),
        (
            tenant(keys=key(expires_at="2027-02-30T00:00:00Z")),  # unquoted: PyYAML's ValueError
            f"{K}: expires_at: not a valid date/time, got '2027-02-30T00:00:00Z'",
        ),
        (tenant(keys=key(expires_at="1")), f"{K}: expires_at: must be {TIME_RULE}, got int"),
        (
            tenant(keys=key(expires_at='"9999-12-31T23:59:59-05:00"')),  # a "never" sentinel
            f"{K}: expires_at: out of range once in UTC, got '9999-12-31T23:59:59-05:00'",
        ),
        # models
        (tenant(models="DROP"), f"{T}: models: required, {MODELS_RULE}"),
        (tenant(models="[]"), f"{T}: models: required, {MODELS_RULE}"),
        (tenant(models='"*"'), f"{T}: models: must be {MODELS_RULE}, got '*'"),
        (
            tenant(models='["*", "Veo3"]'),
            f'{T}: models: "*" means every model and cannot be mixed with ids',
        ),
        (
            tenant(models='["Veo3", 1]'),
            f"{T}: models[1]: must be a model id without surrounding spaces, got 1",
        ),
        (
            tenant(models='["Veo3 "]'),
            f"{T}: models[0]: must be a model id without surrounding spaces, got 'Veo3 '",
        ),
        (
            tenant(models='[""]'),
            f"{T}: models[0]: must be a model id without surrounding spaces, got ''",
        ),
        # limits
        (tenant(limits="[]"), f"{T}: limits: must be a mapping, got []"),
        (
            tenant(limits="{submit_per_minute: 3}"),
            f"{T}: limits: unknown limit 'submit_per_minute' (known: submits_per_minute,"
            " reads_per_minute, max_concurrent_jobs, video_seconds_per_day,"
            " video_seconds_per_month)",
        ),
        (
            tenant(limits="{submits_per_minute: -3}"),
            f"{T}: limits.submits_per_minute: must be a positive integer, got -3",
        ),
        (
            tenant(limits="{reads_per_minute: 0}"),
            f"{T}: limits.reads_per_minute: must be a positive integer, got 0",
        ),
        (
            tenant(limits="{max_concurrent_jobs: true}"),
            f"{T}: limits.max_concurrent_jobs: must be a positive integer, got True",
        ),
        (
            tenant(limits="{video_seconds_per_day: 1.5}"),
            f"{T}: limits.video_seconds_per_day: must be a positive integer, got 1.5",
        ),
        (
            tenant(limits='{video_seconds_per_month: "600"}'),
            f"{T}: limits.video_seconds_per_month: must be a positive integer, got '600'",
        ),
        (
            tenant(limits="{submits_per_minute: 1000001}"),  # a zero GCRA interval lies beyond
            f"{T}: limits.submits_per_minute: must be at most 1000000, got 1000001",
        ),
        (
            tenant(limits="{reads_per_minute: 60000001}"),
            f"{T}: limits.reads_per_minute: must be at most 1000000, got 60000001",
        ),
        (
            tenant(limits=f"{{video_seconds_per_month: {2**53}}}"),
            f"{T}: limits.video_seconds_per_month: must be at most {2**53 - 1}, got {2**53}",
        ),
        # audit
        (tenant(audit="true"), f"{T}: audit: must be a mapping, got True"),
        (
            tenant(audit="{store_prompts: yes please}"),
            f"{T}: audit.store_prompts: must be true or false, got 'yes please'",
        ),
        (tenant(audit="{log: all}"), f"{T}: audit: unknown field 'log' (known: store_prompts)"),
        # admins
        (tenant() + "admins: [ops]\n", "admins[0]: must be a mapping with id and sha256"),
        (
            tenant() + "admins:\n  - {id: ops}\n",
            "admins[0] (ops): sha256: required (the SHA-256 of the key, 64 hex characters)",
        ),
        (tenant() + f'admins:\n  - {{sha256: "{HA}"}}\n', "admins[0]: id: required"),
        (
            tenant() + f'admins:\n  - {{id: ops, sha256: "{HA}", tenant: t1}}\n',
            "admins[0] (ops): unknown field 'tenant' (known: id, sha256)",
        ),
        (
            tenant() + f'admins:\n  - {{id: ops, sha256: "{H1}"}}\n',
            f"admins[0] (ops): sha256: the same key is already used by {K}",
        ),
        (
            tenant() + f'admins:\n  - {{id: k1, sha256: "{HA}"}}\n',
            f"admins[0] (k1): id: 'k1' is already used by {K}",
        ),
        (
            tenant()
            + f'admins:\n  - {{id: ops, sha256: "{HA}"}}\n  - {{id: ops, sha256: "{H2}"}}\n',
            "admins[1] (ops): id: 'ops' is already used by admins[0] (ops)",
        ),
    ],
)
def test_every_problem_names_tenant_and_field(text: str, problem: str) -> None:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    assert problems[0].startswith(problem), problems


def test_all_problems_are_reported_at_once() -> None:
    text = (
        tenant(limits="{submits_per_minute: 0, reads_per_minute: x}", models="[]")
        + "  - {id: BAD, keys: {}, models: ['*']}\n"
    )
    assert problems_of(text) == (
        f"{T}: models: required, {MODELS_RULE}",
        f"{T}: limits.submits_per_minute: must be a positive integer, got 0",
        f"{T}: limits.reads_per_minute: must be a positive integer, got 'x'",
        "tenants[1]: id: must be 1-63 characters of [a-z0-9-], starting and ending with a letter"
        " or digit, got 'BAD'",
        f"tenants[1]: {KEYS_RULE}",
    )


def test_yaml_syntax_errors_have_a_line_and_never_quote_the_source() -> None:
    secret = "gmigw_" + "s" * 43
    problems = problems_of(f"tenants:\n  - id: t1\n    keys: [{{id: k1, sha256: {secret}\n")
    assert len(problems) == 1
    assert problems[0].startswith("<tenants>: not valid YAML at line 4, column 1: "), problems
    assert secret not in problems[0]


def test_duplicate_yaml_keys_are_errors_not_silent_overwrites() -> None:
    text = tenant(limits="{submits_per_minute: 3}") + "    limits: {}\n"
    assert problems_of(text) == (
        "<tenants>: not valid YAML at line 6, column 5: duplicate key 'limits'",
    )


def test_a_pasted_key_in_place_of_its_hash_is_never_echoed() -> None:
    secret, _ = new_key("t1")
    problems = problems_of(tenant(keys=key(sha256=f'"{secret}"')))
    assert problems == (
        f"{K}: sha256: must be 64 hex characters, got {len(secret)} characters; this looks like"
        " a key itself: store only its hash (gmi-gateway keys new)",
    )


def test_rates_up_to_a_million_a_minute_are_accepted() -> None:
    text = tenant(limits="{submits_per_minute: 1000000, reads_per_minute: 1000000}")
    assert parse_tenants(text).tenants["t1"].limits == Limits(1_000_000, 1_000_000)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (tenant(limits="{submits_per_minute: !!int abc}"), "line 5, column 34: not a valid int"),
        (tenant(limits="{reads_per_minute: !!float x}"), "line 5, column 32: not a valid float"),
        (tenant(audit="{store_prompts: !!bool maybe}"), "line 5, column 28: not a valid bool"),
    ],
)
def test_a_value_its_yaml_tag_cannot_hold_is_a_yaml_error(text: str, line: str) -> None:
    assert problems_of(text) == (f"<tenants>: not valid YAML at {line} value",)


def test_an_explicit_timestamp_tag_is_validated_like_any_expiry() -> None:
    text = tenant(keys=key(expires_at="!!timestamp 2027-02-30T00:00:00Z"))
    assert problems_of(text) == (
        f"{K}: expires_at: not a valid date/time, got '2027-02-30T00:00:00Z'",
    )


@pytest.mark.parametrize(
    ("place", "problem"),
    [
        (lambda k: tenant(id=k), "tenants[0]: id: looks like a key (not shown)"),
        (lambda k: tenant(keys=key(id=k)), f"{T}: keys[0]: id: looks like a key (not shown)"),
        (
            lambda k: tenant() + f'admins:\n  - {{id: {k}, sha256: "{HA}"}}\n',
            "admins[0]: id: looks like a key (not shown)",
        ),
        (lambda k: tenant(**{k: "1"}), f"{T}: unknown field a value that looks like a key"),
        (lambda k: tenant(limits=f"[{k}]"), f"{T}: limits: must be a mapping, got a value that"),
        (
            lambda k: tenant(models=f'["Veo3", " {k}"]'),
            f"{T}: models[1]: must be a model id without surrounding spaces, got a value that",
        ),
        (
            lambda k: tenant(keys=key(expires_at=k)),
            f"{K}: expires_at: must be {TIME_RULE}, got a value that looks like a key",
        ),
    ],
)
def test_a_pasted_key_is_refused_as_an_id_and_never_quoted(
    place: Callable[[str], str], problem: str
) -> None:
    secret, _ = new_key("t1")
    problems = problems_of(place(secret))
    assert len(problems) == 1, problems
    assert problems[0].startswith(problem), problems
    assert secret not in problems[0]
    assert secret[len("gmigw_") :][:8] not in problems[0]


def test_new_key_never_echoes_a_key_given_as_the_tenant() -> None:
    secret, _ = new_key("t1")
    with pytest.raises(ValueError, match="must match") as caught:
        new_key(secret)
    assert secret not in str(caught.value)


def test_empty_tenant_list_is_valid() -> None:
    config = parse_tenants("tenants: []\n")
    assert config.tenants == {}
    assert config.admins == {}


def test_unreadable_or_undecodable_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(TenantConfigError) as caught:
        load_tenants(missing)
    assert caught.value.problems == (f"{missing}: cannot read: No such file or directory",)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"tenants: []\n\xff\n")
    with pytest.raises(TenantConfigError, match="not UTF-8 text"):
        load_tenants(binary)


def test_authentication_by_hash() -> None:
    config = parse_tenants(GOOD)
    principal = config.authenticate("key-one", NOW)
    assert (principal.tenant.id, principal.key_id) == ("studio-web", "studio-web-2026-11")
    assert principal.tenant is config.tenants["studio-web"]
    for unknown in ("nope", "", "key-one ", "KEY-ONE", H1):
        with pytest.raises(Unauthorized) as caught:
            config.authenticate(unknown, NOW)
        assert caught.value.message == "unauthorized: invalid or expired API key"
        assert caught.value.status == 401


def test_an_expired_key_is_401_and_the_message_does_not_echo_it() -> None:
    config = parse_tenants(GOOD)
    with pytest.raises(Unauthorized) as expired:
        config.authenticate("key-two", NOW)
    assert expired.value.message == "unauthorized: API key mobile-1 expired"
    assert "key-two" not in expired.value.message


def test_key_expires_exactly_at_its_time() -> None:
    config = parse_tenants(GOOD)
    expiry = datetime(2027, 6, 1, tzinfo=UTC)
    config.authenticate("key-one", expiry - timedelta(microseconds=1))
    with pytest.raises(Unauthorized):
        config.authenticate("key-one", expiry)


def test_admin_and_tenant_keys_are_separate() -> None:
    config = parse_tenants(GOOD)
    assert config.authenticate_admin("admin-key").id == "ops"
    with pytest.raises(Unauthorized):
        config.authenticate("admin-key", NOW)
    for not_admin in ("key-one", "key-two", "", "nope"):
        with pytest.raises(Unauthorized, match="invalid or expired"):
            config.authenticate_admin(not_admin)


def test_hash_key_is_lowercase_hex_sha256() -> None:
    assert hash_key("key-one") == H1
    assert (
        hash_key("\udcff") == hashlib.sha256("\udcff".encode("utf-8", "surrogatepass")).hexdigest()
    )


def test_new_key_entry_pastes_into_a_file_and_authenticates() -> None:
    key_one, entry = new_key("studio-web")
    assert key_one.startswith("gmigw_")
    assert len(key_one) >= 6 + 43  # 32 random bytes, url-safe base64
    assert hash_key(key_one) in entry
    assert key_one not in entry
    key_two, entry_two = new_key("studio-web")
    assert key_two != key_one
    indented = "".join(f"      {line}\n" for line in (entry + "\n" + entry_two).splitlines())
    config = parse_tenants(
        f'tenants:\n  - id: studio-web\n    keys:\n{indented}    models: ["*"]\n'
    )
    for presented in (key_one, key_two):
        principal = config.authenticate(presented, NOW)
        assert principal.tenant.id == "studio-web"
        assert principal.key_id.startswith("studio-web-")
        assert presented not in principal.key_id


@pytest.mark.parametrize("bad", ["Bad_Tenant", "", "-web", "a" * 64])
def test_new_key_rejects_a_bad_tenant_id(bad: str) -> None:
    with pytest.raises(ValueError, match="must match"):
        new_key(bad)


def test_model_weights_scale_the_video_cost_exactly() -> None:
    config = parse_tenants(GOOD + "model_weights: {Veo3: 2.5, cheap: 0.3}\n")
    tenant = config.tenants["studio-web"]
    assert tenant.video_cost("Veo3", 8) == 20
    assert tenant.video_cost("cheap", 10) == 3  # 0.3 is 3/10, not a float just above it
    assert tenant.video_cost("cheap", 5) == 2  # 1.5, rounded up
    assert tenant.video_cost("Kling-Text2Video-V2-Master", 5) == 5  # no weight: 1
    assert config.tenants["mobile"].video_cost("Veo3", 4) == 10  # one table for every tenant


@pytest.mark.parametrize(
    ("weights", "problem"),
    [
        ("[2]", "model_weights: must be a mapping, got [2]"),
        ("{Veo3: 0}", "model_weights.'Veo3': must be a number above 0 and at most 1000, got 0"),
        ("{Veo3: true}", "model_weights.'Veo3': must be a number above 0"),
        ("{Veo3: '2'}", "model_weights.'Veo3': must be a number above 0"),
        ("{Veo3: 1001}", "at most 1000, got 1001"),
        ("{'': 2}", "a model id must be a non-empty string"),
    ],
)
def test_bad_model_weights_are_named(weights: str, problem: str) -> None:
    found = problems_of(GOOD + f"model_weights: {weights}\n")
    assert any(problem in line for line in found), found
