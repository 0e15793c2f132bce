"""The Helm chart, rendered offline: lint, Kubernetes schemas, values schema, and env keys the code reads.

Helm runs in-process through ``helm-python-sdk`` (the Helm Go SDK as a shared library: no binary, no
cluster, no network). The NATS dependency cannot be downloaded here, so the chart is copied with a stub
``charts/nats`` (its templates are the official chart's business, not ours).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import filecmp
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import GatewayConfig
from notification_service.config import NotifyConfig
from shared.config import env_name, load
from tests.conftest import NodeFactory

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (the [dev] extra) is not installed")
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate (the [dev] extra) is not installed"
)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "prism"
KUBE_VERSION = "1.35.0"
# Read by gateway/cli.py for both processes (not a config field): how logs are written.
EXTRA_ENV = {"PRISM_LOG_FORMAT"}

EXTERNAL = {"nats": {"enabled": False}, "externalNats": {"url": "nats://nats.example:4222"}}

VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "external-nats-credentials": {
        "nats": {"enabled": False},
        "externalNats": {
            "url": "nats://a.example:4222,nats://b.example:4222",
            "credentialsSecret": "prism-nats-creds",
        },
    },
    "external-nats-password": {
        "nats": {"enabled": False},
        "externalNats": {"url": "nats://nats.example:4222", "user": "prism", "password": "s3cret"},
    },
    "external-nats-existing-secret": {
        "nats": {"enabled": False},
        "externalNats": {"url": "tls://nats.example:4222", "user": "prism", "existingSecret": "nats-pw"},
    },
    "external-nats-per-role": {
        "nats": {"enabled": False},
        "externalNats": {
            "url": "nats://nats.example:4222",
            "user": "gateway",
            "existingSecret": "nats-gateway",
            "notify": {"credentialsSecret": "nats-notification-creds"},
        },
    },
    "auth-jwt-secret": {"auth": {"jwtSecret": "x" * 40}},
    "auth-existing-secret": {"auth": {"existingSecret": "prism-jwt", "existingSecretKey": "key"}},
    "ingress": {
        "gateway": {
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "tls": [{"secretName": "prism-tls", "hosts": ["prism.example.com"]}],
            }
        }
    },
    "httproute": {
        "gateway": {
            "httpRoute": {
                "enabled": True,
                "parentRefs": [{"name": "public", "namespace": "gateway-system"}],
                "hostnames": ["prism.example.com"],
            }
        }
    },
    "hpa-custom-metric": {
        "gateway": {"autoscaling": {"enabled": True, "connectionsPerPod": {"enabled": True, "target": 5000}}}
    },
    "networkpolicy": {
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
        }
    },
    "monitoring": {
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
            "prometheusRule": {"enabled": True},
        }
    },
    "tuned": {
        "gateway": {
            "config": {
                "max_connections": 50000,
                "allowed_origins": "https://app.example.com",
                "compression": True,
                "request_timeout": 2.5,
            },
            "extraEnv": [{"name": "OTEL_TRACES_EXPORTER", "value": "otlp"}],
            "topologySpread": {"enabled": False},
        },
        "notify": {"config": {"concurrency": 16}},
    },
    "no-notify-no-dashboards": {"notify": {"enabled": False}, "grafanaDashboards": {"enabled": False}},
}


@pytest.fixture(scope="module")
def chart_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chart with a stub of the NATS dependency in charts/ (no network needed)."""
    target = tmp_path_factory.mktemp("chart") / "prism"
    shutil.copytree(CHART, target, ignore=shutil.ignore_patterns("charts"))
    stub = target / "charts" / "nats"
    stub.mkdir(parents=True)
    (stub / "Chart.yaml").write_text("apiVersion: v2\nname: nats\nversion: 1.3.0\n")
    (stub / "values.yaml").write_text("{}\n")
    return target


@pytest.fixture(scope="module")
def chart(chart_dir: Path) -> Any:
    return helm.Chart.load(chart_dir)


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def render(chart: Any, values: dict[str, Any]) -> list[dict[str, Any]]:
    manifests = chart.render(values, name="prism", namespace="realtime", is_install=True)
    docs: list[dict[str, Any]] = []
    for path, text in manifests.items():
        if path.endswith("NOTES.txt") or "/charts/nats/" in path:
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def env_keys(docs: list[dict[str, Any]], component: str) -> set[str]:
    """Every environment variable name the chart gives ``component``'s container."""
    deployment = next(d for d in of_kind(docs, "Deployment") if d["metadata"]["name"].endswith(component))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    keys = {e["name"] for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        cm = next(d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == name)
        keys |= set(cm["data"])
    return keys


@pytest.fixture(params=sorted(VALUE_SETS))
def rendered(request: pytest.FixtureRequest, chart: Any) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(chart, VALUE_SETS[request.param])


def test_lint_is_clean(chart_dir: Path) -> None:
    for values in [{}, *VALUE_SETS.values()]:
        report = helm.lint(chart_dir, values, strict=True, kube_version=f"v{KUBE_VERSION}")
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not problems, (values, report)
        assert not report["errors"], (values, report)


def test_every_object_validates_against_kubernetes(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = rendered
    assert docs, name
    for doc in docs:
        if doc["apiVersion"].startswith(("monitoring.coreos.com/", "gateway.networking.k8s.io/")):
            continue  # CRDs: kubernetes-validate knows only built-in kinds; checked by shape below
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {exc}")


def test_env_keys_are_settings_the_code_reads(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = rendered
    known = {
        "gateway": {env_name(f.name) for f in dataclasses.fields(GatewayConfig)} | EXTRA_ENV,
        "notify": {env_name(f.name) for f in dataclasses.fields(NotifyConfig)} | EXTRA_ENV,
    }
    for component, fields in known.items():
        if component == "notify" and not VALUE_SETS[name].get("notify", {}).get("enabled", True):
            continue
        prism_keys = {k for k in env_keys(docs, component) if k.startswith("PRISM_")}
        assert prism_keys, (name, component)
        assert prism_keys <= fields, (name, component, sorted(prism_keys - fields))


def test_schema_config_names_are_exactly_the_config_fields() -> None:
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    props = schema["properties"]
    for section, cls in (("gateway", GatewayConfig), ("notify", NotifyConfig)):
        allowed = set(props[section]["properties"]["config"]["propertyNames"]["enum"])
        fields = {f.name for f in dataclasses.fields(cls)}
        assert allowed <= fields, sorted(allowed - fields)
        # Everything else is a secret or a setting the chart sets from its own values.
        chart_set = {
            "jwt_secret",
            "nats_password",
            "nats_token",
            "nats_url",
            "nats_user",
            "nats_creds_file",
            "port",
            "drain_seconds",
            "close_timeout",
            "metrics_port",
            "drain_timeout",
        }
        assert fields - allowed <= chart_set, sorted(fields - allowed - chart_set)


@pytest.mark.parametrize(
    "bad",
    [
        {"gateway": {"replicas": "x"}},
        {"unknownKey": 1},
        {"gateway": {"port": 70000}},
        {"gateway": {"config": {"no_such_setting": 1}}},
        {"gateway": {"config": {"jwt_secret": "in-the-configmap"}}},
        {"notify": {"config": {"presence_replicas": 3}}},
        {"logFormat": "xml"},
        {"metrics": {"serviceMonitor": {"interval": "often"}}},
    ],
)
def test_schema_rejects_bad_values(chart: Any, bad: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmError):
        chart.validate_schema(merge(chart.values, bad))


def test_defaults_pass_the_schema(chart: Any) -> None:
    chart.validate_schema(chart.values)


def test_gateway_deployment_shape(chart: Any) -> None:
    docs = render(chart, {})
    deployment = next(d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "prism-gateway")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "checksum/config" in deployment["spec"]["template"]["metadata"]["annotations"]
    values = chart.values["gateway"]
    drain_window = values["drainSeconds"] + values["closeTimeout"] + 5
    assert pod["terminationGracePeriodSeconds"] > drain_window + values["preStopSleepSeconds"]
    service = next(d for d in of_kind(docs, "Service") if d["metadata"]["name"] == "prism-gateway")
    assert service["spec"]["sessionAffinity"] == "None"
    cm = next(d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == "prism-gateway")
    assert cm["data"]["PRISM_NATS_URL"] == "nats://prism-nats.realtime.svc:4222"
    assert cm["data"]["PRISM_DRAIN_SECONDS"] == str(values["drainSeconds"])
    assert of_kind(docs, "PodDisruptionBudget")
    dashboards = next(d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == "prism-dashboards")
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert set(dashboards["data"]) == {p.name for p in (ROOT / "grafana" / "dashboards").glob("*.json")}
    tests = [d for d in of_kind(docs, "Pod") if d["metadata"]["annotations"].get("helm.sh/hook") == "test"]
    assert len(tests) == 1


def test_secrets_stay_out_of_configmaps(chart: Any) -> None:
    docs = render(chart, merge(VALUE_SETS["auth-jwt-secret"], VALUE_SETS["external-nats-password"]))
    for cm in of_kind(docs, "ConfigMap"):
        assert "PRISM_JWT_SECRET" not in cm["data"]
        assert "PRISM_NATS_PASSWORD" not in cm["data"]
    (secret,) = of_kind(docs, "Secret")
    assert set(secret["data"]) == {"jwt-secret", "nats-password"}
    gateway_env = env_keys(docs, "gateway")
    assert {"PRISM_JWT_SECRET", "PRISM_NATS_PASSWORD", "PRISM_NATS_USER"} <= gateway_env
    creds = render(chart, VALUE_SETS["external-nats-credentials"])
    assert "PRISM_NATS_CREDS_FILE" in env_keys(creds, "gateway")
    assert "PRISM_NATS_CREDS_FILE" in env_keys(creds, "notify")


def test_notification_service_can_have_its_own_nats_user(chart: Any) -> None:
    docs = render(chart, VALUE_SETS["external-nats-per-role"])
    gateway, notify = env_keys(docs, "gateway"), env_keys(docs, "notify")
    assert {"PRISM_NATS_USER", "PRISM_NATS_PASSWORD"} <= gateway
    assert "PRISM_NATS_CREDS_FILE" not in gateway
    assert "PRISM_NATS_CREDS_FILE" in notify
    assert not {"PRISM_NATS_USER", "PRISM_NATS_PASSWORD"} & notify
    volumes = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["volumes"] for d in of_kind(docs, "Deployment")
    }
    assert {"name": "nats-creds", "secret": {"secretName": "nats-notification-creds"}} in volumes[
        "prism-notify"
    ]
    assert all(v["name"] != "nats-creds" for v in volumes["prism-gateway"])


@pytest.mark.parametrize(
    "bad",
    [
        {"externalNats": {"url": "nats://n:4222", "user": "u", "password": "p", "credentialsSecret": "c"}},
        {"externalNats": {"url": "nats://n:4222", "password": "p"}},
        {"externalNats": {"url": "nats://n:4222", "user": "u"}},
        {"externalNats": {"url": ""}},
        {"externalNats": {"url": "nats://n:4222", "notify": {"user": "notify"}}},
    ],
)
def test_chart_refuses_inconsistent_nats_settings(chart: Any, bad: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmError):
        chart.render(merge(chart.values, merge({"nats": {"enabled": False}}, bad)))


def test_optional_objects(chart: Any) -> None:
    hpa = of_kind(render(chart, VALUE_SETS["hpa-custom-metric"]), "HorizontalPodAutoscaler")[0]
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource", "Pods"]
    assert hpa["spec"]["metrics"][1]["pods"]["metric"]["name"] == "prism_connections"
    route = of_kind(render(chart, VALUE_SETS["httproute"]), "HTTPRoute")[0]
    assert route["spec"]["rules"][0]["timeouts"] == {"request": "0s", "backendRequest": "0s"}
    monitoring = render(chart, VALUE_SETS["monitoring"])
    assert len(of_kind(monitoring, "ServiceMonitor")) == 2
    (rule,) = of_kind(monitoring, "PrometheusRule")
    source = yaml.safe_load((ROOT / "grafana" / "alerts" / "prism.rules.yml").read_text())
    assert rule["spec"] == source
    assert len(of_kind(render(chart, VALUE_SETS["networkpolicy"]), "NetworkPolicy")) == 2


def test_chart_refuses_secrets_in_config(chart: Any) -> None:
    with pytest.raises(helm.HelmError):
        chart.render(merge(merge(chart.values, EXTERNAL), {"gateway": {"config": {"nats_url": "nats://x"}}}))


def test_chart_copies_match_their_sources() -> None:
    assert filecmp.cmp(CHART / "files" / "prism.rules.yml", ROOT / "grafana/alerts/prism.rules.yml", False)
    sources = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
    copies = sorted((CHART / "files").glob("*.json"))
    assert [p.name for p in copies] == [p.name for p in sources]
    for src, dst in zip(sources, copies, strict=True):
        assert filecmp.cmp(src, dst, shallow=False), f"{dst} differs from {src}: copy it again"


def test_rendered_settings_load_into_the_config_objects(
    rendered: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """What the chart puts in the environment is what ``prism gateway`` / ``prism notify`` accept."""
    _name, docs = rendered
    for component, cls in (("gateway", GatewayConfig), ("notify", NotifyConfig)):
        deployments = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"].endswith(component)]
        if not deployments:
            continue
        container = deployments[0]["spec"]["template"]["spec"]["containers"][0]
        environ: dict[str, str] = {}
        for source in container.get("envFrom", []):
            cm_name = source["configMapRef"]["name"]
            environ |= next(d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == cm_name)["data"]
        for var in container.get("env", []):
            if var["name"].startswith("PRISM_"):
                environ[var["name"]] = var.get("value", "s" * 40)  # a secret's stand-in
        if "PRISM_NATS_CREDS_FILE" in environ:
            creds = tmp_path / "nats.creds"
            creds.write_text("stand-in\n")
            environ["PRISM_NATS_CREDS_FILE"] = str(creds)
        load(cls, environ=environ)


@pytest.mark.parametrize("auth", [False, True])
async def test_helm_test_pod_script_round_trips_through_a_real_gateway(
    chart: Any, make_node: NodeFactory, auth: bool
) -> None:
    """The ``helm test`` hook's inline script, run against a real node (and NATS) instead of the Service."""
    values = {"auth": {"jwtSecret": "k" * 40}} if auth else {}
    pod = next(d for d in of_kind(render(chart, values), "Pod") if "test" in d["metadata"]["name"])
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["python", "-c"]
    (script,) = container["args"]
    node = await make_node(jwt_secret="k" * 40) if auth else await make_node()
    service = f'base = "prism-gateway:{chart.values["gateway"]["service"]["port"]}"'
    assert service in script
    script = script.replace(service, f'base = "127.0.0.1:{node.port}"')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, output.decode()
    assert (b"readyz ok" if auth else b"round trip ok through node node1") in output


def test_config_checksums_roll_only_the_component_whose_settings_changed(chart: Any) -> None:
    def checksums(values: dict[str, Any]) -> dict[str, str]:
        return {
            d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            for d in of_kind(render(chart, values), "Deployment")
        }

    base = checksums({})
    notify_changed = checksums({"notify": {"config": {"concurrency": 8}}})
    gateway_changed = checksums({"gateway": {"config": {"max_connections": 1000}}})
    assert notify_changed["prism-gateway"] == base["prism-gateway"]
    assert notify_changed["prism-notify"] != base["prism-notify"]
    assert gateway_changed["prism-gateway"] != base["prism-gateway"]
    assert gateway_changed["prism-notify"] == base["prism-notify"]
