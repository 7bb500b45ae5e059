"""Start the flow engine (`spine-runtime flow`) for a test or a benchmark, on a real mosquitto.

`await start_flow_engine(tmp_path, broker, [flow, ...])` gives each flow its own broker login
with exactly the topics its spec declares, bound to its client id (the operator's own
`flow_login()`), writes the engine's config file and runs
`python -m spine_runtime.cli flow --config FILE` on a free port. `FlowEngineHandle` reads
/status and /metrics, pushes a new config, SIGKILLs and restarts the engine.
`start_flow_replicas` runs several engines as the replicas of one StatefulSet would: one config
(`replicas`, a login per flow and replica), each engine told its ordinal by SPINE_FLOW_ORDINAL.
`Collector` is an MQTT v5 subscriber (admin login) that keeps what arrives, for assertions.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import os
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from spine_operator.brokeraccess import BrokerAdmin, Login
from spine_operator.desired.flow import flow_login as operator_flow_login
from spine_runtime.config.flow import FlowSpec
from tests.support.metrics import scrape_metric
from tests.support.mosquitto import LocalBroker
from tests.support.processes import ManagedProcess, free_port, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
TWIN_NAMESPACE = "plant_a"
# The devices of the tests: may publish anywhere (the broker's admin may only observe).
DEVICE_LOGIN = Login("test-device", publish=("#",), description="test devices")


def flow_login(name: str, spec: dict[str, Any], bound: bool = True) -> Login:
    """The broker login the operator gives a flow; `bound=False` lets it connect under any
    client id (engines that share a flow's input each need their own)."""
    login = operator_flow_login(name, FlowSpec.model_validate(spec))
    return login if bound else dataclasses.replace(login, client_id=None)


async def ensure_logins(broker: LocalBroker, logins: list[Login]) -> dict[str, str]:
    """Create the logins the way the operator does; returns username -> password."""
    admin = BrokerAdmin(broker.host, broker.port, broker.admin_username, broker.admin_password)
    await admin.start()
    passwords = {}
    try:
        await admin.wait_connected(10)
        for login in logins:
            password = secrets.token_urlsafe(16)
            await admin.ensure_login(login, password)
            passwords[login.username] = password
    finally:
        await admin.close()
    return passwords


@dataclass
class FlowEngineHandle:
    state_dir: Path
    config: dict[str, Any]
    port: int
    process: ManagedProcess | None = None
    starts: int = 0
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    broker: LocalBroker | None = None
    device_password: str = ""
    environment: dict[str, str] = field(default_factory=dict)  # e.g. SPINE_FLOW_ORDINAL

    @property
    def config_path(self) -> Path:
        return self.state_dir / "flows.json"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self, config: dict[str, Any]) -> None:
        """Replace the mounted file atomically, as kubelet does."""
        self.config = copy.deepcopy(config)
        temporary = self.config_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(config, indent=1))
        temporary.replace(self.config_path)

    def start(self, wait: bool = True, timeout: float = 20.0) -> FlowEngineHandle:
        self.starts += 1
        python_path = os.pathsep.join(
            filter(None, [str(REPO_ROOT / "runtime"), os.environ.get("PYTHONPATH")])
        )
        self.process = ManagedProcess(
            [sys.executable, "-m", "spine_runtime.cli", "flow", "--config", str(self.config_path)],
            self.state_dir / f"flow-engine-{self.starts}.log",
            env={"PYTHONPATH": python_path, **self.environment},
        ).start()
        if wait:
            self.wait_connected(timeout)
        return self

    def wait_connected(self, timeout: float = 20.0) -> None:
        """Every configured flow runs and its broker login is connected."""

        def ready() -> bool:
            assert self.process is not None
            if not self.process.running():
                raise AssertionError(f"the flow engine exited:\n{self.log()[-3000:]}")
            flows = self.status()["flows"]
            names = {flow["name"] for flow in self.config["flows"]}
            return names <= set(flows) and all(flows[name]["connected"] for name in names)

        wait_until(ready, timeout, f"the flow engine on {self.url} to connect every flow")

    def stop(self, timeout: float = 15.0) -> int | None:
        return self.process.stop(timeout) if self.process is not None else None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def process_rss_kib(self) -> int:
        """The engine's resident memory now (0 if it is not running)."""
        if self.process is None or not self.process.running():
            return 0
        try:
            text = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return 0
        return next(
            (int(line.split()[1]) for line in text.splitlines() if line.startswith("VmRSS:")), 0
        )

    def log(self) -> str:
        return "".join(
            path.read_text(errors="replace")
            for path in sorted(self.state_dir.glob("flow-engine-*.log"))
        )

    def status(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/status", timeout=5).json())

    def flow_status(self, name: str) -> dict[str, Any]:
        return dict(self.status()["flows"][name])

    def metric(self, name: str, **labels: str) -> float:
        return scrape_metric(self.url, name, **labels)

    def push(self, config: dict[str, Any], token: str | None = None) -> httpx.Response:
        return httpx.put(
            f"{self.url}/admin/config",
            content=json.dumps(config),
            headers={"Authorization": f"Bearer {token or self.token}"},
            timeout=30,
        )


def engine_config(
    broker: LocalBroker,
    state_dir: Path,
    http_port: int,
    flows: list[dict[str, Any]],
    passwords: dict[str, str],
    token_file: Path,
    logins: list[Login],
    **overrides: Any,
) -> dict[str, Any]:
    rendered = []
    for flow, login in zip(flows, logins, strict=True):
        password_file = state_dir / f"{login.username}.password"
        password_file.write_text(passwords[login.username])
        document = {"username": login.username, "passwordFile": str(password_file)}
        if login.client_id:
            document["clientId"] = login.client_id
        rendered.append({**flow, "login": document})
    return {
        "broker": {"host": broker.host, "port": broker.port},
        "http": {"host": "127.0.0.1", "port": http_port, "adminTokenFile": str(token_file)},
        "twinNamespace": TWIN_NAMESPACE,
        "instance": "test",
        "flows": rendered,
        **overrides,
    }


async def start_flow_engine(
    state_dir: Path,
    broker: LocalBroker,
    flows: list[dict[str, Any]],
    wait: bool = True,
    bound: bool = True,
    **overrides: Any,
) -> FlowEngineHandle:
    """Create each flow's login, write the engine's config, start it and wait until every flow
    is connected. Each flow dict is a spec plus `name`; `bound=False` for logins that engines
    sharing a flow's input use under client ids of their own."""
    state_dir.mkdir(parents=True, exist_ok=True)
    logins = [
        flow_login(flow["name"], {k: v for k, v in flow.items() if k != "name"}, bound)
        for flow in flows
    ]
    passwords = await ensure_logins(broker, [*logins, DEVICE_LOGIN])
    handle = FlowEngineHandle(
        state_dir,
        {},
        free_port(),
        broker=broker,
        device_password=passwords[DEVICE_LOGIN.username],
    )
    token_file = state_dir / "admin-token"
    token_file.write_text(handle.token)
    handle.write_config(
        engine_config(
            broker, state_dir, handle.port, flows, passwords, token_file, logins, **overrides
        )
    )
    return handle.start(wait=wait)


class Collector:
    """Subscribes as admin (MQTT v5) and keeps every message per topic, in arrival order."""

    def __init__(self, broker: LocalBroker, topics: list[str], qos: int = 1) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"collector-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.username_pw_set(broker.admin_username, broker.admin_password)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        wait_until(self.client.is_connected, 5, "the collector to connect")
        self.client.subscribe([(topic, qos) for topic in topics])
        wait_until(self.subscribed.is_set, 5, "the collector's subscription")

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((message.topic, message.payload))

    def on(self, topic: str) -> list[Any]:
        with self.lock:
            return [json.loads(payload) for name, payload in self.messages if name == topic]

    def all(self) -> list[tuple[str, Any]]:
        with self.lock:
            return [(name, json.loads(payload)) for name, payload in self.messages]

    def count(self) -> int:
        with self.lock:
            return len(self.messages)

    def wait_for(self, count: int, timeout: float = 10.0, topic: str | None = None) -> None:
        def enough() -> bool:
            with self.lock:
                return (
                    len([1 for name, _ in self.messages if topic is None or name == topic]) >= count
                )

        wait_until(enough, timeout, f"{count} messages" + (f" on {topic}" if topic else ""))

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def publish_all(
    engine: FlowEngineHandle,
    topic: str,
    payloads: list[bytes],
    qos: int = 1,
    timeout: float = 120.0,
    interval: float = 0.0,
) -> None:
    """Publish as the test device and return once the broker acknowledged every QoS 1 message;
    `interval` paces a steady stream (seconds between publishes), else as fast as it goes.

    Runs the engine's own gmqtt link in a thread with its own event loop, keeping the broker's
    receive window full. (`mosquitto_pub -l` was tried first: it exits at the end of its input
    with messages still unsent, and published about 34,500 of 100,000 lines here.)"""
    assert engine.broker is not None
    broker, password = engine.broker, engine.device_password
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(
                asyncio.wait_for(
                    _publish(broker, password, topic, payloads, qos, interval), timeout
                )
            )
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=run, name="publish-all")
    thread.start()
    thread.join(timeout + 5)
    if errors:
        raise AssertionError(f"publishing failed: {errors[0]!r}")


async def _publish(
    broker: LocalBroker,
    password: str,
    topic: str,
    payloads: list[bytes],
    qos: int,
    interval: float = 0.0,
) -> None:
    from spine_runtime.flow.link import FlowLink

    link = FlowLink(
        f"device-{uuid.uuid4().hex[:8]}",
        DEVICE_LOGIN.username,
        password,
        broker.host,
        broker.port,
        lambda message: None,
    )
    await link.start()
    refused: list[int] = []
    outstanding = 0
    finished = asyncio.Event()

    def done(accepted: bool) -> None:
        nonlocal outstanding
        outstanding -= 1
        if not accepted:
            refused.append(1)
        if outstanding == 0:
            finished.set()

    try:
        for payload in payloads:
            while qos == 1 and link.room() <= 0:
                await link.window_open.wait()
            outstanding += 1
            finished.clear()
            link.publish(topic, payload, qos, False, done)
            if interval:
                await asyncio.sleep(interval)
            elif qos == 0 and outstanding % 256 == 0:
                await asyncio.sleep(0)  # let the transport write
        if outstanding:
            await finished.wait()
        if refused:
            raise AssertionError(f"the broker refused {len(refused)} messages")
    finally:
        await link.stop()


def _login_document(state_dir: Path, login: Login, password: str) -> dict[str, Any]:
    password_file = state_dir / f"{login.username}.password"
    password_file.write_text(password)
    return {
        "username": login.username,
        "passwordFile": str(password_file),
        "clientId": login.client_id,
    }


async def start_flow_replicas(
    state_dir: Path,
    broker: LocalBroker,
    flows: list[dict[str, Any]],
    replicas: int = 2,
    **overrides: Any,
) -> list[FlowEngineHandle]:
    """`replicas` engines sharing one config, as the pods of the operator's StatefulSet do: the
    operator's login of each flow on each replica (bound to its client id), and each engine on
    a port of its own with SPINE_FLOW_ORDINAL set. Waits until every replica connected."""
    state_dir.mkdir(parents=True, exist_ok=True)
    logins = {
        (flow["name"], ordinal): operator_flow_login(
            flow["name"],
            FlowSpec.model_validate({k: v for k, v in flow.items() if k != "name"}),
            ordinal,
        )
        for flow in flows
        for ordinal in range(replicas)
    }
    passwords = await ensure_logins(broker, [*logins.values(), DEVICE_LOGIN])
    token = secrets.token_urlsafe(16)
    token_file = state_dir / "admin-token"
    token_file.write_text(token)
    rendered = [
        {
            **flow,
            "login": _login_document(
                state_dir, logins[flow["name"], 0], passwords[logins[flow["name"], 0].username]
            ),
            "replicaLogins": [
                _login_document(
                    state_dir,
                    logins[flow["name"], ordinal],
                    passwords[logins[flow["name"], ordinal].username],
                )
                for ordinal in range(1, replicas)
            ],
        }
        for flow in flows
    ]
    handles = []
    for ordinal in range(replicas):
        handle = FlowEngineHandle(
            state_dir / f"replica-{ordinal}",
            {},
            free_port(),
            token=token,
            broker=broker,
            device_password=passwords[DEVICE_LOGIN.username],
            environment={"SPINE_FLOW_ORDINAL": str(ordinal)},
        )
        handle.state_dir.mkdir(parents=True, exist_ok=True)
        handle.write_config(
            {
                "broker": {"host": broker.host, "port": broker.port},
                "http": {
                    "host": "127.0.0.1",
                    "port": handle.port,
                    "adminTokenFile": str(token_file),
                },
                "twinNamespace": TWIN_NAMESPACE,
                "replicas": replicas,
                "flows": rendered,
                **overrides,
            }
        )
        handles.append(handle.start(wait=False))
    for handle in handles:
        handle.wait_connected()
    return handles


class HttpReceiver:
    """A real HTTP server (stdlib, 127.0.0.1) that records each POST or PUT as (method, path,
    JSON body) and answers 200 with `reply(path, body)` (default {}), after `delay` seconds."""

    def __init__(
        self,
        port: int,
        delay: float = 0.0,
        reply: Callable[[str, Any], Any] | None = None,
    ) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        seen = self.requests

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length)) if length else None
                if delay:
                    time.sleep(delay)
                seen.append((self.command, self.path, body))
                answer = json.dumps(reply(self.path, body) if reply else {}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_POST = do_PUT = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def bodies(self) -> list[Any]:
        return [body for _, _, body in self.requests]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
