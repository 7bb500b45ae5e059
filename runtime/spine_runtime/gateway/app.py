"""The gateway process: wires connections, pipeline, disk queue, sender, writer and HTTP.

`main.py` builds one `Gateway` from the config file and runs it until SIGTERM. A pushed or
changed config applies live when only connections, tags, publish settings or the resend timeout
change; anything else (name, namespace, broker, HTTP, buffer) needs a restart and is refused.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from pathlib import Path
from typing import Any

from spine_runtime import __version__
from spine_runtime.common.configsource import ConfigError, ConfigSource
from spine_runtime.common.server import RuntimeServer
from spine_runtime.config.gateway import GatewayConfig
from spine_runtime.gateway.connection import (
    STOP_DEADLINE_SECONDS,
    ConnectionRunner,
    ConnectionState,
    DriverFactory,
)
from spine_runtime.gateway.drivers import make_driver
from spine_runtime.gateway.drivers.base import BoundTag
from spine_runtime.gateway.metrics import GatewayMetrics
from spine_runtime.gateway.mqtt import LinkEvents, MqttLink
from spine_runtime.gateway.pipeline import Pipeline
from spine_runtime.gateway.protocol import Ack, ack_topic, desired_topic, parse_ack
from spine_runtime.gateway.queue import AsyncDiskQueue
from spine_runtime.gateway.sender import Sender
from spine_runtime.gateway.values import format_time
from spine_runtime.gateway.writer import DesiredWriter

log = logging.getLogger(__name__)

RESTART_FIELDS = ("name", "twin_namespace", "mqtt", "http", "buffer")
# SIGTERM to exit: Kubernetes waits 30 s before SIGKILL; every step of stop() is bounded.
STOP_TASKS_SECONDS = 5.0


def subscriptions_of(config: GatewayConfig) -> list[str]:
    return [ack_topic(config.name), *(desired_topic(t) for t in config.writable_things())]


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        config_path: Path | None = None,
        driver_factory: DriverFactory = make_driver,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.driver_factory = driver_factory
        # connections whose task would not stop: (name, when), for /status and /healthz
        self.abandoned: list[tuple[str, float]] = []
        self.connection_stop_seconds = STOP_DEADLINE_SECONDS
        self.metrics = GatewayMetrics()
        buffer = config.buffer
        self.queue = AsyncDiskQueue(
            buffer.path,
            buffer.max_messages,
            buffer.max_bytes,
            buffer.fsync,
            buffer.max_dead_letters,
        )
        self.runners: dict[str, ConnectionRunner] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.acks: asyncio.Queue[Ack] = asyncio.Queue()
        self.refusals: asyncio.Queue[tuple[int, str, int]] = asyncio.Queue()
        self.started_at = time.time()
        self.last_refusal: str | None = None
        self.server: RuntimeServer | None = None
        self.config_source: ConfigSource[GatewayConfig] | None = None

    async def start(self) -> None:
        config = self.config
        stats = await self.queue.open()
        self.pipeline = Pipeline(
            self.queue, self.metrics, config.publish.heartbeat_seconds, on_enqueued=self._enqueued
        )
        self.writer = DesiredWriter(config.twin_namespace, self.pipeline, self.metrics)
        self.link = MqttLink(
            config.mqtt,
            subscriptions_of(config),
            LinkEvents(
                connected=self._broker_connected,
                disconnected=self._broker_lost,
                message=self._message,
                refused=self._refused,
                publish_refused=lambda *refusal: self.refusals.put_nowait(refusal),
            ),
        )
        self.sender = Sender(config, self.queue, self.link, self.metrics, stats)
        self._start_runners(config)
        self.link.start()
        for name, work in (
            ("sender", self.sender.run()),
            ("writer", self.writer.run()),
            ("acks", self._handle_acks()),
            ("refusals", self._handle_refusals()),
            ("heartbeats", self.pipeline.run_heartbeats(self._live_connections)),
            ("gauges", self._refresh_gauges()),
        ):
            self.tasks.append(asyncio.create_task(work, name=name))
        if self.config_path is not None:
            self.config_source = ConfigSource(GatewayConfig, self.config_path, self.apply)
            self.tasks.append(asyncio.create_task(self.config_source.watch(), name="config"))
        self.server = RuntimeServer(
            config.http, self.metrics.registry, self.status, self.healthy, self.config_source
        )
        await self.server.start()
        log.info(
            "Gateway %s started: %d connections, %d tags, %d updates buffered",
            config.name,
            len(config.connections),
            len(config.tags),
            stats.messages,
        )

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
        await self._stop_runners()
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            _, stuck = await asyncio.wait(self.tasks, timeout=STOP_TASKS_SECONDS)
            for task in stuck:
                log.error("Task %s did not stop within %.0f s", task.get_name(), STOP_TASKS_SECONDS)
        await self.link.stop()
        await self.queue.close()
        log.info("Gateway %s stopped", self.config.name)

    # Connections and live config --------------------------------------------------------

    def _start_runners(self, config: GatewayConfig) -> None:
        tags_by_connection: dict[str, list[BoundTag]] = {c.name: [] for c in config.connections}
        all_tags = []
        for tag in config.tags:
            bound = BoundTag.bind(tag, config.connection(tag.connection))
            tags_by_connection[tag.connection].append(bound)
            all_tags.append(bound)
        self.runners = {
            connection.name: ConnectionRunner(
                connection,
                tags_by_connection[connection.name],
                self.pipeline.ingest,
                self.metrics,
                self.driver_factory,
            )
            for connection in config.connections
        }
        self.pipeline.tags = all_tags
        self.writer.bind(all_tags, self.runners)
        for runner in self.runners.values():
            runner.start()

    async def apply(self, new: GatewayConfig) -> None:
        """Apply a new config (ConfigSource calls it); raises ConfigError if it needs a restart."""
        changed = [
            field for field in RESTART_FIELDS if getattr(new, field) != getattr(self.config, field)
        ]
        if changed:
            raise ConfigError(
                f"changing {', '.join(changed)} needs a restart of the gateway; not applied"
            )
        await self._stop_runners()
        self.config = new
        self.sender.config = new
        self.pipeline.heartbeat = new.publish.heartbeat_seconds or None
        self.link.set_subscriptions(subscriptions_of(new))
        self._start_runners(new)
        # The old config's tags and sessions are cyclic garbage that the collector's oldest
        # generation frees only much later: a large config would hold its memory until then.
        gc.collect()

    async def _stop_runners(self) -> None:
        """Stop every connection, all at once and each within its deadline; one that would
        not stop is abandoned and reported (the config still applies)."""
        runners = list(self.runners.values())
        stopped = await asyncio.gather(
            *(runner.stop(self.connection_stop_seconds) for runner in runners)
        )
        for runner, ok in zip(runners, stopped, strict=True):
            if not ok:
                self.abandoned.append((runner.name, runner.abandoned_at or time.time()))
        del self.abandoned[:-20]

    def _live_connections(self) -> set[str]:
        return {
            name
            for name, runner in self.runners.items()
            if runner.state is not ConnectionState.DISCONNECTED
        }

    # Broker events ----------------------------------------------------------------------

    def _enqueued(self) -> None:
        self.sender.notify()

    def _broker_connected(self, session_present: bool) -> None:
        self.metrics.broker_connected.set(1)
        self.sender.on_connected(session_present)

    def _broker_lost(self, reason: str) -> None:
        self.metrics.broker_connected.set(0)

    def _refused(self, message: str) -> None:
        if message != self.last_refusal:
            log.error("%s (check the gateway's broker login and ACL)", message)
        self.last_refusal = message

    def _message(self, topic: str, payload: bytes) -> None:
        if topic == ack_topic(self.config.name):
            try:
                self.acks.put_nowait(parse_ack(payload))
            except ValueError as error:
                log.warning("Ignored a malformed ack: %s", error)
            return
        parts = topic.split("/")
        if len(parts) == 4 and parts[:2] == ["spine", "things"] and parts[3] == "desired":
            self.writer.submit(parts[2], payload)

    async def _handle_acks(self) -> None:
        while True:
            pending = [await self.acks.get()]
            while not self.acks.empty():
                pending.append(self.acks.get_nowait())
            # Acks are cumulative: of a burst, only the highest per epoch matters.
            latest: dict[str, Ack] = {}
            for ack in pending:
                if ack.epoch not in latest or ack.seq > latest[ack.epoch].seq:
                    latest[ack.epoch] = ack
            for ack in latest.values():
                await self.sender.on_ack(ack)

    async def _handle_refusals(self) -> None:
        while True:
            mid, reason, code = await self.refusals.get()
            try:
                await self.sender.on_publish_refused(mid, reason, code)
            except Exception:  # a broken disk: the update stays queued and is retried
                log.exception("Could not move a refused update aside")

    # Health, status, metrics ------------------------------------------------------------

    async def _refresh_gauges(self) -> None:
        while True:
            stats = self.queue.stats
            if stats is not None:
                self.metrics.buffered_messages.set(stats.messages)
                self.metrics.buffered_bytes.set(stats.bytes)
                self.metrics.oldest_buffered_age.set(
                    time.time() - stats.oldest_enqueued_at if stats.oldest_enqueued_at else 0
                )
            for name, runner in self.runners.items():
                stalled = runner.stalled_for() is not None
                self.metrics.connection_stalled.labels(name).set(1 if stalled else 0)
            await asyncio.sleep(1)

    def healthy(self) -> bool:
        # An abandoned connection task may still hold a socket or a thread: only a restart
        # frees it for sure, so the gateway asks for one (the kubelet's liveness probe).
        return not self.abandoned and all(not task.done() for task in self.tasks)

    def status(self) -> dict[str, Any]:
        stats = self.queue.stats
        now = time.time()
        buffer = self.config.buffer
        sender = self.sender
        connections = [runner.status() for runner in self.runners.values()]
        return {
            "gateway": self.config.name,
            "version": __version__,
            "startedAt": format_time(self.started_at),
            "configDigest": self.config_source.digest if self.config_source else None,
            "broker": {
                "connected": self.link.connected,
                "lastError": self.link.last_error,
                "lastRefusal": self.last_refusal,
            },
            "connections": connections,
            "abandonedConnections": [
                {"name": name, "at": format_time(at)} for name, at in self.abandoned
            ],
            "tags": self.pipeline.tag_status(
                {
                    item["name"]: f"connection {item['name']} is {item['state']}: "
                    f"{item['lastError']}"
                    for item in connections
                    if item["state"]
                    in (ConnectionState.DISCONNECTED.value, ConnectionState.STALLED.value)
                    or (
                        item["state"] == ConnectionState.ERROR.value
                        and self.runners[item["name"]].driver is None
                    )
                }
            ),
            "buffer": {
                "messages": stats.messages if stats else 0,
                "bytes": stats.bytes if stats else 0,
                "oldestAgeSeconds": (
                    round(now - stats.oldest_enqueued_at, 3)
                    if stats and stats.oldest_enqueued_at
                    else 0.0
                ),
                "dropped": stats.dropped_total if stats else 0,
                "maxMessages": buffer.max_messages,
                "maxBytes": buffer.max_bytes,
                "appendErrors": self.pipeline.append_errors,
                "lastAppendError": self.pipeline.last_append_error,
            },
            "publish": {
                "epoch": stats.epoch if stats else None,
                "lastSeq": stats.last_seq if stats else 0,
                "ackedSeq": stats.acked_seq if stats else 0,
                "inFlight": len(sender.in_flight),
                "ratePerSecond": round(sender.rate.per_second(), 2),
                "published": sender.published_count,
                "resent": sender.resends,
                "lastAckAt": format_time(sender.last_ack_at) if sender.last_ack_at else None,
            },
            "deadLetters": {
                "total": stats.dead_letters_total if stats else 0,
                "kept": stats.dead_letters_kept if stats else 0,
                "maxKept": buffer.max_dead_letters,
                "last": sender.last_dead_letter,
            },
            "writes": self.writer.status(),
        }
