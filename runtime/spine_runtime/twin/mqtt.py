"""The twin's broker connection: receive updates, acknowledge them after commit, publish.

paho runs inside the service's asyncio loop (its socket callbacks register with the loop's
reader and writer), so receiving, applying, acknowledging and publishing share one thread:
no hand-off between a network thread and the loop, which measured about a fifth cheaper per
message. QoS 1 updates are acknowledged by hand (`manual_ack=True`) once stored. The session is
persistent (clean start off, with an expiry), so updates that arrive while the twin is away
wait at the broker, and unacknowledged ones come again after a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from spine_runtime.config.base import MqttSettings
from spine_runtime.config.twin import IngestSettings
from spine_runtime.twin.protocol import TWIN_SUBSCRIPTIONS

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 30
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)
PROBE_TIMEOUT_SECONDS = 5.0


class Inbound(NamedTuple):
    """A received message; `generation` tells which connection its `mid` belongs to."""

    generation: int
    mid: int
    qos: int
    topic: str
    payload: bytes
    received: float


class MqttLink:
    def __init__(
        self,
        settings: MqttSettings,
        ingest: IngestSettings,
        on_inbox: Callable[[], None],
        on_connected: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.ingest = ingest
        self.inbox: deque[Inbound] = deque()
        self._on_inbox = on_inbox
        self._on_connected = on_connected
        self.generation = 0
        self.connected = False
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()

    # lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.settings.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        client.username_pw_set(self.settings.username, self.settings.password())
        if self.settings.tls_ca_file is not None:
            client.tls_set(ca_certs=str(self.settings.tls_ca_file))
        # An unbounded window: paho rescans its in-flight table on every PUBACK when bounded,
        # which caps a publisher at a few thousand messages a second (TESTING.md, section 6).
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        client.on_message = self._received
        client.on_subscribe = self._subscribed
        client.on_socket_open = self._socket_opened
        client.on_socket_close = self._socket_closed
        client.on_socket_register_write = self._want_write
        client.on_socket_unregister_write = self._done_writing
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.ingest.session_expiry_seconds
        properties.ReceiveMaximum = self.ingest.receive_maximum
        client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=KEEPALIVE_SECONDS,
            clean_start=False,
            properties=properties,
        )
        self._client = client
        self._supervisor = asyncio.create_task(self._keep_connected(), name="twin-mqtt")

    async def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        client, self._client = self._client, None
        if client is not None and self.connected:
            client.disconnect()
            with contextlib.suppress(Exception):
                client.loop_write()  # flush the DISCONNECT
        self.connected = False

    async def _keep_connected(self) -> None:
        """(Re)connect with backoff and drive paho's keepalive once a second."""
        attempt = 0
        while True:
            client = self._client
            assert client is not None
            if client.socket() is None:
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                if await self._connect(client):
                    attempt = 0
                else:
                    attempt += 1
                    await asyncio.sleep(delay)
                continue
            client.loop_misc()
            self._lost.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), 1.0)

    async def _connect(self, client: mqtt.Client) -> bool:
        # paho connects with a blocking socket call: first make sure the broker answers, so
        # that call cannot hold up the event loop while the broker is away.
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(self.settings.host, self.settings.port),
                PROBE_TIMEOUT_SECONDS,
            )
            writer.close()
            self._lost.clear()
            client.reconnect()
        except (OSError, TimeoutError) as error:
            log.warning(
                "Cannot reach the broker %s:%s: %s", self.settings.host, self.settings.port, error
            )
            return False
        # Connected only once the broker accepted the login (CONNACK), not at the TCP level.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._lost.wait(), PROBE_TIMEOUT_SECONDS)
        return self.connected

    # paho's callbacks (all in the event loop's thread) -----------------------------------------

    def _socket_opened(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.add_reader(sock, client.loop_read)

    def _socket_closed(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.remove_reader(sock)
        self._loop.remove_writer(sock)
        self._lost.set()

    def _want_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.add_writer(sock, client.loop_write)

    def _done_writing(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.remove_writer(sock)

    def _connected(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any = None
    ) -> None:
        if reason.is_failure:
            log.warning(
                "Broker %s:%s refused the twin's login: %s",
                self.settings.host,
                self.settings.port,
                reason,
            )
            return
        self.generation += 1
        self.connected = True
        self._lost.set()  # wakes `_connect`, which waits for the outcome
        client.subscribe([(topic, 1) for topic in TWIN_SUBSCRIPTIONS])
        log.info(
            "Connected to the broker %s:%s (session present: %s)",
            self.settings.host,
            self.settings.port,
            flags.session_present,
        )
        self._on_connected()

    def _subscribed(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any = None
    ) -> None:
        for topic, reason in zip(TWIN_SUBSCRIPTIONS, reasons, strict=False):
            if reason.is_failure:
                log.error("The broker refused the twin's subscription to %s: %s", topic, reason)

    def _disconnected(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any = None
    ) -> None:
        if self.connected:
            log.warning("Lost the broker connection: %s", reason)
        self.connected = False
        self._lost.set()

    def _received(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.inbox.append(
            Inbound(
                self.generation,
                message.mid,
                message.qos,
                message.topic,
                bytes(message.payload),
                time.monotonic(),
            )
        )
        self._on_inbox()

    # the service's side ---------------------------------------------------------------------

    def ack(self, inbound: Inbound) -> None:
        """Acknowledge a stored update; one from an earlier connection is re-sent by the broker
        anyway, and its message id may mean another message now."""
        client = self._client
        if client is not None and inbound.qos > 0 and inbound.generation == self.generation:
            client.ack(inbound.mid, inbound.qos)

    def publish(self, topic: str, payload: bytes) -> None:
        client = self._client
        if client is not None:
            client.publish(topic, payload, qos=1)
