"""A real Debian mosquitto started on the exact config the operator renders, for tests.

`LocalBroker` renders mosquitto.conf with the operator's builders, seeds the admin login the way
the broker pod's init container does, and starts, kills and restarts mosquitto by its PID.
"""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from spine_operator.api.spine import BrokerSpec
from spine_operator.environment import Environment
from spine_operator.local.broker import prepare_local_broker
from tests.support.processes import ManagedProcess, free_port, wait_until


class LocalBroker:
    def __init__(self, state_dir: Path, spec: BrokerSpec | None = None, namespace: str = "test"):
        self.state_dir = state_dir
        self.spec = spec or BrokerSpec()
        self.namespace = namespace
        self.port = free_port()
        self.env = Environment.for_local(state_dir, broker_port=self.port)
        self.admin_password = secrets.token_urlsafe(16)
        self.admin_username = "admin"
        self.process: ManagedProcess | None = None
        self.starts = 0

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def config_path(self) -> Path:
        return Path(self.env.broker_config_dir) / "mosquitto.conf"

    @property
    def data_dir(self) -> Path:
        return Path(self.env.broker_data_dir)

    def dynsec_path(self) -> Path:
        return self.data_dir / "dynamic-security.json"

    def start(self) -> LocalBroker:
        files = prepare_local_broker(
            self.spec, self.env, self.namespace, "default", self.admin_password, keep_user=True
        )
        self.admin_username = files.admin_username
        self.starts += 1
        log = self.state_dir / f"mosquitto-{self.starts}.log"
        self.process = ManagedProcess(files.argv, log).start()
        self.process.wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return "".join(
            path.read_text(errors="replace")
            for path in sorted(self.state_dir.glob("mosquitto-*.log"))
        )

    def client(
        self,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        clean_start: bool = True,
    ) -> mqtt.Client:
        """A connected MQTT v5 client (admin by default), its network loop running."""
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        client.username_pw_set(
            username or self.admin_username, password if username else self.admin_password
        )
        client.connect(self.host, self.port, clean_start=clean_start)
        client.loop_start()
        wait_until(client.is_connected, 5, "the MQTT client to connect")
        return client


def connect_result(
    broker: LocalBroker, username: str | None, password: str | None, client_id: str | None = None
) -> str:
    """The CONNACK reason the broker gives this login (MQTT v5)."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or f"t-{uuid.uuid4().hex[:6]}",
        protocol=mqtt.MQTTv5,
    )
    if username is not None:
        client.username_pw_set(username, password)
    outcome: list[str] = []
    client.on_connect = lambda c, u, f, reason, p=None: outcome.append(str(reason))
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        wait_until(lambda: outcome, 5, "a CONNACK")
    finally:
        client.disconnect()
        client.loop_stop()
    return outcome[0]
