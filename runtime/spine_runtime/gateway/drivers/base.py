"""What every protocol driver offers the connection runner, and the types they exchange.

A driver owns one session with one PLC. The runner (`connection.py`) connects it, polls its
groups, lets it run subscriptions, and throws it away when it raises `ConnectionLost`; writes
come from the desired-value writer through the runner. Per-tag problems (an exception response,
a bad status) are readings with an error, not exceptions: one bad tag never stops the others.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from spine_runtime.config.gateway import Connection, Tag, poll_interval_seconds
from spine_runtime.gateway.addresses import TagAddress, parse_tag_address
from spine_runtime.gateway.metrics import GatewayMetrics
from spine_runtime.gateway.values import Scale, TagState


class ConnectionLost(Exception):
    """The session is gone or unusable; the runner reconnects with backoff."""


class PeerRefused(ConnectionLost):
    """The PLC refused us (login, security, access rights): reported as an error state,
    because waiting alone will not fix it."""


@dataclass(eq=False)
class BoundTag:
    """A configured tag with its parsed address and its publishing state."""

    config: Tag
    address: TagAddress
    scale: Scale
    state: TagState = field(default_factory=TagState)

    @classmethod
    def bind(cls, tag: Tag, connection: Connection) -> BoundTag:
        scale = Scale(tag.scale.factor, tag.scale.offset) if tag.scale else Scale()
        address = parse_tag_address(connection.protocol, tag.address, tag.type)
        return cls(tag, address, scale, TagState(deadband=tag.deadband or 0.0))

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def connection(self) -> str:
        return self.config.connection

    @property
    def thing(self) -> str:
        return self.config.thing

    @property
    def property_name(self) -> str:
        return self.config.property

    @property
    def subscribed(self) -> bool:
        return self.config.subscribe is not None


@dataclass(frozen=True)
class Reading:
    """One value (or one failure) of one tag; `source_time` in Unix seconds."""

    tag: BoundTag
    value: Any = None
    error: str | None = None
    reason: str = ""  # short metric label when there is an error
    source_time: float = field(default_factory=time.time)


@dataclass
class PollGroup:
    """Tags polled together at one interval; `plan` is the driver's own read plan."""

    interval: float  # seconds
    tags: list[BoundTag]
    plan: Any = None
    requests_last_cycle: int = 0


Deliver = Callable[[list[Reading]], Awaitable[None]]


class Driver:
    """Base of the Modbus, OPC UA and S7 drivers."""

    protocol = ""

    def __init__(self, connection: Connection, tags: list[BoundTag], metrics: GatewayMetrics):
        self.connection = connection
        self.tags = tags
        self.metrics = metrics
        self.groups: list[PollGroup] = []

    @property
    def polled_tags(self) -> list[BoundTag]:
        return [tag for tag in self.tags if not tag.subscribed]

    def group_by_interval(self) -> list[PollGroup]:
        by_interval: dict[float, list[BoundTag]] = {}
        for tag in self.polled_tags:
            by_interval.setdefault(poll_interval_seconds(tag.config), []).append(tag)
        return [PollGroup(interval, tags) for interval, tags in sorted(by_interval.items())]

    def record_read(self, ok: bool, seconds: float) -> None:
        name = self.connection.name
        self.metrics.reads.labels(name, "ok" if ok else "error").inc()
        self.metrics.read_duration.labels(name).observe(seconds)

    async def connect(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def poll(self, group: PollGroup) -> list[Reading]:
        raise NotImplementedError

    async def write(self, tag: BoundTag, raw: Any) -> None:
        raise NotImplementedError

    async def read_back(self, tag: BoundTag) -> Reading:
        raise NotImplementedError

    async def run_subscriptions(self, deliver: Deliver) -> None:
        """Run until the session fails (raise ConnectionLost); polling-only drivers idle."""
        await asyncio.Event().wait()

    def plan_summary(self) -> dict[str, Any]:
        """Requests per cycle for /status, e.g. {"requestsPerCycle": {"0.01": 1}}."""
        return {
            "requestsPerCycle": {
                f"{group.interval:g}s": group.requests_last_cycle for group in self.groups
            }
        }
