"""The Flow kind through the real kopf runtime against the emulated API server: the namespace's
flow engine appears with its first Flow, each Flow gets its own login, references resolve into
what the engine runs, bad flows are refused alone, and status follows the engine's pod."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from spine_operator.k8s import Kubernetes
from tests.integration.test_registration_operator import example as registration_example
from tests.integration.test_registration_operator import service
from tests.integration.test_spine_operator import spine, stored
from tests.integration.test_twinmodel_operator import press_model
from tests.support.processes import eventually

pytestmark = pytest.mark.integration

FLOWS = "spine.iiot.dev/v1alpha1/flows"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "press-line" / "flows.yaml"
NAMESPACE = "plant-a"


def example_flows() -> list[dict]:
    return [doc for doc in yaml.safe_load_all(EXAMPLE.read_text()) if doc]


def ready(cluster, name: str) -> dict:
    conditions = stored(cluster, FLOWS, NAMESPACE, name)["status"]["conditions"]
    return next(item for item in conditions if item["type"] == "Ready")


def engine_config(cluster) -> dict:
    config_map = stored(cluster, "v1/configmaps", NAMESPACE, "spine-flow-engine-config")
    return json.loads(config_map["data"]["flows.json"])


async def create_registration(k8s: Kubernetes, with_service: bool = True) -> None:
    """The example's ServiceRegistration that alarm-enrich calls (and its Service)."""
    config_map, registration = registration_example()
    await k8s.create(copy.deepcopy(config_map))
    await k8s.create(copy.deepcopy(registration))
    if with_service:
        await k8s.create(service("maintenance-planner"))


async def test_flows_run_on_one_engine_with_their_own_logins(cluster, operator) -> None:
    from tests.support.processes import free_port

    k8s = Kubernetes()
    # With auth, as the example's Spine has: work-orders exposes its source on the proxy.
    away = f"http://127.0.0.1:{free_port()}"
    await k8s.create(spine(NAMESPACE, {"auth": {"issuer": away, "audience": "spine"}}))
    await k8s.create(press_model())
    await create_registration(k8s)
    flows = example_flows()
    for flow in flows:
        await k8s.create(copy.deepcopy(flow))
    names = sorted(flow["metadata"]["name"] for flow in flows)
    await eventually(
        lambda: sorted(f["name"] for f in engine_config(cluster)["flows"]) == names,
        15,
        "every example flow in the engine's config",
    )
    config = engine_config(cluster)
    alarms = next(f for f in config["flows"] if f["name"] == "press-alarms")
    assert alarms["source"]["twin"]["things"] == ["press-1", "press-2"]  # the model, resolved
    legacy = next(f for f in config["flows"] if f["name"] == "legacy-press")
    assert legacy["login"]["username"] == "flow-legacy-press"
    enrich = next(f for f in config["flows"] if f["name"] == "alarm-enrich")
    host = f"maintenance-planner.{NAMESPACE}.svc.cluster.local"  # the registration, resolved
    assert enrich["steps"][1]["call"]["url"] == f"http://{host}:8080/contacts"
    for name in names:
        login = stored(cluster, "v1/secrets", NAMESPACE, f"spine-mqtt-flow-{name}")
        assert login["metadata"]["ownerReferences"][0]["kind"] == "Spine"
    statefulset = await eventually(
        lambda: stored(cluster, "apps/v1/statefulsets", NAMESPACE, "spine-flow-engine"),
        10,
        "the engine's StatefulSet",
    )
    assert statefulset["spec"]["replicas"] == 1
    pod = statefulset["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    await eventually(lambda: ready(cluster, "press-kpi")["reason"] == "Progressing", 10, "waits")

    # The engine's pod becomes ready, as the StatefulSet controller would report it.
    await k8s.patch_merge(
        "apps/v1",
        "StatefulSet",
        NAMESPACE,
        "spine-flow-engine",
        {
            "status": {
                "observedGeneration": statefulset["metadata"]["generation"],
                "replicas": 1,
                "readyReplicas": 1,
                "updatedReplicas": 1,
            }
        },
        subresource="status",
    )
    for name in names:
        await eventually(lambda n=name: ready(cluster, n)["status"] == "True", 10, f"{name} Ready")
    status = stored(cluster, FLOWS, NAMESPACE, "press-kpi")["status"]
    assert status["loginSecretName"] == "spine-mqtt-flow-press-kpi"


async def test_a_bad_flow_is_refused_alone_and_a_missing_model_heals(cluster, operator) -> None:
    k8s = Kubernetes()
    await k8s.create(spine(NAMESPACE))
    flows = {flow["metadata"]["name"]: flow for flow in example_flows()}
    good = flows["press-kpi"]
    bad = copy.deepcopy(flows["alarm-enrich"])
    bad["metadata"]["name"] = "bad-expression"
    bad["spec"]["steps"][0]["filter"]["expression"] = "alarm = = true"
    for flow in (good, bad):
        await k8s.create(copy.deepcopy(flow))
    await eventually(lambda: ready(cluster, "bad-expression")["reason"] == "InvalidSpec", 10, "bad")
    message = ready(cluster, "bad-expression")["message"]
    assert "steps[0]" in message and "position" in message, message
    # press-kpi reads the things of TwinModel press, which does not exist yet
    await eventually(
        lambda: ready(cluster, "press-kpi")["reason"] == "DependencyNotFound", 10, "waits"
    )
    assert "TwinModel press does not exist" in ready(cluster, "press-kpi")["message"]
    assert [f["name"] for f in engine_config(cluster)["flows"]] == []

    await k8s.create(press_model())
    await eventually(
        lambda: [f["name"] for f in engine_config(cluster)["flows"]] == ["press-kpi"],
        15,
        "press-kpi in the engine once its model exists",
    )
    assert ready(cluster, "bad-expression")["reason"] == "InvalidSpec"


def deployments(cluster) -> set[str]:
    return {
        name
        for (resource, namespace, name), obj in cluster.objects.items()
        if "deployments" in str(resource) and namespace == NAMESPACE and not obj.deleted
    }


async def test_engine_replicas_get_their_own_logins_and_replace_the_old_deployment(
    cluster, operator
) -> None:
    k8s = Kubernetes()
    # The Deployment an operator before engine replicas left behind.
    await k8s.create(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "spine-flow-engine", "namespace": NAMESPACE},
            "spec": {
                "selector": {"matchLabels": {"app": "x"}},
                "template": {
                    "metadata": {"labels": {"app": "x"}},
                    "spec": {"containers": [{"name": "x", "image": "x"}]},
                },
            },
        }
    )
    assert deployments(cluster) == {"spine-flow-engine"}
    await k8s.create(spine(NAMESPACE, {"flowEngine": {"replicas": 2}}))
    await k8s.create(press_model())
    kpi = next(flow for flow in example_flows() if flow["metadata"]["name"] == "press-kpi")
    await k8s.create(copy.deepcopy(kpi))
    statefulset = await eventually(
        lambda: stored(cluster, "apps/v1/statefulsets", NAMESPACE, "spine-flow-engine"),
        15,
        "the engine's StatefulSet",
    )
    assert statefulset["spec"]["replicas"] == 2
    await eventually(lambda: not deployments(cluster), 10, "the old Deployment to be deleted")
    config = engine_config(cluster)
    assert config["replicas"] == 2
    replica_login = config["flows"][0]["replicaLogins"][0]
    assert replica_login["username"] == replica_login["clientId"] == "flow-press-kpi.1"
    for secret in ("spine-mqtt-flow-press-kpi", "spine-mqtt-flow-press-kpi.1"):
        login = stored(cluster, "v1/secrets", NAMESPACE, secret)
        assert login["metadata"]["ownerReferences"][0]["kind"] == "Spine"


def calling_flow() -> dict:
    """The example's alarm-enrich flow: it calls the example registration by serviceRef."""
    flow = next(f for f in example_flows() if f["metadata"]["name"] == "alarm-enrich")
    assert flow["spec"]["steps"][1]["call"]["serviceRef"]["name"] == "maintenance"
    return flow


def called_url(cluster) -> str | None:
    flows = {f["name"]: f for f in engine_config(cluster)["flows"]}
    found = flows.get("alarm-enrich")
    return found["steps"][1]["call"]["url"] if found else None


async def test_a_service_ref_waits_for_its_registration_and_follows_it(cluster, operator) -> None:
    k8s = Kubernetes()
    await k8s.create(spine(NAMESPACE))
    await k8s.create(calling_flow())
    await eventually(
        lambda: ready(cluster, "alarm-enrich")["reason"] == "DependencyNotFound", 10, "waits"
    )
    message = ready(cluster, "alarm-enrich")["message"]
    assert message.startswith("spec.steps[1].call.serviceRef: ServiceRegistration maintenance")
    assert "does not exist in namespace plant-a" in message
    assert engine_config(cluster)["flows"] == []

    # The registration appears, but its Service does not exist: the operator refuses it, and
    # the flow says so (it would call a backend that is not there).
    await create_registration(k8s, with_service=False)
    await eventually(
        lambda: ready(cluster, "alarm-enrich")["reason"] == "DependencyNotReady", 15, "refused"
    )
    assert "Service maintenance-planner" in ready(cluster, "alarm-enrich")["message"]

    # Its Service appears: the registration is accepted, and the flow runs with the URL of the
    # Service inside the namespace.
    await k8s.create(service("maintenance-planner"))
    host = f"maintenance-planner.{NAMESPACE}.svc.cluster.local"
    await eventually(lambda: called_url(cluster) == f"http://{host}:8080/contacts", 15, "resolved")
    await eventually(
        lambda: ready(cluster, "alarm-enrich")["reason"] == "Progressing", 10, "accepted"
    )

    # The registration's API moves to another port: the flow follows without being touched.
    moved = stored(
        cluster, "spine.iiot.dev/v1alpha1/serviceregistrations", NAMESPACE, "maintenance"
    )
    apis = copy.deepcopy(moved["spec"]["apis"])
    apis[0]["serviceRef"]["port"] = 9090
    await k8s.patch_merge(
        "spine.iiot.dev/v1alpha1",
        "ServiceRegistration",
        NAMESPACE,
        "maintenance",
        {"spec": {"apis": apis}},
    )
    await eventually(lambda: called_url(cluster) == f"http://{host}:9090/contacts", 15, "moved")

    # It goes: the flow stops and says what to apply.
    await k8s.request(
        "DELETE",
        f"/apis/spine.iiot.dev/v1alpha1/namespaces/{NAMESPACE}/serviceregistrations/maintenance",
    )
    await eventually(lambda: called_url(cluster) is None, 15, "the flow leaves the engine")
    await eventually(
        lambda: ready(cluster, "alarm-enrich")["reason"] == "DependencyNotFound", 10, "says so"
    )


def proxy_routes(cluster) -> dict[str, dict]:
    try:
        config_map = stored(cluster, "v1/configmaps", NAMESPACE, "spine-proxy-config")
    except KeyError:
        return {}
    return {
        route["name"]: route for route in json.loads(config_map["data"]["proxy.json"])["routes"]
    }


async def test_an_exposed_http_source_follows_the_flow_on_the_proxy(cluster, operator) -> None:
    from tests.support.processes import free_port

    k8s = Kubernetes()
    away = f"http://127.0.0.1:{free_port()}"  # no keys: routes answer 503, still rendered
    await k8s.create(spine(NAMESPACE, {"auth": {"issuer": away, "audience": "spine"}}))
    intake = {
        "apiVersion": "spine.iiot.dev/v1alpha1",
        "kind": "Flow",
        "metadata": {"name": "intake", "namespace": NAMESPACE},
        "spec": {
            "source": {"http": {"path": "/orders"}},
            "sinks": [{"mqtt": {"topic": "spine/flows/intake/out"}}],
        },
    }
    await k8s.create(intake)
    await eventually(lambda: "spine-catalog-read" in proxy_routes(cluster), 15, "the proxy")
    await eventually(lambda: engine_config(cluster)["flows"], 15, "the flow runs")
    assert "intake.flow" not in proxy_routes(cluster)  # not exposed: no route

    expose = {"spec": {"source": {"http": {"expose": {"roles": ["orders:write"]}}}}}
    await k8s.patch_merge("spine.iiot.dev/v1alpha1", "Flow", NAMESPACE, "intake", expose)
    await eventually(lambda: "intake.flow" in proxy_routes(cluster), 15, "routed")
    route = proxy_routes(cluster)["intake.flow"]
    assert route["path"] == "/flows/intake/orders" and route["owner"] == "Flow/intake"
    await eventually(
        lambda: (
            stored(cluster, FLOWS, NAMESPACE, "intake")["status"].get("routeUrl")
            == "http://spine-proxy.plant-a.svc:8443/flows/intake/orders"
        ),
        10,
        "the Flow says where (status.routeUrl)",
    )

    # No longer exposed: the old spec asked for the route, so the proxy loses it.
    hidden = {"spec": {"source": {"http": {"expose": None}}}}
    await k8s.patch_merge("spine.iiot.dev/v1alpha1", "Flow", NAMESPACE, "intake", hidden)
    await eventually(lambda: "intake.flow" not in proxy_routes(cluster), 15, "unrouted")
    await eventually(
        lambda: "routeUrl" not in stored(cluster, FLOWS, NAMESPACE, "intake")["status"],
        10,
        "no routeUrl",
    )
    # Exposed again at once. The withdrawal above may have been applied by the exposure's own
    # handler, still running (its reconciles read the live Flow): kopf then records the exposed
    # spec as handled and finds no change; the handler must see the Flow changed and run again.
    await k8s.patch_merge("spine.iiot.dev/v1alpha1", "Flow", NAMESPACE, "intake", expose)
    await eventually(lambda: "intake.flow" in proxy_routes(cluster), 15, "routed again")
    await eventually(
        lambda: stored(cluster, FLOWS, NAMESPACE, "intake")["status"].get("routeUrl"),
        10,
        "status.routeUrl again",
    )
    await k8s.request(
        "DELETE", f"/apis/spine.iiot.dev/v1alpha1/namespaces/{NAMESPACE}/flows/intake"
    )
    await eventually(lambda: "intake.flow" not in proxy_routes(cluster), 15, "unrouted")
