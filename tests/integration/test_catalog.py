"""The catalog as its users see it: the real process, real HTTP clients, a real mosquitto.

LinkSmart-compatible reads (paging bounds, each filter operator, array paths, case), writes
behind the proxy's role header, owned entries that no write can touch, ttl expiry, retained
alive and dead announcements (also across a broker restart), probes, and bad bodies.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.catalog import (
    PREFIX,
    WRITE_ROLE,
    Announcements,
    CatalogHandle,
    catalog_mqtt_settings,
    owned_entry,
    retained,
    writer,
)
from tests.support.mosquitto import LocalBroker
from tests.support.processes import free_port, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    local = LocalBroker(tmp_path / "broker").start()
    yield local
    local.stop()


@pytest.fixture
def catalogs() -> Iterator[list[CatalogHandle]]:
    started: list[CatalogHandle] = []
    yield started
    for handle in started:
        handle.stop()


def start(catalogs: list[CatalogHandle], state_dir: Path, **config: Any) -> CatalogHandle:
    handle = CatalogHandle.start(state_dir, config)
    catalogs.append(handle)
    return handle


FIVE_SERVICES = [
    owned_entry("press-maintenance", type="plant.maintenance", meta={"line": "A", "floor": 2}),
    owned_entry(
        "press-telemetry",
        type="plant.telemetry",
        apis=[
            {"id": "http", "protocol": "HTTP", "url": "https://proxy/telemetry"},
            {"id": "events", "protocol": "MQTT", "url": "mqtt://broker:1883"},
        ],
        meta={"tags": ["Press", "Line-A"]},
    ),
    owned_entry("twin", type="spine.twin", title="Digital Twin API"),
    owned_entry("oven-control", type="plant.control", meta={"line": "B", "critical": True}),
    owned_entry("quality", type="plant.quality", description="Vision-based QA"),
]


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [service["id"] for service in response.json()["services"]]


def test_reads_page_filter_and_get_as_linksmart_does(catalogs, tmp_path) -> None:
    catalog = start(catalogs, tmp_path, description="Plant A services", entries=FIVE_SERVICES)
    with catalog.http() as http:
        index = http.get("/").json()
        assert {key: index[key] for key in ("id", "description", "page", "per_page", "total")} == {
            "id": "plant-a",
            "description": "Plant A services",
            "page": 1,
            "per_page": 100,
            "total": 5,
        }
        assert [s["id"] for s in index["services"]] == sorted(s["id"] for s in FIVE_SERVICES)
        twin = next(s for s in index["services"] if s["id"] == "twin")
        assert twin["createdAt"].endswith("Z") and twin["updatedAt"] == twin["createdAt"]
        assert "owner" not in twin and "probe" not in twin and "expiresAt" not in twin

        # paging: pages of two, the last one short, past the end empty
        assert ids(http.get("/", params={"page": 1, "per_page": 2})) == [
            "oven-control",
            "press-maintenance",
        ]
        third = http.get("/", params={"page": 3, "per_page": 2}).json()
        assert [s["id"] for s in third["services"]] == ["twin"]
        assert (third["page"], third["per_page"], third["total"]) == (3, 2, 5)
        assert ids(http.get("/", params={"page": 4, "per_page": 2})) == []
        assert len(ids(http.get("/", params={"per_page": 100}))) == 5
        for params, message in [
            ({"per_page": 101}, "per_page must be less than or equal to 100"),
            ({"per_page": 0}, "per_page parameter must be positive"),
            ({"page": 0}, "page parameter must be positive"),
            ({"page": "two"}, "Invalid value for parameter page"),
            ({"per_page": "-5"}, "Invalid value for parameter per_page"),
        ]:
            response = http.get("/", params=params)
            assert response.status_code == 400, params
            assert response.json()["code"] == 400
            assert message in response.json()["message"]

        # filters: every operator, case-insensitive, dot paths into objects and arrays
        assert ids(http.get("/type/equals/PLANT.CONTROL")) == ["oven-control"]
        assert ids(http.get("/type/prefix/plant.")) == [
            "oven-control",
            "press-maintenance",
            "press-telemetry",
            "quality",
        ]
        assert ids(http.get("/id/suffix/-TELEMETRY")) == ["press-telemetry"]
        assert ids(http.get("/description/contains/vision")) == ["quality"]
        assert ids(http.get("/apis.protocol/equals/mqtt")) == ["press-telemetry"]
        assert len(ids(http.get("/apis.protocol/equals/HTTP"))) == 5
        assert ids(http.get("/meta.line/equals/b")) == ["oven-control"]
        assert ids(http.get("/meta.floor/equals/2")) == ["press-maintenance"]
        assert ids(http.get("/meta.critical/equals/true")) == ["oven-control"]
        assert ids(http.get("/meta.tags/equals/line-a")) == ["press-telemetry"]
        assert ids(http.get("/meta.missing/equals/x")) == []
        # a value with a slash, percent-encoded in the path
        assert ids(http.get("/apis.url/prefix/mqtt:%2F%2Fbroker")) == ["press-telemetry"]
        paged = http.get("/type/prefix/plant", params={"page": 2, "per_page": 3}).json()
        assert [s["id"] for s in paged["services"]] == ["quality"]
        assert paged["total"] == 4
        unknown = http.get("/type/matches/plant")
        assert unknown.status_code == 400
        assert "Unknown filter operator 'matches'" in unknown.json()["message"]
        assert http.get("/type/equals/x", params={"per_page": 1000}).status_code == 400

        # one service, and a missing one
        assert http.get("/twin").json()["title"] == "Digital Twin API"
        missing = http.get("/no-such-service")
        assert missing.status_code == 404
        assert missing.json() == {
            "code": 404,
            "message": "Service with id no-such-service is not found",
        }
        assert http.get("/a/b").json()["code"] == 404
        # the runtime's own endpoints stay where they are
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/status").json()["ready"] is True


def test_writes_need_the_role_and_never_touch_owned_entries(catalogs, tmp_path) -> None:
    store = tmp_path / "data" / "external.json"
    catalog = start(
        catalogs,
        tmp_path,
        entries=[owned_entry("twin", owner="Spine/default")],
        storeFile=str(store),
        maxExternalEntries=2,
        maxTtlSeconds=3600,
    )
    body = {
        "type": "erp.orders",
        "title": "SAP orders",
        "apis": [{"id": "rest", "protocol": "HTTP", "url": "https://erp.example/orders"}],
    }
    with catalog.http() as http:
        anonymous = http.post("/", json=body)
        assert anonymous.status_code == 401
        assert WRITE_ROLE in anonymous.json()["message"]
        # a role that only starts with the right one is not it
        for roles in ("spine:catalog:writer", "reader", "", f"x{WRITE_ROLE}"):
            refused = http.post("/", json=body, headers=writer(roles))
            assert refused.status_code == 403, roles
            assert refused.json()["message"] == (
                f"Writes need the role {WRITE_ROLE}, which this token lacks"
            )
        assert ids(http.get("/")) == ["twin"]

        created = http.post("/", json=body, headers=writer())
        assert created.status_code == 201, created.text
        service = created.json()
        assert str(uuid.UUID(service["id"])) == service["id"]
        assert created.headers["Location"] == service["id"]
        assert service["ttl"] == 3600  # the maximum when the body names none
        assert service["title"] == "SAP orders" and service["apis"][0]["protocol"] == "HTTP"
        assert http.get(f"/{service['id']}").json() == service

        put = http.put("/mes-line-a", json={**body, "ttl": 600}, headers=writer())
        assert put.status_code == 201 and put.json()["ttl"] == 600
        again = http.put(
            "/mes-line-a", json={**put.json(), "title": "MES"}, headers=writer()
        )  # read, change, write back: read-only fields are accepted and ignored
        assert again.status_code == 200, again.text
        assert again.json()["title"] == "MES"
        assert again.json()["createdAt"] == put.json()["createdAt"]
        assert again.json()["updatedAt"] >= put.json()["updatedAt"]

        # owned entries: 409 naming the owner, for replace and delete alike
        for response in (
            http.put("/twin", json=body, headers=writer()),
            http.delete("/twin", headers=writer()),
        ):
            assert response.status_code == 409
            assert response.json()["code"] == 409
            assert "belongs to Spine/default" in response.json()["message"]
        assert http.get("/twin").json()["type"] == "spine.http"

        full = http.put("/third", json=body, headers=writer())
        assert full.status_code == 409
        assert "maximum of 2 external services" in full.json()["message"]

        assert http.delete("/mes-line-a").status_code == 401
        assert http.delete("/mes-line-a", headers=writer()).status_code == 200
        assert http.get("/mes-line-a").status_code == 404
        assert http.delete("/mes-line-a", headers=writer()).status_code == 404

    assert catalog.metric("spine_catalog_writes_total", method="POST", result="created") == 1
    assert catalog.metric("spine_catalog_writes_total", method="POST", result="forbidden") == 4
    assert catalog.metric("spine_catalog_writes_total", method="PUT", result="conflict") == 2
    assert catalog.metric("spine_catalog_entries", origin="external") == 1
    assert catalog.metric("spine_catalog_entries", origin="owned") == 1

    # external entries survive a restart through the store file; owned ones come from config
    saved = json.loads(store.read_text())
    assert [s["id"] for s in saved["services"]] == [service["id"]]
    catalog.restart()
    with catalog.http() as http:
        assert http.get(f"/{service['id']}").json() == service
        assert ids(http.get("/")) == sorted([service["id"], "twin"])


def test_bad_bodies_get_400_naming_the_field(catalogs, tmp_path) -> None:
    catalog = start(catalogs, tmp_path, maxTtlSeconds=600)
    good = {"type": "erp.orders"}
    deep: dict[str, Any] = {"leaf": 1}
    for _ in range(6):
        deep = {"next": deep}
    cases: list[tuple[str, str, Any, int, str]] = [
        ("PUT", "/bad%20id", good, 400, "id: 'bad id' is invalid"),
        ("PUT", "/" + "x" * 201, good, 400, "id: 'xxxx"),
        ("PUT", "/status", good, 400, "id: 'status' is reserved"),
        ("PUT", "/a", {"type": "bad type"}, 400, "type: 'bad type' is invalid"),
        ("PUT", "/a", {}, 400, "type: Field required"),
        ("PUT", "/a", {**good, "meta": deep}, 400, "meta: nested deeper than 5 levels"),
        ("PUT", "/a", {**good, "meta": {"blob": "x" * 9000}}, 400, "meta: 9011 bytes as JSON"),
        (
            "PUT",
            "/a",
            {**good, "apis": [{"id": "a", "protocol": "HTTP", "url": "http://x", "meta": deep}]},
            400,
            "apis[0].meta: nested deeper",
        ),
        ("PUT", "/a", {**good, "apis": [{"id": "a"}]}, 400, "apis[0].protocol: Field required"),
        ("PUT", "/a", {**good, "ttl": 601}, 400, "ttl: 601 is out of range"),
        ("PUT", "/a", {**good, "ttl": 0}, 400, "ttl: 0 is out of range"),
        ("PUT", "/a", {**good, "title": "x\ny" * 3000}, 400, "title: String should have at most"),
        ("PUT", "/a", {**good, "colour": "red"}, 400, "colour: Extra inputs are not permitted"),
        ("PUT", "/a", {**good, "id": "b"}, 400, "id: 'b' differs from the id in the path"),
        ("POST", "/", {**good, "id": "b"}, 400, "id: a POST cannot choose the id"),
        ("PUT", "/a", [good], 400, "body: must be a JSON object"),
    ]
    with catalog.http() as http:
        for method, path, body, status, message in cases:
            response = http.request(method, path, json=body, headers=writer())
            assert response.status_code == status, (path, body, response.text)
            assert response.json()["code"] == status
            assert response.json()["message"].startswith(message), response.json()["message"]
        for raw, message in [
            (b"{not json", "body: not valid JSON"),
            (b"[" * 5000 + b"]" * 5000, "body: nested deeper than 32 levels"),
        ]:
            response = http.put("/a", content=raw, headers=writer())
            assert response.json()["message"].startswith(message), response.text
        oversize = http.put("/a", json={**good, "description": "x" * 70_000}, headers=writer())
        assert oversize.status_code == 413
        assert oversize.json() == {"code": 413, "message": "body: larger than 65536 bytes"}
        assert ids(http.get("/")) == []
    assert catalog.metric("spine_catalog_writes_total", result="bad_request") >= len(cases)


def test_expiry_and_announcements(broker, catalogs, tmp_path) -> None:
    observer = Announcements(broker)
    try:
        mqtt = _run(catalog_mqtt_settings(broker, tmp_path))
        catalog = start(
            catalogs, tmp_path, mqtt=mqtt, entries=[owned_entry("maintenance")], maxTtlSeconds=60
        )
        alive_topic = f"{PREFIX}/spine.http/maintenance/alive"
        announced = observer.wait_for(alive_topic)
        with catalog.http() as http:
            assert announced == http.get("/maintenance").json()
        assert json.loads(retained(broker, alive_topic) or b"{}")["id"] == "maintenance"

        # an external entry with a short ttl: announced, then gone from reads and announced dead
        with catalog.http() as http:
            service = http.post("/", json={"type": "erp.orders", "ttl": 2}, headers=writer()).json()
            external_alive = f"{PREFIX}/erp.orders/{service['id']}/alive"
            assert observer.wait_for(external_alive)["expiresAt"] == service["expiresAt"]
            assert (
                observer.on(external_alive)[0][1] is False
            )  # live delivery, not the retained copy

            wait_until(
                lambda: http.get(f"/{service['id']}").status_code == 404, 10, "the entry to expire"
            )
            assert service["id"] not in ids(http.get("/"))
        dead = observer.wait_for(f"{PREFIX}/erp.orders/{service['id']}/dead")
        assert dead["id"] == service["id"]
        observer.wait_for(external_alive, lambda payload: payload == b"")  # retained alive cleared
        assert retained(broker, external_alive) is None
        assert catalog.metric("spine_catalog_expired_total") == 1

        # a new document replaces the owned set: dead for removed, alive for new and changed
        catalog.push(entries=[owned_entry("quality", type="plant.quality")])
        observer.wait_for(f"{PREFIX}/plant.quality/quality/alive")
        assert observer.wait_for(f"{PREFIX}/spine.http/maintenance/dead")["id"] == "maintenance"
        assert retained(broker, alive_topic) is None
        # the mounted file converges too (a push that was missed)
        catalog.write_config(
            {
                **catalog.config,
                "entries": [owned_entry("quality", type="plant.quality", title="QA v2")],
            }
        )
        observer.wait_for(
            f"{PREFIX}/plant.quality/quality/alive", lambda p: p and p["title"] == "QA v2"
        )
    finally:
        observer.close()


def test_announcements_survive_a_broker_restart(broker, catalogs, tmp_path) -> None:
    mqtt = _run(catalog_mqtt_settings(broker, tmp_path))
    catalog = start(catalogs, tmp_path, mqtt=mqtt, entries=[owned_entry("a"), owned_entry("b")])
    wait_until(lambda: catalog.status()["mqttConnected"], 10, "the catalog to connect")
    wait_until(lambda: retained(broker, f"{PREFIX}/spine.http/b/alive"), 10, "b's announcement")

    broker.stop()
    wait_until(lambda: catalog.status()["mqttConnected"] is False, 10, "the catalog to notice")
    catalog.push(entries=[owned_entry("a"), owned_entry("c")])  # b removed while the broker is away
    broker.start()
    observer = Announcements(broker)
    try:
        wait_until(lambda: catalog.status()["mqttConnected"], 30, "the catalog to reconnect")
        assert observer.wait_for(f"{PREFIX}/spine.http/b/dead", timeout=15)["id"] == "b"
        wait_until(lambda: retained(broker, f"{PREFIX}/spine.http/c/alive"), 10, "c's announcement")
        assert retained(broker, f"{PREFIX}/spine.http/b/alive") is None
        assert retained(broker, f"{PREFIX}/spine.http/a/alive") is not None
    finally:
        observer.close()

    # a retained alive left over from before a restart of the catalog is cleared
    catalog.stop()
    catalog.write_config({**catalog.config, "entries": [owned_entry("a")]})
    catalog.launch()
    wait_until(
        lambda: retained(broker, f"{PREFIX}/spine.http/c/alive") is None, 15, "c's stale alive"
    )
    assert retained(broker, f"{PREFIX}/spine.http/a/alive") is not None


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_probes_report_reachability(catalogs, tmp_path) -> None:
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    backend_url = f"http://127.0.0.1:{backend.server_address[1]}"
    closed_port = free_port()
    probe = {"intervalSeconds": 5, "timeoutSeconds": 1}
    try:
        catalog = start(
            catalogs,
            tmp_path,
            entries=[
                owned_entry("up", probe={**probe, "url": f"{backend_url}/healthz"}),
                owned_entry("wrong-path", probe={**probe, "url": f"{backend_url}/nope"}),
                owned_entry("down", probe={**probe, "url": f"http://127.0.0.1:{closed_port}/"}),
                owned_entry("tls", probe={**probe, "url": "https://127.0.0.1:1/healthz"}),
                owned_entry("unprobed"),
            ],
        )

        def entries() -> dict[str, dict[str, Any]]:
            return {entry["id"]: entry for entry in catalog.status()["entries"]}

        wait_until(
            lambda: all(
                e["reachable"] is not None for k, e in entries().items() if k != "unprobed"
            ),
            10,
            "the first probes",
        )
        seen = entries()
        assert seen["up"] == {
            "id": "up",
            "owner": "ServiceRegistration/up",
            "reachable": True,
            "detail": "HTTP 200",
        }
        assert (seen["wrong-path"]["reachable"], seen["wrong-path"]["detail"]) == (
            False,
            "HTTP 404",
        )
        assert seen["down"]["reachable"] is False
        assert seen["down"]["detail"] == f"cannot connect to 127.0.0.1:{closed_port}"
        assert seen["tls"]["reachable"] is False
        assert "only http:// URLs are probed" in seen["tls"]["detail"]
        assert seen["unprobed"]["reachable"] is None
        assert catalog.status()["ready"] is True
        assert catalog.metric("spine_catalog_probes_total", result="up") >= 1

        backend.shutdown()
        backend.server_close()
        wait_until(lambda: entries()["up"]["reachable"] is False, 15, "the probe to fail")
        assert catalog.metric("spine_catalog_probes_total", result="down") >= 4
    finally:
        backend.server_close()


def _run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_a_config_push_is_applied_whole_or_not_at_all(catalogs, tmp_path) -> None:
    catalog = start(catalogs, tmp_path, entries=[owned_entry("a")])
    unusable = {
        **catalog.config,
        "entries": [owned_entry("b")],
        "mqtt": {
            "host": "127.0.0.1",
            "port": free_port(),
            "username": "spine-catalog",
            "passwordFile": str(tmp_path / "missing-password"),
            "clientId": "spine-catalog",
        },
    }
    response = httpx.put(
        f"{catalog.url}/admin/config",
        content=json.dumps(unusable),
        headers={"Authorization": f"Bearer {catalog.admin_token}"},
        timeout=10,
    )
    assert response.status_code == 400
    assert "mqtt.passwordFile: cannot read" in response.json()["detail"]
    with catalog.http() as http:
        assert ids(http.get("/")) == ["a"]
    assert [entry["id"] for entry in catalog.status()["entries"]] == ["a"]
    bad_entry = {**catalog.config, "entries": [owned_entry("bad id")]}
    response = httpx.put(
        f"{catalog.url}/admin/config",
        content=json.dumps(bad_entry),
        headers={"Authorization": f"Bearer {catalog.admin_token}"},
        timeout=10,
    )
    assert response.status_code == 400
    assert "entries[0].id: 'bad id' is invalid" in response.json()["detail"]
