"""Start the real twin process against a LocalBroker, with its production broker login.

`await start_twin(tmp_path, broker, models, things)` creates the twin's login through the
operator's BrokerAdmin (exactly `twin_login()`'s ACLs), writes a config file and token files,
runs `python -m spine_runtime.cli twin --config FILE` on free ports and waits until it serves
and is connected. The returned `TwinHandle` stops, kills (SIGKILL), restarts and reconfigures it.
Used by the twin's tests, the gateway tests and the benchmarks (`spine up` renders its own).
`Gateway` publishes as a gateway does (on its own topic, numbered) and `Observer` records what
the twin publishes, for the twin's tests.
"""

from __future__ import annotations

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
from paho.mqtt.enums import CallbackAPIVersion

from spine_operator.api.spine import SpineSpec
from spine_operator.broker_admin import BrokerAdmin
from spine_operator.desired.logins import gateway_login, twin_login
from spine_operator.desired.twin import twin_config as build_twin_config
from spine_operator.environment import Environment
from tests.support.metrics import scrape_metric
from tests.support.mosquitto import LocalBroker
from tests.support.processes import ManagedProcess, free_port, wait_until

DEFAULT_NAMESPACE = "plant_a"
GATEWAY = "press-line-1"


async def ensure_login(broker: LocalBroker, login: Any, password: str) -> None:
    """Create (or fix) a broker login the way the operator does."""
    admin = BrokerAdmin(broker.host, broker.port, broker.admin_username, broker.admin_password)
    await admin.start()
    try:
        await admin.wait_connected(10)
        await admin.ensure_login(login, password)
    finally:
        await admin.close()


async def ensure_gateway_login(
    broker: LocalBroker, gateway: str, things: list[str], writable_things: list[str] | None = None
) -> tuple[str, str]:
    """A gateway's production login; returns (username, password)."""
    login = gateway_login(gateway, things, writable_things or [])
    password = secrets.token_urlsafe(12)
    await ensure_login(broker, login, password)
    return login.username, password


@dataclass
class TwinHandle:
    """A running twin process and what a test needs to talk to it."""

    state_dir: Path
    config: dict[str, Any]
    process: ManagedProcess
    port: int
    token: str
    admin_token: str
    namespace: str
    starts: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.state_dir / "twin.json"

    @property
    def database_path(self) -> Path:
        return Path(self.config["storage"]["path"])

    def thing_id(self, name: str) -> str:
        return f"{self.namespace}:{name}"

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def http(self, timeout: float = 10.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples whose labels include `labels` (0 if none)."""
        return scrape_metric(self.url, name, **labels)

    def status(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/status", timeout=5).json())

    def thing(self, name: str) -> dict[str, Any]:
        response = httpx.get(
            f"{self.url}/api/2/things/{self.thing_id(name)}",
            params={"fields": "thingId,definition,attributes,features,_revision"},
            timeout=5,
        )
        response.raise_for_status()
        return dict(response.json())

    def log(self) -> str:
        return self.process.log()

    # lifecycle ------------------------------------------------------------------------------

    def _launch(self) -> None:
        log_path = self.state_dir / f"twin-{self.starts}.log"
        self.process = ManagedProcess(
            [sys.executable, "-m", "spine_runtime.cli", "twin", "--config", str(self.config_path)],
            log_path,
            env=self.extra_env or None,
        ).start()

    def wait_ready(self, timeout: float = 30.0) -> None:
        self.process.wait_for_port(self.port, timeout)

        def connected() -> bool:
            if not self.process.running():
                raise AssertionError(f"the twin exited:\n{self.log()[-3000:]}")
            return bool(self.status().get("mqttConnected"))

        wait_until(connected, timeout, "the twin to connect to the broker")

    def stop(self) -> int | None:
        return self.process.stop()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.process.kill()

    def start(self) -> None:
        if self.process.running():
            raise RuntimeError("the twin is already running")
        self.starts += 1
        self._launch()
        self.wait_ready()

    def restart(self) -> None:
        self.stop()
        self.start()

    # config ---------------------------------------------------------------------------------

    def write_config(self, config: dict[str, Any]) -> None:
        """Rewrite the mounted file, as kubelet would (atomically, by rename)."""
        self.config = copy.deepcopy(config)
        temporary = self.config_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(config, indent=1))
        temporary.replace(self.config_path)

    def push_config(self, config: dict[str, Any]) -> httpx.Response:
        """PUT /admin/config with the admin token, as the operator pushes it."""
        self.config = copy.deepcopy(config)
        return httpx.put(
            f"{self.url}/admin/config",
            content=json.dumps(config),
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=10,
        )


def twin_config(
    state_dir: Path,
    broker: LocalBroker,
    port: int,
    models: list[dict[str, Any]],
    things: list[dict[str, Any]],
    namespace: str = DEFAULT_NAMESPACE,
    **overrides: Any,
) -> dict[str, Any]:
    """The config document the operator renders for a twin (its own builder, with the local
    environment's addresses and paths), with the test's models, things and overrides."""
    env = Environment.for_local(state_dir, broker_port=broker.port, twin_port=port)
    spec = SpineSpec.model_validate({"twin": {"namespace": namespace}})
    config: dict[str, Any] = build_twin_config(spec, env, "test", []).to_wire()
    config["models"], config["things"] = models, things
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def storage_path(tmp_path: Path) -> Path:
    """Where `start_twin(tmp_path, ...)` keeps the twin's database (the builder's local path)."""
    env = Environment.for_local(tmp_path / "twin", broker_port=0)
    return Path(env.twin_data_dir) / "twin.db"


def secret_files(config: dict[str, Any], password: str, token: str, admin: str) -> None:
    """The Secrets the twin's pod mounts, as files where the rendered config says they are."""
    for path, value in (
        (config["mqtt"]["passwordFile"], password),
        (config["writeTokenFile"], token),
        (config["http"]["adminTokenFile"], admin),
    ):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        _secret_file(Path(path), value)
    Path(config["storage"]["path"]).parent.mkdir(parents=True, exist_ok=True)


def _secret_file(path: Path, value: str) -> Path:
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


async def start_twin(
    tmp_path: Path,
    broker: LocalBroker,
    models: list[dict[str, Any]],
    things: list[dict[str, Any]],
    namespace: str = DEFAULT_NAMESPACE,
    wait: bool = True,
    **overrides: Any,
) -> TwinHandle:
    """Create the twin's broker login, write its config, start it and wait until it serves."""
    state_dir = tmp_path / "twin"
    state_dir.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(16)
    await ensure_login(broker, twin_login(), password)
    token, admin_token = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    port = free_port()
    config = twin_config(
        state_dir, broker, port=port, models=models, things=things, namespace=namespace, **overrides
    )
    secret_files(config, password, token, admin_token)
    handle = TwinHandle(
        state_dir,
        config,
        process=None,
        port=port,  # type: ignore[arg-type]
        token=token,
        admin_token=admin_token,
        namespace=namespace,
    )
    handle.write_config(config)
    handle._launch()
    if wait:
        try:
            handle.wait_ready()
        except BaseException:
            handle.process.stop()  # the caller gets no handle to stop it with
            raise
    return handle


class Observer:
    """An admin client subscribed to `spine/#`, recording what the twin publishes."""

    def __init__(self, broker: LocalBroker) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.client = broker.client()
        self.client.on_message = self._record
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.subscribe("spine/#", qos=1)
        assert subscribed.wait(5)

    def _record(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((message.topic, message.payload))

    def on(self, topic: str) -> list[Any]:
        with self.lock:
            return [json.loads(payload) for seen, payload in self.messages if seen == topic]

    def wait_for(
        self, topic: str, predicate: Any = lambda message: True, timeout: float = 10
    ) -> dict[str, Any]:
        return wait_until(
            lambda: next((m for m in self.on(topic) if predicate(m)), None),
            timeout,
            f"a message on {topic}",
        )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Gateway:
    """Publishes as a gateway would: Ditto commands on its own topic, numbered, QoS 1."""

    def __init__(
        self, broker: LocalBroker, username: str, password: str, name: str = GATEWAY
    ) -> None:
        self.name = name
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=username,  # a gateway login is bound to its own client id
            protocol=mqtt.MQTTv5,
        )
        self.client.username_pw_set(username, password)
        # an unbounded window: a bounded one makes paho slow at thousands of messages
        self.client.max_inflight_messages_set(0)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        wait_until(self.client.is_connected, 5, "the gateway to connect")
        self.epoch = uuid.uuid4().hex[:6]
        self.last_seq = 0
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.client.on_message = lambda c, u, m: self.received.append(
            (m.topic, json.loads(m.payload))
        )

    @staticmethod
    def command(
        thing: str,
        path: str,
        value: Any,
        merge: bool = False,
        headers: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        action = "merge" if merge else "modify"
        return {
            "topic": f"plant_a/{thing}/things/twin/commands/{action}",
            "path": path,
            "value": value,
            "headers": headers or {},
        }

    def numbered(self, seq: int | None = None, source_time: str | None = None) -> dict[str, Any]:
        """A gateway's headers; without `seq`, the next number after the last one used."""
        seq = self.last_seq + 1 if seq is None else seq
        self.last_seq = max(self.last_seq, seq)
        headers: dict[str, Any] = {
            "correlation-id": f"{self.name}:{self.epoch}:{seq}",
            "spine-gateway": self.name,
            "spine-epoch": self.epoch,
            "spine-seq": seq,
        }
        if source_time:
            headers["spine-source-time"] = source_time
        return headers

    def subscribe(self, topic: str) -> None:
        """Subscribe (at QoS 1) and wait for the broker's SUBACK; messages go to `received`."""
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.subscribe(topic, qos=1)
        assert subscribed.wait(5), f"no SUBACK for {topic}"

    def topic(self, thing: str) -> str:
        return f"spine/gateways/{self.name}/things/{thing}/twin"

    def publish(self, thing: str, payload: dict[str, Any] | bytes, wait: bool = True) -> Any:
        """Publish on the gateway's topic; a command without a sequence number gets the next
        one (added to it in place, so a test can compare what the twin echoes)."""
        if isinstance(payload, dict) and "spine-seq" not in payload.get("headers", {}):
            payload.setdefault("headers", {}).update(self.numbered())
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        info = self.client.publish(self.topic(thing), body, qos=1)
        if wait:
            info.wait_for_publish(10)
        return info

    def report(
        self,
        thing: str,
        feature: str,
        value: Any,
        seq: int | None = None,
        source_time: str | None = None,
    ) -> None:
        self.publish(
            thing,
            self.command(
                thing,
                f"/features/{feature}/properties/value",
                value,
                headers=self.numbered(seq, source_time),
            ),
        )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
