"""Publishes buffered updates in order and forgets them only when the twin confirms them.

The gateway runs one sender. It keeps at most `publish.maxInFlight` updates published but not
acknowledged; the rest wait on disk. It goes back to the oldest unacknowledged update and
publishes again (go-back-N, as the twin needs every seq to advance its ack) when:
  * no ack covered the oldest update within `resendTimeoutSeconds` (doubling up to 4x while
    nothing is acknowledged, so a twin that is down does not fill the broker with copies);
  * the broker lost our session (a new session: what it held for the twin may be gone too).
The twin ignores a seq it already stored, so a copy costs bandwidth only.

An update the broker refuses (a PUBACK failure reason code, e.g. 135 not authorised: the
gateway's login may not publish that thing's topic) can never be delivered, and the twin's ack
would stop below its seq for good. The sender moves it to the dead letters (queue.py) with the
reason and publishes its seq again as a gap, on the topic of a thing the broker has not refused,
so the twin's ack passes it and delivery goes on (issue 10).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import Any

from spine_runtime.config.gateway import GatewayConfig
from spine_runtime.gateway.metrics import GatewayMetrics
from spine_runtime.gateway.mqtt import MqttLink
from spine_runtime.gateway.protocol import Ack, twin_topic, update_payload
from spine_runtime.gateway.queue import GAP_FEATURES, AsyncDiskQueue, QueuedUpdate, QueueStats
from spine_runtime.gateway.values import format_time

log = logging.getLogger(__name__)

READ_BATCH = 256
MAX_BACKOFF = 4
# A thing the broker refused is not used for gaps for this long (then tried again: the
# operator may have fixed the login meanwhile).
REFUSED_THING_SECONDS = 60.0


def reason_label(reason: str) -> str:
    """A metric label from an MQTT reason name: "Not authorized" -> "not_authorized"."""
    return "_".join(reason.lower().replace("-", " ").split())[:48] or "unknown"


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
        # MQTT message id -> (queue position, thing) of what it carries, until acknowledged
        self.messages: dict[int, tuple[int, str]] = {}
        self.refused_things: dict[str, float] = {}  # thing -> when the broker last refused it
        self.last_dead_letter: dict[str, Any] | None = None  # for /status
        self.backoff = 1
        self.wake = asyncio.Event()
        self.resends = 0
        self.published_count = 0
        self.last_ack_at: float | None = None
        self.rate = RateMeter()
        self.metrics_dead_letters = start.dead_letters_total

    def notify(self) -> None:
        self.wake.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.25):  # not wait_for: it can lose a cancel in 3.11
                    await self.wake.wait()
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
        if len(self.messages) > 2 * self.config.publish.max_in_flight:
            self._forget_acknowledged_messages()

    def _forget_acknowledged_messages(self) -> None:
        self.messages = {
            mid: entry for mid, entry in self.messages.items() if entry[0] > self.acked_position
        }

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
        self._forget_acknowledged_messages()
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
                if not self._publish(update, qos):
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

    def _publish(self, update: QueuedUpdate, qos: int) -> bool:
        gap = update.features == GAP_FEATURES
        payload = update_payload(
            namespace=self.config.twin_namespace,
            thing=update.thing,
            features=update.features,
            gateway=self.config.name,
            epoch=update.epoch,
            seq=update.seq,
            source_time=update.source_time,
            gap="refused by the broker; kept as a dead letter by the gateway" if gap else None,
        )
        mid = self.link.publish(twin_topic(self.config.name, update.thing), payload, qos)
        if mid is None:
            return False
        if qos > 0:  # only QoS 1 and 2 are acknowledged, and so refused, by the broker
            self.messages[mid] = (update.position, update.thing)
        return True

    async def on_publish_refused(self, mid: int, reason: str, code: int) -> None:
        """The broker refused message `mid`: dead-letter its update, publish a gap instead."""
        entry = self.messages.pop(mid, None)
        if entry is None:
            return
        position, thing = entry
        if position <= self.acked_position:
            return
        now = time.monotonic()
        previous = self.refused_things.get(thing)
        new_bout = previous is None or now - previous > REFUSED_THING_SECONDS
        self.refused_things[thing] = now
        gap_thing = self._gap_thing(now)
        described = f"{reason} ({code})"
        gap = await self.queue.replace_with_gap(position, described, gap_thing)
        if gap is None:
            return  # acknowledged or dropped meanwhile
        stats = self.queue.stats
        if stats is not None and stats.dead_letters_total != self.metrics_dead_letters:
            self.metrics.dead_letters.labels(reason_label(reason)).inc(
                stats.dead_letters_total - self.metrics_dead_letters
            )
            self.metrics_dead_letters = stats.dead_letters_total
            self.last_dead_letter = {
                "thing": thing,
                "seq": gap.seq,
                "epoch": gap.epoch,
                "reason": described,
                "at": format_time(time.time()),
            }
        if new_bout:
            log.warning(
                "The broker refused an update of thing %s: %s; kept it as a dead letter and "
                "went on (so with every refused update: see /status, deadLetters). Check the "
                "gateway's broker login",
                thing,
                described,
            )
        if gap_thing in self.refused_things and now - self.refused_things[gap_thing] < 1:
            return  # every thing was refused just now: the resend timeout tries again
        if self.link.connected and position <= self.cursor:
            self._publish(gap, self.config.publish.qos)

    def _gap_thing(self, now: float) -> str:
        """The thing to carry a gap: one the broker has not refused lately, else the one
        refused longest ago."""
        things = self.config.things() or [next(iter(self.refused_things))]
        for thing in things:
            refused_at = self.refused_things.get(thing)
            if refused_at is None or now - refused_at > REFUSED_THING_SECONDS:
                return thing
        return min(things, key=lambda thing: self.refused_things.get(thing, 0.0))

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
