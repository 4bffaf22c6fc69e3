"""The Helm chart through the real Helm engine: lint, render, Kubernetes validation, invariants."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from gateway.__main__ import DEFAULT_PORT, drain_seconds
from gateway.routes.ops import HEALTH_PATH, METRICS_PATH, READY_PATH
from gateway.settings import Secret, Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "gmi-gateway"
KUBERNETES = "1.33.0"
GMI_KEY = "gmi-test-key-that-must-only-live-in-a-secret"
REQUIRED = {"gmiApiKey": {"existingSecret": "gmi-key"}, "tenants": {"existingSecret": "tenants"}}
PROXY_EGRESS = {"to": [{"ipBlock": {"cidr": "10.9.0.0/16"}}], "ports": [{"port": 3128}]}
EVERYTHING: dict[str, Any] = {
    "gmiApiKey": {"value": GMI_KEY},
    "tenants": {"content": "tenants: []\n"},
    "redis": {"existingSecret": "redis-url"},
    "gateway": {
        "workers": 2,
        "trustedProxies": ["10.0.0.0/8"],
        "extraEnv": {
            "GATEWAY_STATUS_TTL_SECONDS": "2",
            "HTTPS_PROXY": "http://proxy.egress:3128",
            "NO_PROXY": ".cluster.local",
        },
    },
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "exposeAdmin": True,
        "tls": [{"hosts": ["gw.example"], "secretName": "tls"}],
    },
    "serviceMonitor": {"enabled": True},
    "autoscaling": {"enabled": True},
    "podDisruptionBudget": {"enabled": True},
    "networkPolicy": {"enabled": True, "extraEgress": [PROXY_EGRESS]},
    "topologySpread": {"enabled": True},
    "extraVolumes": [{"name": "redis-ca", "secret": {"secretName": "redis-ca"}}],
    "extraVolumeMounts": [{"name": "redis-ca", "mountPath": "/etc/gmi-gateway/redis-ca"}],
    "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
}  # fmt: skip


def render(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Rendered manifests by kind (one of each kind in this chart)."""
    chart = helm_python.Chart.load(str(CHART))
    try:
        files = chart.render(values, name="gw", namespace="media")
    finally:
        chart.close()
    manifests: dict[str, dict[str, Any]] = {}
    for name, text in files.items():
        if name.endswith(".txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                manifests.setdefault(document["kind"], document)
                manifests[f"{document['kind']}/{document['metadata']['name']}"] = document
    return manifests


@pytest.mark.parametrize("values", [REQUIRED, EVERYTHING], ids=["defaults", "everything-on"])
def test_lint_is_clean(values: dict[str, Any]) -> None:
    report = helm_python.lint(str(CHART), values, strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] > 1] == []  # 1 is info


def test_missing_secrets_are_refused_by_the_schema() -> None:
    report = helm_python.lint(str(CHART), {})
    assert report["errors"] or any(m["severity"] > 2 for m in report["messages"])


@pytest.mark.parametrize("values", [REQUIRED, EVERYTHING], ids=["defaults", "everything-on"])
def test_every_manifest_is_valid_kubernetes(values: dict[str, Any]) -> None:
    manifests = {k: v for k, v in render(values).items() if "/" in k}
    assert manifests
    for name, manifest in manifests.items():
        if manifest["apiVersion"].startswith("monitoring.coreos.com/"):
            assert manifest["spec"]["endpoints"][0]["path"] == METRICS_PATH
            continue  # a CRD: no upstream schema to validate against
        try:
            kubernetes_validate.validate(manifest, KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {exc}")


def test_everything_on_renders_every_optional_feature() -> None:
    kinds = {k for k in render(EVERYTHING) if "/" not in k}
    assert kinds >= {
        "Deployment", "Service", "ServiceAccount", "ConfigMap", "Secret", "Ingress",
        "ServiceMonitor", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
    }  # fmt: skip
    assert {k for k in render(REQUIRED) if "/" not in k} == {
        "Deployment", "Service", "ServiceAccount", "ConfigMap"
    }  # fmt: skip


def container(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec = manifests["Deployment"]["spec"]["template"]["spec"]
    result: dict[str, Any] = spec["containers"][0]
    return result


@pytest.mark.parametrize("values", [REQUIRED, EVERYTHING], ids=["defaults", "everything-on"])
def test_probes_and_ports_are_the_apps(values: dict[str, Any]) -> None:
    main = container(render(values))
    assert main["ports"] == [{"name": "http", "containerPort": DEFAULT_PORT, "protocol": "TCP"}]
    assert main["livenessProbe"]["httpGet"]["path"] == HEALTH_PATH
    assert main["startupProbe"]["httpGet"]["path"] == HEALTH_PATH
    assert main["readinessProbe"]["httpGet"]["path"] == READY_PATH
    assert str(DEFAULT_PORT) in main["args"]


def test_one_worker_keeps_its_process_metrics() -> None:
    """Multiprocess mode, which several workers need, has no process_* (memory, CPU, fds)."""
    one = {e["name"] for e in container(render(REQUIRED))["env"]}
    assert "PROMETHEUS_MULTIPROC_DIR" not in one
    two = {"redis": {"url": "redis://r:6379/0"}, "gateway": {"workers": 2}}
    assert "PROMETHEUS_MULTIPROC_DIR" in {
        e["name"] for e in container(render({**REQUIRED, **two}))["env"]
    }


def test_pods_are_locked_down() -> None:
    manifests = render(EVERYTHING)
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert manifests["ServiceAccount"]["automountServiceAccountToken"] is False
    main = container(manifests)
    assert main["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    env = {e["name"]: e for e in main["env"]}
    mounts = {m["mountPath"] for m in main["volumeMounts"]}
    assert env["PROMETHEUS_MULTIPROC_DIR"]["value"] in mounts  # writable emptyDir
    assert "/tmp" in mounts
    assert all("subPath" not in m for m in main["volumeMounts"])  # secret updates reach the pod
    grace = pod["terminationGracePeriodSeconds"]
    sleep = int(main["lifecycle"]["preStop"]["exec"]["command"][1])
    assert grace >= sleep + drain_seconds(Settings(upstream_api_key=Secret("x"))) + 5


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"replicaCount": 2}, "more than one replica or worker needs redis"),
        ({"autoscaling": {"enabled": True}}, "more than one replica or worker needs redis"),
        ({"gateway": {"workers": 2}}, "more than one replica or worker needs redis"),
        (
            {"autoscaling": {"enabled": True}, "redis": {"url": "redis://r:6379/0"}},
            "autoscaling needs resources.requests.cpu",
        ),
        ({"preStopSleepSeconds": 10}, "terminationGracePeriodSeconds must be at least 145"),
        (
            {"gateway": {"extraEnv": {"GATEWAY_UPSTREAM_READ_TIMEOUT": "60.5"}}},
            "terminationGracePeriodSeconds must be at least 233",
        ),
    ],
)
def test_settings_that_would_misbehave_are_refused(values: dict[str, Any], reason: str) -> None:
    with pytest.raises(helm_python.HelmError, match=reason):
        render({**REQUIRED, **values})
    fixed = {
        "redis": {"url": "redis://r:6379/0"},
        "preStopSleepSeconds": 5,
        "terminationGracePeriodSeconds": 233,
        "resources": {"requests": {"cpu": "1"}},
    }
    render({**REQUIRED, **values, **fixed})


def test_open_mode_runs_one_worker_per_pod() -> None:
    """Its fallback store is per process: limits would multiply by the workers."""
    redis = {"redis": {"url": "redis://r:6379/0"}}
    with pytest.raises(helm_python.HelmError, match=r"open needs gateway\.workers 1"):
        render({**REQUIRED, **redis, "gateway": {"workers": 2, "storeFailureMode": "open"}})
    render({**REQUIRED, **redis, "gateway": {"workers": 1, "storeFailureMode": "open"}})
    render({**REQUIRED, **redis, "gateway": {"workers": 2, "storeFailureMode": "closed"}})


@pytest.mark.parametrize(
    ("values", "misspelt"),
    [
        ({"replicaCont": 3}, "replicaCont"),
        ({"gateway": {"worker": 2}}, "worker"),
        ({"ingress": {"enable": True}}, "enable"),
        ({"redis": {"existingSecrets": "r"}}, "existingSecrets"),
    ],
)
def test_a_misspelt_value_is_refused_not_ignored(values: dict[str, Any], misspelt: str) -> None:
    with pytest.raises(helm_python.HelmError, match=f"additional properties '{misspelt}'"):
        render({**REQUIRED, **values})


def test_a_parent_chart_may_set_globals() -> None:
    render({**REQUIRED, "global": {"imageRegistry": "registry.example"}})


def test_a_redis_url_never_goes_through_extra_env() -> None:
    """It may hold a password, and extraEnv lands in a ConfigMap: redis.* is the way."""
    leaky = {"gateway": {"extraEnv": {"GATEWAY_REDIS_URL": "redis://:hunter2@r:6379/0"}}}
    report = helm_python.lint(str(CHART), {**REQUIRED, **leaky})
    assert report["errors"] or any(m["severity"] > 2 for m in report["messages"])


def test_a_redis_password_never_goes_through_redis_url() -> None:
    """redis-py also reads a password from the query; redis.url lands in a ConfigMap."""
    for query in ("password=hunter2", "db=0&password=hunter2", "%70assword=hunter2"):
        leaky = {"redis": {"url": f"redis://r:6379/0?{query}"}}
        with pytest.raises(helm_python.HelmError, match="redis/url"):
            render({**REQUIRED, **leaky})
    render({**REQUIRED, "redis": {"url": "redis://r:6379/0?socket_timeout=2"}})


def test_extra_env_cannot_repeat_what_the_chart_sets() -> None:
    """A repeated key in the ConfigMap's data leaves the winner to the YAML decoder."""
    for name in ("GATEWAY_LOG_LEVEL", "GATEWAY_TENANTS_FILE"):
        with pytest.raises(helm_python.HelmError, match=f"invalid propertyName '{name}'"):
            render({**REQUIRED, "gateway": {"extraEnv": {name: "debug"}}})


def test_selectors_are_stable_across_versions() -> None:
    manifests = render(EVERYTHING)
    selector = manifests["Deployment"]["spec"]["selector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/name": "gmi-gateway", "app.kubernetes.io/instance": "gw"}
    assert manifests["Service"]["spec"]["selector"] == selector
    assert manifests["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector


def test_ingress_never_exposes_metrics_or_probes() -> None:
    ingress = render(EVERYTHING)["Ingress"]
    paths = [p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert paths == ["/api/v1/ie/requestqueue/apikey", "/v1", "/admin"]
    without_admin = render({**EVERYTHING, "ingress": {"enabled": True}})["Ingress"]
    assert "/admin" not in str(without_admin)
    for forbidden in (METRICS_PATH, HEALTH_PATH, READY_PATH):
        assert forbidden not in paths


def test_secrets_never_land_in_a_configmap() -> None:
    manifests = render(EVERYTHING)
    config = yaml.safe_dump(manifests["ConfigMap"])
    assert GMI_KEY not in config
    assert "tenants: []" not in config
    assert "GMI_API_KEY" not in config
    env = {e["name"]: e for e in container(manifests)["env"]}
    assert "secretKeyRef" in env["GMI_API_KEY"]["valueFrom"]
    assert "secretKeyRef" in env["GATEWAY_REDIS_URL"]["valueFrom"]


def test_config_and_secret_changes_roll_the_pods() -> None:
    before = render(EVERYTHING)["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    changed = {**EVERYTHING, "tenants": {"content": "tenants: []\nadmins: []\n"}}
    after = render(changed)["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert before["checksum/config"] == after["checksum/config"]
    assert before["checksum/secret"] != after["checksum/secret"]


def test_every_value_is_documented() -> None:
    text = (CHART / "values.yaml").read_text()
    readme = (CHART / "README.md").read_text()
    for key in yaml.safe_load(text):
        assert f"`{key}" in readme, f"{key} is missing from the chart README's values table"


def test_extra_volumes_reach_the_gateway_container() -> None:
    """A rediss:// Redis with a private CA needs the CA file in the read-only container."""
    ca = {"name": "redis-ca", "secret": {"secretName": "redis-ca"}}
    mount = {"name": "redis-ca", "mountPath": "/etc/gmi-gateway/redis-ca", "readOnly": True}
    manifests = render({**REQUIRED, "extraVolumes": [ca], "extraVolumeMounts": [mount]})
    assert ca in manifests["Deployment"]["spec"]["template"]["spec"]["volumes"]
    assert mount in container(manifests)["volumeMounts"]


def test_numbers_in_extra_env_reach_the_gateway_as_it_reads_them() -> None:
    """Helm reads values-file numbers as floats; a large one quoted as is would be "1e+06"."""
    numbers = {
        "GATEWAY_AUDIT_MAX_EVENTS": 1000000,
        "GATEWAY_MAX_BODY_BYTES": 33554432,
        "GATEWAY_STATUS_TTL_SECONDS": 0.5,
        "GATEWAY_SOMETHING_HUGE": 1e20,  # past int64: left to the gateway's own check
    }
    data = render({**REQUIRED, "gateway": {"extraEnv": numbers}})["ConfigMap"]["data"]
    assert {name: data[name] for name in numbers} == {
        "GATEWAY_AUDIT_MAX_EVENTS": "1000000",
        "GATEWAY_MAX_BODY_BYTES": "33554432",
        "GATEWAY_STATUS_TTL_SECONDS": "0.5",
        "GATEWAY_SOMETHING_HUGE": "1e+20",
    }
    settings = Settings.from_env({**data, "GMI_API_KEY": "k"})
    assert (settings.audit_max_events, settings.max_body_bytes) == (1000000, 33554432)


def test_an_egress_proxy_can_be_configured() -> None:
    manifests = render(EVERYTHING)
    assert manifests["ConfigMap"]["data"]["HTTPS_PROXY"] == "http://proxy.egress:3128"
    assert PROXY_EGRESS in manifests["NetworkPolicy"]["spec"]["egress"]
