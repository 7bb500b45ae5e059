"""charts/spine without Helm: the generated files match their sources, and the values schema.

charts/generate.py copies crds/, the ClusterRole's rules, the alerts and the dashboard into the
chart; this regenerates them in memory and fails on drift (`make chart` fixes it). The values
schema accepts the defaults and tests/helm/values-everything.yaml, which changes every value.
Helm itself renders the chart in tests/integration/test_chart_helm.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from charts import generate

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "spine"
EVERYTHING = REPO / "tests" / "helm" / "values-everything.yaml"


def test_generated_chart_files_are_up_to_date() -> None:
    files = generate.generate()
    stale = generate.stale(files)
    assert not stale, f"out of date: {[str(p.relative_to(REPO)) for p in stale]}; run `make chart`"
    crds = {path.name for path in files if path.parent.name == "crds"}
    assert crds == {
        "flows.yaml",
        "gateways.yaml",
        "serviceregistrations.yaml",
        "spines.yaml",
        "twinmodels.yaml",
    }


def test_check_mode_names_a_stale_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chart = tmp_path / "spine"
    (chart / "templates" / "crds").mkdir(parents=True)
    (chart / "templates" / "crds" / "leftover.yaml").write_text("# from a removed CRD\n")
    monkeypatch.setattr(generate, "CHART", chart)
    stale = {path.relative_to(chart) for path in generate.stale(generate.generate())}
    assert Path("templates/crds/leftover.yaml") in stale
    assert Path("templates/_generated-rbac.tpl") in stale
    assert generate.main(["--check"]) == 1


def defined_block(text: str, name: str) -> Any:
    match = re.search(
        r'\{\{- define "' + re.escape(name) + r'" \}\}\n(.*?)\{\{- end \}\}', text, re.S
    )
    assert match, name
    return yaml.safe_load(match.group(1))


def test_chart_rbac_rules_are_the_manifests_rules() -> None:
    text = (CHART / "templates" / "_generated-rbac.tpl").read_text()
    (role,) = [
        doc
        for doc in yaml.safe_load_all((REPO / "manifests" / "base" / "rbac.yaml").read_text())
        if doc["kind"] == "ClusterRole"
    ]
    assert defined_block(text, "spine.generated.rules") == role["rules"]
    cluster = defined_block(text, "spine.generated.clusterScopedRules")
    assert {r for rule in cluster for r in rule["resources"]} == {
        "customresourcedefinitions",
        "namespaces",
        "storageclasses",
    }


def test_a_rule_mixing_scopes_is_refused() -> None:
    # ("", namespaces) is cluster-scoped, ("apps", namespaces) would not be: one binding cannot
    # grant that rule right, so the generator asks for two rules.
    mixed = {"apiGroups": ["", "apps"], "resources": ["namespaces"], "verbs": ["get"]}
    with pytest.raises(generate.GenerateError, match="mixes cluster-scoped and namespaced"):
        generate._split_rule(mixed)
    cluster, namespaced = generate._split_rule(
        {"apiGroups": [""], "resources": ["namespaces", "secrets"], "verbs": ["get"]}
    )
    assert cluster is not None and cluster["resources"] == ["namespaces"]
    assert namespaced is not None and namespaced["resources"] == ["secrets"]


def test_template_braces_in_a_source_are_escaped_for_helm() -> None:
    # A CEL rule or a description may hold "{{"; Helm must print it, not run it.
    escaped = generate._escape_template('rule: "self.a == {{x}}"')
    assert escaped == 'rule: "self.a == {{ "{{" }}x{{ "}}" }}"'


def test_prometheus_rules_file_is_the_rule_spec() -> None:
    source = yaml.safe_load((REPO / "manifests" / "monitoring" / "prometheusrule.yaml").read_text())
    shipped = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    assert shipped == source["spec"]


def test_dashboards_are_copies() -> None:
    for source in (REPO / "manifests" / "monitoring" / "dashboards").glob("*.json"):
        copy = CHART / "files" / "dashboards" / source.name
        assert json.loads(copy.read_text()) == json.loads(source.read_text())


# values.schema.json -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(loaded)
    return loaded


def defaults() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def leaves(tree: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Each value of the defaults, down to scalars, lists and empty maps."""
    whole = {("resources",), ("podSecurityContext",), ("securityContext",)}
    if isinstance(tree, dict) and tree and path[:1] not in whole and path[-1:] != ("labels",):
        return [leaf for k, v in tree.items() for leaf in leaves(v, (*path, k))]
    return [(path, tree)]


def test_defaults_and_every_non_default_value_pass_the_schema(schema: dict[str, Any]) -> None:
    jsonschema.validate(defaults(), schema)
    jsonschema.validate(yaml.safe_load(EVERYTHING.read_text()), schema)


def test_the_everything_values_change_every_value() -> None:
    everything = yaml.safe_load(EVERYTHING.read_text())
    for path, default in leaves(defaults()):
        value: Any = everything
        for part in path:
            assert isinstance(value, dict) and part in value, f"{'.'.join(path)} is not set"
            value = value[part]
        if path in {("crds", "install"), ("metrics", "enabled")}:
            continue  # false drops objects the other checks look at: tested on its own
        assert value != default, f"{'.'.join(path)} keeps its default"


@pytest.mark.parametrize(
    "override",
    [
        {"replicas": 2},
        {"logLevel": "warn"},
        {"image": {"repository": "ghcr.io/spine-iiot/spine:0.1.0", "pullPolicy": "Always"}},
        {"image": {"repository": "x", "pullPolicy": "Always", "digest": "sha256:abc"}},
        {"watchNamespaces": ["plant-a", "plant-a"]},
        {"metrics": {"enabled": True, "port": 80}},
        {"resources": {"limits": {"memory": "lots"}}},
        {"extraLabels": {"bad key!": "x"}},
        {"crds": {"install": "yes", "keep": True}},
        {"unknownValue": 1},
    ],
)
def test_schema_rejects_wrong_values(schema: dict[str, Any], override: dict[str, Any]) -> None:
    values = {**defaults(), **override}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(values, schema)
