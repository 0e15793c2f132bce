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
from loadtest.targets.base import free_port
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
# Read by shared/cli/common.py for both processes (not a config field): how logs are written.
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
    # What an operator overrides without forking: files mounted for the JWT keys and NATS TLS, the
    # security context, probes, priority, update strategy, env sources, and the notify service's HPA.
    "operator-overrides": {
        "gateway": {
            "metricsPort": 9102,
            "config": {
                "jwt_public_key_file": "/etc/prism/jwt/public.pem",
                "nats_tls_ca_file": "/etc/prism/nats-tls/ca.crt",
            },
            "extraVolumes": [
                {"name": "jwt-keys", "secret": {"secretName": "prism-jwt-keys"}},
                {"name": "nats-tls", "secret": {"secretName": "prism-nats-tls"}},
            ],
            "extraVolumeMounts": [
                {"name": "jwt-keys", "mountPath": "/etc/prism/jwt", "readOnly": True},
                {"name": "nats-tls", "mountPath": "/etc/prism/nats-tls", "readOnly": True},
            ],
            "extraEnvFrom": [{"secretRef": {"name": "prism-gateway-extra"}}],
            "podSecurityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None},
            "securityContext": {"runAsUser": None, "runAsGroup": None},
            "readinessProbe": {"periodSeconds": 3, "timeoutSeconds": 2},
            "startupProbe": None,
            "livenessProbe": {"httpGet": None, "tcpSocket": {"port": "http"}},
            "priorityClassName": "realtime-critical",
            "strategy": {"type": "Recreate"},
        },
        "notify": {
            "config": {"nats_tls_ca_file": "/etc/prism/nats-tls/ca.crt"},
            "extraVolumes": [{"name": "nats-tls", "secret": {"secretName": "prism-nats-tls"}}],
            "extraVolumeMounts": [{"name": "nats-tls", "mountPath": "/etc/prism/nats-tls", "readOnly": True}],
            "extraEnvFrom": [{"configMapRef": {"name": "prism-notify-extra"}}],
            "securityContext": {"readOnlyRootFilesystem": False},
            "startupProbe": {"httpGet": {"path": "/healthz", "port": "metrics"}, "failureThreshold": 30},
            "priorityClassName": "realtime",
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}},
            "podLabels": {"team": "realtime"},
            "podAnnotations": {"example.com/owner": "realtime"},
            "nodeSelector": {"pool": "workers"},
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "realtime", "effect": "NoSchedule"}
            ],
            "autoscaling": {"enabled": True, "maxReplicas": 4},
        },
        "metrics": {"serviceMonitor": {"enabled": True}, "scrapeAnnotations": True},
        "networkPolicy": {"enabled": True},
    },
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
    for cm in chart_config_maps(docs, container):
        keys |= set(cm["data"])
    return keys


def chart_config_maps(docs: list[dict[str, Any]], container: dict[str, Any]) -> list[dict[str, Any]]:
    """The chart's own ConfigMaps a container reads its env from (not the operator's extraEnvFrom)."""
    names = [s["configMapRef"]["name"] for s in container.get("envFrom", []) if "configMapRef" in s]
    return [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] in names]


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
            "api_keys",  # a secret: gateway.extraEnv from a Secret (docs/http-api.md)
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
        {"gateway": {"metricsPort": 0}},
        {"gateway": {"extraVolumeMounts": [{"name": "keys"}]}},
        {"gateway": {"extraVolumes": [{"secret": {"secretName": "keys"}}]}},
        {"gateway": {"strategy": {"type": "BlueGreen"}}},
        {"gateway": {"readinessProbe": "yes"}},
        {"notify": {"autoscaling": {"minReplicas": 0}}},
        {"notify": {"podDisruptionBudget": {"minAvailable": 1}}},
        {"notify": {"extraEnvFrom": {"secretRef": {"name": "x"}}}},
        {"notify": {"unknownKey": 1}},
        {"metrics": {"scrapeAnnotations": "yes"}},
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
        for cm in chart_config_maps(docs, container):
            environ |= cm["data"]
        for var in container.get("env", []):
            if var["name"].startswith("PRISM_"):
                environ[var["name"]] = var.get("value", "s" * 40)  # a secret's stand-in
        # Every file a setting names lies in a volume the container mounts; here a stand-in file replaces it.
        mounts = [m["mountPath"].rstrip("/") + "/" for m in container.get("volumeMounts", [])]
        for key, path in list(environ.items()):
            if key.endswith("_FILE") and path:
                assert any(path.startswith(mount) for mount in mounts), (component, key, path, mounts)
                stand_in = tmp_path / f"{component}-{key.lower()}"
                stand_in.write_text("stand-in\n")
                environ[key] = str(stand_in)
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
    metrics_port = free_port()
    settings: dict[str, Any] = {"metrics_port": metrics_port} | ({"jwt_secret": "k" * 40} if auth else {})
    node = await make_node(**settings)
    service = f'base = "prism-gateway:{chart.values["gateway"]["service"]["port"]}"'
    metrics_service = f'metrics = "prism-gateway-metrics:{chart.values["gateway"]["metricsPort"]}"'
    assert service in script
    assert metrics_service in script
    script = script.replace(service, f'base = "127.0.0.1:{node.port}"')
    script = script.replace(metrics_service, f'metrics = "127.0.0.1:{metrics_port}"')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, output.decode()
    assert (b"readyz ok" if auth else b"round trip ok through node node1") in output
    assert b"metrics ok: on the internal port only" in output


def test_helm_test_pod_skips_the_metrics_check_when_a_network_policy_keeps_it_out(chart: Any) -> None:
    def script(values: dict[str, Any]) -> str:
        pod = next(d for d in of_kind(render(chart, values), "Pod") if "test" in d["metadata"]["name"])
        text: str = pod["spec"]["containers"][0]["args"][0]
        return text

    assert "check_metrics = True" in script({})
    assert "check_metrics = True" in script({"networkPolicy": {"enabled": True}})  # metricsFrom: anyone
    assert "check_metrics = False" in script(VALUE_SETS["networkpolicy"])


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


# -- what operators override without forking the chart ---------------------------------------------------


def deployment(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    return next(d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == f"prism-{component}")


def pod_spec(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    spec: dict[str, Any] = deployment(docs, component)["spec"]["template"]["spec"]
    return spec


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in of_kind(docs, kind) if d["metadata"]["name"] == name)


def selected_services(docs: list[dict[str, Any]], selector: dict[str, str]) -> list[str]:
    """Names of the Services whose labels a ServiceMonitor's matchLabels select."""
    return [
        d["metadata"]["name"]
        for d in of_kind(docs, "Service")
        if selector.items() <= d["metadata"]["labels"].items()
    ]


@pytest.mark.parametrize("component", ["gateway", "notify"])
def test_extra_volumes_are_mounted_and_the_file_settings_point_into_them(chart: Any, component: str) -> None:
    docs = render(chart, VALUE_SETS["operator-overrides"])
    pod = pod_spec(docs, component)
    container = pod["containers"][0]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert volumes["nats-tls"] == {"name": "nats-tls", "secret": {"secretName": "prism-nats-tls"}}
    assert mounts["nats-tls"] == {"name": "nats-tls", "mountPath": "/etc/prism/nats-tls", "readOnly": True}
    assert "tmp" in volumes  # the chart's own stay
    assert "tmp" in mounts
    config = named(docs, "ConfigMap", f"prism-{component}")["data"]
    assert config["PRISM_NATS_TLS_CA_FILE"] == "/etc/prism/nats-tls/ca.crt"
    if component == "gateway":
        assert volumes["jwt-keys"]["secret"] == {"secretName": "prism-jwt-keys"}
        assert mounts["jwt-keys"]["mountPath"] == "/etc/prism/jwt"
        assert config["PRISM_JWT_PUBLIC_KEY_FILE"] == "/etc/prism/jwt/public.pem"
    # The chart's ConfigMap first, then the operator's sources (a later source wins a shared key).
    sources = container["envFrom"]
    assert sources[0] == {"configMapRef": {"name": f"prism-{component}"}}
    assert len(sources) == 2


def test_extra_volumes_sit_next_to_the_nats_credentials_volume(chart: Any) -> None:
    extra = {
        "extraVolumes": [{"name": "jwks", "configMap": {"name": "prism-jwks"}}],
        "extraVolumeMounts": [{"name": "jwks", "mountPath": "/etc/prism/jwks"}],
    }
    values = merge(VALUE_SETS["external-nats-credentials"], {"gateway": extra, "notify": extra})
    docs = render(chart, values)
    for component in ("gateway", "notify"):
        pod = pod_spec(docs, component)
        assert [v["name"] for v in pod["volumes"]] == ["tmp", "nats-creds", "jwks"]
        assert [m["name"] for m in pod["containers"][0]["volumeMounts"]] == ["tmp", "nats-creds", "jwks"]


def test_metrics_have_their_own_port_that_no_public_route_reaches(chart: Any) -> None:
    values = merge(
        merge(VALUE_SETS["ingress"], VALUE_SETS["httproute"]),
        merge(VALUE_SETS["monitoring"], VALUE_SETS["networkpolicy"]),
    )
    docs = render(chart, values)
    gateway = chart.values["gateway"]
    container = pod_spec(docs, "gateway")["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": gateway["port"], "metrics": gateway["metricsPort"]}
    assert gateway["metricsPort"] != gateway["port"]
    config = named(docs, "ConfigMap", "prism-gateway")["data"]
    assert config["PRISM_METRICS_PORT"] == str(gateway["metricsPort"])
    assert config["PRISM_PORT"] == str(gateway["port"])
    # The public Service has the WebSocket port only; the Ingress and the HTTPRoute point at it.
    public = named(docs, "Service", "prism-gateway")
    assert [(p["name"], p["targetPort"]) for p in public["spec"]["ports"]] == [("http", "http")]
    for rule in named(docs, "Ingress", "prism-gateway")["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["backend"]["service"] == {"name": "prism-gateway", "port": {"name": "http"}}
    (route_rule,) = named(docs, "HTTPRoute", "prism-gateway")["spec"]["rules"]
    assert route_rule["backendRefs"] == [{"name": "prism-gateway", "port": gateway["service"]["port"]}]
    # Scrapes go through a headless Service of their own, selected by the ServiceMonitor alone.
    internal = named(docs, "Service", "prism-gateway-metrics")
    assert internal["spec"]["clusterIP"] == "None"
    assert [(p["name"], p["targetPort"]) for p in internal["spec"]["ports"]] == [("metrics", "metrics")]
    assert internal["spec"]["selector"] == public["spec"]["selector"]
    monitor = named(docs, "ServiceMonitor", "prism-gateway")
    assert selected_services(docs, monitor["spec"]["selector"]["matchLabels"]) == ["prism-gateway-metrics"]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    notify_monitor = named(docs, "ServiceMonitor", "prism-notify")
    assert selected_services(docs, notify_monitor["spec"]["selector"]["matchLabels"]) == ["prism-notify"]
    # The NetworkPolicy lets clients reach http and only the scrapers reach metrics.
    policy = named(docs, "NetworkPolicy", "prism-gateway")["spec"]["ingress"]
    assert [[p["port"] for p in rule["ports"]] for rule in policy] == [["http"], ["metrics"]]
    assert policy[1]["from"] == values["networkPolicy"]["metricsFrom"]
    assert "from" not in policy[0]


def test_metrics_port_must_differ_from_the_public_port(chart: Any) -> None:
    with pytest.raises(helm.HelmError, match="metricsPort must differ"):
        chart.render(merge(chart.values, {"gateway": {"port": 9000, "metricsPort": 9000}}))


def test_security_context_probes_priority_and_strategy_are_overridable(chart: Any) -> None:
    default = render(chart, {})
    docs = render(chart, VALUE_SETS["operator-overrides"])
    gw, notify = pod_spec(docs, "gateway"), pod_spec(docs, "notify")
    # securityContext: an OpenShift-style override drops the fixed user, the rest stays.
    assert gw["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert "runAsUser" not in gw["containers"][0]["securityContext"]
    assert gw["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert notify["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is False
    assert notify["securityContext"] == pod_spec(default, "notify")["securityContext"]
    test_pod = next(d for d in of_kind(docs, "Pod") if "test" in d["metadata"]["name"])
    assert test_pod["spec"]["securityContext"] == gw["securityContext"]  # helm test runs the same way
    # Probes: merged into the defaults, removed with null, handler replaced.
    container = gw["containers"][0]
    assert container["readinessProbe"] == {
        "httpGet": {"path": "/readyz", "port": "http"},
        "periodSeconds": 3,
        "timeoutSeconds": 2,
        "failureThreshold": 2,
    }
    assert "startupProbe" not in container
    assert pod_spec(default, "gateway")["containers"][0]["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["tcpSocket"] == {"port": "http"}
    assert "httpGet" not in container["livenessProbe"]
    assert notify["containers"][0]["startupProbe"]["failureThreshold"] == 30
    assert "startupProbe" not in pod_spec(default, "notify")["containers"][0]
    # Priority and update strategy.
    assert gw["priorityClassName"] == "realtime-critical"
    assert notify["priorityClassName"] == "realtime"
    assert "priorityClassName" not in pod_spec(default, "gateway")
    assert deployment(docs, "gateway")["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment(docs, "notify")["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1},
    }
    assert deployment(default, "gateway")["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_the_notification_service_gets_pdb_hpa_spread_and_pod_metadata(chart: Any) -> None:
    default = render(chart, {})
    pdb = named(default, "PodDisruptionBudget", "prism-notify")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "notify"
    assert not [h for h in of_kind(default, "HorizontalPodAutoscaler")]
    spread = pod_spec(default, "notify")["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    assert all(c["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "notify" for c in spread)
    docs = render(chart, VALUE_SETS["operator-overrides"])
    hpa = named(docs, "HorizontalPodAutoscaler", "prism-notify")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "prism-notify"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
    assert "replicas" not in deployment(docs, "notify")["spec"]  # the HPA owns it
    assert deployment(docs, "gateway")["spec"]["replicas"] == 2
    template = deployment(docs, "notify")["spec"]["template"]
    assert template["metadata"]["labels"]["team"] == "realtime"
    assert template["metadata"]["annotations"]["example.com/owner"] == "realtime"
    assert template["spec"]["nodeSelector"] == {"pool": "workers"}
    assert template["spec"]["tolerations"][0]["key"] == "dedicated"
    off = render(
        chart, {"notify": {"topologySpread": {"enabled": False}, "podDisruptionBudget": {"enabled": False}}}
    )
    assert "topologySpreadConstraints" not in pod_spec(off, "notify")
    assert [d["metadata"]["name"] for d in of_kind(off, "PodDisruptionBudget")] == ["prism-gateway"]
    gone = render(chart, {"notify": {"enabled": False, "autoscaling": {"enabled": True}}})
    assert [d["metadata"]["name"] for d in of_kind(gone, "PodDisruptionBudget")] == ["prism-gateway"]
    assert not of_kind(gone, "HorizontalPodAutoscaler")


def test_the_nats_exporter_is_scraped_when_monitoring_is_on(chart: Any) -> None:
    nats_values = chart.values["nats"]["promExporter"]
    assert nats_values["enabled"] is True  # the official chart's exporter sidecar
    assert nats_values["podMonitor"]["enabled"] is False  # ours replaces the official chart's own
    docs = render(chart, VALUE_SETS["monitoring"])
    (monitor,) = of_kind(docs, "PodMonitor")
    assert monitor["metadata"]["name"] == "prism-nats"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"  # what Prometheus selects
    # The labels of the official NATS chart's pods (nats.selectorLabels) and its exporter's port name.
    assert monitor["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "nats",
        "app.kubernetes.io/instance": "prism",
        "app.kubernetes.io/component": "nats",
    }
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint == {"port": "prom-metrics", "path": "/metrics", "interval": "15s"}
    renamed = render(chart, merge(VALUE_SETS["monitoring"], {"nats": {"nameOverride": "bus"}}))
    assert (
        of_kind(renamed, "PodMonitor")[0]["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        == "bus"
    )
    assert not of_kind(render(chart, {}), "PodMonitor")
    no_exporter = merge(VALUE_SETS["monitoring"], {"nats": {"promExporter": {"enabled": False}}})
    assert not of_kind(render(chart, no_exporter), "PodMonitor")
    external = render(chart, merge(VALUE_SETS["monitoring"], EXTERNAL))
    assert not of_kind(external, "PodMonitor")
    assert len(of_kind(external, "ServiceMonitor")) == 2


def test_scrape_annotations_name_the_metrics_ports(chart: Any) -> None:
    assert not any(
        "prometheus.io/scrape" in d["spec"]["template"]["metadata"]["annotations"]
        for d in of_kind(render(chart, {}), "Deployment")
    )
    docs = render(chart, VALUE_SETS["operator-overrides"])
    for component, port in (("gateway", 9102), ("notify", chart.values["notify"]["metricsPort"])):
        annotations = deployment(docs, component)["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(port)
        assert annotations["prometheus.io/path"] == "/metrics"


def test_the_readme_documents_every_value() -> None:
    """Each key of values.yaml (two levels deep; `config` holds settings, `nats` the NATS chart's values)
    is named in helm/prism/README.md, as `section.key` or as `.key` in a row that starts with its section."""
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = []
    for section, body in values.items():
        if section == "nats":
            body = {"enabled": True, "promExporter": body["promExporter"]}
        if not isinstance(body, dict):
            if f"`{section}`" not in readme and f"`{section}," not in readme:
                missing.append(section)
            continue
        for key in body:
            rows = [line for line in readme.splitlines() if line.startswith(f"| `{section}.")]
            named = f"`{section}.{key}" in readme or any(f".{key}`" in row for row in rows)
            if not named:
                missing.append(f"{section}.{key}")
    assert not missing, f"values not in helm/prism/README.md: {missing}"
