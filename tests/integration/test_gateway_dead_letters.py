"""An update the broker refuses is moved aside and delivery goes on (issue 10, item 3).

Real mosquitto with the operator's dynamic-security login for the gateway: it may publish the
twin topic of press-1 only. The gateway's config then gains a tag for press-2 (as when the
operator pushed a config whose login it had not applied yet): mosquitto answers those updates
with PUBACK reason 135 (not authorised). Before the fix their seqs were never acknowledged and
the gateway stopped at maxInFlight for good, restart or not.
"""

from __future__ import annotations

import sqlite3

import pytest

from tests.support.gateway import StandInAcker, modbus_connection, start_gateway, tag
from tests.support.mosquitto import LocalBroker
from tests.support.processes import wait_until
from tests.support.sim import start_sim

pytestmark = pytest.mark.integration


async def test_updates_the_broker_refuses_become_dead_letters_and_the_rest_flows(
    tmp_path, broker: LocalBroker, acker: StandInAcker
) -> None:
    counter = tag("count", "plc", "press-1", "counter", "holding:8", type="uint32", interval=50)
    denied = tag("other", "plc", "press-2", "counter", "holding:8", type="uint32", interval=50)
    with start_sim(tmp_path, protocols=("modbus",), tickIntervalMs=50) as sim:
        gateway = await start_gateway(
            tmp_path,
            broker,
            connections=[modbus_connection("plc", sim.ports.modbus)],
            tags=[counter],  # the login: press-1 only
            publish={"qos": 1, "heartbeatSeconds": 0, "maxInFlight": 5},
            buffer={"path": str(tmp_path / "gateway-line-1" / "buffer"), "maxDeadLetters": 10},
        )
        try:
            wait_until(lambda: acker.values("press-1", "counter"), 15, "the first counter")
            refused_from = gateway.status()["publish"]["lastSeq"]
            gateway.write_config({**gateway.config, "tags": [counter, denied]})
            # delivery goes on: the twin acknowledges past every refused seq, far more than a
            # window of five beyond the point the refusals began
            wait_until(
                lambda: gateway.status()["publish"]["ackedSeq"] >= refused_from + 40,
                20,
                "acks past the refused updates",
            )
            assert gateway.status()["deadLetters"]["total"] >= 15
            seen = len(acker.values("press-1", "counter"))
            wait_until(
                lambda: len(acker.values("press-1", "counter")) >= seen + 10,
                15,
                "press-1 to keep arriving",
            )
            assert acker.received("press-2") == []  # the broker delivered none of them
            status = gateway.status()
            dead = status["deadLetters"]
            assert dead["kept"] == 10 and dead["maxKept"] == 10  # bounded
            assert dead["last"]["thing"] == "press-2"
            assert dead["last"]["reason"] == "Not authorized (135)"
            # read later than /status, while refusals go on
            assert (
                gateway.metric("spine_gateway_dead_letters_total", reason="not_authorized")
                >= dead["total"]
            )
            assert "The broker refused an update of thing press-2" in gateway.log()

            # a restart neither clears the count nor blocks delivery
            total = dead["total"]
            gateway.stop()
            kept = dead_letters_on_disk(gateway.state_dir / "buffer" / "queue.sqlite3")
            assert len(kept) == 10
            assert {thing for thing, _ in kept} == {"press-2"}
            assert {reason for _, reason in kept} == {"Not authorized (135)"}
            gateway.start()
            acked = gateway.status()["publish"]["ackedSeq"]
            wait_until(
                lambda: gateway.status()["publish"]["ackedSeq"] >= acked + 20,
                20,
                "acks after the restart",
            )
            assert gateway.status()["deadLetters"]["total"] > total
        finally:
            gateway.stop()


def dead_letters_on_disk(path) -> list[tuple[str, str]]:
    database = sqlite3.connect(path)
    try:
        return database.execute("SELECT thing, reason FROM dead_letters").fetchall()
    finally:
        database.close()
