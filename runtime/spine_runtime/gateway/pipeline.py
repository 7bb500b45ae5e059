"""Readings in, durable twin updates out: scaling, bad values, deadband, heartbeat, batching.

Connection runners call `ingest` with each cycle's readings; the desired-value writer calls it
with a read-back (`forced`, past the deadband). Changed values become one update per thing,
appended to the disk queue; the sender is woken to publish them. Tag health for /status
lives here too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from spine_runtime.gateway.drivers.base import BoundTag, Reading
from spine_runtime.gateway.metrics import GatewayMetrics
from spine_runtime.gateway.protocol import features_json
from spine_runtime.gateway.queue import AsyncDiskQueue, NewUpdate
from spine_runtime.gateway.values import (
    BadValue,
    Change,
    JsonValue,
    TagState,
    format_time,
    group_into_updates,
    to_published,
)

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(
        self,
        queue: AsyncDiskQueue,
        metrics: GatewayMetrics,
        heartbeat_seconds: float,
        on_enqueued: Callable[[], None],
    ) -> None:
        self.queue = queue
        self.metrics = metrics
        self.heartbeat = heartbeat_seconds or None
        self.on_enqueued = on_enqueued
        self.tags: list[BoundTag] = []
        self.append_errors = 0
        self.last_append_error: str | None = None

    async def ingest(self, connection: str, readings: list[Reading], forced: bool = False) -> None:
        now = time.monotonic()
        changes: list[Change] = []
        published: list[tuple[TagState, JsonValue]] = []
        for reading in readings:
            tag, state = reading.tag, reading.tag.state
            if reading.error is not None:
                self._failing(connection, tag, reading.reason, reading.error)
                continue
            try:
                value = to_published(reading.value, tag.scale)
            except BadValue as bad:
                self._failing(connection, tag, bad.reason, str(bad))
                continue
            recovered = state.failing_reason is not None
            if recovered:
                log.info("Tag %s of %s recovered", tag.name, connection)
            state.failing_reason, state.failing_since = None, None
            state.last_value, state.has_value = value, True
            if forced or recovered or state.should_publish(value, now, self.heartbeat):
                changes.append(Change(tag.thing, tag.property_name, value, reading.source_time))
                published.append((state, value))
        if changes and await self._enqueue(changes):
            # Marked published only once on disk: if the disk refused, the next cycle retries.
            for state, value in published:
                state.published(value, now)
            self.metrics.tag_values.labels(connection).inc(len(changes))

    def _failing(self, connection: str, tag: BoundTag, reason: str, message: str) -> None:
        state = tag.state
        self.metrics.tag_errors.labels(connection, reason or "error").inc()
        if state.failing_reason != message:
            # Logged on change only: a failing tag is read every cycle.
            log.warning("Tag %s of %s is failing: %s", tag.name, connection, message)
            state.failing_since = state.failing_since or time.time()
        state.failing_reason = message

    async def _enqueue(self, changes: list[Change]) -> bool:
        updates = [
            NewUpdate(draft.thing, features_json(draft), format_time(draft.source_time))
            for draft in group_into_updates(changes)
        ]
        try:
            dropped = await self.queue.append(updates)
        except Exception as error:  # a full or broken disk must not stop the readers
            self.append_errors += 1
            self.last_append_error = str(error)
            log.error("Could not buffer %d updates: %s", len(updates), error)
            return False
        self.last_append_error = None
        if dropped:
            self.metrics.dropped.inc(dropped)
        self.on_enqueued()
        return True

    async def heartbeat_subscribed(self, live_connections: set[str]) -> None:
        """Re-publish subscribed values unchanged for a heartbeat (polled ones do it in-cycle).

        A live subscription vouches that the value is still current, so it goes out with the
        current time as its source time.
        """
        if not self.heartbeat:
            return
        now, wall = time.monotonic(), time.time()
        due = [
            tag
            for tag in self.tags
            if tag.subscribed
            and tag.connection in live_connections
            and tag.state.heartbeat_due(now, self.heartbeat)
        ]
        if not due:
            return
        changes = [Change(tag.thing, tag.property_name, tag.state.last_value, wall) for tag in due]
        if not await self._enqueue(changes):
            return
        for tag in due:
            tag.state.published(tag.state.last_value, now)

    async def run_heartbeats(self, live_connections: Callable[[], set[str]]) -> None:
        while True:
            await asyncio.sleep(min(1.0, (self.heartbeat or 1.0) / 4))
            await self.heartbeat_subscribed(live_connections())

    def tag_status(self, unreachable: dict[str, str]) -> dict[str, Any]:
        """Counts, and each failing tag with its reason; `unreachable` maps a connection
        that is not up to why, which is then the reason of its tags."""
        failing = []
        waiting = 0
        for tag in self.tags:
            state = tag.state
            reason = unreachable.get(tag.connection) or state.failing_reason
            if reason is None:
                waiting += not state.has_value
                continue
            failing.append(
                {
                    "name": tag.name,
                    "connection": tag.connection,
                    "thing": tag.thing,
                    "property": tag.property_name,
                    "reason": reason,
                    "since": format_time(state.failing_since) if state.failing_since else None,
                }
            )
        return {
            "total": len(self.tags),
            "ok": len(self.tags) - len(failing) - waiting,
            "waiting": waiting,
            "failing": failing,
        }
