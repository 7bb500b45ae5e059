"""Generate the CustomResourceDefinitions in `crds/` from the API models (`spine render-crds`).

pydantic's JSON schema becomes a structural schema as the API server wants it: every `$ref`
inlined, no `$defs`, `title` or `additionalProperties: false`, `anyOf [X, null]` turned into X,
and a type on every node. A field's default is stated in its description (what `kubectl
explain` prints) rather than applied by the API server, so a later operator version can change
a default for every existing resource. A unit test regenerates in memory and fails on drift.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from spine_operator.api.kinds import CATEGORY, GROUP, KINDS, VERSION, KindInfo

DROPPED_KEYS = {"title", "$defs", "discriminator"}
KNOWN_FORMATS = {"int32", "int64", "float", "double", "byte", "date", "date-time", "password"}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _inline(merged, defs)
    return {key: _inline(value, defs) for key, value in node.items()}


def _describe_default(node: dict[str, Any]) -> None:
    if "default" not in node:
        return
    default = node.pop("default")
    if default in (None, {}, []):
        return
    text = json.dumps(default) if not isinstance(default, str) else default
    description = node.get("description", "").rstrip()
    sep = " " if description else ""
    node["description"] = f"{description}{sep}Default: {text}."


def _structural(node: Any) -> Any:
    if isinstance(node, list):
        return [_structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: value for key, value in node.items() if key not in DROPPED_KEYS}
    for union in ("anyOf", "oneOf"):
        options = node.get(union)
        if options is not None:
            not_null = [option for option in options if option.get("type") != "null"]
            if len(not_null) == 1:  # Optional[X] -> X
                node.pop(union)
                node = {
                    key: value
                    for key, value in {**not_null[0], **node}.items()
                    if key not in DROPPED_KEYS
                }
    if node.get("additionalProperties") is False:
        node.pop("additionalProperties")
    if (
        node.get("x-kubernetes-preserve-unknown-fields")
        and node.get("additionalProperties") is True
    ):
        # A free-form object (an inline JSON Schema): `additionalProperties: true` beside it made
        # the real API server treat the object's own fields as a map of empty schemas and refuse
        # every nested field (strict field validation), e.g. validate.schema.properties.id.
        node.pop("additionalProperties")
    if "const" in node:
        node["enum"] = [node.pop("const")]
    # OpenAPI v3.0 (what a CRD holds) has boolean exclusive bounds beside minimum/maximum;
    # JSON Schema 2020, which pydantic writes for gt/lt, has numeric ones.
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        value = node.get(exclusive)
        if isinstance(value, int | float) and not isinstance(value, bool):
            node[bound] = value
            node[exclusive] = True
    if node.get("format") and node["format"] not in KNOWN_FORMATS:
        node.pop("format")
    _describe_default(node)
    if "type" not in node:
        if "properties" in node:
            node["type"] = "object"
        elif "enum" in node and all(isinstance(value, str) for value in node["enum"]):
            node["type"] = "string"
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            result[key] = {name: _structural(schema) for name, schema in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            result[key] = _structural(value)
        elif key in ("anyOf", "oneOf", "allOf"):
            result[key] = [_structural(option) for option in value]
        else:
            result[key] = value
    return result


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema as a Kubernetes structural schema."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    inlined = _inline(raw, raw.get("$defs", {}))
    return _structural(inlined)


def _check_typed(node: Any, path: str) -> None:
    """Fail loudly if a node lacks a type: the API server would reject the CRD."""
    if not isinstance(node, dict):
        return
    # Only int-or-string and preserve-unknown-fields nodes may go without a type.
    if "type" not in node and not (
        node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
    ):
        raise ValueError(f"schema node {path} has no type")
    for name, sub in node.get("properties", {}).items():
        _check_typed(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        _check_typed(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        _check_typed(node["additionalProperties"], f"{path}{{}}")


def build_crd(info: KindInfo) -> dict[str, Any]:
    spec_schema = structural_schema(info.spec_model)
    status_schema = structural_schema(info.status_model)
    conditions = status_schema.get("properties", {}).get("conditions")
    if conditions is not None:
        conditions["x-kubernetes-list-type"] = "map"
        conditions["x-kubernetes-list-map-keys"] = ["type"]
    spec_schema["description"] = info.spec_model.__doc__.strip() if info.spec_model.__doc__ else ""
    root = {
        "type": "object",
        "description": info.description,
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
    }
    _check_typed(root, info.kind)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": info.crd_name,
            "labels": {"app.kubernetes.io/part-of": "spine"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": info.printer_columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


HEADER = "# Generated by `spine render-crds` from the API models; do not edit.\n"


def render_crd_files() -> dict[str, str]:
    """File name -> content of everything in `crds/`, including its kustomization."""
    files = {
        f"{info.crd_name}.yaml": HEADER + yaml.safe_dump(build_crd(info), sort_keys=False)
        for info in KINDS
    }
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": sorted(files),
    }
    files["kustomization.yaml"] = HEADER + yaml.safe_dump(kustomization, sort_keys=False)
    return files


def write_crds(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in render_crd_files().items():
        path = directory / name
        path.write_text(content)
        written.append(path)
    return written
