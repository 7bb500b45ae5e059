"""The monitoring Spine ships: alerts, PodMonitors, the Grafana dashboard, checked with promtool.

The rules file is the one the chart ships (charts/spine/files/prometheus-rules.yaml), which is
the spec of manifests/monitoring/prometheusrule.yaml (checked here against `kubectl kustomize`);
`promtool test rules` runs manifests/monitoring/tests/alerts.test.yaml on it, and every alert
must be tested both firing and quiet. Every metric an alert or a panel uses is one a Spine
process really exports (read from the metric objects themselves), every dashboard query parses
in promtool, the PodMonitors select the pods `spine render` produces, and the monitors and rules
decode strictly into prometheus-operator's Go API types (tests/promcheck).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from spine_operator.metrics import OperatorMetrics
from spine_runtime.gateway.metrics import GatewayMetrics
from spine_runtime.proxy.metrics import ProxyMetrics
from spine_runtime.twin.metrics import TwinMetrics
from tests.support.helm import kustomize, template

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "manifests" / "monitoring"
RULES_FILE = REPO / "charts" / "spine" / "files" / "prometheus-rules.yaml"
ALERT_TESTS = MONITORING / "tests" / "alerts.test.yaml"
DASHBOARD = MONITORING / "dashboards" / "spine-plant.json"
README = REPO / "README.md"
# What a plant needs (issue 14); flows and the proxy get theirs when they exist.
REQUIRED_ALERTS = {
    "SpineOperatorDown",
    "SpineReconcileErrors",
    "SpineResourcesNotReady",
    "SpineGatewayConnectionDown",
    "SpineGatewayBufferGrowing",
    "SpineGatewayBufferStale",
    "SpineTwinRejectingUpdates",
    "SpineDesiredValuesFailing",
    "SpineBrokerDown",
}
# PromQL words that look like metric names in a query but are not.
PROMQL_WORDS = {
    "sum", "by", "rate", "increase", "deriv", "max", "min", "count", "and", "or", "unless",
    "histogram_quantile", "vector", "absent", "on", "ignoring", "without", "le", "avg",
    "label_values", "job", "namespace", "result", "ready", "kind", "gateway", "connection",
    "spine", "bool", "pod",
}  # fmt: skip


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not on PATH: Debian's `prometheus` package ships it")
    return path


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )


def exported_metrics() -> set[str]:
    """Every sample name the operator, the gateway, the twin and the proxy expose."""
    registries = [
        GatewayMetrics().registry,
        TwinMetrics().registry,
        ProxyMetrics().registry,
    ]
    operator_registry = CollectorRegistry()
    OperatorMetrics(operator_registry)
    registries.append(operator_registry)
    names = {"up"}  # written by Prometheus for every target
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    for registry in registries:
        for family in registry.collect():
            names |= {family.name + suffix for suffix in suffixes.get(family.type, [""])}
    return names


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    words = set(re.findall(r"\b[a-z_][a-z0-9_]*\b", expr))
    return {word for word in words if word not in PROMQL_WORDS and not word.startswith("__")}


def name_matchers(expr: str) -> set[str]:
    """Metric names chosen with {__name__=~"a|b"}."""
    found: set[str] = set()
    for pattern in re.findall(r'__name__=~"([^"]+)"', expr):
        found |= set(pattern.split("|"))
    return found


@pytest.fixture(scope="module")
def rules() -> dict[str, Any]:
    return yaml.safe_load(RULES_FILE.read_text())


@pytest.fixture(scope="module")
def alerts(rules: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert "alert" in rule, f"{rule}: only alerts belong in this file"
            assert rule["alert"] not in found, f"{rule['alert']} twice"
            found[rule["alert"]] = rule
    return found


# The rules file ----------------------------------------------------------------------------


def test_the_chart_ships_the_overlays_rules() -> None:
    objects = kustomize(MONITORING)
    (rule,) = [obj for obj in objects if obj["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"] == yaml.safe_load(RULES_FILE.read_text())


def test_the_rules_pass_promtool_check(alerts: dict[str, Any]) -> None:
    result = run_promtool("check", "rules", str(RULES_FILE), cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts)} rules found" in result.stdout


def test_every_alert_fires_and_stays_quiet_under_promtool(alerts: dict[str, Any]) -> None:
    result = run_promtool("test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    scenario = yaml.safe_load(ALERT_TESTS.read_text())
    assert [Path(ALERT_TESTS.parent, f).resolve() for f in scenario["rule_files"]] == [RULES_FILE]
    fires: set[str] = set()
    quiet: set[str] = set()
    for test in scenario["tests"]:
        for case in test["alert_rule_test"]:
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert fires == set(alerts), f"never seen firing: {sorted(set(alerts) - fires)}"
    assert quiet == set(alerts), f"never seen quiet: {sorted(set(alerts) - quiet)}"


def test_alerts_cover_what_a_plant_needs(alerts: dict[str, Any]) -> None:
    assert set(alerts) >= REQUIRED_ALERTS


def test_every_alert_says_what_and_where_to_look(alerts: dict[str, Any]) -> None:
    readme = README.read_text()
    headings = {
        line.lstrip("#").strip().strip("`").lower()
        for line in readme.splitlines()
        if line.startswith("#")
    }
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        assert len(annotations["description"].split()) >= 15, f"{name}: say what to look at"
        anchor = annotations["runbook_url"].rsplit("#", 1)[1]
        assert anchor == name.lower(), name
        assert anchor in headings, f"README.md has no runbook section `#### {name}`"


def test_alerts_use_only_metrics_spine_exports(alerts: dict[str, Any]) -> None:
    exported = exported_metrics()
    for name, rule in alerts.items():
        used = metric_names(rule["expr"]) | name_matchers(rule["expr"])
        assert used, name
        assert used <= exported, f"{name} uses {sorted(used - exported)}, which no Spine exports"


# Scrape targets ----------------------------------------------------------------------------


def test_podmonitors_select_the_pods_the_operator_renders() -> None:
    rendered = subprocess.run(
        [str(REPO / ".venv" / "bin" / "spine"), "render", "-f", str(REPO / "examples")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    workloads = [
        doc
        for doc in yaml.safe_load_all(rendered.stdout)
        if doc and doc["kind"] in {"StatefulSet", "Deployment"}
    ]
    monitors = [obj for obj in kustomize(MONITORING) if obj["kind"] == "PodMonitor"]
    assert {m["metadata"]["name"] for m in monitors} == {
        "spine-gateways",
        "spine-twins",
        "spine-proxies",
        "spine-catalogs",
    }
    matched = set()
    for monitor in monitors:
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert monitor["spec"]["namespaceSelector"] == {"any": True}
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert endpoint["path"] == "/metrics"
        for workload in workloads:
            template = workload["spec"]["template"]
            if selector.items() <= template["metadata"]["labels"].items():
                ports = [p["name"] for c in template["spec"]["containers"] for p in c["ports"]]
                assert endpoint["port"] in ports, workload["metadata"]["name"]
                matched.add(monitor["metadata"]["name"])
        # The broker's pods are not scraped: mosquitto serves no metrics.
        assert selector["app.kubernetes.io/component"] != "broker"
    # `spine render` shows gateways and brokers; the twin's StatefulSet uses the same labels
    # and port name (operator/spine_operator/build/twin.py) but is not rendered offline yet.
    assert {"spine-gateways", "spine-proxies", "spine-catalogs"} <= matched


# The dashboard -----------------------------------------------------------------------------


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        assert panel.get("description"), f"panel {panel['title']!r} says nothing"
        queries += [(panel["title"], target["expr"]) for target in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            inner = re.fullmatch(r"label_values\((.+), *[a-z_]+\)", variable["definition"])
            assert inner, variable["definition"]
            queries.append((f"variable {variable['name']}", inner.group(1)))
    return queries


def as_promql(expr: str) -> str:
    """A Grafana query with its variables replaced as Grafana would for 'All'."""
    return expr.replace("$__rate_interval", "2m").replace('"$namespace"', '".*"')


def test_dashboard_covers_a_plant() -> None:
    text = " ".join(expr for _, expr in dashboard_queries())
    for metric in (
        "spine_twin_things",
        "spine_twin_updates_total",
        "spine_gateway_connection_up",
        "spine_gateway_buffered_messages",
        "spine_gateway_oldest_buffered_age_seconds",
        "spine_twin_desired_pending",
        "spine_twin_desired_failed",
        "spine_gateway_writes_total",
    ):
        assert metric in text, f"the dashboard shows no {metric}"


def test_every_dashboard_query_parses_in_promtool(tmp_path: Path) -> None:
    queries = dashboard_queries()
    exported = exported_metrics()
    for title, expr in queries:
        used = metric_names(as_promql(expr))
        assert used <= exported, f"{title}: {sorted(used - exported)} is exported by no Spine"
        assert "$" not in as_promql(expr), f"{title}: unknown variable in {expr}"
    # promtool parses each query as a recording rule's expression.
    records = [
        {"record": f"dashboard:query_{index}", "expr": as_promql(expr)}
        for index, (_, expr) in enumerate(queries)
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    result = run_promtool("check", "rules", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(records)} rules found" in result.stdout


def test_promtool_refuses_a_broken_query(tmp_path: Path) -> None:
    # Guards the test above: promtool must reject what Prometheus would.
    path = tmp_path / "broken.yaml"
    rule = {"record": "dashboard:broken", "expr": "sum by (namespace (spine_twin_things)"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [rule]}]}))
    assert run_promtool("check", "rules", str(path), cwd=tmp_path).returncode != 0


# prometheus-operator's own types ------------------------------------------------------------


def promcheck() -> str:
    path = Path(
        subprocess.run(
            [str(REPO / "tests" / "promcheck" / "build.sh"), "--path"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    )
    if not path.is_file():
        pytest.skip(
            f"promcheck is not built: `make promcheck` (tests/promcheck/build.sh) -> {path}"
        )
    return str(path)


def run_promcheck(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promcheck(), str(path)], capture_output=True, text=True, timeout=60, check=False
    )


def test_monitors_and_rules_decode_strictly_into_prometheus_operator_types(tmp_path: Path) -> None:
    # Field names and types as prometheus-operator's Go API (v0.95) defines them, for the
    # overlay and for the chart with every value changed.
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump_all(kustomize(MONITORING)))
    chart = tmp_path / "chart.yaml"
    everything = REPO / "tests" / "helm" / "values-everything.yaml"
    chart.write_text(yaml.safe_dump_all(template("--values", str(everything))))
    for path in (overlay, chart):
        result = run_promcheck(path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "6 checked, 0 failed" in result.stdout, result.stdout


def test_promcheck_refuses_a_misspelt_field(tmp_path: Path) -> None:
    (monitor,) = [obj for obj in kustomize(MONITORING) if obj["kind"] == "ServiceMonitor"]
    monitor["spec"]["endpoints"][0]["honourLabels"] = True
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(monitor))
    result = run_promcheck(path)
    assert result.returncode == 1
    assert 'unknown field "honourLabels"' in result.stderr
