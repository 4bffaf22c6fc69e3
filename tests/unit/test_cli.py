"""The CLI's offline commands: keys new, check-config, openapi drift."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.__main__ import main
from gateway.in_process import OPENAPI_FILE, http_url, openapi_document
from gateway.services.tenants import parse_tenants

ROOT = Path(__file__).resolve().parents[2]


def test_keys_new_prints_a_key_once_and_a_pasteable_entry(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["keys", "new", "--tenant", "studio-web"]) == 0
    out = capsys.readouterr().out
    key = re.search(r"^  (gmigw_\S+)$", out, re.MULTILINE)
    assert key is not None
    assert out.count(key.group(1)) == 1
    entry = out.split("keys:`", 1)[1].split(":\n", 1)[1]
    config = parse_tenants(
        "tenants:\n  - id: studio-web\n    keys:\n"
        + "\n".join("    " + line for line in entry.strip("\n").splitlines())
        + '\n    models: ["*"]\n'
    )
    assert config.tenants["studio-web"].keys[0].id.startswith("studio-web-")


def test_keys_new_rejects_a_bad_tenant(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "new", "--tenant", "Bad Tenant"]) == 2
    assert "must match" in capsys.readouterr().err


def test_check_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("tenants: []\n")
    assert main(["check-config", str(good)]) == 0
    assert "OK (0 tenants" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("tenants:\n  - id: web\n    models: []\n")
    assert main(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "tenants[0] (web): keys: required" in err
    assert "tenants[0] (web): models: required" in err


def test_check_config_reports_an_impossible_unquoted_date(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """PyYAML raises a bare ValueError for it; check-config must still answer, not crash."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "tenants:\n  - id: web\n    keys:\n      - id: web-1\n"
        f'        sha256: "{"ab" * 32}"\n        expires_at: 2027-02-30T00:00:00Z\n'
        '    models: ["*"]\n'
    )
    assert main(["check-config", str(bad)]) == 1
    assert "tenants[0] (web): keys[0] (web-1): expires_at: not a valid date/time" in (
        capsys.readouterr().err
    )


def test_committed_openapi_document_matches_the_app() -> None:
    committed = (ROOT / OPENAPI_FILE).read_text(encoding="utf-8")
    assert committed == openapi_document(), "run `make openapi` and commit openapi/openapi.json"


def test_openapi_documents_every_mirror_route() -> None:
    document = openapi_document()
    for path in ("/models", "/models/{model_id}", "/requests", "/requests/{request_id}"):
        assert f'"/api/v1/ie/requestqueue/apikey{path}"' in document


def test_openapi_documents_the_submit_body_and_idempotency_key() -> None:
    submit = json.loads(openapi_document())["paths"]["/api/v1/ie/requestqueue/apikey/requests"]
    post = submit["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["model", "payload"]
    assert [p["name"] for p in post["parameters"]] == ["Idempotency-Key"]
    assert {"400", "401", "404", "429", "503"} <= set(post["responses"])


def test_the_cli_module_leaves_the_app_and_simulator_unloaded() -> None:
    """`serve`'s supervisor (and each worker, which re-imports the main module) stays light."""
    probe = (
        "import sys, gateway.__main__; "
        "print(' '.join(m for m in ('gateway.app', 'gateway.sim', 'uvicorn', 'httpx')"
        " if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.strip()
    assert loaded == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--port", "99999"], "a port is 1 to 65535"),
        (["serve", "--workers", "0"], "must be at least 1"),
        (["demo", "--time-scale", "0"], "must be a positive number"),
        (["sim", "--time-scale", "nan"], "must be a positive number"),
    ],
)
def test_out_of_range_arguments_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "FileNotFoundError"), ('{"model_ids": []}', "KeyError('details')")],
)
def test_sim_refuses_an_unreadable_catalog(
    tmp_path: Path, content: str | None, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = tmp_path / "catalog.json"
    if content is not None:
        catalog.write_text(content)
    assert main(["sim", "--api-key", "k", "--catalog", str(catalog)]) == 2
    err = capsys.readouterr().err
    assert f"cannot read the catalog {catalog}" in err
    assert problem in err


@pytest.mark.parametrize(
    ("env", "refusal"),
    [
        # Without Redis each worker kept its own jobs: polls of one job flipped 200/404.
        ({}, "--workers above 1 needs GATEWAY_REDIS_URL"),
        # The fallback is per process: limits multiplied, outage jobs 503 on sibling workers.
        (
            {"GATEWAY_REDIS_URL": "redis://127.0.0.1:1/0", "GATEWAY_STORE_FAILURE_MODE": "open"},
            "--workers above 1 cannot run GATEWAY_STORE_FAILURE_MODE=open",
        ),
    ],
)
def test_several_workers_need_one_shared_store(
    env: dict[str, str],
    refusal: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants: []\n")
    monkeypatch.setenv("GMI_API_KEY", "gmi-key-value")
    monkeypatch.setenv("GATEWAY_TENANTS_FILE", str(tenants))
    monkeypatch.delenv("GATEWAY_REDIS_URL", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["serve", "--workers", "2"]) == 2
    assert refusal in capsys.readouterr().err


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8080"),
        ("localhost", "http://localhost:8080"),
        ("::1", "http://[::1]:8080"),  # what curl needs; the banner printed http://::1:8080
    ],
)
def test_the_demo_prints_urls_curl_can_use(host: str, url: str) -> None:
    assert http_url(host, 8080) == url
