"""Restarts against a real API server: the operator killed mid-reconcile, the operator restarted
on a settled cluster, and the API server killed and back. Each converges with no duplicate
child, no regenerated Secret and, where nothing changed, no write at all.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.apiserver import (
    ControlPlane,
    OperatorProcess,
    custom_path,
    settled,
    spine_manifest,
)
from tests.support.processes import wait_until

pytestmark = pytest.mark.integration

SPINE_KINDS = ["spines"]
WATCHED = [
    ("/apis/apps/v1", "statefulsets"),
    ("/api/v1", "services"),
    ("/api/v1", "configmaps"),
    ("/api/v1", "secrets"),
    ("/apis/networking.k8s.io/v1", "networkpolicies"),
]


@pytest.fixture
def operators(control_plane: ControlPlane, tmp_path: Path) -> Iterator[list[OperatorProcess]]:
    """Operators this test starts (function-scoped here: the tests kill and restart them)."""
    started: list[OperatorProcess] = []
    yield started
    for running in started:
        running.stop()


def start_operator(plane: ControlPlane, operators: list[OperatorProcess], folder: Path):
    running = OperatorProcess(plane, folder / f"operator-{len(operators)}").start()
    operators.append(running)
    return running


def snapshot(plane: ControlPlane, namespace: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Every object of the namespace the operator writes: (plural, name) -> metadata."""
    found = {}
    for prefix, plural in [*WATCHED, ("/apis/spine.iiot.dev/v1alpha1", "spines")]:
        listing = plane.api.get(f"{prefix}/namespaces/{namespace}/{plural}")
        for item in listing["items"]:
            if plural == "secrets" and item.get("type", "").startswith("kubernetes.io/service"):
                continue
            found[(plural, item["metadata"]["name"])] = {
                "uid": item["metadata"]["uid"],
                "resourceVersion": item["metadata"]["resourceVersion"],
                "data": item.get("data"),
                "status": item.get("status"),  # so a failure shows what was written
            }
    return found


def ready(plane: ControlPlane, namespace: str) -> dict[str, Any]:
    path = custom_path(namespace, "spines", "default")
    return wait_until(
        lambda: (spine := plane.api.get(path)) and settled(spine) and spine,
        90,
        f"Spine {namespace}/default Ready and handled",
    )


def apply_spine(plane: ControlPlane, namespace: str) -> None:
    plane.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(spine_manifest(namespace)))


def spine_reconciles(running: OperatorProcess) -> float:
    return running.metric("spine_reconciliations_total", kind="Spine")


def test_an_operator_killed_mid_reconcile_converges_without_duplicates_or_new_secrets(
    control_plane: ControlPlane, operators: list[OperatorProcess], namespace: str, tmp_path: Path
) -> None:
    first = start_operator(control_plane, operators, tmp_path)
    apply_spine(control_plane, namespace)
    admin = f"/api/v1/namespaces/{namespace}/secrets/spine-broker-admin"
    secret = wait_until(lambda: control_plane.api.get(admin), 60, "the generated admin Secret")
    first.kill()  # SIGKILL: mid-reconcile, the StatefulSets are not ready yet
    midway = snapshot(control_plane, namespace)
    start_operator(control_plane, operators, tmp_path)
    control_plane.mark_statefulset_ready(namespace, "spine-broker")
    control_plane.mark_statefulset_ready(namespace, "spine-twin")
    ready(control_plane, namespace)
    after = snapshot(control_plane, namespace)
    again = control_plane.api.get(admin)
    assert (again["metadata"]["uid"], again["data"]) == (
        secret["metadata"]["uid"],
        secret["data"],
    ), "the admin Secret was regenerated"
    for key, seen in midway.items():  # every object kept its identity and its Secret data
        assert after[key]["uid"] == seen["uid"], f"{key} was recreated"
        if key[0] == "secrets":
            assert after[key]["data"] == seen["data"], f"{key} got new values"
    kinds = [plural for plural, _ in after]
    assert kinds.count("statefulsets") == 2 and kinds.count("spines") == 1


def test_an_operator_restart_on_a_settled_cluster_writes_nothing(
    control_plane: ControlPlane, operators: list[OperatorProcess], namespace: str, tmp_path: Path
) -> None:
    first = start_operator(control_plane, operators, tmp_path)
    apply_spine(control_plane, namespace)
    control_plane.mark_statefulset_ready(namespace, "spine-broker")
    control_plane.mark_statefulset_ready(namespace, "spine-twin")
    ready(control_plane, namespace)
    first.stop()
    before = snapshot(control_plane, namespace)
    second = start_operator(control_plane, operators, tmp_path)
    # The resumed reconcile of every Spine on the cluster (this test's among them) has run...
    spines = len(control_plane.api.get("/apis/spine.iiot.dev/v1alpha1/spines")["items"])
    wait_until(lambda: spine_reconciles(second) >= spines, 60, "the resumed reconciles")
    # Its status refresh follows the count: watch the namespace for a while; nothing may change.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        now = snapshot(control_plane, namespace)
        changed = [key for key, seen in before.items() if now.get(key) != seen]
        assert not changed, "an unchanged resource was written on resume: " + "; ".join(
            f"{key}: {before[key]} -> {now.get(key)}" for key in changed
        )
        time.sleep(0.2)


def test_an_api_server_restart_converges(
    control_plane: ControlPlane, operators: list[OperatorProcess], namespace: str, tmp_path: Path
) -> None:
    running = start_operator(control_plane, operators, tmp_path)
    apply_spine(control_plane, namespace)
    admin = f"/api/v1/namespaces/{namespace}/secrets/spine-broker-admin"
    secret = wait_until(lambda: control_plane.api.get(admin), 60, "the generated admin Secret")
    control_plane.restart_apiserver(down_for=30)  # the issue: "goes away for 30 s"
    assert running.process.running(), "the operator exited while the API server was away"
    # Work that arrives after the restart is done: the operator's watches came back.
    control_plane.mark_statefulset_ready(namespace, "spine-broker")
    control_plane.mark_statefulset_ready(namespace, "spine-twin")
    ready(control_plane, namespace)
    again = control_plane.api.get(admin)
    assert again["metadata"]["uid"] == secret["metadata"]["uid"]
    assert again["data"] == secret["data"]
    assert running.process.running()
