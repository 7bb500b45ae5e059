"""One flow's MQTT connection: gmqtt, with the manual acknowledgements a flow needs.

gmqtt was the fastest client measured here (benchmarks/reports/flow.md) but has neither a
manual ack for received QoS 1 messages nor a callback when a published one is acknowledged,
and raises OverflowError instead of waiting when the broker's receive window is full. This
module adds the three on top of its package handler:
  * a received QoS 1 message carries its packet id and the connection it came on; `ack()` sends
    its PUBACK later (in order, as MQTT requires), and skips it when that connection is gone
    (the broker re-sends the message on the persistent session: at least once);
  * `publish()` takes a callback called with True when the broker acknowledged the message
    (PUBACK below 0x80; at once for QoS 0), False when it refused it; our own copy of each
    unacknowledged message is re-published if the broker lost our session;
  * `room()` says how many more QoS 1 messages fit the broker's window; the caller waits on
    `window_open` instead of overflowing it.
`pause()`/`resume()` stop reading the socket: TCP backpressure for a QoS 0 source.
A batch window (`batch_window`, seconds) stops reading for that long after each read, so what
arrives meanwhile is read and run as one batch: fewer wakeups per message at a few thousand
messages a second, for at most that much more latency (benchmarks/reports/flow.md).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gmqtt.mqtt.connection
from gmqtt import Client
from gmqtt.mqtt.constants import MQTTv50
from gmqtt.mqtt.package import Package
from gmqtt.mqtt.protocol import BaseMQTTProtocol, MQTTProtocol

log = logging.getLogger(__name__)

# Packet ids the broker's window leaves free for our own bookkeeping (gmqtt refuses the last).
WINDOW_MARGIN = 2
# How long a PUBACK of ours may wait for a packet to travel with (see FlowLink.ack).
ACK_DELAY = 0.005


class _DirectProtocol(MQTTProtocol):
    """gmqtt's protocol without its reader task: each chunk the event loop reads is split into
    packets right in `data_received`. gmqtt feeds a StreamReader that wakes a task per read,
    which at 2,000 msg/s, a read or two per message, cost a task switch and a future each."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        BaseMQTTProtocol.connection_made(self, transport)  # not MQTTProtocol's: no read task
        self._unparsed = b""
        self.after_read: Callable[[], None] | None = None  # set by FlowLink at CONNACK
        self.batch_window = 0.0  # seconds; set by FlowLink at CONNACK
        self.paused_by_link = False  # backpressure: the end of a batch window leaves it paused
        self._window_end: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        buffer = self._unparsed + data if self._unparsed else data
        if self._connection is None:  # nothing is sent before CONNECT; kept to be safe
            self._unparsed = buffer
            return
        after_read = self.after_read
        if after_read is None:
            self._parse(buffer)
            return
        # What the packets of this read make us write goes out in one write at its end
        # (after_read flushes, and clears the flag, whatever happens).
        self._spine_reading = True
        try:
            self._parse(buffer)
        finally:
            after_read()
        if self.batch_window and self._window_end is None:
            self._hold()

    def _hold(self) -> None:
        """Read nothing more for one batch window: what arrives meanwhile waits in the kernel
        and comes in one read at its end (two wakeups a window under uvloop: its end, and the
        first packet after the pause, which libuv reports once before it disarms the socket)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.pause_reading()
        self._window_end = asyncio.get_running_loop().call_later(self.batch_window, self._release)

    def _release(self) -> None:
        self._window_end = None
        self.resume_unless_paused()

    def resume_unless_paused(self) -> None:
        transport = self._transport
        if self.paused_by_link or self._window_end is not None:
            return
        if transport is not None and not transport.is_closing():
            with contextlib.suppress(RuntimeError):
                transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._window_end is not None:
            self._window_end.cancel()
            self._window_end = None
        super().connection_lost(exc)

    def _parse(self, buffer: bytes) -> None:
        parsed = self._read_packet(buffer)
        if parsed < 0:
            self._unparsed = b""
            self._transport.close()  # a malformed length: what gmqtt's read loop does
            return
        self._unparsed = buffer[parsed:]

    def eof_received(self) -> bool:
        return False  # close: gmqtt's read loop did so on an empty read


# gmqtt builds its protocol from this module-level name; every gmqtt client in the process
# is a FlowLink (the engine's and the benchmark driver's).
gmqtt.mqtt.connection.MQTTProtocol = _DirectProtocol


@dataclass(slots=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    mid: int | None
    generation: int


@dataclass(slots=True)
class Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    done: Callable[[bool], None]


class FlowLink:
    """A v5 client logged in as one flow; callbacks run in the event loop's thread."""

    def __init__(
        self,
        client_id: str,
        username: str,
        password: str,
        host: str,
        port: int,
        on_message: Callable[[Received], None],
        *,
        subscriptions: list[tuple[str, int]] = (),  # type: ignore[assignment]
        unsubscriptions: list[str] = (),  # type: ignore[assignment]
        persistent: bool = False,
        session_expiry: int = 3600,
        receive_maximum: int = 100,
        keepalive: int = 30,
        tls_ca_file: str | None = None,
        batch_window: float = 0.0,
    ) -> None:
        self.host, self.port, self.keepalive = host, port, keepalive
        self.batch_window = batch_window
        self.subscriptions = list(subscriptions)
        self.unsubscriptions = list(unsubscriptions)  # dropped from a resumed session
        self.on_message = on_message
        properties: dict[str, Any] = {"receive_maximum": max(1, min(receive_maximum, 65535))}
        if persistent:
            properties["session_expiry_interval"] = session_expiry
        self.client = Client(
            client_id,
            clean_session=not persistent,
            optimistic_acknowledgement=False,
            **properties,
        )
        self.client.set_auth_credentials(username, password)
        self.client.set_config({"reconnect_retries": -1, "reconnect_delay": 1})
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_qos0
        handler = self.client._package_handler
        handler._handle_qos_1_publish_packet = self._on_qos1
        self._gmqtt_publish_packet = handler._handle_publish_packet
        handler._handle_publish_packet = self._on_publish_packet
        handler._handle_puback_packet = self._on_puback
        self._handler = handler
        self._ids = handler.id_generator  # gmqtt's; SUBSCRIBE takes its ids from it too
        self._window_size = self._window()
        self._write_lazily: Callable[[bytes], None] | None = None
        self._ssl: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=tls_ca_file) if tls_ca_file else False
        )
        self.generation = 0
        self.connected = asyncio.Event()
        self.window_open = asyncio.Event()
        self.window_open.set()
        self.pending: dict[int, Outgoing] = {}  # by packet id, sent, not yet acknowledged
        self.waiting: collections.deque[Outgoing] = collections.deque()  # not sent yet
        self.last_error: str | None = None
        # Called after each chunk read, once its packets were handed over (FlowRunner's
        # synchronous batch); what it publishes is written at once, not a loop turn later.
        self.after_read: Callable[[], None] | None = None
        self._paused = False
        self._closing = False

    # Connection --------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, retrying until it works (the broker may start after the engine)."""
        delay = 0.5
        while not self._closing:
            try:
                await self.client.connect(
                    self.host, self.port, ssl=self._ssl, keepalive=self.keepalive, version=MQTTv50
                )
                return
            except Exception as error:  # refused login, DNS, connection refused...
                self.last_error = f"cannot connect to the broker: {error}"
                log.warning("Flow login %s: %s", self.client._client_id, self.last_error)
                # gmqtt leaves a refused client half-open; a fresh connect() starts over.
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    async def stop(self) -> None:
        self._closing = True
        try:
            await asyncio.wait_for(self.client.disconnect(), 2)
        except Exception as error:
            log.debug("Disconnect of %s: %s", self.client._client_id, error)

    def _on_connect(self, client: Client, flags: int, rc: int, properties: Any) -> None:
        protocol = client._connection._protocol
        protocol.batch_window = self.batch_window
        self._cork(protocol)
        self._frame(protocol)
        self._write_lazily = protocol.write_lazily
        self._window_size = self._window()  # the broker's receive maximum, from its CONNACK
        self.generation += 1
        self.last_error = None
        session_present = bool(flags)
        if session_present and self.unsubscriptions:
            client.unsubscribe(self.unsubscriptions)
        for topic, qos in self.subscriptions:
            client.subscribe(topic, qos=qos)
        if not session_present and self.pending:
            # gmqtt drops its copies when the broker lost the session: publish ours again.
            self.waiting.extendleft(reversed(list(self.pending.values())))
            self.pending = {}
            self._handler.id_generator._used_ids.clear()
        self._paused = False
        self.connected.set()
        self._flush_waiting()
        self._update_window()

    @staticmethod
    def _cork(protocol: Any) -> None:
        """Coalesce the packets written in one turn of the event loop into one write: gmqtt
        writes each packet at once, a send() per PUBLISH and per PUBACK, which cost more than
        everything else a simple flow does (benchmarks/reports/flow.md)."""
        if getattr(protocol, "_spine_corked", False):
            return
        loop = asyncio.get_running_loop()
        chunks: list[bytes] = []
        soon: asyncio.Handle | None = None
        later: asyncio.TimerHandle | None = None

        def flush() -> None:
            nonlocal soon, later
            soon = None
            if later is not None:
                later.cancel()
                later = None
            transport = protocol._transport
            data = b"".join(chunks)
            chunks.clear()
            if transport is not None and not transport.is_closing():
                transport.write(data)
                protocol._connection._last_data_out = time.monotonic()

        def write_data(data: bytes) -> None:
            nonlocal soon
            # Within a read, after_read flushes at its end: no loop callback needed.
            if soon is None and not protocol._spine_reading:
                soon = loop.call_soon(flush)
            chunks.append(bytes(data))

        def write_lazily(data: bytes) -> None:
            """Send with the next packet written anyway, or within ACK_DELAY."""
            nonlocal later
            chunks.append(data)
            # Within a read, after_read writes it at the read's end: no timer to arm and cancel.
            if soon is None and later is None and not protocol._spine_reading:
                later = loop.call_later(ACK_DELAY, flush)

        def flush_now() -> None:
            if soon is not None:
                soon.cancel()
            if chunks:
                flush()

        protocol.write_data = write_data
        protocol.write_lazily = write_lazily
        protocol._spine_flush_now = flush_now
        protocol._spine_corked = True
        protocol._spine_reading = False

    def _frame(self, protocol: Any) -> None:
        """Split the byte stream into packets here and hand PUBLISH and PUBACK straight to
        this link's parsers: gmqtt wraps each packet in an object, stamps the time and routes
        it through a generic handler with debug logging, per packet (benchmarks/reports/
        flow.md). Installed from CONNACK on, within gmqtt's own read loop, so the packets
        stay in order; others (SUBACK, PINGRESP, DISCONNECT) still go to gmqtt."""
        if getattr(protocol, "_spine_framed", False):
            return
        connection = protocol._connection
        handler = self._handler
        gmqtt_read_packet = protocol._read_packet
        on_publish, on_puback = self._on_publish_packet, self._on_puback

        def read_packets(data: bytes) -> int:
            if handler.current_connection is not connection:
                return int(gmqtt_read_packet(data))  # superseded: gmqtt drops what it reads
            connection._last_data_in = time.monotonic()
            position, size = 0, len(data)
            while size - position >= 2:
                length, shift, index = 0, 0, position + 1
                while True:  # the remaining length, a variable byte integer
                    if index >= size:
                        return position
                    byte = data[index]
                    index += 1
                    length |= (byte & 0x7F) << shift
                    if not byte & 0x80:
                        break
                    shift += 7
                    if shift > 21:
                        return -1  # malformed: gmqtt's read loop drops the connection
                end = index + length
                if end > size:
                    return position
                command = data[position]
                kind = command & 0xF0
                if kind == 0x30:
                    on_publish(command, data[index:end])
                elif kind == 0x40:
                    on_puback(command, data[index:end])
                else:
                    connection.put_package(Package(command, data[index:end]))
                position = end
            return position

        protocol._read_packet = read_packets
        protocol._spine_framed = True
        if isinstance(protocol, _DirectProtocol):
            flush_now = protocol._spine_flush_now

            def after_read() -> None:
                try:
                    if self.after_read is not None:
                        self.after_read()
                finally:
                    protocol._spine_reading = False
                    flush_now()

            protocol.after_read = after_read

    def _on_disconnect(self, client: Client, packet: Any, exc: Any = None) -> None:
        self.connected.clear()
        if not self._closing:
            self.last_error = "disconnected from the broker"
            log.warning("Flow login %s lost its broker connection", client._client_id)

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        if not self._paused:
            protocol = self._protocol()
            if protocol is not None and protocol._transport is not None:
                protocol.paused_by_link = True
                protocol._transport.pause_reading()
                self._paused = True

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            protocol = self._protocol()
            if protocol is not None:
                protocol.paused_by_link = False
                protocol.resume_unless_paused()  # or at the end of its batch window

    def _protocol(self) -> _DirectProtocol | None:
        connection = self.client._connection
        return getattr(connection, "_protocol", None) if connection is not None else None

    # Receiving ---------------------------------------------------------------------------

    def _on_publish_packet(self, cmd: int, raw: bytes) -> None:
        """A PUBLISH, parsed here rather than by gmqtt's generic handler (its property
        parsing and debug logging were the largest part of the engine's receive cost).
        What this does not expect (QoS 2, a topic alias) goes to gmqtt's handler."""
        qos = (cmd & 0x06) >> 1
        topic_length = int.from_bytes(raw[0:2], "big")
        if qos == 2 or topic_length == 0:
            self._gmqtt_publish_packet(cmd, raw)
            return
        position = 2 + topic_length
        mid = None
        if qos:
            mid = int.from_bytes(raw[position : position + 2], "big")
            position += 2
        length, shift = 0, 0  # MQTT v5: the properties' length, a variable byte integer
        while True:
            byte = raw[position]
            position += 1
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
        topic = raw[2 : 2 + topic_length].decode("utf-8", "replace")
        self.on_message(Received(topic, raw[position + length :], qos, mid, self.generation))

    def _on_qos0(
        self, client: Client, topic: str, payload: bytes, qos: int, properties: Any
    ) -> None:
        self.on_message(Received(topic, payload, qos, None, self.generation))

    def _on_qos1(self, mid: int, packet: bytes, topic: str, properties: Any) -> None:
        self.on_message(Received(topic, packet, 1, mid, self.generation))

    def ack(self, message: Received) -> None:
        """PUBACK a QoS 1 message, unless it came on a connection that is gone. The PUBACK
        goes with the next packet written anyway (at 2,000 msg/s, the next message's
        publish), or within ACK_DELAY: a write of its own per message cost more CPU than
        the flow's step. A later ack only holds a slot of the broker's window longer."""
        if message.mid is None or message.generation != self.generation:
            return
        if self._write_lazily is not None and self.connected.is_set():
            self._write_lazily(b"\x40\x02" + message.mid.to_bytes(2, "big"))

    # Publishing --------------------------------------------------------------------------

    def room(self) -> int:
        return self._window_size - len(self.pending) - len(self.waiting)

    def publish(
        self, topic: str, payload: bytes, qos: int, retain: bool, done: Callable[[bool], None]
    ) -> None:
        """Send now, or when the broker's window has room (QoS 1, in order); `done` reports
        the outcome."""
        item = Outgoing(topic, payload, qos, retain, done)
        if qos and (self.waiting or len(self.pending) >= self._window_size):
            # Checked before gmqtt builds the packet: an OverflowError would cost a build.
            self.waiting.append(item)
            self._update_window()
            return
        self._send(item)

    def _window(self) -> int:
        return int(self._handler.id_generator._max) - WINDOW_MARGIN

    def _send(self, item: Outgoing) -> None:
        if not self.connected.is_set() and item.qos == 0:
            item.done(False)
            return
        if not self.connected.is_set():
            # Kept until the connection is back; _on_connect sends what waits here.
            self.waiting.append(item)
            self._update_window()
            return
        protocol = self.client._connection._protocol
        mid = 0
        if item.qos:
            mid = self._next_mid()
            if not mid:  # the broker's window is full: send when a PUBACK frees it
                self.waiting.append(item)
                self._update_window()
                return
        package = publish_packet(item.topic, item.payload, item.qos, item.retain, mid)
        protocol.write_data(package)
        if item.qos == 0:
            item.done(True)
            return
        self.client._persistent_storage.push_message(mid, package)
        self.pending[mid] = item
        self._update_window()

    def _next_mid(self) -> int:
        """A free packet id, 0 when every one is in use: gmqtt's IdGenerator.next_id without
        its two debug log calls per publish, on the same set of ids in use."""
        ids = self._ids
        used, limit = ids._used_ids, ids._max
        if len(used) >= limit - 1:
            return 0
        mid = ids._last_used_id
        while True:
            mid += 1
            if mid >= limit:
                mid = 0
                continue
            if mid not in used:
                break
        ids._last_used_id = mid
        used.add(mid)
        return int(mid)

    def _on_puback(self, cmd: int, packet: bytes) -> None:
        mid = (packet[0] << 8) | packet[1]
        reason = packet[2] if len(packet) > 2 else 0
        self._ids._used_ids.discard(mid)
        self.client._persistent_storage.remove_message_by_mid(mid)
        item = self.pending.pop(mid, None)
        self._update_window()
        if item is not None:
            if reason >= 0x80:
                self.last_error = f"the broker refused a publish to {item.topic} (reason {reason})"
            item.done(reason < 0x80)
        self._flush_waiting()

    def _flush_waiting(self) -> None:
        if not self.waiting:
            return
        limit = self._window_size
        while self.waiting and self.connected.is_set() and len(self.pending) < limit:
            item = self.waiting.popleft()
            before = len(self.waiting)
            self._send(item)
            if len(self.waiting) > before:  # went back to waiting: the window is full
                self.waiting.appendleft(self.waiting.pop())
                break

    def _update_window(self) -> None:
        is_open = self._window_size - len(self.pending) - len(self.waiting) > 0
        if is_open != self.window_open.is_set():
            if is_open:
                self.window_open.set()
            else:
                self.window_open.clear()


def publish_packet(topic: str, payload: bytes, qos: int, retain: bool, mid: int) -> bytes:
    """An MQTT v5 PUBLISH without properties, built in one go (gmqtt's builder extends a
    bytearray field by field and logs at debug level twice per packet)."""
    name = topic.encode()
    remaining = 2 + len(name) + (2 if qos else 0) + 1 + len(payload)
    length = bytearray()
    while True:
        remaining, byte = remaining >> 7, remaining & 0x7F
        length.append(byte | 0x80 if remaining else byte)
        if not remaining:
            break
    return b"".join(
        (
            bytes((0x30 | (qos << 1) | (1 if retain else 0),)),
            length,
            len(name).to_bytes(2, "big"),
            name,
            mid.to_bytes(2, "big") if qos else b"",
            b"\x00",  # no properties
            payload,
        )
    )
