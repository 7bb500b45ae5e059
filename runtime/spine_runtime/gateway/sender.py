"""Publishes buffered updates in order and forgets them only when the twin confirms them.

The gateway runs one sender. It keeps at most `publish.maxInFlight` updates published but not
acknowledged; the rest wait on disk. It goes back to the oldest unacknowledged update and
publishes again (go-back-N, as the twin needs every seq to advance its ack) when:
  * no ack covered the oldest update within `resendTimeoutSeconds` (doubling up to 4x while
    nothing is acknowledged, so a twin that is down does not fill the broker with copies);
  * the broker lost our session (a new session: what it held for the twin may be gone too).
The twin ignores a seq it already stored, so a copy costs bandwidth only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time

from spine_runtime.config.gateway import GatewayConfig
from spine_runtime.gateway.metrics import GatewayMetrics
from spine_runtime.gateway.mqtt import MqttLink
from spine_runtime.gateway.protocol import Ack, twin_topic, update_payload
from spine_runtime.gateway.queue import AsyncDiskQueue, QueueStats

log = logging.getLogger(__name__)

READ_BATCH = 256
MAX_BACKOFF = 4


class Sender:
    def __init__(
        self,
        config: GatewayConfig,
        queue: AsyncDiskQueue,
        link: MqttLink,
        metrics: GatewayMetrics,
        start: QueueStats,
    ) -> None:
        self.config = config
        self.queue = queue
        self.link = link
        self.metrics = metrics
        self.acked_position = start.acked_position
        self.cursor = start.acked_position  # last position handed to MQTT
        self.highest_sent = start.acked_position
        self.in_flight: collections.deque[tuple[int, float]] = collections.deque()
        self.backoff = 1
        self.wake = asyncio.Event()
        self.resends = 0
        self.published_count = 0
        self.last_ack_at: float | None = None
        self.rate = RateMeter()

    def notify(self) -> None:
        self.wake.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), 0.25)
            self.wake.clear()
            self._follow_queue()
            if not self.link.connected:
                continue
            self._resend_if_overdue()
            await self._fill_window()

    def _follow_queue(self) -> None:
        """Adopt an acked position the queue moved itself (a full buffer starts a new epoch)."""
        stats = self.queue.stats
        if stats is not None and stats.acked_position > self.acked_position:
            self._acknowledged(stats.acked_position)

    def _acknowledged(self, position: int) -> None:
        self.acked_position = position
        while self.in_flight and self.in_flight[0][0] <= position:
            self.in_flight.popleft()
        self.cursor = max(self.cursor, position)

    def _resend_if_overdue(self) -> None:
        if not self.in_flight:
            return
        timeout = self.config.resend_timeout_seconds * self.backoff
        oldest_position, sent_at = self.in_flight[0]
        if time.monotonic() - sent_at < timeout:
            return
        stats = self.queue.stats
        base = stats.epoch_base if stats else 0
        log.warning(
            "No ack for seq %d within %.0f s: publishing %d updates again from there",
            oldest_position - base,
            timeout,
            self.cursor - self.acked_position,
        )
        self.rewind()
        self.backoff = min(self.backoff * 2, MAX_BACKOFF)

    def rewind(self) -> None:
        self.cursor = self.acked_position
        self.in_flight.clear()
        self.wake.set()

    async def _fill_window(self) -> None:
        qos = self.config.publish.qos
        while self.link.connected:
            room = self.config.publish.max_in_flight - len(self.in_flight)
            if room <= 0:
                return
            cursor = self.cursor
            batch = await self.queue.read_after(cursor, min(READ_BATCH, room))
            if self.cursor != cursor:
                continue  # an ack or a rewind moved the cursor while reading: read again
            if not batch:
                return
            for update in batch:
                payload = update_payload(
                    namespace=self.config.twin_namespace,
                    thing=update.thing,
                    features=update.features,
                    gateway=self.config.name,
                    epoch=update.epoch,
                    seq=update.seq,
                    source_time=update.source_time,
                )
                if not self.link.publish(twin_topic(self.config.name, update.thing), payload, qos):
                    return  # the session dropped; the update stays on disk
                self.cursor = update.position
                self.in_flight.append((update.position, time.monotonic()))
                if update.position > self.highest_sent:
                    self.highest_sent = update.position
                    self.published_count += 1
                    self.metrics.published.inc()
                    self.metrics.publish_delay.observe(max(0.0, time.time() - update.enqueued_at))
                    self.rate.record()
                else:
                    self.resends += 1
                    self.metrics.resent.inc()

    async def on_ack(self, ack: Ack) -> None:
        if ack.gateway != self.config.name:
            return
        result = await self.queue.ack(ack.epoch, ack.seq)
        if not result.accepted:
            stats = self.queue.stats
            if stats is not None and ack.epoch == stats.epoch:
                log.warning("Ignored an ack for seq %d beyond the last one sent", ack.seq)
            return
        self.last_ack_at = time.time()
        if result.removed:
            self.metrics.acked.inc(result.removed)
            self.backoff = 1
        self._acknowledged(result.acked_position)
        self.wake.set()

    def on_connected(self, session_present: bool) -> None:
        if not session_present:
            self.rewind()
        self.wake.set()


class RateMeter:
    """Events per second over the last minute, for /status."""

    WINDOW = 60.0

    def __init__(self) -> None:
        self.times: collections.deque[float] = collections.deque()

    def record(self) -> None:
        self.times.append(time.monotonic())

    def per_second(self) -> float:
        now = time.monotonic()
        while self.times and now - self.times[0] > self.WINDOW:
            self.times.popleft()
        if not self.times:
            return 0.0
        return len(self.times) / min(self.WINDOW, max(1.0, now - self.times[0]))
