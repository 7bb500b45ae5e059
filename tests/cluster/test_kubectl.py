"""What a platform team meets on the first `kubectl apply`, against a real kube-apiserver.

The install (`kubectl apply -k manifests/`) and every example are accepted; hostile or malformed
resources the unit tests reject are refused by the API server itself (the CRDs carry the bounds,
patterns and CEL rules); `kubectl get`, `explain` and `wait` print what the README shows.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.apiserver import (
    REPO,
    ControlPlane,
    OperatorProcess,
    condition,
    custom_path,
    spine_manifest,
)
from tests.support.processes import wait_until
from tests.unit import test_build_gateway, test_crds

pytestmark = pytest.mark.integration

EXAMPLES = REPO / "examples"


def parametrized(test: Any) -> list[Any]:
    """The cases a unit test is parametrized with: one source for both tiers."""
    [mark] = [mark for mark in test.pytestmark if mark.name == "parametrize"]
    return list(mark.args[1])


def example_files() -> list[Path]:
    """Every example, the files holding Namespaces first (as the README applies them). The
    Argo CD Applications of examples/argocd/ need Argo CD's own CRDs: tests/unit checks them."""
    files = [path for path in sorted(EXAMPLES.rglob("*.yaml")) if "argocd" not in path.parts]
    return sorted(files, key=lambda path: "kind: Namespace" not in path.read_text())


def test_the_install_is_accepted_and_serves_every_kind(control_plane: ControlPlane) -> None:
    # The fixture installed it; applying it again is accepted and changes nothing.
    again = control_plane.kubectl("apply", "-k", "manifests/").stdout.splitlines()
    assert again and all(line.endswith(" unchanged") for line in again), again
    crds = json.loads(control_plane.kubectl("get", "crd", "-o", "json").stdout)["items"]
    names = {crd["metadata"]["name"] for crd in crds}
    assert {
        "spines.spine.iiot.dev",
        "gateways.spine.iiot.dev",
        "twinmodels.spine.iiot.dev",
    } <= names
    for crd in crds:
        assert condition(crd, "Established")["status"] == "True", crd["metadata"]["name"]
        assert condition(crd, "NonStructuralSchema") is None, crd["metadata"]["name"]
    allowed = control_plane.kubectl(
        "auth", "can-i", "patch", "statefulsets.apps",
        "--as=system:serviceaccount:spine-system:spine-operator", "-n", "any",
    ).stdout.strip()  # fmt: skip
    assert allowed == "yes"


def test_every_example_is_accepted_and_reconciled(
    control_plane: ControlPlane, operator: OperatorProcess
) -> None:
    documents = [
        doc
        for path in example_files()
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc["apiVersion"].startswith("spine.iiot.dev/")
    ]
    # examples/spine-tuned.yaml names a namespace (plant-b) it does not create: the user
    # creates it first, as `kubectl create namespace` would.
    declared = {
        doc["metadata"]["name"]
        for path in example_files()
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc["kind"] == "Namespace"
    }
    for namespace in sorted({d["metadata"]["namespace"] for d in documents} - declared):
        control_plane.kubectl("create", "namespace", namespace)
    for path in example_files():
        applied = control_plane.kubectl("apply", "-f", str(path.relative_to(REPO)))
        assert (
            "created" in applied.stdout
            or "configured" in applied.stdout
            or ("unchanged" in applied.stdout)
        ), applied.stdout
    for doc in documents:
        plural = doc["kind"].lower() + "s"
        path = custom_path(doc["metadata"]["namespace"], plural, doc["metadata"]["name"])
        stored = control_plane.api.get(path)
        assert stored is not None
        # Nothing the example says was pruned: the schema knows every field it uses.
        assert _subset(doc["spec"], stored["spec"]), f"{path}: a field of the example was pruned"
    # The operator reconciles the Spine of plant-a: the broker and the twin as StatefulSets.
    for name in ("spine-broker", "spine-twin"):
        control_plane.mark_statefulset_ready("plant-a", name)
    waited = control_plane.kubectl(
        "-n", "plant-a", "wait", "spine/default", "--for=condition=Ready", "--timeout=60s"
    )
    assert "condition met" in waited.stdout

    spines = control_plane.kubectl("-n", "plant-a", "get", "spines").stdout.splitlines()
    assert spines[0].split() == ["NAME", "READY", "BROKER", "AGE"]
    assert spines[1].split()[:3] == ["default", "True", "spine-broker.plant-a.svc:1883"]

    everything = control_plane.kubectl("-n", "plant-a", "get", "iiot").stdout
    for kind_and_name in ("spine.spine.iiot.dev/default", "gateway.spine.iiot.dev/press-line-1",
                          "twinmodel.spine.iiot.dev/press"):  # fmt: skip
        assert kind_and_name in everything, everything

    gateways = control_plane.kubectl("-n", "plant-a", "get", "iiotgw").stdout.splitlines()
    assert gateways[0].split() == ["NAME", "READY", "CONNECTED", "TAGS", "OK", "BUFFERED", "AGE"]
    assert gateways[1].split()[0] == "press-line-1"
    wide = control_plane.kubectl("-n", "plant-a", "get", "iiotgw", "-o", "wide").stdout
    assert "REASON" in wide.splitlines()[0]


def _subset(small: Any, big: Any) -> bool:
    if isinstance(small, dict):
        return isinstance(big, dict) and all(
            key in big and _subset(value, big[key]) for key, value in small.items()
        )
    if isinstance(small, list):
        return (
            isinstance(big, list)
            and len(small) == len(big)
            and all(_subset(a, b) for a, b in zip(small, big, strict=True))
        )
    return small == big


def test_kubectl_explain_prints_the_field_descriptions(control_plane: ControlPlane) -> None:
    explained = control_plane.kubectl("explain", "gateway.spec.tags").stdout
    assert "GROUP:      spine.iiot.dev" in explained
    assert "FIELD: tags <[]Object>" in explained
    for field in ("address", "connection", "property", "deadband", "writable"):
        assert f"\n  {field}\t" in explained, field
    broker = control_plane.kubectl("explain", "spine.spec.broker.persistence").stdout
    assert "retainOnDelete" in broker and "DESCRIPTION" in broker


def _refused(control_plane: ControlPlane, resource: dict[str, Any]) -> str:
    """Apply `resource` as a user would; return the API server's refusal (fails if accepted)."""
    result = control_plane.kubectl(
        "apply", "--server-side", "--dry-run=server", "-f", "-",
        stdin=json.dumps(resource), check=False,
    )  # fmt: skip
    assert result.returncode != 0, f"the API server accepted {json.dumps(resource)[:300]}"
    return result.stderr


@pytest.mark.parametrize(
    "spec", parametrized(test_crds.test_hostile_or_malformed_spines_are_rejected_by_the_schema)
)
def test_hostile_spines_are_refused_by_the_api_server(
    control_plane: ControlPlane, namespace: str, spec: dict[str, Any]
) -> None:
    message = _refused(control_plane, spine_manifest(namespace, spec))
    assert _field_path(spec, "spec") in message, message  # it names the field


def _field_path(node: dict[str, Any], prefix: str) -> str:
    """The path down to the one value a hostile spec sets (each level has a single key)."""
    [(key, value)] = node.items()
    if isinstance(value, dict) and value:
        return _field_path(value, f"{prefix}.{key}")
    return f"{prefix}.{key}"


def _example_gateway(namespace: str) -> dict[str, Any]:
    gateway = copy.deepcopy(test_build_gateway.example())
    gateway["metadata"]["namespace"] = namespace
    return gateway


@pytest.mark.parametrize(
    "connection",
    parametrized(
        test_build_gateway.test_the_crd_refuses_a_connection_without_exactly_one_valid_protocol
    ),
)
def test_gateways_without_exactly_one_valid_protocol_are_refused(
    control_plane: ControlPlane, namespace: str, connection: dict[str, Any]
) -> None:
    gateway = _example_gateway(namespace)
    gateway["spec"]["connections"] = [connection]
    gateway["spec"]["tags"] = []
    message = _refused(control_plane, gateway)
    assert "spec.connections[0]" in message, message


def test_a_tag_address_cannot_carry_a_new_line(control_plane: ControlPlane, namespace: str) -> None:
    gateway = _example_gateway(namespace)
    gateway["spec"]["tags"][0]["address"] = "holding:0\nmqtt: {host: evil}"
    message = _refused(control_plane, gateway)
    assert "spec.tags[0].address" in message, message


def test_the_examples_pass_the_same_check(control_plane: ControlPlane, namespace: str) -> None:
    """The refusals above are the schema's, not the dry run's: a valid Gateway passes it."""
    result = control_plane.kubectl(
        "apply", "--server-side", "--dry-run=server", "-f", "-",
        stdin=json.dumps(_example_gateway(namespace)),
    )  # fmt: skip
    assert "serverside-applied (server dry run)" in result.stdout


def test_kubectl_wait_sees_ready_flip_only_after_the_workloads_are_ready(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    control_plane.kubectl("apply", "-f", "-", stdin=json.dumps(spine_manifest(namespace)))
    path = custom_path(namespace, "spines", "default")
    progressing = wait_until(
        lambda: (
            (condition(control_plane.api.get(path), "Ready") or {}).get("reason") == "Progressing"
        ),
        60,
        "Ready=False, reason Progressing",
    )
    assert progressing
    not_yet = control_plane.kubectl(
        "-n", namespace, "wait", "spine/default", "--for=condition=Ready", "--timeout=1s",
        check=False,
    )  # fmt: skip
    assert not_yet.returncode != 0
    control_plane.mark_statefulset_ready(namespace, "spine-broker")
    control_plane.mark_statefulset_ready(namespace, "spine-twin")
    waited = control_plane.kubectl(
        "-n", namespace, "wait", "spine/default", "--for=condition=Ready", "--timeout=60s"
    )
    assert "condition met" in waited.stdout
