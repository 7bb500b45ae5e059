"""Validate a custom resource against the generated CRD's schema, as the API server would.

The structural schema is translated to JSON Schema (TESTING.md section 5): int-or-string and
nullable mapped, unknown fields rejected where the schema does not preserve them (the API
server prunes or, with strict field validation, rejects them), CEL rules evaluated with `cel`.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema

from spine_operator.api.kinds import kind_by_name
from spine_operator.crdgen import build_crd


def to_jsonschema(node: Any) -> Any:
    if isinstance(node, list):
        return [to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if node.pop("x-kubernetes-int-or-string", False):
        node.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.pop("nullable", False) and "type" in node:
        node["type"] = [node["type"], "null"]
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if node.get(exclusive) is True:  # OpenAPI v3.0's boolean form -> JSON Schema 2020's
            node[exclusive] = node.pop(bound)
        elif node.get(exclusive) is False:
            node.pop(exclusive)
    preserve = node.pop("x-kubernetes-preserve-unknown-fields", False)
    for key in [key for key in node if key.startswith("x-kubernetes-")]:
        node.pop(key)
    if node.get("type") == "object" and "properties" in node and not preserve:
        node.setdefault("additionalProperties", False)
    for key in ("properties",):
        if key in node:
            node[key] = {name: to_jsonschema(sub) for name, sub in node[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            node[key] = to_jsonschema(node[key])
    for key in ("anyOf", "oneOf", "allOf"):
        if key in node:
            node[key] = [to_jsonschema(option) for option in node[key]]
    return node


def cel_failures(schema: dict[str, Any], value: Any, path: str = "self") -> list[str]:
    failures = []
    rules = schema.get("x-kubernetes-validations", [])
    if rules:
        import cel

        for rule in rules:
            if not cel.evaluate(rule["rule"], {"self": value}):
                failures.append(f"{path}: {rule.get('message', rule['rule'])}")
    for name, sub in schema.get("properties", {}).items():
        if isinstance(value, dict) and name in value:
            failures += cel_failures(sub, value[name], f"{path}.{name}")
    if isinstance(schema.get("items"), dict) and isinstance(value, list):
        for index, item in enumerate(value):
            failures += cel_failures(schema["items"], item, f"{path}[{index}]")
    return failures


def crd_schema(kind: str) -> dict[str, Any]:
    info = kind_by_name(kind)
    assert info is not None, kind
    return build_crd(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def validate_against_crd(kind: str, resource: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError or AssertionError (CEL) if the API server would refuse."""
    schema = crd_schema(kind)
    jsonschema.validate(copy.deepcopy(resource), to_jsonschema(schema))
    failures = cel_failures(schema, resource)
    assert not failures, "; ".join(failures)
