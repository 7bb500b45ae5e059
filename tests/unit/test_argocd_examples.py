"""examples/argocd/: the press line through Argo CD, and what Argo CD's bookkeeping does to Spine.

The app of apps syncs the operator (with its CRDs) first, then the Spine, then its leaves, and
together its Applications deliver every object of examples/press-line/ exactly once. Argo CD
marks what it manages with a tracking label (`app.kubernetes.io/instance`, its default before
3.0) or annotation (`argocd.argoproj.io/tracking-id`); children that inherited either would be
shown as part of the Application and pruned, since they are in no Git file. `spine render`
(the operator's own builders) must give the same children with or without that bookkeeping.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
ARGOCD = REPO / "examples" / "argocd"
PRESS_LINE = REPO / "examples" / "press-line"
SPINE = REPO / ".venv" / "bin" / "spine"
GROUP = "spine.iiot.dev"
WAVE = "argocd.argoproj.io/sync-wave"
ARGO_APP = "spine-press-line-leaves"
# What Argo CD writes on the resources it manages (tracking, waves, options) and kubectl's
# client-side apply record: none of it may reach a child.
ARGO_LABELS = {"app.kubernetes.io/instance": ARGO_APP, "argocd.argoproj.io/instance": ARGO_APP}
ARGO_ANNOTATIONS = {
    "argocd.argoproj.io/tracking-id": f"{ARGO_APP}:{GROUP}/Gateway:plant-a/press-line-1",
    "argocd.argoproj.io/sync-wave": "2",
    "argocd.argoproj.io/sync-options": "Prune=false",
    "argocd.argoproj.io/compare-options": "IgnoreExtraneous",
    "kubectl.kubernetes.io/last-applied-configuration": '{"kind":"Gateway"}',
}


def applications() -> dict[str, dict[str, Any]]:
    found = {}
    for path in [ARGOCD / "press-line.yaml", *sorted((ARGOCD / "apps").glob("*.yaml"))]:
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["apiVersion"] == "argoproj.io/v1alpha1" and doc["kind"] == "Application"
            found[doc["metadata"]["name"]] = doc
    return found


def children() -> list[dict[str, Any]]:
    return [app for name, app in applications().items() if name != "spine-press-line"]


def expand_braces(pattern: str) -> list[str]:
    """Argo CD's `directory.include` globs: `{a,b}` alternatives, then shell patterns."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if not match:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [
        expanded
        for option in match.group(1).split(",")
        for expanded in expand_braces(head + option + tail)
    ]


def included_files(app: dict[str, Any]) -> list[Path]:
    source = app["spec"]["source"]
    folder = REPO / source["path"]
    patterns = expand_braces(source.get("directory", {}).get("include", "*.yaml"))
    return sorted(
        path
        for path in folder.glob("*.yaml")
        if any(fnmatch.fnmatch(path.name, p) for p in patterns)
    )


def documents(paths: list[Path]) -> list[dict[str, Any]]:
    return [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_the_root_application_creates_the_others() -> None:
    apps = applications()
    root = apps["spine-press-line"]
    assert root["spec"]["source"]["path"] == "examples/argocd/apps"
    assert {app["metadata"]["name"] for app in children()} == set(apps) - {"spine-press-line"}
    for app in children():
        assert app["spec"]["source"]["repoURL"] == root["spec"]["source"]["repoURL"]
        assert app["spec"]["source"]["targetRevision"] == root["spec"]["source"]["targetRevision"]
        assert (REPO / app["spec"]["source"]["path"]).is_dir(), app["metadata"]["name"]


def wave(app: dict[str, Any]) -> int:
    return int(app["metadata"]["annotations"][WAVE])


def test_waves_put_the_operator_first_then_the_spine_then_its_leaves() -> None:
    by_kind: dict[str, int] = {}
    for app in children():
        source = app["spec"]["source"]
        if "helm" in source:
            assert source["path"] == "charts/spine"
            kinds = {"CustomResourceDefinition", "Deployment"}
        else:
            kinds = {doc["kind"] for doc in documents(included_files(app))}
        for kind in kinds:
            by_kind[kind] = wave(app)
    assert by_kind["CustomResourceDefinition"] == by_kind["Deployment"]
    assert by_kind["Deployment"] < by_kind["Spine"] == by_kind["Namespace"]
    assert by_kind["Spine"] < by_kind["TwinModel"] == by_kind["Gateway"]


def test_the_applications_deliver_every_press_line_object_once() -> None:
    delivered = [
        (doc["kind"], doc["metadata"]["name"])
        for app in children()
        if "helm" not in app["spec"]["source"]
        for doc in documents(included_files(app))
    ]
    in_git = [
        (doc["kind"], doc["metadata"]["name"])
        for doc in documents(sorted(PRESS_LINE.glob("*.yaml")))
    ]
    assert sorted(delivered) == sorted(in_git)


def test_custom_resources_skip_the_dry_run_while_their_crd_is_on_its_way() -> None:
    for app in children():
        if "helm" in app["spec"]["source"]:
            continue
        if any(doc["apiVersion"].startswith(GROUP) for doc in documents(included_files(app))):
            options = app["spec"]["syncPolicy"].get("syncOptions", [])
            assert "SkipDryRunOnMissingResource=true" in options, app["metadata"]["name"]


def test_the_operator_application_values_pass_the_chart_schema() -> None:
    (operator,) = [app for app in children() if "helm" in app["spec"]["source"]]
    chart = REPO / "charts" / "spine"
    values = yaml.safe_load((chart / "values.yaml").read_text())

    def merge(base: Any, override: Any) -> Any:
        if isinstance(base, dict) and isinstance(override, dict):
            return {k: merge(base.get(k), v) for k, v in override.items()} | {
                k: v for k, v in base.items() if k not in override
            }
        return override

    merged = merge(values, operator["spec"]["source"]["helm"].get("valuesObject", {}))
    jsonschema.validate(merged, json.loads((chart / "values.schema.json").read_text()))
    assert "CreateNamespace=true" in operator["spec"]["syncPolicy"]["syncOptions"]


# Argo CD's bookkeeping never reaches a child ------------------------------------------------


def render(folder: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(SPINE), "render", "-f", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def tracked_copy(tmp_path: Path) -> Path:
    """examples/press-line as Argo CD leaves it in the cluster: tracked, waved, annotated."""
    folder = tmp_path / "press-line"
    folder.mkdir()
    for path in PRESS_LINE.glob("*.yaml"):
        docs = []
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["apiVersion"].startswith(GROUP):
                doc = copy.deepcopy(doc)
                doc["metadata"].setdefault("labels", {}).update(ARGO_LABELS)
                doc["metadata"].setdefault("annotations", {}).update(ARGO_ANNOTATIONS)
            docs.append(doc)
        (folder / path.name).write_text(yaml.safe_dump_all(docs))
    return folder


def metadata_maps(obj: dict[str, Any]) -> list[dict[str, str]]:
    """Every labels and annotations map of an object, its pod template's and claims' included."""
    found = []
    spec = obj.get("spec") or {}
    for metadata in [
        obj["metadata"],
        (spec.get("template") or {}).get("metadata") or {},
        *[claim.get("metadata") or {} for claim in spec.get("volumeClaimTemplates") or []],
    ]:
        found += [metadata.get("labels") or {}, metadata.get("annotations") or {}]
    return found


def test_children_carry_no_argocd_tracking_nor_apply_record(tmp_path: Path) -> None:
    folder = tracked_copy(tmp_path)
    parents = [
        d for d in documents(sorted(folder.glob("*.yaml"))) if d["apiVersion"].startswith(GROUP)
    ]
    assert len(parents) == 9 and all(  # Spine, TwinModel, Gateway, five Flows, a registration
        ARGO_LABELS.items() <= p["metadata"]["labels"].items() for p in parents
    )
    objects = render(folder)
    assert {obj["kind"] for obj in objects} >= {"StatefulSet", "Service", "ConfigMap", "Secret"}
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        for mapping in metadata_maps(obj):
            for key, value in mapping.items():
                assert not key.startswith("argocd.argoproj.io/"), f"{name} has {key}"
                assert key != "kubectl.kubernetes.io/last-applied-configuration", name
                assert value != ARGO_APP, f"{name}: {key}={value} would make Argo CD own it"


def test_argocd_bookkeeping_changes_no_child(tmp_path: Path) -> None:
    # The children depend on the parents' specs only: the same objects, byte for byte in
    # meaning, whatever Argo CD wrote on the parents.
    assert render(tracked_copy(tmp_path)) == render(PRESS_LINE)


def test_the_operator_never_applies_a_parent_resource() -> None:
    # It writes a parent's status (a subresource) and nothing else: no spec field of a Spine,
    # Gateway or TwinModel comes from the operator, so Argo CD sees no drift on them.
    for obj in render(PRESS_LINE):
        assert not obj["apiVersion"].startswith(GROUP), f"{obj['kind']} {obj['metadata']['name']}"
