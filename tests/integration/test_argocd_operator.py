"""What the running operator does to resources Argo CD manages (kopf on the emulated API server).

Argo CD applies the press line with its tracking label and annotations on each resource. The
operator must then write only their status and its own bookkeeping (never a spec field, which
Argo CD would show as drift and revert), and none of Argo CD's marks may reach a child (Argo CD
would count the child as part of the Application, show it as drift and prune it).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from spine_operator.k8s import Kubernetes
from tests.support.processes import eventually

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PRESS_LINE = REPO / "examples" / "press-line"
GROUP = "spine.iiot.dev"
APP = "spine-press-line"
NAMESPACE = "plant-a"
PARENT_PLURALS = {"spines", "gateways", "twinmodels", "flows", "serviceregistrations"}
CHILD_PLURALS = [
    "statefulsets",
    "deployments",
    "services",
    "configmaps",
    "secrets",
    "networkpolicies",
]


def tracked(doc: dict[str, Any]) -> dict[str, Any]:
    """A resource as Argo CD applies it: tracking label and annotation, wave, apply record."""
    doc = copy.deepcopy(doc)
    metadata = doc["metadata"]
    metadata.setdefault("labels", {})["app.kubernetes.io/instance"] = APP
    metadata.setdefault("annotations", {}).update(
        {
            "argocd.argoproj.io/tracking-id": f"{APP}:{GROUP}/{doc['kind']}:"
            f"{NAMESPACE}/{metadata['name']}",
            "argocd.argoproj.io/sync-wave": "1",
            "kubectl.kubernetes.io/last-applied-configuration": '{"kind":"' + doc["kind"] + '"}',
        }
    )
    return doc


def parents() -> list[dict[str, Any]]:
    return [
        tracked(doc)
        for path in sorted(PRESS_LINE.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc["apiVersion"].startswith(GROUP)
    ]


def stored_objects(cluster: Any, plural: str) -> list[dict[str, Any]]:
    return [
        obj.raw
        for (resource, namespace, _), obj in list(cluster.objects.items())
        if resource.plural == plural and namespace == NAMESPACE and not obj.deleted
    ]


def resource_name(request: Any) -> str | None:
    return getattr(request.resource, "plural", None) if request.resource is not None else None


async def test_argocd_managed_resources_keep_their_spec_and_lend_no_mark_to_children(
    cluster, operator
) -> None:
    k8s = Kubernetes()
    created = parents()
    assert sorted({doc["kind"] for doc in created}) == [
        "Flow",
        "Gateway",
        "ServiceRegistration",
        "Spine",
        "TwinModel",
    ]
    for doc in created:
        await k8s.create(doc)

    def children_applied() -> bool:
        names = {obj["metadata"]["name"] for obj in stored_objects(cluster, "statefulsets")}
        return {"spine-broker", "spine-twin", "spine-gateway-press-line-1"} <= names

    await eventually(children_applied, 20, "the broker's, twin's and gateway's StatefulSets")

    # No spec written: every write of the operator to a parent is to its status, or changes
    # metadata only (kopf's finalizer and progress annotations).
    writes = [
        request
        for request in list(cluster)
        if request.method in ("PATCH", "PUT") and resource_name(request) in PARENT_PLURALS
    ]
    assert writes, "the operator wrote no status at all"
    for request in writes:
        if request.subresource == "status":
            continue
        body = request.data
        assert not (isinstance(body, dict) and "spec" in body), f"{request.method} {request.name}"
        assert not (
            isinstance(body, list)
            and any(str(op.get("path", "")).startswith("/spec") for op in body)
        ), f"{request.method} {request.name}: {body}"
    for doc in created:
        plural = {
            "Spine": "spines",
            "Gateway": "gateways",
            "TwinModel": "twinmodels",
            "Flow": "flows",
            "ServiceRegistration": "serviceregistrations",
        }[doc["kind"]]
        live = cluster.objects[f"{GROUP}/v1alpha1/{plural}", NAMESPACE, doc["metadata"]["name"]].raw
        assert live["spec"] == doc["spec"], doc["kind"]
        for key, value in doc["metadata"]["annotations"].items():
            assert live["metadata"]["annotations"][key] == value  # Argo CD's marks untouched

    # No Argo CD mark on any child, its pod template or its volume claims.
    children = [obj for plural in CHILD_PLURALS for obj in stored_objects(cluster, plural)]
    assert len(children) >= 8
    for child in children:
        spec = child.get("spec") or {}
        for metadata in [
            child["metadata"],
            (spec.get("template") or {}).get("metadata") or {},
            *[claim.get("metadata") or {} for claim in spec.get("volumeClaimTemplates") or []],
        ]:
            for mapping in (metadata.get("labels") or {}, metadata.get("annotations") or {}):
                for key, value in mapping.items():
                    where = f"{child['kind']}/{child['metadata']['name']}: {key}={value}"
                    assert not key.startswith("argocd.argoproj.io/"), where
                    assert key != "kubectl.kubernetes.io/last-applied-configuration", where
                    assert value != APP, where
