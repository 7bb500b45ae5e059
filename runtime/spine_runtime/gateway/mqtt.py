"""The gateway's MQTT session: paho in its own network thread, events handed to asyncio.

The gateway creates one link. It keeps a persistent session (MQTT v5, clean start off, session
expiry below), so acks and desired commands published while the link was briefly down are
still delivered; it re-reads the password file before every reconnect, so a rotated Secret
takes effect without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from spine_runtime.config.base import MqttSettings

log = logging.getLogger(__name__)

# How long the broker keeps the session (and queues desired commands) while the gateway is
# away. Short on purpose: a set point queued for longer than this is too stale to write.
SESSION_EXPIRY_SECONDS = 600
KEEPALIVE_SECONDS = 15


@dataclass
class LinkEvents:
    """Called on the event loop."""

    connected: Callable[[bool], None]  # session_present
    disconnected: Callable[[str], None]
    message: Callable[[str, bytes], None]
    refused: Callable[[str], None]  # the broker refused a subscription
    # the broker refused a publish: (mid, reason name, reason code), e.g. "Not authorized", 135
    publish_refused: Callable[[int, str, int], None]


class MqttLink:
    def __init__(self, settings: MqttSettings, subscriptions: list[str], events: LinkEvents):
        self.settings = settings
        self.subscriptions = subscriptions
        self.events = events
        self.connected = False
        self.last_error: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._subscribe_mids: dict[int, list[str]] = {}
        self._stopping = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.settings.client_id, protocol=mqtt.MQTTv5
        )
        client.username_pw_set(self.settings.username, self.settings.password())
        if self.settings.tls_ca_file is not None:
            client.tls_set(ca_certs=str(self.settings.tls_ca_file))
        # Tried every few seconds at most: a broker back after an outage is used at once, and a
        # connection attempt costs the broker little.
        client.reconnect_delay_set(min_delay=1, max_delay=4)
        # The gateway's own window (publish.maxInFlight) bounds what it hands paho.
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = SESSION_EXPIRY_SECONDS
        client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=KEEPALIVE_SECONDS,
            clean_start=False,
            properties=properties,
        )
        client.loop_start()
        self._client = client

    async def stop(self) -> None:
        self._stopping = True
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)
        self.connected = False

    def set_subscriptions(self, topics: list[str]) -> None:
        """Follow a config change: subscribe new topics, drop old ones (also on reconnect)."""
        added = [topic for topic in topics if topic not in self.subscriptions]
        removed = [topic for topic in self.subscriptions if topic not in topics]
        self.subscriptions = list(topics)
        client = self._client
        if client is None or not self.connected:
            return
        if removed:
            client.unsubscribe(removed)
        if added:
            _, mid = client.subscribe([(topic, 1) for topic in added])
            if mid is not None:
                self._subscribe_mids[mid] = added

    def publish(self, topic: str, payload: bytes, qos: int) -> int | None:
        """Hand a message to paho; its message id, or None if the session is down (it stays on
        disk). A refusal by the broker comes later, as `publish_refused` with that id."""
        client = self._client
        if client is None or not self.connected:
            return None
        info = client.publish(topic, payload, qos=qos)
        return info.mid if info.rc == mqtt.MQTT_ERR_SUCCESS else None

    # paho's network thread ---------------------------------------------------------------

    def _hand_over(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback, *args)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any = None
    ) -> None:
        if reason.is_failure:
            self.last_error = f"the broker refused the login: {reason}"
            log.error(
                "Broker %s:%s refused the gateway's login %s: %s",
                self.settings.host,
                self.settings.port,
                self.settings.username,
                reason,
            )
            return
        sock = client.socket()
        if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Nagle's algorithm holds a small update back until the previous one is acked:
            # tens of milliseconds per update on a steady stream. paho leaves it on.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.subscriptions:
            _, mid = client.subscribe([(topic, 1) for topic in self.subscriptions])
            if mid is not None:
                self._subscribe_mids[mid] = list(self.subscriptions)
        self._hand_over(self._connected, bool(getattr(flags, "session_present", False)))

    def _connected(self, session_present: bool) -> None:
        self.connected, self.last_error = True, None
        log.info(
            "Connected to broker %s:%s (session %s)",
            self.settings.host,
            self.settings.port,
            "resumed" if session_present else "new",
        )
        self.events.connected(session_present)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any = None
    ) -> None:
        try:
            # A rotated Secret lands in the mounted file; use it on the next attempt.
            client.username_pw_set(self.settings.username, self.settings.password())
        except OSError as error:
            log.error("Cannot read the MQTT password file: %s", error)
        self._hand_over(self._disconnected, str(reason))

    def _disconnected(self, reason: str) -> None:
        was_connected, self.connected = self.connected, False
        if was_connected and not self._stopping:
            self.last_error = f"disconnected: {reason}"
            log.warning("Lost the broker %s:%s: %s", self.settings.host, self.settings.port, reason)
        self.events.disconnected(reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._hand_over(self.events.message, message.topic, bytes(message.payload))

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any = None
    ) -> None:
        if reason.is_failure:
            # Handed over after the loop step that published it: the sender has noted the mid.
            self._hand_over(self.events.publish_refused, mid, str(reason), int(reason.value))

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any = None
    ) -> None:
        topics = self._subscribe_mids.pop(mid, [])
        for topic, reason in zip(topics, reasons, strict=False):
            if reason.is_failure:
                self._hand_over(
                    self.events.refused, f"the broker refused the subscription {topic}: {reason}"
                )
