"""The Helm chart deploy/helm/memmon and the raw manifests rendered from it (deploy/k8s).

Everything runs the real helm (from scripts/helm_tools.sh): lint, template, the values schema. Rendered objects
are validated with kubernetes-validate (strict: unknown fields are errors) for the Kubernetes versions below, and
the prometheus-operator objects with the validators of @kubernetes-models/prometheus-operator (npm), generated from
the ServiceMonitor and PrometheusRule CRD schemas.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import CHART, CRD_KINDS, EXAMPLES, KUBE_VERSION, NAMESPACE, RELEASE, REPO, Helm

KUBE_VERSIONS = ("1.30.0", "1.35.0")
"""Validated against: the oldest supported (Chart.yaml kubeVersion) and that of the kubectl we ship in tools."""
DEMO = CHART / "examples" / "demo-values.yaml"
PRODUCTION = CHART / "examples" / "production-values.yaml"
NODE_EXAMPLE = CHART / "examples" / "node-values.yaml"
SIGNAL_EXAMPLE = CHART / "examples" / "node-signal-values.yaml"
SIDECAR = ("mode=sidecar",)
CRD_APIS = ("monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PrometheusRule")
"""What a cluster with the prometheus-operator serves (helm template --api-versions)."""
Variant = tuple[tuple[Path, ...], tuple[str, ...]]
"""(values files, --set options) of one render."""
VARIANTS = [
    pytest.param(((), ()), id="defaults"),
    pytest.param(((), SIDECAR), id="sidecar-defaults"),
] + [pytest.param(((path,), ()), id=path.stem) for path in EXAMPLES]
SIDECAR_VARIANTS = [
    pytest.param(((), SIDECAR), id="sidecar-defaults"),
    pytest.param(((DEMO,), ()), id="demo-values"),
    pytest.param(((PRODUCTION,), ()), id="production-values"),
]
CLUSTER_SCOPED = frozenset({"ClusterRole", "ClusterRoleBinding"})
SECRETS = {
    "slackWebhookUrl": (
        "slack-webhook-url",
        "SLACK_WEBHOOK_URL",
        "https://hooks.slack.invalid/T000/B000/s3cr3tSlack",
    ),
    "webhookUrl": (
        "webhook-url",
        "MEMMON_ALERTING__WEBHOOK_URL",
        "https://hooks.invalid/memmon?key=s3cr3tHook",
    ),
    "smtpPassword": ("smtp-password", "MEMMON_ALERTING__SMTP__PASSWORD", "s3cr3t-smtp-password"),
    "apiToken": ("api-token", "MEMMON_API_TOKEN", "s3cr3t-api-token-0123456789"),
}
"""values key -> (key in the Secret, environment variable, a recognisable test value)."""


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    matches = [c for c in pod_spec["containers"] if c["name"] == name]
    assert len(matches) == 1, (
        f"expected one container {name!r} in {[c['name'] for c in pod_spec['containers']]}"
    )
    return matches[0]


def env_map(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in spec.get("env", [])}


def flag(args: list[str], name: str) -> str:
    assert name in args, f"{name} not in {args}"
    return args[args.index(name) + 1]


def demo_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def lint_errors(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout + done.stderr


def template_for_cluster(
    helm: Helm, values: tuple[Path, ...] = (), sets: tuple[str, ...] = (), apis: tuple[str, ...] = CRD_APIS
) -> list[dict[str, Any]]:
    """``helm template`` as `helm install` renders for a cluster that serves ``apis`` (--api-versions)."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION]
    for path in values:
        args += ["-f", str(path)]
    for item in sets:
        args += ["--set", item]
    for api in apis:
        args += ["--api-versions", api]
    done = helm.run(*args)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


# --- lint, render, validate --------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_lint_strict_passes(helm: Helm, variant: Variant) -> None:
    """`helm lint --strict` passes, without a warning, for the default values (both modes) and each example."""
    done = helm.lint(*variant)
    assert done.returncode == 0, lint_errors(done)
    assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout, done.stdout


def test_examples_exist() -> None:
    """The chart ships the demo values the e2e tests use, production-like examples for both modes, and signal."""
    assert {path.name for path in EXAMPLES} >= {
        "demo-values.yaml",
        "production-values.yaml",
        "node-values.yaml",
        "node-signal-values.yaml",
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_template_renders_labelled_objects(helm: Helm, variant: Variant) -> None:
    """`helm template` renders each variant; every object has a name and the app.kubernetes.io labels, and every
    namespaced one the release namespace."""
    docs = helm.template(*variant)
    assert docs
    for doc in docs:
        labels = doc["metadata"].get("labels", {})
        what = f"{doc['kind']}/{doc['metadata'].get('name')}"
        assert doc["metadata"]["name"], what
        assert labels.get("app.kubernetes.io/name") == "memmon", what
        assert labels.get("app.kubernetes.io/instance") == "memmon", what
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", what
        assert labels.get("helm.sh/chart") == "memmon-0.1.0", what
        expected = None if doc["kind"] in CLUSTER_SCOPED else "default"
        assert doc["metadata"].get("namespace") == expected, what


@pytest.fixture(scope="module")
def kubernetes_validate() -> Any:
    """The kubernetes-validate package (a test dependency)."""
    import kubernetes_validate

    return kubernetes_validate


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_objects_validate_against_kubernetes_schemas(
    helm: Helm, kubernetes_validate: Any, variant: Variant, kube_version: str
) -> None:
    """Every built-in object of each render (node and sidecar mode) passes kubernetes-validate --strict (no unknown
    or mistyped field)."""
    for doc in helm.template(*variant):
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(
                f"{doc['kind']}/{doc['metadata']['name']} invalid for Kubernetes {kube_version}: {error}"
            )


def test_crd_objects_validate_against_prometheus_operator_schemas(
    helm: Helm, crd_validate: Callable[[list[dict[str, Any]]], list[str | None]]
) -> None:
    """The ServiceMonitor and PrometheusRule of both modes pass the prometheus-operator CRD schemas; a broken one
    does not."""
    node = [doc for doc in helm.template((NODE_EXAMPLE,)) if doc["kind"] in CRD_KINDS]
    assert sorted(doc["kind"] for doc in node) == ["PrometheusRule", "ServiceMonitor"]
    assert crd_validate(node) == [None, None]
    docs = helm.template((PRODUCTION,))
    crds = [doc for doc in docs if doc["kind"] in CRD_KINDS]
    assert sorted(doc["kind"] for doc in crds) == ["PrometheusRule", "ServiceMonitor"]
    assert crd_validate(crds) == [None, None]

    monitor = json.loads(json.dumps(one(crds, "ServiceMonitor")))
    monitor["spec"]["endpoints"][0]["interval"] = 30
    rule = json.loads(json.dumps(one(crds, "PrometheusRule")))
    del rule["spec"]["groups"][0]["name"]
    broken = crd_validate([monitor, rule])
    assert broken[0] is not None and "interval" in broken[0], broken
    assert broken[1] is not None and "name" in broken[1], broken


def test_prometheus_rule_embeds_the_rule_file(helm: Helm) -> None:
    """The PrometheusRule's spec.groups are files/prometheus-rules.yaml's groups, unchanged (no Helm templating)."""
    rule = one(helm.template(sets=["prometheusRule.enabled=true"]), "PrometheusRule")
    source = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    assert rule["spec"]["groups"] == source["groups"]


def test_service_monitor_and_dashboard(helm: Helm) -> None:
    """Sidecar mode: the ServiceMonitor scrapes the Service's metrics port; the dashboard ConfigMap has
    grafana_dashboard "1"."""
    docs = helm.template(
        sets=[
            *SIDECAR,
            "serviceMonitor.enabled=true",
            "serviceMonitor.interval=15s",
            "serviceMonitor.labels.release=kps",
            "grafanaDashboard.enabled=true",
        ]
    )
    service = one(docs, "Service")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"http": 8080, "metrics": 9091}
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}
    ]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()

    dashboards = [doc for doc in by_kind(docs, "ConfigMap") if doc["metadata"]["name"].endswith("-dashboard")]
    assert len(dashboards) == 1
    assert dashboards[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
    source = (CHART / "files" / "memmon-dashboard.json").read_text()
    assert json.loads(dashboards[0]["data"]["memmon-dashboard.json"]) == json.loads(source)


def test_optional_objects_are_off_by_default_in_sidecar_mode(helm: Helm) -> None:
    """mode: sidecar renders what it rendered before node mode existed: no CRD object, no Secret, no demo, no
    dashboard, no DaemonSet, no ClusterRole, even where the cluster serves the CRDs; the Service selects sidecar
    pods."""
    docs = template_for_cluster(helm, sets=SIDECAR)
    assert sorted(doc["kind"] for doc in docs) == [
        "ConfigMap",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    assert one(docs, "Service")["spec"]["selector"] == {"memmon.io/sidecar": "memmon"}


# --- values schema --------------------------------------------------------------------------------------------------


def unknown(key: str) -> str:
    return f"additional properties '{key}' not allowed"


REJECTED: dict[str, tuple[str, str | None]] = {
    # id: (--set, what the error must name; None = the path of the value set)
    "negative-percent": ("config.thresholds.memory_percent_warning=-5", None),
    "negative-mb": ("config.thresholds.memory_critical_mb=-1", None),
    "percent-over-100": ("config.thresholds.memory_percent_emergency=150", None),
    "zero-interval": ("config.monitoring.check_interval=0", None),
    "interval-below-the-agents-minimum": ("config.monitoring.check_interval=0.01", None),
    "unknown-top-level-key": ("replicaCount=2", unknown("replicaCount")),
    "unknown-nested-key": ("sidecar.appContainer=web", unknown("appContainer")),
    "unknown-config-section": ("config.thresholdz.memory_percent_warning=50", unknown("thresholdz")),
    "unknown-threshold": ("config.thresholds.memory_warning=50", unknown("memory_warning")),
    "interval-not-a-string": ("serviceMonitor.interval=30", None),
    "interval-not-a-duration": ("serviceMonitor.interval=thirty", None),
    "bad-service-type": ("service.type=Headless", None),
    "bad-pull-policy": ("image.pullPolicy=Sometimes", None),
    "pod-root-user": ("securityContext.runAsUser=0", None),
    "container-root-user": ("containerSecurityContext.runAsUser=0", None),
    "pod-runAsNonRoot-false": ("securityContext.runAsNonRoot=false", None),
    "privilege-escalation": ("containerSecurityContext.allowPrivilegeEscalation=true", None),
    "unconfined-seccomp": ("containerSecurityContext.seccompProfile.type=Unconfined", None),
    "bad-quantity": ("resources.limits.memory=lots", None),
    "bad-container-name": ("sidecar.appContainerName=App_1", None),
    "secret-in-config-slack": (
        "config.alerting.slack_webhook=https://hooks.slack.invalid/x",
        "/config/alerting",
    ),
    "secret-in-config-smtp": ("config.alerting.smtp.password=hunter2", "/config/alerting"),
    "secret-in-config-token": ("config.server.api_token=t", "/config/server"),
    "unknown-mode": ("mode=daemonset", None),
    "unknown-restart": ("node.restart=kill", None),
    "unknown-select": ("node.select=some", None),
    "unknown-node-key": ("node.restartStrategy=evict", unknown("restartStrategy")),
    "negative-restart-cap": ("node.maxRestartsPerHour=-1", None),
    "relative-cgroup-path": ("node.cgroupHostPath=sys/fs/cgroup", None),
    "bad-namespace": ("node.excludeNamespaces[0]=Kube_System", "/node/excludeNamespaces/0"),
    "enabled-not-auto": ("serviceMonitor.enabled=maybe", None),
}


@pytest.mark.parametrize("case", list(REJECTED))
def test_schema_rejects_bad_values(helm: Helm, case: str) -> None:
    """values.schema.json makes `helm lint` fail, naming the offending value."""
    setting, expected = REJECTED[case]
    expected = expected or "/" + setting.split("=", 1)[0].replace(".", "/")
    done = helm.lint(sets=[setting])
    output = lint_errors(done)
    assert done.returncode != 0, output
    assert "don't meet the specifications of the schema" in output, output
    assert expected in output, output


def test_schema_is_draft07_and_closed(helm: Helm) -> None:
    """The schema is draft-07 and every object level it defines properties for has additionalProperties false."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    open_levels: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if "properties" in node and node.get("additionalProperties") is not False:
                open_levels.append(path or "/")
            for key, value in node.items():
                if key != "not":  # a "not" describes what is refused, not an object level of the values
                    walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{path}/{index}")

    walk(schema, "")
    assert open_levels == []


def test_schema_config_sections_follow_memmon_settings() -> None:
    """The schema's config sections and typed keys are exactly memmon's (so a new setting cannot be rejected)."""
    from memmon.config import Settings
    from memmon.config.sections import MonitoringSettings, ThresholdSettings

    config = json.loads((CHART / "values.schema.json").read_text())["properties"]["config"]
    assert set(config["properties"]) == set(Settings.model_fields)
    assert set(config["properties"]["thresholds"]["properties"]) == set(ThresholdSettings.model_fields)
    assert set(config["properties"]["monitoring"]["properties"]) == set(MonitoringSettings.model_fields)


KEY_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][\w.-]*):(\s|$)")
CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")


def test_values_are_documented_key_by_key() -> None:
    """Each key of values.yaml has a comment right above it, and the chart's own keys are camelCase."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented, not_camel = [], []
    parents: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        match = KEY_LINE.match(line)
        if not match:
            continue
        indent, key = len(match["indent"]), match["key"]
        while parents and parents[-1][0] >= indent:
            parents.pop()
        path = [name for _, name in parents] + [key]
        parents.append((indent, key))
        previous = lines[number - 1].strip() if number else ""
        if not previous.startswith("#"):
            undocumented.append(".".join(path))
        free_form = path[0] in ("config", "global") or path[-2:-1] in (["requests"], ["limits"])
        if not free_form and not CAMEL.match(key):
            not_camel.append(".".join(path))
    assert undocumented == []
    assert not_camel == []


# --- secrets ----------------------------------------------------------------------------------------------------


def secret_sets() -> list[str]:
    return ["secrets.create=true"] + [f"secrets.{key}={value}" for key, (_, _, value) in SECRETS.items()]


def test_secrets_never_appear_in_a_configmap(helm: Helm) -> None:
    """With every secret set, no ConfigMap (nor any other object but the Secret) holds one, plain or base64."""
    docs = helm.template((DEMO,), sets=[*secret_sets(), "grafanaDashboard.enabled=true"])
    values = [value for _, _, value in SECRETS.values()]
    needles = values + [base64.b64encode(value.encode()).decode() for value in values]
    assert by_kind(docs, "ConfigMap")
    for doc in docs:
        if doc["kind"] == "Secret":
            continue
        text = json.dumps(doc)
        leaked = [needle for needle in needles if needle in text]
        assert leaked == [], f"{doc['kind']}/{doc['metadata']['name']} holds a secret"

    secret = one(docs, "Secret")
    assert secret["metadata"]["name"] == "memmon"
    stored = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert stored == {key: value for key, _, value in SECRETS.values()}


def test_secrets_reach_memmon_as_optional_secret_refs(helm: Helm) -> None:
    """The sidecar takes each secret from the Secret through an optional secretKeyRef, never as a literal."""
    env = env_map(container(demo_pod(helm.template((DEMO,), sets=secret_sets())), "memmon"))
    for key, variable, _ in SECRETS.values():
        assert "value" not in env[variable]
        assert env[variable]["valueFrom"] == {
            "secretKeyRef": {"name": "memmon", "key": key, "optional": True}
        }


def test_existing_secret_is_referenced_not_created(helm: Helm) -> None:
    """secrets.existingSecret names the Secret of the refs and the chart creates none; both at once is an error."""
    docs = helm.template((DEMO,), sets=["secrets.existingSecret=team-memmon"])
    assert by_kind(docs, "Secret") == []
    env = env_map(container(demo_pod(docs), "memmon"))
    assert {env[v]["valueFrom"]["secretKeyRef"]["name"] for _, v, _ in SECRETS.values()} == {"team-memmon"}

    done = helm.run(
        "template",
        "memmon",
        str(CHART),
        "-f",
        str(DEMO),
        "--set",
        "secrets.create=true",
        "--set",
        "secrets.existingSecret=x",
    )
    assert done.returncode != 0 and "exclude each other" in done.stderr, done.stderr


def test_no_secret_env_without_a_secret(helm: Helm) -> None:
    """Without secrets.create or existingSecret the sidecar has no secretKeyRef at all."""
    env = env_map(container(demo_pod(helm.template((DEMO,))), "memmon"))
    assert not any("secretKeyRef" in item.get("valueFrom", {}) for item in env.values())


# --- the sidecar -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_docs(helm: Helm) -> list[dict[str, Any]]:
    return helm.template((DEMO,))


def test_demo_pod_shares_its_process_namespace_and_runs_as_the_service_account(
    demo_docs: list[dict[str, Any]],
) -> None:
    """The demo pod: shareProcessNamespace, the chart's ServiceAccount, containers app and memmon, non-root."""
    pod = demo_pod(demo_docs)
    assert pod["shareProcessNamespace"] is True
    assert pod["serviceAccountName"] == one(demo_docs, "ServiceAccount")["metadata"]["name"] == "memmon"
    assert [c["name"] for c in pod["containers"]] == ["app", "memmon"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    labels = one(demo_docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert one(demo_docs, "Service")["spec"]["selector"].items() <= labels.items()


def test_sidecar_reads_the_app_memory_limit_and_its_pod_from_the_downward_api(
    demo_docs: list[dict[str, Any]],
) -> None:
    """The target's memory limit is the app container's limits.memory; POD_NAME/NAMESPACE/UID come from metadata."""
    pod = demo_pod(demo_docs)
    env = env_map(container(pod, "memmon"))
    assert env["MEMMON_TARGET__MEMORY_LIMIT_BYTES"]["valueFrom"] == {
        "resourceFieldRef": {"containerName": "app", "resource": "limits.memory"}
    }
    for variable, field in (
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
        ("POD_UID", "metadata.uid"),
    ):
        assert env[variable]["valueFrom"] == {"fieldRef": {"fieldPath": field}}
    assert container(pod, "app")["resources"]["limits"]["memory"] == "256Mi"


def test_sidecar_flags_volumes_and_config(demo_docs: list[dict[str, Any]]) -> None:
    """memmon binds 0.0.0.0, keeps state on an emptyDir, reads the ConfigMap's config.json, matches the app."""
    pod = demo_pod(demo_docs)
    memmon = container(pod, "memmon")
    args = memmon["args"]
    assert flag(args, "--bind") == "0.0.0.0"
    assert flag(args, "--state-dir") == "/var/lib/memmon"
    assert flag(args, "--config") == "/etc/memmon/config.json"
    assert flag(args, "--health-port") == "8080" and flag(args, "--prometheus-port") == "9091"
    match = flag(args, "--match")
    assert re.search(match, "python3 /opt/memmon-demo/demo_app.py")
    assert not re.search(match, " ".join(memmon["command"] + args)), "the regex must not match memmon itself"

    mounts = {m["mountPath"]: m["name"] for m in memmon["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/var/lib/memmon"]]
    assert "emptyDir" in volumes[mounts["/tmp"]]
    config_volume = volumes[mounts["/etc/memmon"]]
    assert config_volume["configMap"]["name"] == "memmon"
    config_map = next(d for d in by_kind(demo_docs, "ConfigMap") if d["metadata"]["name"] == "memmon")
    config = json.loads(config_map["data"]["config.json"])
    assert config["thresholds"] == {
        "memory_percent_warning": 50,
        "memory_percent_critical": 70,
        "memory_percent_emergency": 85,
    }
    assert config["auto_response"]["emergency_actions"]["graceful_restart"] == {
        "strategy": "kubernetes-liveness",
        "grace_seconds": 5,
    }
    assert {p["name"]: p["containerPort"] for p in memmon["ports"]} == {
        "memmon-http": 8080,
        "memmon-metrics": 9091,
    }


def test_sidecar_and_app_probes(demo_docs: list[dict[str, Any]]) -> None:
    """memmon probes itself with ?scope=agent; the app's liveness and readiness ask memmon on its health port."""
    pod = demo_pod(demo_docs)
    memmon, app = container(pod, "memmon"), container(pod, "app")
    for probe in ("livenessProbe", "readinessProbe"):
        assert memmon[probe]["httpGet"] == {"path": "/health/live?scope=agent", "port": "memmon-http"}
    assert app["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": 8080}
    assert app["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": 8080}


def test_sidecar_security_context_and_resources(demo_docs: list[dict[str, Any]]) -> None:
    """Both containers: non-root 65532, read-only root, no privilege escalation, no capability, RuntimeDefault."""
    pod = demo_pod(demo_docs)
    for name in ("memmon", "app"):
        context = container(pod, name)["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] == 65532, name
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"] == {"drop": ["ALL"]}, name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
    assert container(pod, "memmon")["resources"] == {
        "requests": {"cpu": "20m", "memory": "64Mi"},
        "limits": {"memory": "128Mi"},
    }


def test_sidecar_follows_the_app_container_name(helm: Helm) -> None:
    """sidecar.appContainerName names both the demo's app container and the resourceFieldRef's container."""
    pod = demo_pod(helm.template((DEMO,), sets=["sidecar.appContainerName=web"]))
    assert [c["name"] for c in pod["containers"]] == ["web", "memmon"]
    ref = env_map(container(pod, "memmon"))["MEMMON_TARGET__MEMORY_LIMIT_BYTES"]["valueFrom"][
        "resourceFieldRef"
    ]
    assert ref["containerName"] == "web"


def test_demo_has_a_default_target_regex(helm: Helm) -> None:
    """With demo.enabled and no sidecar.targetMatch the demo app's regex is used (it is required otherwise)."""
    pod = demo_pod(helm.template(sets=[*SIDECAR, "demo.enabled=true"]))
    assert flag(container(pod, "memmon")["args"], "--match") == "demo_app[.]py"


PARENT_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-shop
spec:
  selector:
    matchLabels: {app: shop}
  template:
    metadata:
      labels:
        app: shop
        {{- include "memmon.sidecarPodLabels" .Subcharts.memmon | nindent 8 }}
    spec:
      {{- include "memmon.sidecarPodSpec" .Subcharts.memmon | nindent 6 }}
      containers:
        - name: shop
          image: shop:1
          resources: {limits: {memory: 512Mi}}
          {{- include "memmon.appProbes" .Subcharts.memmon | nindent 10 }}
        {{- include "memmon.sidecar" .Subcharts.memmon | nindent 8 }}
      volumes:
        {{- include "memmon.sidecarVolumes" .Subcharts.memmon | nindent 8 }}
"""


def test_an_application_chart_includes_the_sidecar(helm: Helm, tmp_path: Path) -> None:
    """A parent chart with memmon as a subchart includes the sidecar via .Subcharts.memmon; names line up, and
    a missing sidecar.targetMatch fails the render saying so."""
    parent = tmp_path / "shop"
    (parent / "templates").mkdir(parents=True)
    (parent / "Chart.yaml").write_text(
        "apiVersion: v2\nname: shop\nversion: 1.0.0\ndependencies:\n  - name: memmon\n    version: 0.1.0\n"
    )
    (parent / "values.yaml").write_text(
        "memmon:\n  mode: sidecar\n  sidecar:\n    appContainerName: shop\n    targetMatch: gunicorn\n"
    )
    (parent / "templates" / "deployment.yaml").write_text(PARENT_DEPLOYMENT)
    shutil.copytree(CHART, parent / "charts" / "memmon")
    done = helm.run("template", "prod", str(parent), "--namespace", "default")
    assert done.returncode == 0, done.stderr
    docs = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    pod = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "prod-shop")["spec"][
        "template"
    ]
    memmon = container(pod["spec"], "memmon")
    assert flag(memmon["args"], "--match") == "gunicorn"
    assert (
        env_map(memmon)["MEMMON_TARGET__MEMORY_LIMIT_BYTES"]["valueFrom"]["resourceFieldRef"]["containerName"]
        == "shop"
    )
    config_maps = {d["metadata"]["name"] for d in by_kind(docs, "ConfigMap")}
    config_volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "memmon-config")
    assert config_volume["configMap"]["name"] in config_maps
    assert pod["spec"]["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    service = one(docs, "Service")
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert pod["spec"]["shareProcessNamespace"] is True

    (parent / "values.yaml").write_text("memmon:\n  mode: sidecar\n  sidecar:\n    appContainerName: shop\n")
    done = helm.run("template", "prod", str(parent), "--namespace", "default")
    assert done.returncode != 0 and "sidecar.targetMatch is required" in done.stderr, done.stderr


# --- memmon accepts what the chart gives it ---------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_config_is_a_valid_memmon_config(
    helm: Helm, variant: Variant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMap's config.json passes memmon's own validation (memmon check-config), with NODE_NAME set as
    the DaemonSet sets it."""
    from memmon.config import ConfigError, check_config_file

    monkeypatch.setenv("NODE_NAME", "node-1")
    config_map = next(
        d for d in by_kind(helm.template(*variant), "ConfigMap") if d["metadata"]["name"] == "memmon"
    )
    path = tmp_path / "config.json"
    path.write_text(config_map["data"]["config.json"])
    try:
        check_config_file(path)
    except ConfigError as error:
        pytest.fail(f"memmon rejects the rendered config: {error}")


def test_memmon_accepts_the_sidecar_environment(helm: Helm, tmp_path: Path) -> None:
    """memmon starts with the sidecar's environment (downward API, secrets, extraEnv) and the rendered config."""
    from memmon.config import ConfigError, load_settings

    # The production example (existing Secret, extraEnv) with the demo on, for a pod that has the sidecar.
    docs = helm.template((PRODUCTION,), sets=["demo.enabled=true"])
    config_map = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "memmon")
    path = tmp_path / "config.json"
    path.write_text(config_map["data"]["config.json"])
    pod = demo_pod(docs)
    fake = {
        "SLACK_WEBHOOK_URL": "https://hooks.slack.invalid/x",
        "MEMMON_ALERTING__WEBHOOK_URL": "https://hooks.invalid/x",
        "MEMMON_ALERTING__SMTP__PASSWORD": "pw",
        "MEMMON_API_TOKEN": "token",
        "MEMMON_TARGET__MEMORY_LIMIT_BYTES": "268435456",
        "MEMMON_ALERTING__INSTANCE": "node-1",
        "POD_NAME": "shop-0",
        "POD_NAMESPACE": "default",
        "POD_UID": "0b5c1a52-0000-4000-8000-000000000000",
    }
    names = list(env_map(container(pod, "memmon")))
    assert sorted(names) == sorted(fake)
    try:
        settings = load_settings(path, environ={name: fake[name] for name in names})
    except ConfigError as error:
        pytest.fail(f"memmon refuses the sidecar's environment: {error}")
    assert settings.server.api_token is not None and settings.server.api_token.get_secret_value() == "token"
    assert settings.alerting.smtp.password is not None


# --- RBAC --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", SIDECAR_VARIANTS)
def test_rbac_is_one_namespaced_role_with_exactly_the_needed_rules(helm: Helm, variant: Variant) -> None:
    """Sidecar mode: get/patch pods, create pods/eviction, create events (core group), bound to the ServiceAccount;
    no Cluster*."""
    docs = helm.template(*variant)
    assert by_kind(docs, "ClusterRole") == [] and by_kind(docs, "ClusterRoleBinding") == []
    role = one(docs, "Role")
    rules = sorted(
        (tuple(rule["apiGroups"]), tuple(rule["resources"]), tuple(sorted(rule["verbs"])))
        for rule in role["rules"]
    )
    assert rules == [
        (("",), ("events",), ("create",)),
        (("",), ("pods",), ("get", "patch")),
        (("",), ("pods/eviction",), ("create",)),
    ]
    assert all(set(rule) == {"apiGroups", "resources", "verbs"} for rule in role["rules"]), (
        "no resourceNames etc."
    )
    binding = one(docs, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    account = one(docs, "ServiceAccount")["metadata"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": "default"}
    ]


def test_rbac_and_service_account_can_be_turned_off(helm: Helm) -> None:
    """rbac.create=false and serviceAccount.create=false render neither; the pod then uses the named account."""
    docs = helm.template(
        (DEMO,), sets=["rbac.create=false", "serviceAccount.create=false", "serviceAccount.name=shop"]
    )
    assert not {"Role", "RoleBinding", "ServiceAccount"} & {doc["kind"] for doc in docs}
    assert demo_pod(docs)["serviceAccountName"] == "shop"


# --- the raw manifests ------------------------------------------------------------------------------------------


def test_raw_manifests_match_a_fresh_render(helm: Helm) -> None:
    """deploy/k8s/memmon-node.yaml and memmon-sidecar.yaml are exactly what scripts/render_manifests.sh renders now
    (no drift from the chart); the node file is the default values for a cluster with the prometheus-operator,
    the sidecar file mode: sidecar."""
    k8s = REPO / "deploy" / "k8s"
    assert sorted(p.name for p in k8s.glob("*.y*ml")) == ["memmon-node.yaml", "memmon-sidecar.yaml"]
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "render_manifests.sh"), "--stdout"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    committed = (k8s / "memmon-node.yaml").read_text() + (k8s / "memmon-sidecar.yaml").read_text()
    assert committed == done.stdout, "deploy/k8s is stale: run scripts/render_manifests.sh"
    node = [doc for doc in yaml.safe_load_all((k8s / "memmon-node.yaml").read_text()) if doc]
    sidecar = [doc for doc in yaml.safe_load_all((k8s / "memmon-sidecar.yaml").read_text()) if doc]
    assert node == template_for_cluster(helm)
    assert sidecar == helm.template(sets=SIDECAR)
    assert {"DaemonSet", "ClusterRole", "ServiceMonitor", "PrometheusRule"} <= {doc["kind"] for doc in node}


def test_manifests_check_fails_on_drift(tmp_path: Path) -> None:
    """`scripts/render_manifests.sh --check` (make manifests-check) passes now and fails, naming the file, when a
    rendered file differs."""
    script = REPO / "scripts" / "render_manifests.sh"
    done = subprocess.run(["bash", str(script), "--check"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    copy = tmp_path / "repo"
    (copy / "scripts").mkdir(parents=True)
    (copy / "deploy").mkdir()
    for name in ("render_manifests.sh", "helm_tools.sh"):
        shutil.copy2(REPO / "scripts" / name, copy / "scripts" / name)
    shutil.copytree(CHART, copy / "deploy" / "helm" / "memmon")
    shutil.copytree(REPO / "deploy" / "k8s", copy / "deploy" / "k8s")
    stale = copy / "deploy" / "k8s" / "memmon-node.yaml"
    stale.write_text(stale.read_text().replace("system-node-critical", "system-cluster-critical"))
    tools = REPO / ".cache" / "tools"
    env = {**os.environ, "MEMMON_TOOLS_DIR": os.environ.get("MEMMON_TOOLS_DIR", str(tools))}
    done = subprocess.run(
        ["bash", str(copy / "scripts" / "render_manifests.sh"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "deploy/k8s/memmon-node.yaml is out of date" in done.stderr
    assert "memmon-sidecar.yaml is out of date" not in done.stderr


def test_helm_tools_is_idempotent_and_ships_kubectl(helm: Helm) -> None:
    """A second scripts/helm_tools.sh run prints the same bin directory at once; helm 4 and kubectl both run."""
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "helm_tools.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and Path(done.stdout.strip()) == helm.binary.parent
    assert time.monotonic() - started < 5
    assert helm.run("version", "--short").stdout.startswith("v4.")
    kubectl = subprocess.run(
        [str(helm.binary.parent / "kubectl"), "version", "--client"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert kubectl.returncode == 0 and "Client Version: v1.35" in kubectl.stdout


# --- the demo app -------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def call(method: str, url: str, timeout: float = 10) -> tuple[int, Any]:
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, json.loads(response.read())


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def demo_app() -> Iterator[tuple[subprocess.Popen[str], str]]:
    """files/demo_app.py running on a free loopback port (it binds 0.0.0.0; we only talk to 127.0.0.1)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(CHART / "files" / "demo_app.py")],
        env={**os.environ, "DEMO_PORT": str(port), "DEMO_DRAIN_SECONDS": "10"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            call("GET", base + "/healthz", timeout=1)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the demo app did not start: {process.communicate()[0]}")
            time.sleep(0.1)
    try:
        yield process, base
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_demo_app_leaks_frees_and_drains_on_sigterm(demo_app: tuple[subprocess.Popen[str], str]) -> None:
    """The demo app holds /leak?mb=N resident, drops it on /free, and on SIGTERM drains, prints drained, exits 0."""
    process, base = demo_app
    assert call("GET", base + "/healthz") == (200, {"status": "ok", "held_mb": 0})
    before = rss_mb(process.pid)
    assert call("POST", base + "/leak?mb=40") == (200, {"held_mb": 40})
    assert call("POST", base + "/leak?mb=10") == (200, {"held_mb": 50})
    assert rss_mb(process.pid) - before > 45
    assert call("POST", base + "/free") == (200, {"held_mb": 0})
    with pytest.raises(urllib.error.HTTPError) as bad:
        call("POST", base + "/leak?mb=-1")
    assert bad.value.code == 400

    slow: dict[str, Any] = {}

    def in_flight() -> None:
        slow["answer"] = call("GET", base + "/slow?seconds=1.5")

    thread = threading.Thread(target=in_flight)
    thread.start()
    time.sleep(0.5)  # the request is being handled
    process.send_signal(signal.SIGTERM)
    thread.join(timeout=10)
    assert slow.get("answer") == (200, {"slept_seconds": 1.5}), "the request in flight was not drained"
    output, _ = process.communicate(timeout=15)
    assert process.returncode == 0, output
    assert output.splitlines()[-1] == "drained", output


# --- node mode (the default) -----------------------------------------------------------------------------------


def daemonset_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(docs, "DaemonSet")["spec"]["template"]["spec"]
    return spec


def cluster_rules(docs: list[dict[str, Any]]) -> dict[str, list[str]]:
    """resource -> sorted verbs of the ClusterRole (core group only; any other group fails)."""
    rules: dict[str, list[str]] = {}
    for rule in one(docs, "ClusterRole")["rules"]:
        assert rule["apiGroups"] == [""], rule
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule
        for resource in rule["resources"]:
            rules[resource] = sorted(rules.get(resource, []) + rule["verbs"])
    return rules


@pytest.fixture(scope="module")
def node_docs(helm: Helm) -> list[dict[str, Any]]:
    """The default values, rendered."""
    return helm.template()


def test_default_values_render_a_daemonset_not_a_deployment(node_docs: list[dict[str, Any]]) -> None:
    """Default values render node mode: one DaemonSet (no Deployment, no Role), a ClusterRole bound to the
    ServiceAccount, the Service selecting the DaemonSet's pods, and the dashboard ConfigMap."""
    assert by_kind(node_docs, "Deployment") == [] and by_kind(node_docs, "Role") == []
    assert sorted(doc["kind"] for doc in node_docs) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "ConfigMap",
        "DaemonSet",
        "Service",
        "ServiceAccount",
    ]
    daemonset = one(node_docs, "DaemonSet")
    pod = daemonset["spec"]["template"]
    assert daemonset["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert one(node_docs, "Service")["spec"]["selector"] == daemonset["spec"]["selector"]["matchLabels"]
    assert pod["spec"]["serviceAccountName"] == one(node_docs, "ServiceAccount")["metadata"]["name"]
    binding = one(node_docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": one(node_docs, "ClusterRole")["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "memmon", "namespace": "default"}]
    assert {p["name"]: p["port"] for p in one(node_docs, "Service")["spec"]["ports"]} == {
        "http": 8080,
        "metrics": 9091,
    }


def test_node_reads_the_hosts_cgroup_tree_read_only(node_docs: list[dict[str, Any]]) -> None:
    """The host's /sys/fs/cgroup is a hostPath volume mounted read-only at /host/sys/fs/cgroup, memmon's
    node.cgroup_root; state and /tmp are emptyDirs."""
    pod = daemonset_pod(node_docs)
    memmon = container(pod, "memmon")
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in memmon["volumeMounts"]}
    cgroup = mounts["/host/sys/fs/cgroup"]
    assert cgroup["readOnly"] is True
    assert volumes[cgroup["name"]]["hostPath"] == {"path": "/sys/fs/cgroup", "type": "Directory"}
    hostpaths = [v for v in pod["volumes"] if "hostPath" in v]
    assert hostpaths == [volumes[cgroup["name"]]], "no other host path"
    assert all(m["readOnly"] for m in memmon["volumeMounts"] if m["name"] == cgroup["name"])
    assert "emptyDir" in volumes[mounts["/var/lib/memmon"]["name"]]
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    config = json.loads(next(d for d in by_kind(node_docs, "ConfigMap") if d["metadata"]["name"] == "memmon")[
        "data"]["config.json"])  # fmt: skip
    assert config["node"]["cgroup_root"] == "/host/sys/fs/cgroup"


def test_node_name_comes_from_the_downward_api(node_docs: list[dict[str, Any]]) -> None:
    """NODE_NAME is spec.nodeName (the config's node.name is null so memmon falls back to it); POD_NAME and
    POD_NAMESPACE come from metadata."""
    env = env_map(container(daemonset_pod(node_docs), "memmon"))
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert "MEMMON_TARGET__MEMORY_LIMIT_BYTES" not in env
    args = container(daemonset_pod(node_docs), "memmon")["args"]
    assert "--match" not in args and flag(args, "--bind") == "0.0.0.0"


def test_node_runs_on_every_node_at_node_critical_priority(
    node_docs: list[dict[str, Any]], helm: Helm
) -> None:
    """Tolerations for every taint (operator Exists), priorityClassName system-node-critical, Linux nodes only,
    resources set; both are values."""
    pod = daemonset_pod(node_docs)
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert container(pod, "memmon")["resources"] == {
        "requests": {"cpu": "50m", "memory": "96Mi"},
        "limits": {"memory": "256Mi"},
    }
    custom = daemonset_pod(
        helm.template(
            sets=["node.priorityClassName=", "node.nodeSelector.pool=a"],
            set_json=['node.tolerations=[{"key":"gpu","operator":"Exists","effect":"NoSchedule"}]'],
        )
    )
    assert "priorityClassName" not in custom
    assert custom["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert custom["nodeSelector"] == {"kubernetes.io/os": "linux", "pool": "a"}


RBAC_CASES = {
    # (node.restart, node.annotatePods): the ClusterRole's verbs per resource
    ("evict", True): {
        "pods": ["get", "list", "patch", "watch"],
        "events": ["create"],
        "pods/eviction": ["create"],
    },
    ("evict", False): {"pods": ["get", "list", "watch"], "events": ["create"], "pods/eviction": ["create"]},
    ("signal", True): {"pods": ["get", "list", "patch", "watch"], "events": ["create"]},
    ("signal", False): {"pods": ["get", "list", "watch"], "events": ["create"]},
    ("none", True): {"pods": ["get", "list", "patch", "watch"], "events": ["create"]},
    ("none", False): {"pods": ["get", "list", "watch"], "events": ["create"]},
}


@pytest.mark.parametrize("case", list(RBAC_CASES), ids=[f"{r}-annotate={a}" for r, a in RBAC_CASES])
def test_cluster_role_has_exactly_the_verbs_of_the_chosen_features(
    helm: Helm, case: tuple[str, bool]
) -> None:
    """pods get/list/watch and events create always; pods/eviction create only with restart evict; pods patch
    only with annotatePods; nothing else, no Role."""
    restart, annotate = case
    docs = helm.template(sets=[f"node.restart={restart}", f"node.annotatePods={str(annotate).lower()}"])
    assert cluster_rules(docs) == RBAC_CASES[case]
    assert by_kind(docs, "Role") == [] and by_kind(docs, "RoleBinding") == []
    config = json.loads(next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "memmon")[
        "data"]["config.json"])  # fmt: skip
    assert config["node"]["restart"] == restart and config["node"]["annotate_pods"] is annotate


@pytest.mark.parametrize("restart", ["evict", "none"])
def test_node_is_non_root_without_host_pid_unless_signal(helm: Helm, restart: str) -> None:
    """restart evict (the default) and none: uid 65532, runAsNonRoot, every capability dropped and none added,
    read-only root, RuntimeDefault seccomp, no hostPID."""
    pod = daemonset_pod(helm.template(sets=[f"node.restart={restart}"]))
    assert "hostPID" not in pod
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 65532
    context = container(pod, "memmon")["securityContext"]
    assert context == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_signal_restart_adds_host_pid_and_kill_only(helm: Helm) -> None:
    """restart signal: hostPID true and uid 0 with every capability dropped but KILL (added capabilities reach a
    non-root process only through the ambient set, which Kubernetes does not set); still no privilege
    escalation, read-only root, RuntimeDefault seccomp; config strategy signal."""
    docs = helm.template((SIGNAL_EXAMPLE,))
    pod = daemonset_pod(docs)
    assert pod["hostPID"] is True
    assert "runAsNonRoot" not in pod["securityContext"] and "runAsUser" not in pod["securityContext"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container(pod, "memmon")["securityContext"]
    assert context == {
        "runAsNonRoot": False,
        "runAsUser": 0,
        "runAsGroup": 0,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"], "add": ["KILL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert "privileged" not in context
    config = json.loads(next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "memmon")[
        "data"]["config.json"])  # fmt: skip
    assert config["auto_response"]["emergency_actions"]["graceful_restart"] == {
        "strategy": "signal",
        "grace_seconds": 20,
        "cooldown_seconds": 300,
    }


def test_node_config_section_has_exactly_the_node_keys(node_docs: list[dict[str, Any]]) -> None:
    """The ConfigMap's node section: enabled, name null (NODE_NAME), cgroup_root, select, namespaces,
    exclude_namespaces, containers, restart, annotate_pods, max_restarts_per_hour, at the chart's defaults; the
    graceful restart is the Eviction API."""
    config = json.loads(next(d for d in by_kind(node_docs, "ConfigMap") if d["metadata"]["name"] == "memmon")[
        "data"]["config.json"])  # fmt: skip
    assert config["node"] == {
        "enabled": True,
        "name": None,
        "cgroup_root": "/host/sys/fs/cgroup",
        "select": "all",
        "namespaces": [],
        "exclude_namespaces": [],
        "containers": True,
        "restart": "evict",
        "annotate_pods": True,
        "max_restarts_per_hour": 10,
    }
    assert config["auto_response"]["emergency_actions"]["graceful_restart"] == {
        "strategy": "kubernetes-evict",
        "grace_seconds": 30,
        "cooldown_seconds": 300,
        "evict_attempts": 5,
    }


def test_memmon_accepts_the_node_environment(helm: Helm, tmp_path: Path) -> None:
    """memmon loads the node example's config with the DaemonSet's environment: node mode on, the node's name from
    NODE_NAME, the namespaces excluded, the restart cap."""
    from memmon.config import ConfigError, load_settings

    docs = helm.template((NODE_EXAMPLE,))
    config_map = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "memmon")
    path = tmp_path / "config.json"
    path.write_text(config_map["data"]["config.json"])
    env = env_map(container(daemonset_pod(docs), "memmon"))
    fake = {
        "NODE_NAME": "node-7",
        "POD_NAME": "memmon-x2k9",
        "POD_NAMESPACE": "memmon",
        "POD_UID": "0b5c1a52-0000-4000-8000-000000000000",
        "SLACK_WEBHOOK_URL": "https://hooks.slack.invalid/x",
        "MEMMON_ALERTING__WEBHOOK_URL": "https://hooks.invalid/x",
        "MEMMON_ALERTING__SMTP__PASSWORD": "pw",
        "MEMMON_API_TOKEN": "token",
    }
    assert sorted(env) == sorted(fake)
    try:
        settings = load_settings(path, environ=fake)
    except ConfigError as error:
        pytest.fail(f"memmon refuses the node environment: {error}")
    assert settings.node.enabled is True and settings.node.node_name() == "node-7"
    assert settings.node.exclude_namespaces == ["kube-system", "kube-node-lease"]
    assert settings.node.max_restarts_per_hour == 6


def test_monitoring_objects_follow_enabled_and_the_cluster(helm: Helm) -> None:
    """Node mode, enabled auto (the default): ServiceMonitor and PrometheusRule where the cluster serves their CRDs
    and not elsewhere, the dashboard ConfigMap always; true forces them, false removes them."""

    def kinds(docs: list[dict[str, Any]]) -> set[str]:
        names = {doc["kind"] for doc in docs if doc["kind"] in CRD_KINDS}
        if any(doc["metadata"]["name"] == "memmon-dashboard" for doc in by_kind(docs, "ConfigMap")):
            names.add("dashboard")
        return names

    assert kinds(template_for_cluster(helm)) == {"ServiceMonitor", "PrometheusRule", "dashboard"}
    assert kinds(template_for_cluster(helm, apis=())) == {"dashboard"}
    forced = ["serviceMonitor.enabled=true", "prometheusRule.enabled=true"]
    assert kinds(template_for_cluster(helm, sets=tuple(forced), apis=())) == {
        "ServiceMonitor",
        "PrometheusRule",
        "dashboard",
    }
    off = ("serviceMonitor.enabled=false", "prometheusRule.enabled=false", "grafanaDashboard.enabled=false")
    assert kinds(template_for_cluster(helm, sets=off)) == set()


def test_node_service_monitor_keeps_the_watched_pods_labels(helm: Helm) -> None:
    """Node mode's ServiceMonitor scrapes the Service's metrics port, adds the node, and drops the operator's
    namespace/pod/container target labels (memmon's own) so memmon's namespace/pod/container labels of the
    watched pods survive; user relabelings follow."""
    docs = template_for_cluster(helm, sets=("serviceMonitor.relabelings[0].targetLabel=cluster",
                                            "serviceMonitor.relabelings[0].replacement=prod"))  # fmt: skip
    monitor, service = one(docs, "ServiceMonitor"), one(docs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert endpoint["relabelings"] == [
        {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"},
        {"action": "labeldrop", "regex": "(namespace|pod|container)"},
        {"targetLabel": "cluster", "replacement": "prod"},
    ]
    rule = one(docs, "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())[
        "groups"]  # fmt: skip
    dashboard = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "memmon-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["memmon-dashboard.json"]) == json.loads(
        (CHART / "files" / "memmon-dashboard.json").read_text()
    )


@pytest.mark.parametrize("variant", SIDECAR_VARIANTS)
def test_sidecar_mode_renders_no_daemonset_and_no_cluster_role(helm: Helm, variant: Variant) -> None:
    """mode: sidecar (and the sidecar examples) render no DaemonSet, no ClusterRole, no ClusterRoleBinding."""
    docs = helm.template(*variant)
    assert not {"DaemonSet", "ClusterRole", "ClusterRoleBinding"} & {doc["kind"] for doc in docs}


def test_demo_needs_sidecar_mode(helm: Helm) -> None:
    """demo.enabled in node mode fails the render saying it needs mode: sidecar."""
    done = helm.run("template", "memmon", str(CHART), "--set", "demo.enabled=true")
    assert done.returncode != 0 and "demo.enabled needs mode: sidecar" in done.stderr, done.stderr
