"""Desired values from the twin to the PLC: check, write, read back, report.

The MQTT link hands each command on `spine/things/<thing>/desired` to `submit`; one task writes
them in arrival order. The read-back value goes out as an ordinary update (past the deadband),
so the twin sees what the PLC really holds and clears the pending desired value when it
matches. A failed write is not retried later: a set point written minutes late can be wrong on
a running machine; the failure is logged, counted and shown in /status for a person to act on.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any

from spine_runtime.gateway.connection import ConnectionRunner, WriteFailed
from spine_runtime.gateway.drivers.base import BoundTag
from spine_runtime.gateway.metrics import GatewayMetrics
from spine_runtime.gateway.pipeline import Pipeline
from spine_runtime.gateway.protocol import parse_desired
from spine_runtime.gateway.values import BadValue, format_time, to_raw

log = logging.getLogger(__name__)


class DesiredWriter:
    def __init__(self, namespace: str, pipeline: Pipeline, metrics: GatewayMetrics) -> None:
        self.namespace = namespace
        self.pipeline = pipeline
        self.metrics = metrics
        self.targets: dict[tuple[str, str], BoundTag] = {}
        self.runners: dict[str, ConnectionRunner] = {}
        self.commands: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=10_000)
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=20)
        self.counts = {"ok": 0, "rejected": 0, "error": 0}

    def bind(self, tags: list[BoundTag], runners: dict[str, ConnectionRunner]) -> None:
        self.targets = {(tag.thing, tag.property_name): tag for tag in tags}
        self.runners = runners

    def submit(self, thing: str, payload: bytes) -> None:
        try:
            self.commands.put_nowait((thing, payload))
        except asyncio.QueueFull:
            self._outcome(thing, "", "rejected", "too many desired commands waiting", "")

    async def run(self) -> None:
        while True:
            thing, payload = await self.commands.get()
            try:
                await self.handle(thing, payload)
            except Exception:  # one bad command must not end the writer
                log.exception("Desired command for %s failed unexpectedly", thing)

    async def handle(self, thing: str, payload: bytes) -> None:
        try:
            desired = parse_desired(thing, self.namespace, payload)
        except ValueError as error:
            self._outcome(thing, "", "rejected", f"not a desired-property command: {error}", "")
            return
        for item in desired:
            tag = self.targets.get((item.thing, item.property))
            if tag is None or not tag.config.writable:
                self._outcome(
                    item.thing,
                    item.property,
                    "rejected",
                    "no writable tag of this gateway feeds this property",
                    "",
                )
                continue
            try:
                raw = to_raw(item.value, tag.address.value_type, tag.scale)
            except BadValue as error:
                self._outcome(item.thing, item.property, "rejected", str(error), tag.connection)
                continue
            runner = self.runners.get(tag.connection)
            if runner is None:
                self._outcome(
                    item.thing, item.property, "error", "connection not running", tag.connection
                )
                continue
            try:
                reading = await runner.write(tag, raw)
            except WriteFailed as error:
                self._outcome(item.thing, item.property, "error", str(error), tag.connection)
                continue
            await self.pipeline.ingest(tag.connection, [reading], forced=True)
            if reading.error:
                self._outcome(
                    item.thing,
                    item.property,
                    "error",
                    f"written, but the read-back failed: {reading.error}",
                    tag.connection,
                )
            else:
                self._outcome(
                    item.thing,
                    item.property,
                    "ok",
                    f"wrote {raw!r}, read back {reading.value!r}",
                    tag.connection,
                )

    def _outcome(self, thing: str, prop: str, result: str, message: str, connection: str) -> None:
        self.counts[result] += 1
        self.metrics.writes.labels(connection or "none", result).inc()
        self.recent.append(
            {
                "thing": thing,
                "property": prop,
                "result": result,
                "message": message,
                "at": format_time(time.time()),
            }
        )
        if result == "ok":
            log.info("Desired %s of %s: %s", prop, thing, message)
        else:
            log.warning("Desired %s of %s %s: %s", prop or "value", thing, result, message)

    def status(self) -> dict[str, Any]:
        return {**self.counts, "recent": list(self.recent)}
