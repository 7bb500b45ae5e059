"""A Flow's exposed http source on the namespace's proxy, against a real kube-apiserver: a user
exposes it, withdraws it and exposes it again with `kubectl patch --type merge`, and the route
in the proxy's rendered config (ConfigMap spine-proxy-config) and `status.routeUrl` follow.

Everything is applied at once (as Argo CD does), so the changes may land while the operator is
still busy with the namespace's first events. The same sequence on the emulator, where handlers
run longer, is in tests/integration/test_flow_operator.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.apiserver import ControlPlane, OperatorProcess, custom_path, spine_manifest
from tests.support.processes import free_port, wait_until

pytestmark = pytest.mark.integration

ROUTE = "intake.flow"
DEADLINE = 30  # seconds; each step takes one or two here


def flow_manifest(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "spine.iiot.dev/v1alpha1",
        "kind": "Flow",
        "metadata": {"name": "intake", "namespace": namespace},
        "spec": {
            "source": {"http": {"path": "/orders"}},
            "sinks": [{"mqtt": {"topic": "spine/flows/intake/out"}}],
        },
    }


def proxy_routes(plane: ControlPlane, namespace: str) -> dict[str, dict[str, Any]] | None:
    """The routes of the proxy's config as the operator applied it; None before it exists."""
    config_map = plane.api.get(f"/api/v1/namespaces/{namespace}/configmaps/spine-proxy-config")
    if config_map is None:
        return None
    document = json.loads(config_map["data"]["proxy.json"])
    return {route["name"]: route for route in document["routes"]}


def route_url(plane: ControlPlane, namespace: str) -> str | None:
    flow = plane.api.get(custom_path(namespace, "flows", "intake")) or {}
    return (flow.get("status") or {}).get("routeUrl")


def patch_flow(plane: ControlPlane, namespace: str, expose: dict[str, Any] | None) -> None:
    patch = {"spec": {"source": {"http": {"expose": expose}}}}
    plane.kubectl(
        "-n", namespace, "patch", "flows.spine.iiot.dev", "intake",
        "--type", "merge", "-p", json.dumps(patch),
    )  # fmt: skip


def test_an_exposed_flow_is_routed_again_after_it_was_withdrawn(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    away = f"http://127.0.0.1:{free_port()}"  # no keys: its routes answer 503, still rendered
    spine = spine_manifest(namespace, {"auth": {"issuer": away, "audience": "spine"}})
    manifests = {"apiVersion": "v1", "kind": "List", "items": [spine, flow_manifest(namespace)]}
    control_plane.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(manifests))
    wait_until(lambda: proxy_routes(control_plane, namespace), DEADLINE, "the proxy's config")
    assert ROUTE not in (proxy_routes(control_plane, namespace) or {})  # not exposed: no route
    wanted_url = f"http://spine-proxy.{namespace}.svc:8443/flows/intake/orders"

    def routed() -> bool:
        route = (proxy_routes(control_plane, namespace) or {}).get(ROUTE)
        return (
            route is not None
            and route["path"] == "/flows/intake/orders"
            and route["owner"] == "Flow/intake"
            and route_url(control_plane, namespace) == wanted_url
        )

    def unrouted() -> bool:
        return ROUTE not in (proxy_routes(control_plane, namespace) or {}) and (
            route_url(control_plane, namespace) is None
        )

    roles = {"roles": ["orders:write"]}
    patch_flow(control_plane, namespace, roles)
    wait_until(routed, DEADLINE, "the route and status.routeUrl")
    patch_flow(control_plane, namespace, None)
    stored = control_plane.api.get(custom_path(namespace, "flows", "intake")) or {}
    assert stored["spec"]["source"]["http"] == {"path": "/orders"}  # null removed the key
    wait_until(unrouted, DEADLINE, "the route and status.routeUrl withdrawn")
    patch_flow(control_plane, namespace, roles)
    wait_until(routed, DEADLINE, "the route and status.routeUrl back")

    # And it stays routed once the operator has recorded the spec as handled (no late
    # reconcile of the withdrawn spec undoes it).
    handled = "spine.iiot.dev/last-handled-configuration"

    def handled_exposed() -> bool:
        flow = control_plane.api.get(custom_path(namespace, "flows", "intake")) or {}
        record = (flow.get("metadata", {}).get("annotations") or {}).get(handled)
        spec = json.loads(record)["spec"] if record else {}
        return spec.get("source", {}).get("http", {}).get("expose") == roles

    wait_until(handled_exposed, DEADLINE, "the exposed spec recorded as handled")
    assert routed()
