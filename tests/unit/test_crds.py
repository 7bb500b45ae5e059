"""The CRDs in crds/: generated from the models, structural, accepting exactly what they should."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from spine_operator.api.kinds import KINDS, kind_by_name
from spine_operator.crdgen import build_crd, render_crd_files
from tests.support.crd_schema import validate_against_crd

ROOT = Path(__file__).resolve().parents[2]


def test_crds_directory_matches_the_models() -> None:
    for name, content in render_crd_files().items():
        path = ROOT / "crds" / name
        assert path.exists(), f"crds/{name} is missing: run `spine render-crds`"
        assert path.read_text() == content, f"crds/{name} drifted: run `spine render-crds`"


def walk(node: Any, path: str = "$"):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}[{index}]")


@pytest.mark.parametrize("info", KINDS, ids=lambda info: info.kind)
def test_schema_is_structural(info) -> None:
    schema = build_crd(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    text = yaml.safe_dump(schema)
    for forbidden in ("$ref", "$defs", "additionalProperties: false"):
        assert forbidden not in text
    for path, node in walk(schema):
        parent_key = path.rsplit(".", 1)[-1]
        if parent_key in ("properties",):
            continue  # a map of field names, where a field may well be called "title"
        assert not isinstance(node.get("title"), str), f"{path} keeps a title"
        if node.get("x-kubernetes-preserve-unknown-fields"):
            continue
        if "description" in node or "properties" in node or "items" in node or "enum" in node:
            assert "type" in node, f"{path} has no type"


@pytest.mark.parametrize("info", KINDS, ids=lambda info: info.kind)
def test_names_category_columns_and_status(info) -> None:
    spec = build_crd(info)["spec"]
    assert spec["names"]["categories"] == ["iiot"]
    assert spec["names"]["shortNames"]
    assert spec["names"]["singular"] not in spec["names"]["categories"]
    version = spec["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [column["name"] for column in version["additionalPrinterColumns"]]
    assert columns[0] == "Ready" and columns[-1] == "Age"


def example_documents() -> list[dict]:
    documents = []
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        documents += [
            doc
            for doc in yaml.safe_load_all(path.read_text())
            if doc and doc.get("apiVersion", "").startswith("spine.iiot.dev/")
        ]
    return documents


def test_every_example_is_accepted_by_its_crd() -> None:
    documents = example_documents()
    assert {doc["kind"] for doc in documents} >= {"Spine"}
    for document in documents:
        validate_against_crd(document["kind"], document)


def spine(spec: dict) -> dict:
    return {
        "apiVersion": "spine.iiot.dev/v1alpha1",
        "kind": "Spine",
        "metadata": {"name": "default", "namespace": "x"},
        "spec": spec,
    }


@pytest.mark.parametrize(
    "spec",
    [
        {"broker": {"image": "eclipse-mosquitto:2\nlistener 1884"}},
        {"broker": {"adminSecretName": "Admin_Secret"}},
        {"broker": {"persistence": {"size": "lots"}}},
        {"broker": {"limits": {"persistentClientExpiration": "7d\nallow_anonymous true"}}},
        {"broker": {"limits": {"maxQueuedMessages": -1}}},
        {"broker": {"autosaveInterval": 0}},
        {"broker": {"tls": {}}},
        {"broker": {"unknownField": 1}},
        {"brokr": {}},
    ],
)
def test_hostile_or_malformed_spines_are_rejected_by_the_schema(spec) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate_against_crd("Spine", spine(spec))


def test_empty_spec_is_accepted() -> None:
    validate_against_crd("Spine", spine({}))


def test_a_free_form_object_keeps_every_nested_field() -> None:
    """An inline JSON Schema (a Flow's validate step) is preserved whole: a real API server
    refused its nested fields while the node also said `additionalProperties: true`."""
    schema = build_crd(kind_by_name("Flow"))["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    step = schema["properties"]["spec"]["properties"]["steps"]["items"]
    free_form = step["properties"]["validate"]["properties"]["schema"]
    assert free_form["x-kubernetes-preserve-unknown-fields"] is True
    assert "additionalProperties" not in free_form and "properties" not in free_form
