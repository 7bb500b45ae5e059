"""One PLC connection's life: connect, poll on time, subscribe, reconnect with backoff.

The gateway starts one runner per configured connection, each in its own task, so a failing PLC
never stops the others. The runner hands every cycle's readings to the pipeline, serves writes
for the desired-value writer, and keeps the state /status reports, a poller that stopped
finishing its cycles ("stalled") included.

Stopping is bounded: a driver library may swallow a cancel (Python 3.11's `asyncio.wait_for`
returns a result that lands in the same loop step as the cancel, and pymodbus uses it), so
`stop()` also sets a flag every loop checks, cancels again while it waits, and after a deadline
abandons the task: it closes the driver, drops anything the task still reads, and reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any

from spine_runtime.config.gateway import Connection
from spine_runtime.gateway.drivers import make_driver
from spine_runtime.gateway.drivers.base import (
    BoundTag,
    ConnectionLost,
    Driver,
    PeerRefused,
    PollGroup,
    Reading,
)
from spine_runtime.gateway.metrics import GatewayMetrics
from spine_runtime.gateway.values import format_time

log = logging.getLogger(__name__)

Sink = Callable[[str, list[Reading]], Awaitable[None]]
DriverFactory = Callable[[Connection, list[BoundTag], GatewayMetrics], Driver]

# How long stop() waits for a connection's tasks, cancelling again every RECANCEL_SECONDS.
STOP_DEADLINE_SECONDS = 5.0
RECANCEL_SECONDS = 0.1
# Tasks that would not stop: kept referenced (a task only weakly held can vanish mid-run).
_abandoned_tasks: set[asyncio.Task[None]] = set()


def stall_after_seconds(interval: float, request_timeout: float) -> float:
    """How long a poll group may go without finishing a cycle before it counts as stalled:
    a few intervals, plus room for a slow answer just inside the request timeout."""
    return 3 * interval + 2 * request_timeout + 1.0


class ConnectionState(StrEnum):
    CONNECTED = "connected"  # session up, requests answered
    DISCONNECTED = "disconnected"  # no session: connecting, or waiting to reconnect
    ERROR = "error"  # the PLC refuses us (login, access) or refuses every request
    STALLED = "stalled"  # session up, but a poll group stopped finishing its cycles


class WriteFailed(Exception):
    """A desired value could not be written; the message says why."""


class ConnectionRunner:
    def __init__(
        self,
        connection: Connection,
        tags: list[BoundTag],
        sink: Sink,
        metrics: GatewayMetrics,
        driver_factory: DriverFactory = make_driver,
    ) -> None:
        self.connection = connection
        self.tags = tags
        self.sink = sink
        self.metrics = metrics
        self.driver_factory = driver_factory
        self.driver: Driver | None = None
        self.state = ConnectionState.DISCONNECTED
        self.last_success: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.connected_since: float | None = None
        self.reconnects = 0
        self.overruns = 0
        self.cycles = 0
        self._refusing_groups: set[int] = set()
        self._subscriptions_answer = False  # a subscription delivered a good value
        self._task: asyncio.Task[None] | None = None
        self._session_tasks: list[asyncio.Task[None]] = []
        self._plan: dict[str, Any] = {}
        self._stopping = False
        self.abandoned_at: float | None = None
        # poll group -> (interval, monotonic time its last cycle finished or it started)
        self._cycle_ends: dict[int, tuple[float, float]] = {}

    @property
    def name(self) -> str:
        return self.connection.name

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"connection {self.name}")

    async def stop(self, deadline: float = STOP_DEADLINE_SECONDS) -> bool:
        """Stop the connection's tasks within `deadline` seconds; False if they would not stop
        (they are abandoned: the driver is closed and whatever they read is dropped)."""
        self._stopping = True
        task, self._task = self._task, None
        if task is None:
            return True
        give_up_at = asyncio.get_running_loop().time() + deadline
        while not task.done():
            # Cancel again and again: a cancel a library swallowed is not lost for good.
            for child in (*self._session_tasks, task):
                if not child.done():
                    child.cancel()
            remaining = give_up_at - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            await asyncio.wait({task}, timeout=min(RECANCEL_SECONDS, remaining))
        if task.done():
            if not task.cancelled() and task.exception() is not None:
                log.debug("Connection %s ended with %r", self.name, task.exception())
            return True
        self.abandoned_at = time.time()
        self.metrics.stop_timeouts.labels(self.name).inc()
        log.error(
            "Connection %s did not stop within %.0f s (a driver swallowed its cancellation); "
            "abandoned it: its readings are dropped, and a restart of the gateway frees it",
            self.name,
            deadline,
        )
        _abandoned_tasks.add(task)
        task.add_done_callback(_abandoned_tasks.discard)
        driver, self.driver = self.driver, None
        if driver is not None:
            # Closing the session makes the stuck request fail, which usually ends the task.
            closing = asyncio.create_task(self._close_quietly(driver))
            _abandoned_tasks.add(closing)
            closing.add_done_callback(_abandoned_tasks.discard)
        return False

    async def _close_quietly(self, driver: Driver) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(STOP_DEADLINE_SECONDS):
                await driver.close()

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def run(self) -> None:
        delay = self.connection.reconnect_initial_seconds
        up = self.metrics.connection_up.labels(self.name)
        up.set(0)
        while not self._stopping:
            driver = self.driver_factory(self.connection, self.tags, self.metrics)
            error: BaseException | None = None
            try:
                await driver.connect()
                if self._stopping:
                    break
                self.driver = driver
                self._became_connected(driver)
                up.set(1)
                delay = self.connection.reconnect_initial_seconds
                async with asyncio.TaskGroup() as session:
                    self._session_tasks = [
                        session.create_task(self._poll(driver, group)) for group in driver.groups
                    ]
                    self._session_tasks.append(
                        session.create_task(driver.run_subscriptions(self._deliver))
                    )
            except* ConnectionLost as lost:
                error = lost.exceptions[0]
            except* Exception as failed:
                error = failed.exceptions[0]
                log.error("Connection %s failed unexpectedly", self.name, exc_info=error)
            finally:
                self._session_tasks = []
                self._cycle_ends.clear()
                if self.driver is driver:
                    self.driver = None
                up.set(0)
                await self._close_quietly(driver)
            if self._stopping:
                break
            self._became_disconnected(error, refused=isinstance(error, PeerRefused))
            # Jitter keeps many gateways from hammering a PLC that comes back in step.
            await asyncio.sleep(delay * random.uniform(0.75, 1.25))
            delay = min(delay * 2, self.connection.reconnect_max_seconds)

    def _became_connected(self, driver: Driver) -> None:
        self.state = ConnectionState.CONNECTED
        self.connected_since = time.time()
        self._refusing_groups.clear()
        self._subscriptions_answer = False
        log.info("Connected %s (%s), %d tags", self.name, driver.protocol, len(self.tags))

    def _became_disconnected(self, error: BaseException | None, refused: bool) -> None:
        message = str(error) if error else "session ended"
        was_connected = self.connected_since is not None
        self.state = ConnectionState.ERROR if refused else ConnectionState.DISCONNECTED
        self.connected_since = None
        self.last_error, self.last_error_at = message, time.time()
        self.reconnects += 1
        if was_connected or self.reconnects == 1:
            log.warning("Connection %s is down: %s", self.name, message)
        else:
            log.info("Connection %s still down: %s", self.name, message)

    async def _poll(self, driver: Driver, group: PollGroup) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        group_id = id(group)
        self._cycle_ends[group_id] = (group.interval, time.monotonic())
        while not self._stopping:
            readings = await driver.poll(group)
            if self._stopping:
                return  # a read that finished as the stop landed: its values are not wanted
            self.cycles += 1
            self._cycle_ends[group_id] = (group.interval, time.monotonic())
            failed = [reading for reading in readings if reading.error]
            if readings and len(failed) == len(readings):
                self._refusing_groups.add(group_id)
                self.last_error, self.last_error_at = failed[0].error, time.time()
            else:
                self._refusing_groups.discard(group_id)
                self.last_success = time.time()
            self._update_state(driver)
            await self.sink(self.name, readings)
            next_at += group.interval
            now = loop.time()
            if next_at < now:
                # A cycle took longer than the interval: poll again at once, skip the missed
                # cycles rather than burst to catch up.
                self.overruns += 1
                next_at = now
            await asyncio.sleep(next_at - now)

    def stalled_for(self) -> float | None:
        """Seconds since the slowest poll group last finished a cycle, if that is longer than
        it may take (stall_after_seconds); None while every group keeps its pace."""
        if self.state is not ConnectionState.CONNECTED and self.state is not (
            ConnectionState.ERROR
        ):
            return None
        now = time.monotonic()
        timeout = self.connection.request_timeout
        worst = None
        for interval, finished_at in list(self._cycle_ends.values()):
            idle = now - finished_at
            if idle > stall_after_seconds(interval, timeout) and (worst is None or idle > worst):
                worst = idle
        return worst

    def _update_state(self, driver: Driver) -> None:
        # "error": the session is up but the PLC refuses everything asked of it (a wrong unit
        # id, no access). One bad tag only fails that tag (see /status, tags).
        refusing_everything = len(self._refusing_groups) == len(driver.groups) and not (
            self._subscriptions_answer
        )
        self.state = ConnectionState.ERROR if refusing_everything else ConnectionState.CONNECTED

    async def _deliver(self, readings: list[Reading]) -> None:
        if self._stopping:
            return
        if any(reading.error is None for reading in readings):
            self.last_success = time.time()
            if not self._subscriptions_answer and self.driver is not None:
                self._subscriptions_answer = True
                self._update_state(self.driver)
        await self.sink(self.name, readings)

    async def write(self, tag: BoundTag, raw: Any) -> Reading:
        """Write a raw value and read it back; raises WriteFailed."""
        driver = self.driver
        if driver is None:
            raise WriteFailed(f"connection {self.name} is {self.state}: {self.last_error}")
        try:
            await driver.write(tag, raw)
            return await driver.read_back(tag)
        except ConnectionLost as error:
            raise WriteFailed(f"connection {self.name} lost: {error}") from error
        except ValueError as error:
            raise WriteFailed(str(error)) from error

    def status(self) -> dict[str, Any]:
        driver = self.driver
        if driver is not None:
            self._plan = driver.plan_summary()
        state, last_error = self.state, self.last_error
        stalled = self.stalled_for()
        if stalled is not None:
            state = ConnectionState.STALLED
            last_error = f"no poll cycle finished for {stalled:.0f} s"
        return {
            "name": self.name,
            "protocol": self.connection.protocol.value,
            "state": state.value,
            "stalled": stalled is not None,
            "lastSuccess": format_time(self.last_success) if self.last_success else None,
            "lastError": last_error,
            "lastErrorAt": format_time(self.last_error_at) if self.last_error_at else None,
            "connectedSince": format_time(self.connected_since) if self.connected_since else None,
            "reconnects": self.reconnects,
            "cycles": self.cycles,
            "overruns": self.overruns,
            "tags": len(self.tags),
            **self._plan,
        }
