"""The operator's writes as a real API server sees them: server-side apply field ownership, the
status subresource and observedGeneration, status fields that survive the schema's pruning,
and cleanup through the real garbage collector with PVCs that follow `retainOnDelete`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.apiserver import (
    ControlPlane,
    OperatorProcess,
    condition,
    custom_path,
    settled,
    spine_manifest,
)
from tests.support.processes import wait_until

pytestmark = pytest.mark.integration

FIELD_MANAGER = "spine-operator"
# What one Spine creates (README, "What it creates"), by API path and name.
CHILDREN = [
    ("/apis/apps/v1", "statefulsets", "spine-broker"),
    ("/apis/apps/v1", "statefulsets", "spine-twin"),
    ("/api/v1", "services", "spine-broker"),
    ("/api/v1", "services", "spine-broker-headless"),
    ("/api/v1", "services", "spine-twin"),
    ("/api/v1", "configmaps", "spine-broker-config"),
    ("/api/v1", "configmaps", "spine-twin-config"),
    ("/api/v1", "secrets", "spine-broker-admin"),
    ("/api/v1", "secrets", "spine-twin-tokens"),
    ("/apis/networking.k8s.io/v1", "networkpolicies", "spine-twin"),
]


def child_path(namespace: str, prefix: str, plural: str, name: str) -> str:
    return f"{prefix}/namespaces/{namespace}/{plural}/{name}"


def ready_spine(
    plane: ControlPlane, namespace: str, spec: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Apply a Spine as a user would (kubectl, server-side) and wait until it is Ready."""
    plane.kubectl(
        "apply", "--server-side", "-f", "-", stdin=json.dumps(spine_manifest(namespace, spec))
    )
    plane.mark_statefulset_ready(namespace, "spine-broker")
    plane.mark_statefulset_ready(namespace, "spine-twin")
    path = custom_path(namespace, "spines", "default")
    return wait_until(
        lambda: (spine := plane.api.get(path)) and settled(spine) and spine,
        60,
        f"Spine {namespace}/default Ready and handled",
    )


def fields_of(entry: dict[str, Any]) -> set[str]:
    """The field paths a managedFields entry owns, as dotted strings."""
    found: set[str] = set()

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if key == ".":
                continue
            path = f"{prefix}.{key}" if prefix else key
            found.add(path)
            if isinstance(value, dict):
                walk(value, path)

    walk(entry.get("fieldsV1") or {}, "")
    return found


def test_the_operator_owns_only_what_it_applies(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    ready_spine(control_plane, namespace)
    for prefix, plural, name in CHILDREN:
        obj = control_plane.api.get(child_path(namespace, prefix, plural, name))
        assert obj is not None, f"{plural}/{name} was not created"
        ours = [e for e in obj["metadata"]["managedFields"] if e["manager"] == FIELD_MANAGER]
        assert ours, f"{plural}/{name}: no field of the operator's manager"
        # Server-side apply everywhere, except the generated Secrets: created once, never
        # applied again (an apply would rewrite their data).
        operations = {entry["operation"] for entry in ours}
        assert operations == ({"Update"} if plural == "secrets" else {"Apply"}), (plural, name)
        owned = set().union(*(fields_of(entry) for entry in ours))
        assert not any(path.startswith("f:status") for path in owned), (plural, name)
        assert "f:metadata.f:ownerReferences" in owned, (plural, name)
    # Fields the API server defaults are not claimed: the operator did not send them.
    statefulset_path = child_path(namespace, "/apis/apps/v1", "statefulsets", "spine-broker")
    statefulset = control_plane.api.get(statefulset_path)
    [applied] = [e for e in statefulset["metadata"]["managedFields"]
                 if e["manager"] == FIELD_MANAGER]  # fmt: skip
    assert "revisionHistoryLimit" in statefulset["spec"]
    assert "f:spec.f:revisionHistoryLimit" not in fields_of(applied)
    # Its status belongs to the StatefulSet controller (or this test playing it).
    status_writers = {e["manager"] for e in statefulset["metadata"]["managedFields"]
                      if e.get("subresource") == "status"}  # fmt: skip
    assert status_writers and FIELD_MANAGER not in status_writers

    # What someone else sets on a child stays theirs through the operator's next apply.
    control_plane.kubectl("-n", namespace, "annotate", "statefulset", "spine-broker", "team=line-1")
    spine_path = custom_path(namespace, "spines", "default")
    control_plane.api.patch(spine_path, {"spec": {"broker": {"autosaveInterval": 30}}})
    wait_until(
        lambda: control_plane.api.get(spine_path)["status"].get("observedGeneration") == 2,
        30,
        "the change reconciled",
    )
    statefulset = control_plane.api.get(statefulset_path)
    assert statefulset["metadata"]["annotations"]["team"] == "line-1"
    owners = {e["manager"] for e in statefulset["metadata"]["managedFields"]
              if "f:team" in str(e.get("fieldsV1"))}  # fmt: skip
    assert owners == {"kubectl-annotate"}


def test_a_users_reapply_shows_no_conflict_no_drift_and_no_new_generation(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    spine = ready_spine(control_plane, namespace)
    manifest = json.dumps(spine_manifest(namespace))
    before = {
        (plural, name): control_plane.api.get(child_path(namespace, prefix, plural, name))
        for prefix, plural, name in CHILDREN
    }
    # kubectl's server-side apply without --force-conflicts: a conflict would fail it; then
    # drift as Argo CD sees it: a server-side diff of the same manifest finds nothing.
    control_plane.kubectl("apply", "--server-side", "-f", "-", stdin=manifest)
    diff = control_plane.kubectl("diff", "--server-side", "-f", "-", stdin=manifest, check=False)
    assert diff.returncode == 0, diff.stdout + diff.stderr
    # Client-side apply and diff, as many users and older Argo CD do.
    control_plane.kubectl("apply", "-f", "-", stdin=manifest)
    diff = control_plane.kubectl("diff", "-f", "-", stdin=manifest, check=False)
    assert diff.returncode == 0, diff.stdout + diff.stderr
    after = control_plane.api.get(custom_path(namespace, "spines", "default"))
    assert after["metadata"]["generation"] == spine["metadata"]["generation"] == 1
    # Neither the re-apply nor the operator wrote to the children.
    for (plural, name), obj in before.items():
        prefix = next(p for p, pl, n in CHILDREN if (pl, n) == (plural, name))
        now = control_plane.api.get(child_path(namespace, prefix, plural, name))
        assert now["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"], (
            f"{plural}/{name} was written"
        )


def test_status_subresource_observed_generation_and_no_pruned_field(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    spine = ready_spine(control_plane, namespace)
    status = spine["status"]
    # Every field the README lists survives the API server's pruning.
    assert status["observedGeneration"] == 1
    assert status["broker"] == {
        "endpoint": f"spine-broker.{namespace}.svc:1883",
        "adminSecretName": "spine-broker-admin",
    }
    assert status["twin"] == {
        "api": f"http://spine-twin.{namespace}.svc:8080",
        "namespace": namespace.replace("-", "_"),
        "writeTokenSecretName": "spine-twin-tokens",
        "things": 0,
    }
    types = {c["type"] for c in status["conditions"]}
    assert {"Ready", "BrokerReady", "TwinReady", "Progressing", "PersistenceSynced"} <= types
    for found in status["conditions"]:
        assert set(found) == {
            "type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"
        }, found  # fmt: skip
        assert found["observedGeneration"] == 1
    # The operator's status writes never bump the generation.
    assert spine["metadata"]["generation"] == 1

    # A user cannot write status through the main resource: the subresource keeps it.
    path = custom_path(namespace, "spines", "default")
    control_plane.api.patch(path, {"status": {"observedGeneration": 99}})
    assert control_plane.api.get(path)["status"]["observedGeneration"] == 1

    # A spec change: generation 2, Ready reported for 2 only once the operator has seen it.
    control_plane.api.patch(path, {"spec": {"broker": {"autosaveInterval": 30}}})
    changed = wait_until(
        lambda: (s := control_plane.api.get(path))["status"].get("observedGeneration") == 2 and s,
        30,
        "observedGeneration 2",
    )
    assert changed["metadata"]["generation"] == 2
    # The broker's pod template changed: its StatefulSet is not ready until rolled again.
    control_plane.mark_statefulset_ready(namespace, "spine-broker")
    ready = wait_until(
        lambda: (
            (s := control_plane.api.get(path))
            and (c := condition(s, "Ready"))
            and c["status"] == "True"
            and c["observedGeneration"] == 2
            and s
        ),
        60,
        "Ready for generation 2",
    )
    assert ready["status"]["observedGeneration"] == 2
    waited = control_plane.kubectl(
        "-n", namespace, "wait", "spine/default", "--for=condition=Ready", "--timeout=10s"
    )
    assert "condition met" in waited.stdout


def _gone(plane: ControlPlane, path: str) -> bool:
    return plane.api.get(path) is None


@pytest.mark.parametrize("retain", [True, False])
def test_deleting_a_spine_removes_its_children_and_pvcs_follow_retain_on_delete(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, retain: bool
) -> None:
    if control_plane.controller_manager is None:
        pytest.skip("kube-controller-manager was not built: no garbage collector runs")
    persistence = {"persistence": {"retainOnDelete": retain}}
    ready_spine(control_plane, namespace, {"broker": persistence, "twin": persistence})
    pvcs = [f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/data-{name}-0"
            for name in ("spine-broker", "spine-twin")]  # fmt: skip
    for pvc in pvcs:  # made by the StatefulSet controller from the claim templates
        wait_until(lambda pvc=pvc: control_plane.api.get(pvc), 30, pvc)
    deleted = control_plane.kubectl("-n", namespace, "delete", "spine", "default", "--wait=true")
    assert "deleted" in deleted.stdout
    for prefix, plural, name in CHILDREN:
        path = child_path(namespace, prefix, plural, name)
        wait_until(lambda path=path: _gone(control_plane, path), 60, f"{path} garbage-collected")
    wait_until(
        lambda: not control_plane.api.get(f"/api/v1/namespaces/{namespace}/pods")["items"],
        60,
        "the StatefulSets' pods removed",
    )
    for pvc in pvcs:
        if retain:
            assert control_plane.api.get(pvc) is not None, f"{pvc} was not retained"
        else:
            wait_until(lambda pvc=pvc: _gone(control_plane, pvc), 60, f"{pvc} deleted")


def test_the_flow_engine_statefulset_of_two_replicas_applies_and_scales(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    """The real API server accepts the engine's StatefulSet (Parallel, no claims, the pod name
    through the downward API) and its headless Service, and a new replica count re-applies."""
    ready_spine(control_plane, namespace, {"flowEngine": {"replicas": 2}})
    flow = {
        "apiVersion": "spine.iiot.dev/v1alpha1",
        "kind": "Flow",
        "metadata": {"name": "relay", "namespace": namespace},
        "spec": {
            "source": {"mqtt": {"topic": "in/relay"}},
            "sinks": [{"mqtt": {"topic": "spine/flows/relay/out"}}],
        },
    }
    control_plane.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(flow))
    path = child_path(namespace, "/apis/apps/v1", "statefulsets", "spine-flow-engine")
    statefulset = wait_until(lambda: control_plane.api.get(path), 60, "the engine's StatefulSet")
    assert statefulset["spec"]["replicas"] == 2
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    assert statefulset["spec"]["serviceName"] == "spine-flow-engine-pods"
    pods = control_plane.api.get(
        child_path(namespace, "/api/v1", "services", "spine-flow-engine-pods")
    )
    assert pods is not None and pods["spec"]["clusterIP"] == "None"
    for secret in ("spine-mqtt-flow-relay", "spine-mqtt-flow-relay.1"):
        assert control_plane.api.get(child_path(namespace, "/api/v1", "secrets", secret))
    spine_path = custom_path(namespace, "spines", "default")
    control_plane.api.patch(spine_path, {"spec": {"flowEngine": {"replicas": 3}}})
    wait_until(lambda: control_plane.api.get(path)["spec"]["replicas"] == 3, 60, "three replicas")
    assert control_plane.api.get(
        child_path(namespace, "/api/v1", "secrets", "spine-mqtt-flow-relay.2")
    )
