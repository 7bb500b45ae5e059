"""MQTT announcements of catalog changes, as LinkSmart Service Catalog sends them.

`<prefix>/<type>/<id>/alive` carries the service JSON, retained, QoS 1, on every registration
and change; on removal (delete, expiry, a registration gone) the retained alive is cleared with
an empty retained message and `<prefix>/<type>/<id>/dead` carries the service JSON, not
retained. paho runs its network loop in its own thread and reconnects by itself; on every
(re)connect the current entries are announced again, dead announcements not yet acknowledged
are sent again, and retained alive messages of entries that no longer exist (left from before a
restart) are cleared. `service.CatalogService` owns one `Announcer` when `mqtt` is configured.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

from spine_runtime.catalog.metrics import CatalogMetrics
from spine_runtime.config.base import MqttSettings

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 30
RECONNECT_MIN_SECONDS = 1
RECONNECT_MAX_SECONDS = 10

Key = tuple[str, str]  # (type, id): the two topic levels that name an entry
Current = Callable[[], dict[Key, bytes]]
Exists = Callable[[Key], bool]


class Announcer:
    def __init__(
        self,
        settings: MqttSettings,
        prefix: str,
        current: Current,
        exists: Exists,
        metrics: CatalogMetrics,
    ) -> None:
        self.settings = settings
        self.prefix = prefix.rstrip("/")
        self.current = current
        self.exists = exists
        self.metrics = metrics
        self.connected = False
        self._warned_unreachable = False  # one warning per outage, not one per retry
        # Dead announcements until the broker acknowledged them: sent again after a reconnect.
        self._pending_dead: dict[Key, bytes] = {}
        self._dead_mids: dict[int, Key] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None

    def topic(self, key: Key, kind: str) -> str:
        return f"{self.prefix}/{key[0]}/{key[1]}/{kind}"

    # lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.settings.client_id,
            protocol=mqtt.MQTTv5,
        )
        client.username_pw_set(self.settings.username, self.settings.password())
        if self.settings.tls_ca_file is not None:
            client.tls_set(ca_certs=str(self.settings.tls_ca_file))
        client.reconnect_delay_set(RECONNECT_MIN_SECONDS, RECONNECT_MAX_SECONDS)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.connect_async(self.settings.host, self.settings.port, keepalive=KEEPALIVE_SECONDS)
        client.loop_start()  # its thread connects, and reconnects whenever the broker is lost
        self._client = client

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        client.disconnect()
        await asyncio.to_thread(client.loop_stop)
        self._set_connected(False)

    # what the service calls (event loop thread) -----------------------------------------------

    def alive(self, key: Key, payload: bytes) -> None:
        self._pending_dead.pop(key, None)
        if self.connected:
            self._publish_alive(key, payload)

    def dead(self, key: Key, payload: bytes) -> None:
        self._pending_dead[key] = payload
        if self.connected:
            self._publish_dead(key, payload)

    def _publish_alive(self, key: Key, payload: bytes) -> None:
        client = self._client
        if client is not None:
            client.publish(self.topic(key, "alive"), payload, qos=1, retain=True)
            self.metrics.announcements.labels("alive").inc()

    def _publish_dead(self, key: Key, payload: bytes) -> None:
        client = self._client
        if client is None:
            return
        # An empty retained message deletes the retained alive (MQTT 3.3.1.3).
        client.publish(self.topic(key, "alive"), b"", qos=1, retain=True)
        info = client.publish(self.topic(key, "dead"), payload, qos=1, retain=False)
        self._dead_mids[info.mid] = key
        self.metrics.announcements.labels("dead").inc()

    def _resync(self) -> None:
        """After a (re)connect: everything alive again, every unacknowledged dead again."""
        current = self.current()
        for key in list(self._pending_dead):
            if key in current:
                del self._pending_dead[key]
        self._dead_mids.clear()
        for key, payload in current.items():
            self._publish_alive(key, payload)
        for key, payload in self._pending_dead.items():
            self._publish_dead(key, payload)

    def _forget_stale(self, topic: str, payload: bytes) -> None:
        """A retained alive the broker kept for an entry this catalog no longer has."""
        levels = topic[len(self.prefix) + 1 :].split("/")
        if len(levels) != 3 or levels[2] != "alive" or not payload:
            return
        key = (levels[0], levels[1])
        if not self.exists(key) and key not in self._pending_dead:
            log.info("Clearing the stale announcement of %s/%s", *key)
            self.dead(key, payload)

    def _set_connected(self, connected: bool) -> None:
        self.connected = connected
        self.metrics.mqtt_connected.set(1 if connected else 0)

    # paho's callbacks (its network thread): hand over to the event loop ---------------------

    def _call_in_loop(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback, *args)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any = None
    ) -> None:
        if reason.is_failure:
            log.warning(
                "Broker %s:%s refused the catalog's login: %s",
                self.settings.host,
                self.settings.port,
                reason,
            )
            return
        # Retained alives from before a restart; noLocal keeps our own publications away.
        client.subscribe(f"{self.prefix}/+/+/alive", options=SubscribeOptions(qos=1, noLocal=True))
        self._call_in_loop(self._connected_in_loop)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._call_in_loop(self._unreachable_in_loop)

    def _unreachable_in_loop(self) -> None:
        if not self._warned_unreachable:
            self._warned_unreachable = True
            log.warning(
                "Cannot reach the broker %s:%s; announcements wait until it answers",
                self.settings.host,
                self.settings.port,
            )

    def _connected_in_loop(self) -> None:
        self._warned_unreachable = False
        log.info("Connected to the broker %s:%s", self.settings.host, self.settings.port)
        self._set_connected(True)
        self._resync()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any = None
    ) -> None:
        self._call_in_loop(self._disconnected_in_loop, str(reason))

    def _disconnected_in_loop(self, reason: str) -> None:
        if self.connected:
            log.warning("Lost the broker connection: %s", reason)
        self._set_connected(False)

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        self._call_in_loop(self._acknowledged, mid, not reason.is_failure)

    def _acknowledged(self, mid: int, accepted: bool) -> None:
        key = self._dead_mids.pop(mid, None)
        if key is None:
            return
        if accepted:
            self._pending_dead.pop(key, None)
        else:
            log.error("The broker refused the dead announcement of %s/%s", *key)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.retain:
            self._call_in_loop(self._forget_stale, message.topic, bytes(message.payload))
