"""charts/spine with the real Helm (helm.sh/helm/v4, built by tests/helm/build.sh).

`helm lint --strict` and `helm template` with the defaults and with every value changed
(tests/helm/values-everything.yaml); the defaults render the very objects `kubectl kustomize
manifests/` builds, the monitoring values those of manifests/monitoring/; each non-default value
shows in the output; the objects pass `kubernetes-validate --strict` and a wrong value fails at
`helm install` time through values.schema.json.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.support.crd_schema import cel_failures, to_jsonschema
from tests.support.helm import CHART, NAMESPACE, REPO, by_key, helm, key, kustomize, template

pytestmark = pytest.mark.integration

EVERYTHING = REPO / "tests" / "helm" / "values-everything.yaml"
KUBERNETES_VERSION = "1.30"
PROMETHEUS_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
# Labels that say who installed an object, which differ by tool and release by design.
TOOL_LABELS = {
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "helm.sh/chart",
}


def without_tool_labels(obj: dict[str, Any]) -> dict[str, Any]:
    """The object with the installing tool's own labels (and Helm's keep policy) left out."""
    obj = copy.deepcopy(obj)
    for metadata in (obj["metadata"], obj.get("spec", {}).get("template", {}).get("metadata")):
        if not metadata:
            continue
        labels = {k: v for k, v in (metadata.get("labels") or {}).items() if k not in TOOL_LABELS}
        metadata.pop("labels", None)
        if labels:
            metadata["labels"] = labels
        annotations = dict(metadata.get("annotations") or {})
        annotations.pop("helm.sh/resource-policy", None)
        metadata.pop("annotations", None)
        if annotations:
            metadata["annotations"] = annotations
    return obj


def comparable(objects: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    # manifests/ creates the namespace; Helm is told to (`--create-namespace`).
    return {k: without_tool_labels(v) for k, v in by_key(objects).items() if k[0] != "Namespace"}


@pytest.fixture(scope="module")
def defaults() -> list[dict[str, Any]]:
    return template()


@pytest.fixture(scope="module")
def everything() -> list[dict[str, Any]]:
    return template("--values", str(EVERYTHING))


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = find(objects, "Deployment", "spine-operator")["spec"]["template"]["spec"][
        "containers"
    ]
    return container


# Lint ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [None, EVERYTHING], ids=["defaults", "everything"])
def test_helm_lint_strict_passes(values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART)] + (["--values", str(values)] if values else [])
    result = helm(*args)
    assert "0 chart(s) failed" in result.stdout, result.stdout


# One source: the chart renders what manifests/ holds -----------------------------------------


def test_defaults_render_exactly_the_kustomize_install(defaults: list[dict]) -> None:
    chart = comparable(defaults)
    manifests = comparable(kustomize(REPO / "manifests"))
    assert set(chart) == set(manifests)
    for name in manifests:
        assert chart[name] == manifests[name], f"{name} differs between the chart and manifests/"


def test_monitoring_values_render_exactly_the_monitoring_overlay() -> None:
    chart = comparable(
        template(
            "--set",
            "metrics.serviceMonitor.enabled=true,metrics.podMonitor.enabled=true,"
            "metrics.prometheusRule.enabled=true,metrics.dashboard.enabled=true",
        )
    )
    manifests = comparable(kustomize(REPO / "manifests" / "monitoring"))
    assert set(chart) == set(manifests)
    for name in manifests:
        assert chart[name] == manifests[name], f"{name} differs from manifests/monitoring/"


def test_chart_crds_are_the_generated_crds(defaults: list[dict]) -> None:
    crds = {o["metadata"]["name"]: o for o in defaults if o["kind"] == "CustomResourceDefinition"}
    sources = {
        doc["metadata"]["name"]: doc
        for doc in (yaml.safe_load(p.read_text()) for p in (REPO / "crds").glob("*.yaml"))
        if doc.get("kind") == "CustomResourceDefinition"
    }
    assert set(crds) == set(sources) and len(crds) >= 3
    for name, crd in crds.items():
        assert crd["spec"] == sources[name]["spec"], name
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}


# Every value changes what it should ----------------------------------------------------------


def test_every_value_takes_effect(everything: list[dict]) -> None:
    values = yaml.safe_load(EVERYTHING.read_text())
    deployment = find(everything, "Deployment", "spine-operator")
    pod = deployment["spec"]["template"]
    container = operator_container(everything)
    image = "registry.plant.example/mirror/spine@" + values["image"]["digest"]
    assert container["image"] == image
    env = {item["name"]: item for item in container["env"]}
    assert env["SPINE_RUNTIME_IMAGE"]["value"] == image  # the runtimes follow the operator
    assert container["imagePullPolicy"] == "Always"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "plant-registry"}]
    assert find(everything, "ServiceAccount", "spine-operator")["imagePullSecrets"] == [
        {"name": "plant-registry"}
    ]
    assert deployment["spec"]["replicas"] == 0
    assert container["args"] == [
        "run",
        "--namespace",
        "plant-a",
        "--namespace",
        "plant-b",
        "--health-port",
        "8080",
        "--metrics-port",
        "9191",
        "--verbose",
    ]
    assert container["resources"] == values["resources"]
    assert pod["spec"]["securityContext"] == values["podSecurityContext"]
    assert container["securityContext"] == values["securityContext"]
    assert pod["spec"]["nodeSelector"] == values["nodeSelector"]
    assert pod["spec"]["tolerations"] == values["tolerations"]
    assert pod["spec"]["affinity"] == values["affinity"]
    assert pod["metadata"]["annotations"]["plant.example/owner"] == "platform-team"
    for obj in everything:
        assert obj["metadata"]["labels"]["plant.example/cost-center"] == "4711", key(obj)
    assert pod["metadata"]["labels"]["plant.example/cost-center"] == "4711"
    # crds.keep false: Helm may delete the CRDs on uninstall.
    for crd in (o for o in everything if o["kind"] == "CustomResourceDefinition"):
        assert "helm.sh/resource-policy" not in (crd["metadata"].get("annotations") or {})
    assert not [o for o in everything if o["kind"] == "NetworkPolicy"]  # networkPolicy off
    service = find(everything, "Service", "spine-operator-metrics")
    assert service["spec"]["ports"][0]["port"] == 9191
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9191}
    monitor = find(everything, "ServiceMonitor", "spine-operator")
    assert monitor["spec"]["endpoints"][0]["interval"] == "15s"
    for name in ("spine-gateways", "spine-twins", "spine-proxies", "spine-catalogs"):
        pod_monitor = find(everything, "PodMonitor", name)
        assert pod_monitor["spec"]["podMetricsEndpoints"][0]["interval"] == "20s"
        assert pod_monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    for kind, name in (("ServiceMonitor", "spine-operator"), ("PrometheusRule", "spine")):
        assert find(everything, kind, name)["metadata"]["labels"]["release"] == (
            "kube-prometheus-stack"
        )
    dashboards = find(everything, "ConfigMap", "spine-dashboards")
    assert dashboards["metadata"]["labels"]["plant.example/folder"] == "spine"
    assert json.loads(dashboards["data"]["spine-plant.json"])["uid"] == "spine-plant"


def test_watched_namespaces_get_rolebindings_and_no_cluster_wide_grant(
    everything: list[dict],
) -> None:
    bindings = [o for o in everything if o["kind"] == "RoleBinding"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["plant-a", "plant-b"]
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "spine-operator",
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "spine-operator", "namespace": NAMESPACE}
        ]
    cluster_bindings = [o for o in everything if o["kind"] == "ClusterRoleBinding"]
    assert [b["roleRef"]["name"] for b in cluster_bindings] == ["spine-operator-cluster"]
    cluster_role = find(everything, "ClusterRole", "spine-operator-cluster")
    resources = {r for rule in cluster_role["rules"] for r in rule["resources"]}
    assert resources == {"customresourcedefinitions", "namespaces", "storageclasses"}


def test_crds_can_be_left_out_and_metrics_turned_off() -> None:
    objects = template("--set", "crds.install=false,metrics.enabled=false")
    kinds = {o["kind"] for o in objects}
    assert "CustomResourceDefinition" not in kinds
    assert not [o for o in objects if o["kind"] == "Service"]
    container = operator_container(objects)
    assert container["args"][-2:] == ["--metrics-port", "0"]
    assert [p["name"] for p in container["ports"]] == ["health"]
    policy = find(objects, "NetworkPolicy", "spine-operator")
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": 8080, "protocol": "TCP"}]


def test_a_servicemonitor_without_metrics_is_refused() -> None:
    result = helm(
        "template",
        "spine",
        str(CHART),
        "--set",
        "metrics.enabled=false,metrics.serviceMonitor.enabled=true",
        check=False,
    )
    assert result.returncode != 0
    assert "metrics.serviceMonitor.enabled needs metrics.enabled" in result.stderr


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("replicas=2", "replicas"),
        ("logLevel=trace", "logLevel"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("image.digest=latest", "digest"),
        ("watchNamespaces[0]=Plant_A", "watchNamespaces"),
        ("metrics.port=8080", "port"),
        ("crds.keep=maybe", "keep"),
        ("metrics.podMonitr.enabled=true", "podMonitr"),
        ("extraLabels.team=a b", "extraLabels"),
    ],
)
def test_a_wrong_value_fails_before_anything_is_applied(setting: str, complaint: str) -> None:
    # `helm install` validates values against values.schema.json exactly as `helm template`
    # does, before it talks to the cluster.
    result = helm("template", "spine", str(CHART), "--set", setting, check=False)
    assert result.returncode != 0, f"{setting} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr


# The objects are valid Kubernetes objects ----------------------------------------------------


@pytest.mark.parametrize("which", ["defaults", "everything"])
def test_rendered_objects_pass_strict_validation(
    which: str, request: pytest.FixtureRequest
) -> None:
    objects = request.getfixturevalue(which)
    failures = []
    checked = 0
    for obj in objects:
        if obj["kind"] in PROMETHEUS_KINDS:
            continue  # prometheus-operator's kinds: no schema in kubernetes-validate
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            checked += 1
        except (
            kubernetes_validate.ValidationError,
            kubernetes_validate.SchemaNotFoundError,
        ) as error:
            failures.append(f"{key(obj)}: {error}")
    assert not failures, "\n".join(failures)
    assert checked >= 9


def test_examples_are_valid_against_the_chart_crds(defaults: list[dict]) -> None:
    # The CRDs the chart installs accept the examples: each CR is checked against the rendered
    # CRD's own schema, translated as the API server reads a structural schema, CEL included.
    schemas = {
        crd["spec"]["names"]["kind"]: crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for crd in defaults
        if crd["kind"] == "CustomResourceDefinition"
    }
    examples = [
        doc
        for path in sorted((REPO / "examples").rglob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and str(doc.get("apiVersion", "")).startswith("spine.iiot.dev/")
    ]
    assert {doc["kind"] for doc in examples} == set(schemas)
    for doc in examples:
        jsonschema.validate(copy.deepcopy(doc), to_jsonschema(schemas[doc["kind"]]))
        assert not cel_failures(schemas[doc["kind"]], doc), doc["metadata"]["name"]
    # and refuse what the API server would refuse
    broken = copy.deepcopy(next(doc for doc in examples if doc["kind"] == "Gateway"))
    broken["spec"]["tags"][0]["typo"] = True
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, to_jsonschema(schemas["Gateway"]))


def test_notes_say_the_next_command() -> None:
    # A client-side dry run renders NOTES.txt as `helm install` prints it, without a cluster.
    result = helm(
        "install", "spine", str(CHART), "--namespace", "plant-ops", "--dry-run=client",
        "--set", "watchNamespaces={plant-a}",
    )  # fmt: skip
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "kubectl -n plant-ops rollout status deployment/spine-operator" in notes
    assert "watching plant-a" in notes
    assert "kubectl -n plant-a wait spine/default --for=condition=Ready" in notes


def test_the_packaged_chart_renders_the_same(tmp_path: Path, defaults: list[dict]) -> None:
    # `helm package` must carry files/ (the alerts and the dashboard) and the generated templates.
    helm("package", str(CHART), "--destination", str(tmp_path))
    (archive,) = tmp_path.glob("spine-*.tgz")
    monitoring = "metrics.prometheusRule.enabled=true,metrics.dashboard.enabled=true"
    packaged = helm("template", "spine", str(archive), "-n", NAMESPACE, "--set", monitoring)
    from_folder = template("--set", monitoring)
    assert [doc for doc in yaml.safe_load_all(packaged.stdout) if doc] == from_folder
