"""The ServiceRegistration kind through the real kopf runtime against the emulated API server:
the namespace's proxy and catalog appear with the first registration, each registration is
routed or refused alone (an invalid spec, a path another holds), and a missing Service or spec
ConfigMap heals when it appears; status follows the proxy's and catalog's pods."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from spine_operator.k8s import Kubernetes
from tests.integration.test_spine_operator import spine, stored
from tests.support.processes import eventually

pytestmark = pytest.mark.integration

REGISTRATIONS = "spine.iiot.dev/v1alpha1/serviceregistrations"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "press-line" / "registration.yaml"
NAMESPACE = "plant-a"


def example() -> tuple[dict, dict]:
    """(the spec ConfigMap, the registration) of examples/press-line/registration.yaml."""
    config_map, registration = [doc for doc in yaml.safe_load_all(EXAMPLE.read_text()) if doc]
    return config_map, registration


def service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"selector": {"app": name}, "ports": [{"port": 8080}]},
    }


def conditions(cluster, name: str) -> dict[str, dict]:
    status = stored(cluster, REGISTRATIONS, NAMESPACE, name).get("status") or {}
    return {item["type"]: item for item in status.get("conditions") or []}


def ready_reason(cluster, name: str) -> str | None:
    try:
        return conditions(cluster, name).get("Ready", {}).get("reason")
    except KeyError:
        return None


def proxy_routes(cluster) -> list[str]:
    config_map = stored(cluster, "v1/configmaps", NAMESPACE, "spine-proxy-config")
    return sorted(route["name"] for route in json.loads(config_map["data"]["proxy.json"])["routes"])


def catalog_ids(cluster) -> list[str]:
    config_map = stored(cluster, "v1/configmaps", NAMESPACE, "spine-catalog-config")
    return sorted(
        entry["id"] for entry in json.loads(config_map["data"]["catalog.json"])["entries"]
    )


async def mark_ready(k8s: Kubernetes, cluster, name: str) -> None:
    """The Deployment controller's report that the pods are ready (no kubelet here)."""
    deployment = stored(cluster, "apps/v1/deployments", NAMESPACE, name)
    await k8s.patch_merge(
        "apps/v1",
        "Deployment",
        NAMESPACE,
        name,
        {
            "status": {
                "observedGeneration": deployment["metadata"]["generation"],
                "replicas": 1,
                "readyReplicas": 1,
                "updatedReplicas": 1,
            }
        },
        subresource="status",
    )


async def test_the_example_registration_heals_once_its_service_and_spec_appear(
    cluster, operator
) -> None:
    k8s = Kubernetes()
    await k8s.create(spine(NAMESPACE))
    config_map, registration = example()
    await k8s.create(copy.deepcopy(registration))
    # Neither the Service it routes to nor the ConfigMap with its AsyncAPI spec exists yet.
    await eventually(
        lambda: ready_reason(cluster, "maintenance") == "DependencyNotFound", 15, "waits"
    )
    assert "Service maintenance-planner" in conditions(cluster, "maintenance")["Ready"]["message"]
    assert conditions(cluster, "maintenance")["SpecValid"]["status"] == "Unknown"
    # The proxy and the catalog exist (a registration is there), without its route.
    await eventually(lambda: proxy_routes(cluster), 10, "the proxy's config")
    assert "maintenance-orders" not in proxy_routes(cluster)

    await k8s.create(service("maintenance-planner"))
    await eventually(
        lambda: (
            ready_reason(cluster, "maintenance") == "DependencyNotFound"
            and "ConfigMap maintenance-events-spec"
            in conditions(cluster, "maintenance")["Ready"]["message"]
        ),
        15,
        "now waits for the spec's ConfigMap",
    )
    await k8s.create(copy.deepcopy(config_map))
    await eventually(
        lambda: (
            "maintenance-orders" in proxy_routes(cluster) and "maintenance" in catalog_ids(cluster)
        ),
        15,
        "routed and in the catalog once both exist",
    )
    await eventually(lambda: ready_reason(cluster, "maintenance") == "Progressing", 10, "pods")
    for name in ("spine-proxy", "spine-catalog"):
        await mark_ready(k8s, cluster, name)
    await eventually(
        lambda: conditions(cluster, "maintenance")["Ready"]["status"] == "True", 15, "Ready"
    )
    status = stored(cluster, REGISTRATIONS, NAMESPACE, "maintenance")["status"]
    assert conditions(cluster, "maintenance")["SpecValid"]["status"] == "True"
    assert status["routes"] == [f"http://spine-proxy.{NAMESPACE}.svc:8443/services/maintenance/v1"]
    assert status["routeCount"] == 1
    assert status["loginSecretNames"] == ["maintenance-events-mqtt"]
    assert all(len(api["specHash"]) == 64 for api in status["apis"])
    login = stored(cluster, "v1/secrets", NAMESPACE, "maintenance-events-mqtt")
    assert login["metadata"]["ownerReferences"][0]["kind"] == "Spine"
    # Nothing has polled the proxy and the catalog: reachability is not claimed.
    assert conditions(cluster, "maintenance")["Reachable"]["status"] == "Unknown"


async def test_an_invalid_spec_and_a_taken_path_are_refused_alone(cluster, operator) -> None:
    k8s = Kubernetes()
    await k8s.create(spine(NAMESPACE))
    await k8s.create(service("maintenance-planner"))
    _, registration = example()
    http_only = copy.deepcopy(registration)
    http_only["spec"]["apis"] = http_only["spec"]["apis"][:1]
    await k8s.create(copy.deepcopy(http_only))
    await eventually(lambda: "maintenance-orders" in proxy_routes(cluster), 15, "first routed")

    second = copy.deepcopy(http_only)
    second["metadata"]["name"] = "planner-copy"
    bad = copy.deepcopy(http_only)
    bad["metadata"]["name"] = "broken"
    bad["spec"]["apis"][0]["expose"]["path"] = "/services/broken"
    bad["spec"]["apis"][0]["spec"]["value"] = '{"swagger": "2.0"}'
    for item in (second, bad):
        await k8s.create(item)
    await eventually(
        lambda: ready_reason(cluster, "planner-copy") == "InvalidReference", 15, "path taken"
    )
    message = conditions(cluster, "planner-copy")["Ready"]["message"]
    assert "ServiceRegistration maintenance" in message and "/services/maintenance/v1" in message
    await eventually(lambda: ready_reason(cluster, "broken") == "InvalidSpec", 15, "bad spec")
    spec_valid = conditions(cluster, "broken")["SpecValid"]
    assert spec_valid["status"] == "False" and "spec.apis[0].spec" in spec_valid["message"]
    assert proxy_routes(cluster).count("maintenance-orders") == 1
    assert "planner-copy-orders" not in proxy_routes(cluster)
    assert "broken-orders" not in proxy_routes(cluster)
    assert ready_reason(cluster, "maintenance") in ("Progressing", "Reconciled")

    # The holder goes: its route and entry go with it, and the path is free for the other.
    await k8s.request(
        "DELETE",
        f"/apis/spine.iiot.dev/v1alpha1/namespaces/{NAMESPACE}/serviceregistrations/maintenance",
    )
    await eventually(
        lambda: (
            "planner-copy-orders" in proxy_routes(cluster)
            and "planner-copy" in catalog_ids(cluster)
        ),
        15,
        "the path changes hands",
    )
    assert "maintenance-orders" not in proxy_routes(cluster)
    assert "maintenance" not in catalog_ids(cluster)
    await eventually(
        lambda: ready_reason(cluster, "planner-copy") == "Progressing", 10, "now routed"
    )


def spine_conditions(cluster, namespace: str) -> dict[str, dict]:
    status = stored(cluster, "spine.iiot.dev/v1alpha1/spines", namespace, "default").get("status")
    return {item["type"]: item for item in (status or {}).get("conditions") or []}


def proxy_key_files(cluster, namespace: str) -> dict:
    config_map = stored(cluster, "v1/configmaps", namespace, "spine-proxy-config")
    return json.loads(config_map["data"]["proxy.json"])["keyFiles"]


async def test_the_issuers_keys_reach_the_proxy_and_an_unreachable_issuer_degrades_the_spine(
    cluster, operator, tmp_path
) -> None:
    from tests.support.devissuer import DevIssuer
    from tests.support.processes import free_port

    issuer = DevIssuer(tmp_path / "issuer").start()
    try:
        k8s = Kubernetes()
        await k8s.create(spine(NAMESPACE, {"auth": {"issuer": issuer.issuer, "audience": "spine"}}))
        away = f"http://127.0.0.1:{free_port()}"
        await k8s.create(spine("plant-b", {"auth": {"issuer": away, "audience": "spine"}}))
        # Discovery, JWKS, PEM: the proxy's config carries the key files, by content.
        await eventually(lambda: proxy_key_files(cluster, NAMESPACE), 20, "keys in the config")
        assert all(
            pem.startswith("-----BEGIN PUBLIC KEY")
            for pem in proxy_key_files(cluster, NAMESPACE).values()
        )
        await eventually(
            lambda: (
                spine_conditions(cluster, NAMESPACE).get("Degraded", {}).get("reason")
                == "KeysFetched"
            ),
            15,
            "the Spine says its keys were fetched",
        )
        # An issuer that never answered: no keys, so every protected route answers 503.
        await eventually(
            lambda: (
                spine_conditions(cluster, "plant-b").get("Degraded", {}).get("status") == "True"
            ),
            20,
            "the other Spine is Degraded",
        )
        degraded = spine_conditions(cluster, "plant-b")["Degraded"]
        assert degraded["reason"] == "DependencyUnavailable" and away in degraded["message"]
        assert proxy_key_files(cluster, "plant-b") == {}
    finally:
        issuer.stop()


async def test_a_spec_url_is_fetched_only_from_the_allow_list(cluster, operator) -> None:
    import http.server
    import threading

    document = json.dumps(
        {
            "openapi": "3.0.3",
            "info": {"title": "Orders", "version": "1"},
            "paths": {"/orders": {"get": {"responses": {"200": {"description": "ok"}}}}},
        }
    ).encode()

    class Spec(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(document)))
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *args: Any) -> None:
            pass

    from tests.support.processes import free_port

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = None
    try:
        k8s = Kubernetes()
        await k8s.create(spine(NAMESPACE, {"proxy": {"specUrlAllowList": [f"{base}/specs/"]}}))
        await k8s.create(service("maintenance-planner"))
        _, registration = example()
        allowed = copy.deepcopy(registration)
        allowed["spec"]["apis"] = allowed["spec"]["apis"][:1]
        allowed["spec"]["apis"][0]["spec"] = {
            "mediaType": "application/vnd.oai.openapi+json",
            "url": f"{base}/specs/orders.json",
        }
        elsewhere = copy.deepcopy(allowed)
        elsewhere["metadata"]["name"] = "elsewhere"
        elsewhere["spec"]["apis"][0]["expose"]["path"] = "/services/elsewhere"
        elsewhere["spec"]["apis"][0]["spec"]["url"] = f"{base}/private/orders.json"
        for item in (allowed, elsewhere):
            await k8s.create(item)
        # The spec's server is not up yet: the registration waits, and is retried.
        await eventually(
            lambda: ready_reason(cluster, "maintenance") == "DependencyUnavailable", 15, "waits"
        )
        assert f"{base}/specs/orders.json" in conditions(cluster, "maintenance")["Ready"]["message"]
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Spec)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        await eventually(
            lambda: "maintenance-orders" in proxy_routes(cluster), 15, "routed from its URL"
        )
        await eventually(
            lambda: conditions(cluster, "maintenance").get("SpecValid", {}).get("status") == "True",
            10,
            "SpecValid",
        )
        await eventually(lambda: ready_reason(cluster, "elsewhere") == "InvalidSpec", 10, "no")
        spec_valid = conditions(cluster, "elsewhere")["SpecValid"]
        assert spec_valid["status"] == "False" and "/private/orders.json" in spec_valid["message"]
        assert "elsewhere-orders" not in proxy_routes(cluster)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()


class StatusServer:
    """Answers /status with a document the test sets (as the proxy or the catalog would), and
    every other request (a config push) with 200."""

    def __init__(self, document: dict[str, Any]) -> None:
        import http.server
        import threading

        self.document = document
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.dumps(outer.document if self.path == "/status" else {}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_POST = answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def status_servers(monkeypatch: pytest.MonkeyPatch):
    """A stand-in proxy and catalog /status, and the operator pointed at them, polling fast."""
    from spine_operator import poller
    from spine_operator.context import CONTEXT

    proxy = StatusServer({"ready": True, "configDigest": "x", "routes": [], "lastError": None})
    catalog = StatusServer({"ready": True, "entries": []})
    monkeypatch.setattr(poller.SETTINGS, "interval", 0.2)
    monkeypatch.setattr(
        CONTEXT,
        "environment",
        CONTEXT.environment.replace(
            proxy_host_override="127.0.0.1",
            proxy_admin_port=proxy.port,
            catalog_host_override="127.0.0.1",
            catalog_port=catalog.port,
        ),
    )
    yield proxy, catalog
    proxy.close()
    catalog.close()


async def test_reachable_follows_the_proxys_and_the_catalogs_checks(
    status_servers, cluster, operator
) -> None:
    proxy, catalog = status_servers
    k8s = Kubernetes()
    await k8s.create(spine(NAMESPACE))
    await k8s.create(service("maintenance-planner"))
    _, registration = example()
    registration["spec"]["apis"] = registration["spec"]["apis"][:1]
    await k8s.create(registration)
    await eventually(lambda: "maintenance-orders" in proxy_routes(cluster), 15, "routed")
    await eventually(
        lambda: stored(cluster, "apps/v1/deployments", NAMESPACE, "spine-catalog"), 10, "apps"
    )
    for name in ("spine-proxy", "spine-catalog"):
        await mark_ready(k8s, cluster, name)
    await eventually(
        lambda: conditions(cluster, "maintenance")["Ready"]["status"] == "True", 15, "Ready"
    )
    proxy.document = {
        "ready": True,
        "routes": [{"name": "maintenance-orders", "up": False, "detail": "L4 refused"}],
    }
    catalog.document = {
        "ready": True,
        "entries": [{"id": "maintenance", "owner": "x", "reachable": True, "detail": "200"}],
    }
    await eventually(
        lambda: conditions(cluster, "maintenance")["Reachable"]["status"] == "False", 10, "down"
    )
    reachable = conditions(cluster, "maintenance")["Reachable"]
    assert reachable["reason"] == "ProbeFailed"
    assert "route maintenance-orders is down: L4 refused" in reachable["message"]
    proxy.document = {"ready": True, "routes": [{"name": "maintenance-orders", "up": True}]}
    await eventually(
        lambda: conditions(cluster, "maintenance")["Reachable"]["status"] == "True", 10, "up"
    )
    assert conditions(cluster, "maintenance")["Ready"]["status"] == "True"


async def test_a_new_twin_write_token_rolls_the_proxy_that_sends_it(
    cluster, operator, tmp_path
) -> None:
    """The proxy sends the twin's write token on authorised twin writes, from its environment:
    when someone rotates the token, the proxy's pods must restart to pick the new one up, on a
    namespace where nothing else is pending (every workload ready, the Spine Ready)."""
    from tests.integration.test_spine_operator import mark_statefulset_ready
    from tests.support.devissuer import DevIssuer

    issuer = DevIssuer(tmp_path / "issuer").start()
    try:
        k8s = Kubernetes()
        await k8s.create(spine(NAMESPACE, {"auth": {"issuer": issuer.issuer, "audience": "spine"}}))
        checksum_key = "spine.iiot.dev/config-checksum"

        def checksum() -> str | None:
            try:
                deployment = stored(cluster, "apps/v1/deployments", NAMESPACE, "spine-proxy")
            except KeyError:
                return None
            return str(deployment["spec"]["template"]["metadata"]["annotations"][checksum_key])

        await eventually(lambda: proxy_key_files(cluster, NAMESPACE), 20, "keys in the config")
        for statefulset in ("spine-broker", "spine-twin"):
            await mark_statefulset_ready(k8s, cluster, NAMESPACE, statefulset)
        for deployment in ("spine-proxy", "spine-catalog"):
            await eventually(
                lambda name=deployment: stored(cluster, "apps/v1/deployments", NAMESPACE, name),
                10,
                f"Deployment {deployment}",
            )
            await mark_ready(k8s, cluster, deployment)
        await eventually(
            lambda: spine_conditions(cluster, NAMESPACE).get("Ready", {}).get("status") == "True",
            20,
            "the Spine Ready, nothing left to retry",
        )
        before = checksum()
        await k8s.patch_merge(
            "v1", "Secret", NAMESPACE, "spine-twin-tokens", {"stringData": {"write": "rotated"}}
        )
        await eventually(lambda: checksum() != before, 10, "the proxy to roll with the new token")
    finally:
        issuer.stop()
