"""Start the gateway (`spine-runtime gateway`) for a test, and a stand-in twin that acks.

`await start_gateway(tmp_path, broker, connections=..., tags=...)` gives the gateway its
production broker login (`gateway_login()`, applied through the operator's BrokerAdmin), writes
its config and runs `python -m spine_runtime.cli gateway --config FILE` on free ports. The
returned `GatewayHandle` reads /status and /metrics, stops, SIGKILLs and restarts it on the same
buffer. The gateway's tests and the benchmarks use it (`spine up` renders its own).

`ScriptedDriver` and `DeafDriver` are PLC sessions that misbehave on cancellation, for the
tests of bounded stops (issue 10).

`StandInAcker` is a STAND-IN FOR THE TWIN SERVICE, for tests that count every single update
(the real twin keeps only each property's latest value; tests/integration/test_gateway_twin.py
and e2e/ use the real one): it follows docs/protocol.md (stores updates in memory, acks the
highest contiguous seq per gateway and epoch after each batch) and records what arrived.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import secrets
import sys
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from spine_operator.api.gateway import GatewaySpec
from spine_operator.broker_admin import BrokerAdmin
from spine_operator.desired.gateway import gateway_config as build_gateway_config
from spine_operator.desired.logins import TWIN_USERNAME, Login, gateway_login, twin_login
from spine_operator.environment import Environment
from spine_runtime.gateway.drivers.base import Driver, PollGroup, Reading
from tests.support.metrics import scrape_metric
from tests.support.mosquitto import LocalBroker
from tests.support.processes import ManagedProcess, free_port, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "plant_a"


async def ensure_broker_login(broker: LocalBroker, login: Login) -> str:
    """Create (or fix) a login the way the operator does; returns its new password."""
    password = secrets.token_urlsafe(16)
    admin = BrokerAdmin(broker.host, broker.port, broker.admin_username, broker.admin_password)
    await admin.start()
    try:
        await admin.wait_connected(10)
        await admin.ensure_login(login, password)
    finally:
        await admin.close()
    return password


def modbus_connection(name: str, port: int, **settings: Any) -> dict[str, Any]:
    return {
        "name": name,
        "modbusTcp": {"host": "127.0.0.1", "port": port, "timeout": 1.0, **settings},
        "reconnectInitialSeconds": 0.2,
        "reconnectMaxSeconds": 2,
    }


def opcua_connection(name: str, endpoint: str, **settings: Any) -> dict[str, Any]:
    return {
        "name": name,
        "opcua": {"endpoint": endpoint, "timeout": 2.0, **settings},
        "reconnectInitialSeconds": 0.2,
        "reconnectMaxSeconds": 2,
    }


def s7_connection(name: str, port: int, **settings: Any) -> dict[str, Any]:
    return {
        "name": name,
        "s7": {"host": "127.0.0.1", "port": port, "rack": 0, "slot": 1, "timeout": 2.0, **settings},
        "reconnectInitialSeconds": 0.2,
        "reconnectMaxSeconds": 2,
    }


def tag(name: str, connection: str, thing: str, prop: str, address: str, **more: Any) -> dict:
    """A tag of the gateway's config: `name` reads `address` over `connection` into
    `thing`'s property `prop`; `more` adds fields such as type, interval or writable."""
    return {
        "name": name,
        "connection": connection,
        "thing": thing,
        "property": prop,
        "address": address,
        **more,
    }


@dataclass
class GatewayHandle:
    """A running gateway process and the files it runs on."""

    state_dir: Path
    config: dict[str, Any]
    port: int
    process: ManagedProcess | None = None
    starts: int = 0

    @property
    def name(self) -> str:
        return str(self.config["name"])

    @property
    def config_path(self) -> Path:
        return self.state_dir / "gateway.json"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self, config: dict[str, Any]) -> None:
        """Replace the mounted file atomically, as kubelet does."""
        self.config = copy.deepcopy(config)
        temporary = self.config_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(config, indent=1))
        temporary.replace(self.config_path)

    def start(self, wait: bool = True, timeout: float = 20.0) -> GatewayHandle:
        self.starts += 1
        python_path = os.pathsep.join(
            filter(None, [str(REPO_ROOT / "runtime"), os.environ.get("PYTHONPATH")])
        )
        self.process = ManagedProcess(
            [
                sys.executable,
                "-m",
                "spine_runtime.cli",
                "gateway",
                "--config",
                str(self.config_path),
            ],
            self.state_dir / f"gateway-{self.starts}.log",
            env={"PYTHONPATH": python_path},
        ).start()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        def ready() -> bool:
            assert self.process is not None
            if not self.process.running():
                raise AssertionError(f"the gateway exited:\n{self.log()[-3000:]}")
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200

        wait_until(ready, timeout, f"the gateway to serve on {self.url}")

    def stop(self, timeout: float = 10.0) -> int | None:
        return self.process.stop(timeout) if self.process is not None else None

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would."""
        if self.process is not None:
            self.process.kill()

    def running(self) -> bool:
        return self.process is not None and self.process.running()

    def log(self) -> str:
        return "".join(
            path.read_text(errors="replace")
            for path in sorted(self.state_dir.glob("gateway-*.log"))
        )

    def status(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/status", timeout=5).json())

    def connection_status(self, name: str) -> dict[str, Any]:
        return next(c for c in self.status()["connections"] if c["name"] == name)

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5).text

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples whose labels include `labels` (0 if none)."""
        return scrape_metric(self.url, name, **labels)


def gateway_config(
    *,
    name: str,
    broker: LocalBroker,
    username: str,
    password_file: Path,
    buffer_dir: Path,
    http_port: int,
    connections: list[dict[str, Any]],
    tags: list[dict[str, Any]],
    namespace: str = NAMESPACE,
    **overrides: Any,
) -> dict[str, Any]:
    """The config document the operator renders for a gateway with these connections and tags
    (its own builder, in the local environment), with the test's login file, buffer folder,
    publish settings (QoS 1, no heartbeat, a 5 s resend) and overrides."""
    env = Environment.for_local(
        Path(buffer_dir).parent, broker_port=broker.port, gateway_port=http_port
    )
    spec = GatewaySpec.model_validate({"connections": connections, "tags": tags})
    config: dict[str, Any] = build_gateway_config(spec, env, "test", name, namespace).to_wire()
    assert config["mqtt"]["username"] == username, "the login the operator would make"
    # The pod's admin token Secret, as a file where the rendered config says it is.
    token_file = Path(config["http"]["adminTokenFile"])
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.write_text(secrets.token_urlsafe(16))
    config["mqtt"]["passwordFile"] = str(password_file)
    config["buffer"]["path"] = str(buffer_dir)
    config["publish"] = {**config["publish"], "qos": 1, "heartbeatSeconds": 0}
    config["resendTimeoutSeconds"] = 5
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


async def start_gateway(
    tmp_path: Path,
    broker: LocalBroker,
    *,
    connections: list[dict[str, Any]],
    tags: list[dict[str, Any]],
    name: str = "line-1",
    wait: bool = True,
    **overrides: Any,
) -> GatewayHandle:
    """Create the gateway's production login, write its config, start it (and wait)."""
    state_dir = tmp_path / f"gateway-{name}"
    state_dir.mkdir(parents=True, exist_ok=True)
    things = sorted({tag["thing"] for tag in tags})
    writable = sorted({tag["thing"] for tag in tags if tag.get("writable")})
    login = gateway_login(name, things, writable)
    password = await ensure_broker_login(broker, login)
    password_file = state_dir / "mqtt-password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    port = free_port()
    config = gateway_config(
        name=name,
        broker=broker,
        username=login.username,
        password_file=password_file,
        buffer_dir=state_dir / "buffer",
        http_port=port,
        connections=connections,
        tags=tags,
        **overrides,
    )
    handle = GatewayHandle(state_dir, config, port)
    handle.write_config(config)
    return handle.start(wait=wait)


@dataclass
class ReceivedUpdate:
    thing: str
    gateway: str
    epoch: str
    seq: int
    features: dict[str, Any]
    source_time: str
    payload: dict[str, Any]
    arrived_at: float = 0.0  # Unix time at the stand-in twin

    def value(self, prop: str) -> Any:
        return self.features[prop]["properties"]["value"]


@dataclass
class _GatewayProgress:
    stored: set[int] = field(default_factory=set)
    acked: int = 0


class StandInAcker:
    """STAND-IN FOR THE TWIN SERVICE (docs/protocol.md), until the real twin is wired in.

    Logs in as the twin (`twin_login()`'s ACLs) with a persistent session, QoS 1. Each update
    is "stored" in memory; after each batch it publishes, per gateway and epoch, the highest
    seq up to which it has stored every update. Unlike what the protocol requires, it also
    re-acks a duplicate (the behaviour we propose, so a lost ack heals). `paused` stops the
    acks (updates are still recorded): a twin that receives but has not committed.
    """

    def __init__(self, broker: LocalBroker, password: str, client_id: str | None = None):
        self.broker = broker
        self.password = password
        self.client_id = client_id or TWIN_USERNAME  # the twin's login is bound to its id
        self.lock = threading.Lock()
        self.updates: list[ReceivedUpdate] = []
        self.progress: dict[tuple[str, str], _GatewayProgress] = defaultdict(_GatewayProgress)
        self.paused = False
        self.acks_sent = 0
        self.client: mqtt.Client | None = None

    @classmethod
    async def create(cls, broker: LocalBroker) -> StandInAcker:
        password = await ensure_broker_login(broker, twin_login())
        return cls(broker, password).start()

    def start(self) -> StandInAcker:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5
        )
        client.username_pw_set(twin_login().username, self.password)
        client.reconnect_delay_set(1, 2)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        client.connect_async(
            self.broker.host,
            self.broker.port,
            clean_start=False,
            properties=properties,
            keepalive=10,
        )
        client.loop_start()
        self.client = client
        wait_until(client.is_connected, 10, "the stand-in twin to connect")
        return self

    def stop(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any = None
    ) -> None:
        if not reason.is_failure:
            client.subscribe("spine/gateways/+/things/+/twin", qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        payload = json.loads(message.payload)
        headers = payload.get("headers", {})
        gateway, epoch, seq = headers["spine-gateway"], headers["spine-epoch"], headers["spine-seq"]
        thing = message.topic.split("/")[-2]  # spine/gateways/<gateway>/things/<thing>/twin
        with self.lock:
            self.updates.append(
                ReceivedUpdate(
                    thing,
                    gateway,
                    epoch,
                    int(seq),
                    payload["value"],
                    headers["spine-source-time"],
                    payload,
                    time.time(),
                )
            )
            progress = self.progress[(gateway, epoch)]
            progress.stored.add(int(seq))
            while progress.acked + 1 in progress.stored:
                progress.acked += 1
            acked, paused = progress.acked, self.paused
        if not paused:
            client.publish(
                f"spine/gateways/{gateway}/acks",
                json.dumps({"gateway": gateway, "epoch": epoch, "seq": acked}),
                qos=1,
            )
            self.acks_sent += 1

    def ack_now(self) -> None:
        """Publish the current acks (after `paused` is lifted, as a commit would)."""
        assert self.client is not None
        with self.lock:
            acks = [(key, progress.acked) for key, progress in self.progress.items()]
        for (gateway, epoch), acked in acks:
            self.client.publish(
                f"spine/gateways/{gateway}/acks",
                json.dumps({"gateway": gateway, "epoch": epoch, "seq": acked}),
                qos=1,
            )

    def received(self, thing: str | None = None) -> list[ReceivedUpdate]:
        with self.lock:
            return [u for u in self.updates if thing is None or u.thing == thing]

    def unique(self, gateway: str, epoch: str) -> dict[int, ReceivedUpdate]:
        """The first copy of each seq of one gateway and epoch."""
        found: dict[int, ReceivedUpdate] = {}
        for update in self.received():
            if update.gateway == gateway and update.epoch == epoch:
                found.setdefault(update.seq, update)
        return found

    def values(self, thing: str, prop: str) -> list[Any]:
        return [u.value(prop) for u in self.received(thing) if prop in u.features]

    def publish_desired(
        self, thing: str, prop: str, value: Any, namespace: str = NAMESPACE
    ) -> None:
        """What the twin sends when a user sets a desired value."""
        assert self.client is not None
        command = {
            "topic": f"{namespace}/{thing}/things/twin/commands/modify",
            "path": f"/features/{prop}/desiredProperties/value",
            "value": value,
            "headers": {"correlation-id": str(uuid.uuid4())},
        }
        info = self.client.publish(f"spine/things/{thing}/desired", json.dumps(command), qos=1)
        info.wait_for_publish(5)


# Drivers that misbehave on cancellation (issue 10, item 2) ----------------------------


class ScriptedDriver(Driver):
    """A PLC session whose reads the test completes by hand, awaited through the real
    `asyncio.wait_for` as pymodbus does."""

    protocol = "modbusTcp"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending: asyncio.Future[list[Reading]] | None = None
        self.read_started = asyncio.Event()
        self.polls = 0
        self.closed = False

    async def connect(self) -> None:
        self.groups = self.group_by_interval()

    async def close(self) -> None:
        self.closed = True

    async def poll(self, group: PollGroup) -> list[Reading]:
        self.polls += 1
        self.pending = asyncio.get_running_loop().create_future()
        self.read_started.set()
        return await asyncio.wait_for(self.pending, 30)

    def answer(self) -> None:
        """Complete the pending read with a good value."""
        assert self.pending is not None
        self.read_started.clear()
        self.pending.set_result([Reading(self.tags[0], 7)])


class DeafDriver(ScriptedDriver):
    """A session whose read ignores every cancel (a library catching CancelledError)."""

    async def poll(self, group: PollGroup) -> list[Reading]:
        self.polls += 1
        self.read_started.set()
        while not self.closed:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                continue
        raise asyncio.CancelledError
