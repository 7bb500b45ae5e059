"""Start the real catalog process (`spine-runtime catalog --config FILE`) for tests.

`CatalogHandle.start(state_dir, config)` writes the config file and an admin token, runs the
process on a free port and waits until it serves; it pushes configs as the operator does, and
stops, kills and restarts by PID. `Announcements` records what a broker client subscribed to
the announcement topics receives, retained flag included.
"""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt

from spine_operator.desired.haproxy import ROLES_HEADER
from spine_operator.desired.logins import Login
from tests.support.metrics import scrape_metric
from tests.support.mosquitto import LocalBroker
from tests.support.processes import ManagedProcess, free_port, wait_until
from tests.support.twin import ensure_login

WRITE_ROLE = "spine:catalog:write"
PREFIX = "sc/v3/announcement"
CATALOG_LOGIN = Login(
    "spine-catalog",
    publish=(f"{PREFIX}/#",),
    subscribe=(f"{PREFIX}/#",),
    description="the catalog's announcements",
    client_id="spine-catalog",
)


def writer(roles: str = f"reader {WRITE_ROLE}") -> dict[str, str]:
    """The header the proxy sets for a verified token holding `roles`."""
    return {ROLES_HEADER: roles}


async def catalog_mqtt_settings(broker: LocalBroker, state_dir: Path) -> dict[str, Any]:
    password = secrets.token_urlsafe(12)
    await ensure_login(broker, CATALOG_LOGIN, password)
    password_file = state_dir / "catalog-mqtt-password"
    password_file.write_text(password)
    return {
        "host": broker.host,
        "port": broker.port,
        "username": CATALOG_LOGIN.username,
        "passwordFile": str(password_file),
        "clientId": CATALOG_LOGIN.client_id,
    }


def owned_entry(service_id: str, **overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": service_id,
        "type": "spine.http",
        "title": f"{service_id} API",
        "owner": f"ServiceRegistration/{service_id}",
        "apis": [
            {
                "id": "api",
                "protocol": "HTTP",
                "url": f"https://proxy.plant-a/services/{service_id}",
                "spec": {"mediaType": "application/vnd.oai.openapi+json;version=3.0"},
            }
        ],
    }
    entry.update(overrides)
    return entry


@dataclass
class CatalogHandle:
    state_dir: Path
    config: dict[str, Any]
    port: int
    admin_token: str
    process: ManagedProcess | None = None
    starts: int = 0
    logs: list[Path] = field(default_factory=list)

    @classmethod
    def start(cls, state_dir: Path, config: dict[str, Any]) -> CatalogHandle:
        state_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        admin_token = secrets.token_urlsafe(16)
        token_file = state_dir / "admin-token"
        token_file.write_text(admin_token)
        config = copy.deepcopy(config)
        config.setdefault("catalogId", "plant-a")
        config["http"] = {"host": "127.0.0.1", "port": port, "adminTokenFile": str(token_file)}
        handle = cls(state_dir, config, port, admin_token)
        handle.write_config(config)
        handle.launch()
        return handle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.state_dir / "catalog.json"

    def launch(self) -> None:
        self.starts += 1
        log = self.state_dir / f"catalog-{self.starts}.log"
        self.logs.append(log)
        self.process = ManagedProcess(
            [
                sys.executable,
                "-m",
                "spine_runtime.cli",
                "catalog",
                "--config",
                str(self.config_path),
            ],
            log,
        ).start()
        self.process.wait_for_port(self.port, 20)

    def log(self) -> str:
        return "".join(path.read_text(errors="replace") for path in self.logs if path.exists())

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def restart(self) -> None:
        self.stop()
        self.launch()

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)

    def status(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/status", timeout=5).json())

    def metric(self, name: str, **labels: str) -> float:
        return scrape_metric(self.url, name, **labels)

    def write_config(self, config: dict[str, Any]) -> None:
        self.config = copy.deepcopy(config)
        temporary = self.config_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(config))
        temporary.replace(self.config_path)

    def push(self, **changes: Any) -> dict[str, Any]:
        """PUT /admin/config with the admin token, as the operator pushes a new document."""
        config = {**copy.deepcopy(self.config), **changes}
        response = httpx.put(
            f"{self.url}/admin/config",
            content=json.dumps(config),
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        self.config = config
        return dict(response.json())


class Announcements:
    """A broker client subscribed to every announcement, recording (topic, payload, retain)."""

    def __init__(self, broker: LocalBroker, topic: str = f"{PREFIX}/#") -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = broker.client()
        self.client.on_message = self._record
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.subscribe(topic, qos=1)
        assert subscribed.wait(5), "the announcement observer could not subscribe"

    def _record(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def on(self, topic: str) -> list[tuple[bytes, bool]]:
        with self.lock:
            return [(payload, retain) for seen, payload, retain in self.messages if seen == topic]

    def wait_for(self, topic: str, predicate: Any = lambda payload: True, timeout: float = 10):
        """The first payload on `topic` (JSON-decoded when not empty) that satisfies
        `predicate`."""

        def found() -> Any:
            for payload, _ in self.on(topic):
                decoded = json.loads(payload) if payload else payload
                if predicate(decoded):
                    return decoded if payload else b"<empty>"
            return None

        return wait_until(found, timeout, f"a message on {topic}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


OBSERVER_LOGIN = Login(
    "catalog-test-observer",
    publish=("spine-test/#",),
    subscribe=("spine-test/#", f"{PREFIX}/#"),
    description="reads retained announcements in tests",
)
_observer_passwords: dict[tuple[str, int], str] = {}


def retained(broker: LocalBroker, topic: str) -> bytes | None:
    """The retained message a new subscriber to `topic` gets, or None if there is none.

    "None" is known, not waited out: after subscribing to `topic`, the client subscribes to a
    sentinel topic whose retained message it published itself; the broker sends one client's
    messages in order, so once the sentinel arrives any retained message of `topic` has too.
    """
    key = (str(broker.state_dir), broker.port)
    if key not in _observer_passwords:
        password = secrets.token_urlsafe(12)
        asyncio.run(ensure_login(broker, OBSERVER_LOGIN, password))
        _observer_passwords[key] = password
    client = broker.client(OBSERVER_LOGIN.username, _observer_passwords[key])
    sentinel = f"spine-test/sentinel/{uuid.uuid4().hex}"
    got: list[bytes] = []
    sentinel_seen = threading.Event()

    def received(c: Any, u: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == sentinel:
            sentinel_seen.set()
        elif message.retain:
            got.append(bytes(message.payload))

    client.on_message = received
    try:
        client.publish(sentinel, b"1", qos=1, retain=True).wait_for_publish(5)
        client.subscribe(topic, qos=1)
        client.subscribe(sentinel, qos=1)
        assert sentinel_seen.wait(5), "the sentinel's retained message did not arrive"
        client.publish(sentinel, b"", qos=1, retain=True).wait_for_publish(5)
        return got[0] if got else None
    finally:
        client.disconnect()
        client.loop_stop()
