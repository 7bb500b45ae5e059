"""What `spine render` prints is what the operator applies: the press line's objects, per kind.

The operator runs on the emulator with the example's Spine, TwinModel and Gateway; `spine render`
renders the same files offline. Every object either side has must be on the other, equal but for
what only a cluster knows: server-owned metadata, owner references, generated Secret values, and
the pod checksums that digest those values.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kmock
import pytest

from spine_operator import labels
from spine_operator.context import CONTEXT
from spine_operator.k8s import RESOURCE_TYPES, Kubernetes
from spine_operator.render import load_config_maps, load_resources, render
from tests.support.processes import eventually

pytestmark = pytest.mark.integration

PRESS_LINE = Path(__file__).resolve().parents[2] / "examples" / "press-line"
CLUSTER_ONLY = ("uid", "resourceVersion", "generation", "creationTimestamp", "ownerReferences")


def comparable(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without what only a cluster knows."""
    obj = copy.deepcopy(obj)
    obj.pop("status", None)
    metadata = obj["metadata"]
    for key in CLUSTER_ONLY:
        metadata.pop(key, None)
    if metadata.get("annotations", {}).get(labels.GENERATED):
        metadata.pop("annotations")  # "true" once applied, "(data generated at apply time)" here
        obj.pop("stringData", None)
        obj.pop("data", None)
    template = obj.get("spec", {}).get("template", {}).get("metadata", {})
    template.get("annotations", {}).pop(labels.CONFIG_CHECKSUM, None)
    return obj


# Created by the test as a user would: the registration's spec ConfigMap and its Service.
USERS_OBJECTS = {("ConfigMap", "maintenance-events-spec"), ("Service", "maintenance-planner")}


def applied(cluster: kmock.KubernetesEmulator, namespace: str) -> dict[tuple[str, str], dict]:
    """Every object of the operator's kinds in the namespace, by (kind, name), but the user's."""
    found = {}
    for (api_version, kind), resource in RESOURCE_TYPES.items():
        if not resource.namespaced or api_version.startswith(labels.PREFIX):
            continue
        key = f"{api_version}/{resource.plural}"
        for (res, ns, name), obj in cluster.objects.items():
            if str(res) == str(kmock.resource(key)) and ns == namespace and not obj.deleted:
                found[(kind, name)] = obj.raw
    for user_object in USERS_OBJECTS:
        found.pop(user_object, None)
    return found


async def test_spine_render_prints_what_the_operator_applies(cluster, operator) -> None:
    k8s = Kubernetes()
    resources = load_resources([PRESS_LINE])
    config_maps = load_config_maps([PRESS_LINE])  # the ServiceRegistration's AsyncAPI spec
    namespace = "plant-a"
    for config_map in config_maps.values():
        await k8s.create(copy.deepcopy(config_map))
    # The maintenance planner the example registers: the user's application, not the example's.
    planner = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "maintenance-planner", "namespace": namespace},
        "spec": {"ports": [{"port": 8080}]},
    }
    await k8s.create(planner)
    for resource in resources:
        await k8s.create(copy.deepcopy(resource.body))
    rendered = {
        (obj["kind"], obj["metadata"]["name"]): obj
        for obj in render(resources, CONTEXT.environment, config_maps)
    }
    # Every object rendered gets applied, and nothing else: wait for the reconciles to settle.
    try:
        await eventually(
            lambda: set(applied(cluster, namespace)) == set(rendered), 15, "the same objects"
        )
    except AssertionError:
        live = set(applied(cluster, namespace))
        raise AssertionError(
            f"only rendered: {sorted(set(rendered) - live)}; only applied: "
            f"{sorted(live - set(rendered))}"
        ) from None
    live = applied(cluster, namespace)
    for key, obj in rendered.items():
        assert comparable(obj) == comparable(live[key]), f"{key} differs"
