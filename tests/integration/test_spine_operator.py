"""The Spine kind through the real kopf runtime against the emulated API server.

No controllers run under the emulator, so a test that wants the broker ready patches the
StatefulSet's status the way the StatefulSet controller would.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import kmock
import pytest

from spine_operator.api.kinds import API_VERSION
from spine_operator.k8s import Kubernetes
from tests.support.crd_schema import validate_against_crd
from tests.support.processes import eventually

pytestmark = pytest.mark.integration

SPINES = "spine.iiot.dev/v1alpha1/spines"
STS = "apps/v1/statefulsets"


def spine(namespace: str, spec: dict[str, Any] | None = None, name: str = "default") -> dict:
    return {
        "apiVersion": API_VERSION,
        "kind": "Spine",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec or {},
    }


def stored(cluster: kmock.KubernetesEmulator, resource: str, namespace: str, name: str) -> dict:
    obj = cluster.objects[resource, namespace, name]
    if obj.deleted:
        raise KeyError(name)
    return obj.raw


def condition(cluster, namespace: str, type_: str, name: str = "default") -> dict:
    conditions = stored(cluster, SPINES, namespace, name)["status"]["conditions"]
    for item in conditions:
        if item["type"] == type_:
            return item
    raise KeyError(type_)


async def mark_statefulset_ready(
    k8s: Kubernetes, cluster, namespace: str, name: str = "spine-broker"
) -> None:
    """Act as the StatefulSet controller: one ready pod on the current revision."""
    sts = stored(cluster, STS, namespace, name)
    await k8s.patch_merge(
        "apps/v1",
        "StatefulSet",
        namespace,
        name,
        {
            "status": {
                "observedGeneration": sts["metadata"]["generation"],
                "replicas": 1,
                "readyReplicas": 1,
                "currentRevision": "r1",
                "updateRevision": "r1",
            }
        },
        subresource="status",
    )


async def test_spine_creates_broker_and_turns_ready(cluster, operator) -> None:
    k8s = Kubernetes()
    await k8s.create(spine("plant-a"))
    await eventually(
        lambda: (
            condition(cluster, "plant-a", "BrokerReady")
            and condition(cluster, "plant-a", "TwinReady")["reason"] == "TwinStarting"
        ),
        10,
        "BrokerReady, and TwinReady waiting for the twin's pod",
    )

    owner_uid = stored(cluster, SPINES, "plant-a", "default")["metadata"]["uid"]
    for resource, name in [
        (STS, "spine-broker"),
        ("v1/services", "spine-broker"),
        ("v1/services", "spine-broker-headless"),
        ("v1/configmaps", "spine-broker-config"),
        ("v1/secrets", "spine-broker-admin"),
        (STS, "spine-twin"),
        ("v1/services", "spine-twin"),
        ("v1/configmaps", "spine-twin-config"),
        ("v1/secrets", "spine-twin-tokens"),
        ("v1/secrets", "spine-mqtt-spine-twin"),
        ("networking.k8s.io/v1/networkpolicies", "spine-twin"),
    ]:
        child = stored(cluster, resource, "plant-a", name)
        refs = child["metadata"]["ownerReferences"]
        assert [(r["kind"], r["uid"], r["controller"]) for r in refs] == [
            ("Spine", owner_uid, True)
        ]
    secret = stored(cluster, "v1/secrets", "plant-a", "spine-broker-admin")
    values = secret.get("stringData") or {
        k: base64.b64decode(v).decode() for k, v in secret["data"].items()
    }
    assert values["username"] == "admin" and len(values["password"]) >= 32
    conf = stored(cluster, "v1/configmaps", "plant-a", "spine-broker-config")["data"]
    assert "allow_anonymous false" in conf["mosquitto.conf"]
    assert values["password"] not in str(stored(cluster, SPINES, "plant-a", "default"))

    # Children go out with server-side apply under our field manager.
    applies = [
        request
        for request in list(cluster)
        if request.method == "PATCH"
        and request.name == "spine-broker"
        and request.headers.get("Content-Type", "").startswith("application/apply-patch")
    ]
    assert applies and all(r.params.get("fieldManager") == "spine-operator" for r in applies)

    ready = condition(cluster, "plant-a", "Ready")
    assert ready["status"] == "False" and ready["reason"] == "Progressing"
    assert condition(cluster, "plant-a", "BrokerReady")["status"] == "False"

    await mark_statefulset_ready(k8s, cluster, "plant-a")
    await eventually(
        lambda: condition(cluster, "plant-a", "BrokerReady")["status"] == "True", 10, "broker"
    )
    assert condition(cluster, "plant-a", "Ready")["status"] == "False"  # the twin is not ready
    assert "twin" in condition(cluster, "plant-a", "Ready")["message"]
    await mark_statefulset_ready(k8s, cluster, "plant-a", "spine-twin")
    await eventually(
        lambda: condition(cluster, "plant-a", "Ready")["status"] == "True",
        10,
        "Ready=True after the broker pod is ready",
    )
    status = stored(cluster, SPINES, "plant-a", "default")["status"]
    assert status["broker"] == {
        "endpoint": "spine-broker.plant-a.svc:1883",
        "adminSecretName": "spine-broker-admin",
    }
    assert status["twin"] == {
        "api": "http://spine-twin.plant-a.svc:8080",
        "namespace": "plant_a",
        "writeTokenSecretName": "spine-twin-tokens",
        "things": 0,
    }
    assert status["observedGeneration"] == 1
    assert condition(cluster, "plant-a", "BrokerReady")["reason"] == "BrokerRunning"


async def test_spec_change_updates_children_and_rolls_the_broker(cluster, operator) -> None:
    k8s = Kubernetes()
    await k8s.create(spine("plant-a"))
    await eventually(lambda: stored(cluster, STS, "plant-a", "spine-broker"), 10, "the broker")
    checksum_key = "spine.iiot.dev/config-checksum"

    def checksum() -> str:
        sts = stored(cluster, STS, "plant-a", "spine-broker")
        return sts["spec"]["template"]["metadata"]["annotations"][checksum_key]

    before = checksum()
    await k8s.patch_merge(
        API_VERSION,
        "Spine",
        "plant-a",
        "default",
        {"spec": {"broker": {"limits": {"maxQueuedMessages": 5000}}}},
    )
    await eventually(
        lambda: (
            "max_queued_messages 5000\n"
            in stored(cluster, "v1/configmaps", "plant-a", "spine-broker-config")["data"][
                "mosquitto.conf"
            ]
        ),
        10,
        "the new limit in mosquitto.conf",
    )
    await eventually(lambda: checksum() != before, 10, "a new pod template checksum")
    await eventually(
        lambda: stored(cluster, SPINES, "plant-a", "default")["status"]["observedGeneration"] == 2,
        10,
        "observedGeneration 2",
    )


async def test_invalid_spec_is_reported_while_another_namespace_reconciles(cluster, operator):
    bad_spec = {"broker": {"persistence": {"size": "512Ki"}}}
    validate_against_crd("Spine", spine("bad", bad_spec))  # the API server would accept it
    k8s = Kubernetes()
    await k8s.create(spine("bad", bad_spec))
    await k8s.create(spine("good"))
    await eventually(
        lambda: condition(cluster, "bad", "Ready")["reason"] == "InvalidSpec",
        10,
        "InvalidSpec on the bad Spine",
    )
    message = condition(cluster, "bad", "Ready")["message"]
    assert "spec.broker.persistence.size" in message and "at least 1Mi" in message
    await eventually(lambda: stored(cluster, STS, "good", "spine-broker"), 10, "the good broker")
    with pytest.raises(KeyError):
        stored(cluster, STS, "bad", "spine-broker")


async def test_missing_tls_secret_waits_and_heals(cluster, operator) -> None:
    k8s = Kubernetes()
    await k8s.create(spine("plant-t", {"broker": {"tls": {"secretName": "broker-tls"}}}))
    await eventually(
        lambda: condition(cluster, "plant-t", "Ready")["reason"] == "DependencyNotFound",
        10,
        "DependencyNotFound",
    )
    assert "broker-tls" in condition(cluster, "plant-t", "Ready")["message"]
    await k8s.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": "broker-tls", "namespace": "plant-t"},
            "stringData": {"tls.crt": "CERT", "tls.key": "KEY"},
        }
    )
    await eventually(lambda: stored(cluster, STS, "plant-t", "spine-broker"), 10, "the broker")
    sts = stored(cluster, STS, "plant-t", "spine-broker")
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "broker-tls"
    services = stored(cluster, "v1/services", "plant-t", "spine-broker")
    assert {p["port"] for p in services["spec"]["ports"]} == {1883, 8883}
    await eventually(
        lambda: condition(cluster, "plant-t", "Ready")["reason"] == "Progressing",
        10,
        "Progressing once the Secret exists",
    )


async def test_own_admin_secret_is_used_and_its_rotation_rolls_the_broker(cluster, operator):
    k8s = Kubernetes()
    await k8s.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "my-admin", "namespace": "plant-o"},
            "stringData": {"username": "boss", "password": "first-password"},
        }
    )
    await k8s.create(spine("plant-o", {"broker": {"adminSecretName": "my-admin"}}))
    await eventually(lambda: stored(cluster, STS, "plant-o", "spine-broker"), 10, "the broker")
    with pytest.raises(KeyError):
        stored(cluster, "v1/secrets", "plant-o", "spine-broker-admin")  # nothing generated
    sts = stored(cluster, STS, "plant-o", "spine-broker")
    template = sts["spec"]["template"]
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    assert volumes["admin"]["secret"]["secretName"] == "my-admin"
    before = template["metadata"]["annotations"]["spine.iiot.dev/config-checksum"]
    await k8s.patch_merge(
        "v1", "Secret", "plant-o", "my-admin", {"stringData": {"password": "second-password"}}
    )
    await eventually(
        lambda: (
            stored(cluster, STS, "plant-o", "spine-broker")["spec"]["template"]["metadata"][
                "annotations"
            ]["spine.iiot.dev/config-checksum"]
            != before
        ),
        10,
        "the broker to roll after the Secret changed",
    )


async def test_larger_volume_expands_the_pvc_where_the_class_allows(cluster, operator) -> None:
    k8s = Kubernetes()
    for name, expandable in [("grows", True), ("fixed", False)]:
        await k8s.create(
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": name},
                "provisioner": "example.com/disk",
                "allowVolumeExpansion": expandable,
            }
        )
    for namespace, storage_class in [("plant-g", "grows"), ("plant-f", "fixed")]:
        # the PVC the StatefulSet controller would have created from the claim template
        await k8s.create(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "data-spine-broker-0", "namespace": namespace},
                "spec": {
                    "storageClassName": storage_class,
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
        )
        await k8s.create(
            spine(
                namespace,
                {"broker": {"persistence": {"size": "1Gi", "storageClassName": storage_class}}},
            )
        )
        await eventually(lambda ns=namespace: stored(cluster, STS, ns, "spine-broker"), 10, "sts")
        await k8s.patch_merge(
            API_VERSION,
            "Spine",
            namespace,
            "default",
            {"spec": {"broker": {"persistence": {"size": "2Gi"}}}},
        )

    def pvc_size(namespace: str) -> str:
        pvc = stored(cluster, "v1/persistentvolumeclaims", namespace, "data-spine-broker-0")
        return pvc["spec"]["resources"]["requests"]["storage"]

    await eventually(lambda: pvc_size("plant-g") == "2Gi", 10, "the PVC to be expanded")
    await eventually(
        lambda: (
            condition(cluster, "plant-f", "PersistenceSynced")["reason"]
            == "VolumeExpansionUnsupported"
        ),
        10,
        "the expansion refusal",
    )
    assert pvc_size("plant-f") == "1Gi"
    # the claim template is immutable and kept as it was
    sts = stored(cluster, STS, "plant-g", "spine-broker")
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"


async def test_second_spine_in_a_namespace_is_refused(cluster, operator) -> None:
    k8s = Kubernetes()
    await k8s.create(spine("plant-d"))
    await eventually(lambda: stored(cluster, STS, "plant-d", "spine-broker"), 10, "the broker")
    await k8s.create(spine("plant-d", name="second"))
    await eventually(
        lambda: condition(cluster, "plant-d", "Ready", "second")["reason"] == "DuplicateSpine",
        10,
        "DuplicateSpine on the second Spine",
    )
    assert "default" in condition(cluster, "plant-d", "Ready", "second")["message"]
    first = stored(cluster, STS, "plant-d", "spine-broker")
    assert first["metadata"]["ownerReferences"][0]["name"] == "default"


async def test_spine_run_serves_health_and_metrics(cluster, tmp_path) -> None:
    """`spine run` as deployed: kopf's liveness endpoint and the Prometheus metrics."""
    import os
    import sys

    import httpx

    from tests.support.processes import ManagedProcess, free_port

    health_port, metrics_port = free_port(), free_port()
    process = ManagedProcess(
        [
            sys.executable,
            "-m",
            "spine_operator.cli",
            "run",
            "--all-namespaces",
            "--health-port",
            str(health_port),
            "--metrics-port",
            str(metrics_port),
        ],
        tmp_path / "operator.log",
        env={"KUBECONFIG": os.environ["KUBECONFIG"]},
    ).start()
    try:
        k8s = Kubernetes()
        await k8s.create(spine("plant-m"))
        await eventually(
            lambda: condition(cluster, "plant-m", "BrokerReady"),
            30,
            "the operator process to reconcile",
        )
        async with httpx.AsyncClient(timeout=5) as client:
            health = await client.get(f"http://127.0.0.1:{health_port}/healthz")
            assert health.status_code == 200
            metrics = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        assert 'spine_reconciliations_total{kind="Spine",result="success"}' in metrics
        assert "spine_reconcile_duration_seconds_bucket" in metrics
        assert 'spine_resources{kind="Spine",namespace="plant-m",ready="false"} 1.0' in metrics
    finally:
        # stop from a thread: this loop serves the emulator the stopping operator still calls
        code = await asyncio.to_thread(process.stop)
        assert code == 0, process.log()[-2000:]
