"""Store and forward: no twin update is lost when the broker or the gateway goes away.

TESTING.md section 0: QoS 1, persistent sessions, the broker's queue limits as rendered, a
value that changes every cycle (the simulator's `counter`, +1 per tick, read faster than it
ticks, plus 50 bench registers for load), counts at both ends with a generous deadline, and
SIGKILL for a crash. The acks come from a stand-in twin (tests/support/gateway.py).
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.gateway import GatewayHandle, StandInAcker, modbus_connection, start_gateway
from tests.support.mosquitto import LocalBroker
from tests.support.processes import wait_until
from tests.support.sim import SimHandle, start_sim

pytestmark = pytest.mark.integration

THING = "press-1"
BENCH = 50


@pytest.fixture
def sim(tmp_path) -> Iterator[SimHandle]:
    with start_sim(
        tmp_path, protocols=("modbus",), tickIntervalMs=100, benchRegisters=BENCH
    ) as handle:
        yield handle


def counter_tags() -> list[dict[str, Any]]:
    tags = [
        {
            "name": "counter",
            "connection": "plc",
            "thing": THING,
            "property": "counter",
            "address": "holding:8",
            "type": "uint32",
            "interval": 40,
        }
    ]
    tags += [
        {
            "name": f"bench{i}",
            "connection": "plc",
            "thing": THING,
            "property": f"bench{i}",
            "address": f"holding:{100 + i}",
            "type": "uint16",
            "interval": 40,
        }
        for i in range(BENCH)
    ]
    return tags


async def counting_gateway(tmp_path, broker: LocalBroker, sim: SimHandle) -> GatewayHandle:
    return await start_gateway(
        tmp_path,
        broker,
        connections=[modbus_connection("plc", sim.ports.modbus)],
        tags=counter_tags(),
        resendTimeoutSeconds=3,
    )


def everything_arrived(gateway: GatewayHandle, acker: StandInAcker) -> bool:
    """The gateway has nothing left to send and the twin has every seq of the epoch."""
    status = gateway.status()
    publish = status["publish"]
    received = acker.unique(gateway.name, publish["epoch"])
    return (
        status["buffer"]["messages"] == 0
        and publish["ackedSeq"] == publish["lastSeq"]
        and set(received) == set(range(1, publish["lastSeq"] + 1))
    )


def stop_the_source(gateway: GatewayHandle, sim: SimHandle) -> None:
    """Stop the PLC, so the gateway numbers no more updates and the counts can be final.

    Counting while the PLC still produced was the flake of
    test_a_broker_sigkill_under_load_loses_nothing (issue 10): an update numbered between the
    moment everything had arrived and the count was still on its way, so the one-shot count
    missed it. On a busy machine that happened to 7 of 76 counts; nothing was ever lost.
    """
    sim.stop()
    wait_until(
        lambda: gateway.connection_status("plc")["state"] == "disconnected",
        15,
        "the gateway to notice the PLC is gone",
    )


def check_nothing_lost(gateway: GatewayHandle, acker: StandInAcker) -> int:
    """Counts at both ends agree (every seq the gateway numbered reached the twin), in order;
    returns how many updates the gateway numbered. Call it after stop_the_source."""
    status = gateway.status()
    epoch, last_seq = status["publish"]["epoch"], status["publish"]["lastSeq"]
    received = acker.unique(gateway.name, epoch)
    assert sorted(received) == list(range(1, last_seq + 1)), "a seq is missing at the twin"
    # The counter and the bench registers are two reads (90 registers apart): a tick between
    # them makes an update without the counter, so look at those that have it.
    counters = [
        received[seq].value("counter")
        for seq in sorted(received)
        if "counter" in received[seq].features
    ]
    # Enough for the order check to mean something; how many updates carry the counter
    # depends on where the ticks fall between the two reads, so it is no measure of loss.
    assert len(counters) >= 10, f"only {len(counters)} of {last_seq} updates carry the counter"
    # replayed in order: the counter never goes back from one seq to the next (a step above 1
    # is a tick the busy machine polled late, not a lost update: those are counted above)
    assert all(b > a for a, b in itertools.pairwise(counters)), "updates arrived out of order"
    return last_seq


async def test_a_30_second_broker_outage_under_load_loses_nothing(
    tmp_path, broker: LocalBroker, sim: SimHandle, acker: StandInAcker
) -> None:
    gateway = await counting_gateway(tmp_path, broker, sim)
    try:
        wait_until(lambda: gateway.status()["publish"]["ackedSeq"] >= 20, 20, "20 acked updates")
        broker.stop()
        outage_started = time.monotonic()
        backlog: list[dict[str, Any]] = []
        while time.monotonic() - outage_started < 30:  # the outage the issue asks for
            status = gateway.status()
            backlog.append({"broker": status["broker"]["connected"], **status["buffer"]})
            time.sleep(0.5)
        # the backlog was visible while the broker was away, in /status and in /metrics
        assert gateway.metric("spine_gateway_buffered_messages") >= 100
        assert gateway.metric("spine_gateway_broker_connected") == 0
        broker.start()
        assert not any(sample["broker"] for sample in backlog[2:])
        assert backlog[-1]["messages"] >= 150, backlog[-1]
        assert backlog[-1]["oldestAgeSeconds"] >= 25

        wait_until(
            lambda: everything_arrived(gateway, acker),
            60,
            "the backlog to reach the twin and be acknowledged",
        )
        stop_the_source(gateway, sim)
        wait_until(lambda: everything_arrived(gateway, acker), 30, "the last updates to arrive")
        sent = check_nothing_lost(gateway, acker)
        assert sent >= backlog[-1]["messages"] + 20
        assert gateway.status()["buffer"]["dropped"] == 0
    finally:
        gateway.stop()


async def test_a_broker_sigkill_under_load_loses_nothing(
    tmp_path, broker: LocalBroker, sim: SimHandle, acker: StandInAcker
) -> None:
    gateway = await counting_gateway(tmp_path, broker, sim)
    try:
        wait_until(lambda: gateway.status()["publish"]["ackedSeq"] >= 20, 20, "20 acked updates")
        # kill while updates are in flight: what mosquitto acknowledged but had not saved is
        # gone, for the gateway's session and for the twin's
        broker.kill()
        wait_until(lambda: not gateway.status()["broker"]["connected"], 10, "the gateway to notice")
        broker.start()
        before = gateway.status()["publish"]["lastSeq"]
        wait_until(
            lambda: gateway.status()["publish"]["lastSeq"] >= before + 20,
            20,
            "20 more updates after the restart",
        )
        stop_the_source(gateway, sim)
        wait_until(lambda: everything_arrived(gateway, acker), 60, "every update to arrive")
        check_nothing_lost(gateway, acker)
    finally:
        gateway.stop()


async def test_a_gateway_sigkill_with_a_backlog_loses_nothing(
    tmp_path, broker: LocalBroker, sim: SimHandle, acker: StandInAcker
) -> None:
    gateway = await counting_gateway(tmp_path, broker, sim)
    try:
        wait_until(lambda: gateway.status()["publish"]["ackedSeq"] >= 10, 20, "10 acked updates")
        epoch = gateway.status()["publish"]["epoch"]
        broker.stop()
        # the updates read from now on exist only in the gateway's disk queue
        wait_until(lambda: gateway.status()["buffer"]["messages"] >= 30, 20, "a backlog of 30")
        gateway.kill()
        held = gateway_backlog_on_disk(gateway)
        assert held >= 30
        broker.start()
        gateway.start()
        assert gateway.status()["publish"]["epoch"] == epoch  # the same numbering goes on
        wait_until(lambda: everything_arrived(gateway, acker), 60, "the backlog to arrive")
        stop_the_source(gateway, sim)
        wait_until(lambda: everything_arrived(gateway, acker), 30, "the last updates to arrive")
        check_nothing_lost(gateway, acker)
    finally:
        gateway.stop()


def gateway_backlog_on_disk(gateway: GatewayHandle) -> int:
    """Updates the killed gateway left in its queue file (read directly, as it is down)."""
    database = sqlite3.connect(gateway.state_dir / "buffer" / "queue.sqlite3")
    try:
        return int(database.execute("SELECT COUNT(*) FROM updates").fetchone()[0])
    finally:
        database.close()
