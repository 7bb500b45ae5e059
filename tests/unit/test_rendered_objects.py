"""Every object every kind's plan renders, checked the same way: strict Kubernetes schemas, and
the pod security and labels DESIGN.md promises. Parametrized over the kinds, so a new kind's plan
is held to it by adding its example."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from spine_operator import labels
from spine_operator.environment import Environment
from spine_operator.render import load_resources, render

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ENV = Environment.cluster()

# kind -> the example files that render it (with what it needs rendered alongside)
CASES = {
    "Spine": [EXAMPLES / "spine.yaml"],
    "Spine (tuned)": [EXAMPLES / "spine-tuned.yaml"],
    "TwinModel": [
        EXAMPLES / "press-line" / "spine.yaml",
        EXAMPLES / "press-line" / "twinmodel.yaml",
    ],
    "Gateway": [EXAMPLES / "press-line"],
}


def rendered(case: str) -> list[dict[str, Any]]:
    return render(load_resources(CASES[case]), ENV)


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (obj["metadata"]["name"], obj["spec"]["template"]["spec"])
        for obj in objects
        if obj["kind"] in ("StatefulSet", "Deployment")
    ]


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_object_passes_strict_schema_validation(case: str) -> None:
    objects = rendered(case)
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, "1.30", strict=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_object_carries_our_labels_and_every_pod_is_locked_down(case: str) -> None:
    objects = rendered(case)
    for obj in objects:
        object_labels = obj["metadata"]["labels"]
        assert object_labels[labels.PART_OF] == "spine", obj["metadata"]["name"]
        assert object_labels[labels.MANAGED_BY] == "spine-operator", obj["metadata"]["name"]
    for name, pod in pod_specs(objects):
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod.get("initContainers", []) + pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, (name, container["name"])
            assert security["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert security["capabilities"] == {"drop": ["ALL"]}, (name, container["name"])
            assert container["resources"], (name, container["name"])
    for obj in objects:
        if obj["kind"] == "Secret":
            assert "stringData" not in obj and "data" not in obj  # never a value offline
