"""Stopping a connection is bounded and certain, and /status tells the truth about a poller.

Issue 10, item 2: Python 3.11's `asyncio.wait_for` returns a result that lands in the same loop
step as a cancel and loses the cancel (pymodbus uses it; so did the OPC UA driver's batch loop).
These drivers reproduce that deterministically with the real `wait_for`, and the real
`ConnectionRunner` has to stop them anyway.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from spine_runtime.config.gateway import Connection, Tag
from spine_runtime.gateway.connection import ConnectionRunner
from spine_runtime.gateway.drivers.base import BoundTag, Driver, Reading
from spine_runtime.gateway.metrics import GatewayMetrics
from tests.support.gateway import DeafDriver, ScriptedDriver


def modbus(timeout: float = 0.1) -> Connection:
    return Connection.model_validate(
        {"name": "plc", "modbusTcp": {"host": "127.0.0.1", "timeout": timeout}}
    )


def tags(connection: Connection, interval_ms: float = 10) -> list[BoundTag]:
    tag = Tag.model_validate(
        {
            "name": "count",
            "connection": "plc",
            "thing": "press-1",
            "property": "counter",
            "address": "holding:8",
            "type": "uint32",
            "interval": interval_ms,
        }
    )
    return [BoundTag.bind(tag, connection)]


def runner_with(driver_class: type[Driver], connection: Connection, sink_log: list) -> tuple:
    drivers: list[Driver] = []

    def factory(conn: Connection, bound: list[BoundTag], metrics: GatewayMetrics) -> Driver:
        drivers.append(driver_class(conn, bound, metrics))
        return drivers[-1]

    async def sink(name: str, readings: list[Reading]) -> None:
        sink_log.append((time.monotonic(), readings))

    runner = ConnectionRunner(connection, tags(connection), sink, GatewayMetrics(), factory)
    return runner, drivers


async def test_a_read_that_completes_as_the_stop_lands_does_not_keep_the_poller_running() -> None:
    connection = modbus()
    delivered: list = []
    runner, drivers = runner_with(ScriptedDriver, connection, delivered)
    runner.start()
    await asyncio.wait_for(_until(lambda: drivers and drivers[0].read_started.is_set()), 5)
    driver = drivers[0]
    assert isinstance(driver, ScriptedDriver)
    # The read's answer arrives one loop step from now, the step in which stop()'s cancel
    # reaches the poll task (through the session's TaskGroup): wait_for sees both at once.
    asyncio.get_running_loop().call_soon(driver.answer)
    stopping = asyncio.ensure_future(runner.stop())
    await asyncio.wait({stopping}, timeout=3)
    assert stopping.done(), "stop() did not return (the poller swallowed its cancel)"
    assert stopping.result() is True
    polls = driver.polls
    await asyncio.sleep(0.1)  # ten poll intervals
    assert driver.polls == polls, "the poller kept reading after stop()"
    assert delivered == [], "a reading finished as the stop landed reached the pipeline"
    assert driver.closed


async def test_a_driver_that_swallows_every_cancel_is_abandoned_within_the_deadline() -> None:
    connection = modbus()
    delivered: list = []
    runner, drivers = runner_with(DeafDriver, connection, delivered)
    runner.start()
    await asyncio.wait_for(_until(lambda: drivers and drivers[0].read_started.is_set()), 5)
    started = time.monotonic()
    stopped = await runner.stop(deadline=0.5)
    assert stopped is False
    assert time.monotonic() - started < 2
    assert runner.abandoned_at is not None
    assert runner.metrics.stop_timeouts.labels("plc")._value.get() == 1
    # stop() closed the driver, which ends the deaf read: the task does not linger
    await asyncio.wait_for(_until(lambda: drivers[0].closed), 2)


async def test_a_poller_that_stops_finishing_cycles_is_reported_stalled() -> None:
    connection = modbus(timeout=0.1)
    delivered: list = []
    runner, drivers = runner_with(ScriptedDriver, connection, delivered)
    runner.start()
    try:
        await asyncio.wait_for(_until(lambda: drivers and drivers[0].read_started.is_set()), 5)
        driver = drivers[0]
        assert isinstance(driver, ScriptedDriver)
        driver.answer()
        await asyncio.wait_for(_until(lambda: delivered), 5)
        status = runner.status()
        assert status["state"] == "connected" and status["stalled"] is False
        assert status["lastSuccess"] is not None
        # the next read never answers: 3 x 10 ms + 2 x 0.1 s + 1 s later it is a stall
        await asyncio.wait_for(_until(lambda: runner.status()["stalled"]), 5)
        status = runner.status()
        assert status["state"] == "stalled"
        assert status["lastError"].startswith("no poll cycle finished for")
        driver.answer()
        await asyncio.wait_for(_until(lambda: not runner.status()["stalled"]), 5)
        assert runner.status()["state"] == "connected"
    finally:
        assert await runner.stop()


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.01)
