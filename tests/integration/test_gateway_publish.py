"""The gateway process from PLC to broker: what it publishes, how cheaply it reads, writes.

Real mosquitto on the operator's config, the gateway with its production login, the press
simulator as the PLC (it counts the requests it serves), and a stand-in twin that acks
(tests/support/gateway.py) until the real twin is wired in.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.support.gateway import (
    NAMESPACE,
    modbus_connection,
    opcua_connection,
    s7_connection,
    start_gateway,
    tag,
)
from tests.support.processes import wait_until
from tests.support.sim import start_sim

pytestmark = pytest.mark.integration


async def test_a_register_change_reaches_the_broker_scaled_and_past_the_deadband(
    tmp_path, broker, acker
) -> None:
    with start_sim(tmp_path, protocols=("modbus",), initialTargetSpeed=30) as sim:
        gateway = await start_gateway(
            tmp_path,
            broker,
            connections=[
                modbus_connection("plc", sim.ports.modbus),
            ],
            tags=[
                tag(
                    "speed",
                    "plc",
                    "press-1",
                    "targetSpeed",
                    "holding:0",
                    type="uint16",
                    scale={"factor": 10},
                    deadband=15,
                    interval=50,
                ),
                tag("run", "plc", "press-1", "running", "holding:1", type="uint16", interval=50),
            ],
        )
        try:
            wait_until(
                lambda: 300 in acker.values("press-1", "targetSpeed"),
                15,
                "targetSpeed 30 published as 300",
            )
            first = acker.received("press-1")[0]
            assert first.payload["topic"] == f"{NAMESPACE}/press-1/things/twin/commands/merge"
            assert first.payload["path"] == "/features"
            headers = first.payload["headers"]
            assert headers["spine-gateway"] == "line-1" and headers["spine-seq"] == 1
            assert headers["correlation-id"] == f"line-1:{headers['spine-epoch']}:1"
            assert re.fullmatch(
                r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", headers["spine-source-time"]
            )
            assert first.features == {
                "targetSpeed": {"properties": {"value": 300}},
                "running": {"properties": {"value": 1}},
            }

            # 31 -> 310 is within the deadband of 300: not published. `running` changes in the
            # same read, so its update proves the gateway saw 310 and held it back.
            sim.put_values(targetSpeed=31, running=False)
            wait_until(lambda: 0 in acker.values("press-1", "running"), 10, "running 0")
            assert acker.values("press-1", "targetSpeed") == [300]
            sim.put_values(targetSpeed=33)  # 330 differs from the published 300 by 30
            wait_until(
                lambda: acker.values("press-1", "targetSpeed") == [300, 330],
                10,
                "targetSpeed 33 published as 330",
            )
            status = gateway.status()
            assert status["connections"][0]["state"] == "connected"
            assert status["tags"]["ok"] == 2 and status["tags"]["failing"] == []
            assert gateway.metric("spine_gateway_reads_total", connection="plc", result="ok") > 0
        finally:
            gateway.stop()


async def test_100_contiguous_registers_cost_one_request_per_cycle(tmp_path, broker, acker) -> None:
    interval = 0.1
    with start_sim(tmp_path, protocols=("modbus",), benchRegisters=100, tickIntervalMs=50) as sim:
        gateway = await start_gateway(
            tmp_path,
            broker,
            connections=[
                modbus_connection("plc", sim.ports.modbus),
            ],
            tags=[
                tag(
                    f"bench{i}",
                    "plc",
                    "press-1",
                    f"bench{i}",
                    f"holding:{100 + i}",
                    type="uint16",
                    interval=interval * 1000,
                )
                for i in range(100)
            ],
        )
        try:
            wait_until(lambda: len(acker.received("press-1")) >= 3, 15, "three updates")
            sim.reset_counters()
            reads_before = gateway.metric("spine_gateway_reads_total", connection="plc")
            wait_until(
                lambda: (
                    gateway.metric("spine_gateway_reads_total", connection="plc")
                    >= reads_before + 20
                ),
                15,
                "20 more poll cycles",
            )
            window = sim.reset_counters()
            reads = gateway.metric("spine_gateway_reads_total", connection="plc") - reads_before
            served = window["modbus"]
            # counted at the server: one read_holding_registers per cycle, nothing else
            assert set(served) == {"read_holding_registers"}
            assert abs(served["read_holding_registers"] - reads) <= 1
            connection = gateway.connection_status("plc")
            assert connection["requestsPerCycle"] == {"0.1s": 1}
            # every update carries all 100 values of one read: bench[i] - bench[0] == i
            for update in acker.received("press-1")[-5:]:
                values = [update.value(f"bench{i}") for i in range(100)]
                assert all((v - values[0]) % 65536 == i for i, v in enumerate(values))
        finally:
            gateway.stop()


async def test_s7_tags_of_one_db_are_one_multi_variable_read(tmp_path, broker, acker) -> None:
    with start_sim(tmp_path, protocols=("s7",), benchRegisters=10) as sim:
        gateway = await start_gateway(
            tmp_path,
            broker,
            connections=[
                s7_connection("s7", sim.ports.s7),
            ],
            tags=[
                tag("speed", "s7", "press-1", "targetSpeed", "DB1.DBW0", type="INT", interval=100),
                tag("run", "s7", "press-1", "running", "DB1.DBX2.0", type="BOOL", interval=100),
                tag("temp", "s7", "press-1", "temperature", "DB1.4", type="REAL", interval=100),
                tag("count", "s7", "press-1", "counter", "DB1.16", type="UDINT", interval=100),
                *[
                    tag(
                        f"b{i}",
                        "s7",
                        "press-1",
                        f"bench{i}",
                        f"DB1.{100 + 2 * i}",
                        type="WORD",
                        interval=100,
                    )
                    for i in range(10)
                ],
            ],
        )
        try:
            wait_until(lambda: len(acker.received("press-1")) >= 2, 15, "two updates")
            sim.reset_counters()
            before = gateway.metric("spine_gateway_reads_total", connection="s7")
            wait_until(
                lambda: gateway.metric("spine_gateway_reads_total", connection="s7") >= before + 10,
                15,
                "10 more cycles",
            )
            served = sim.reset_counters()["s7"]
            reads = gateway.metric("spine_gateway_reads_total", connection="s7") - before
            assert abs(served["read"] - reads) <= 1
            # 14 tags: bytes 0..19 and 100..119 of DB1 (80 bytes apart, more than the 16-byte
            # gap a variable may span) are two variables of one multi-variable read
            assert served["read_item"] == 2 * served["read"]
            assert gateway.connection_status("s7")["requestsPerCycle"] == {"0.1s": 1}
            temperatures = acker.values("press-1", "temperature")
            assert temperatures and isinstance(temperatures[-1], float)
        finally:
            gateway.stop()


async def test_opcua_subscription_reports_changes_without_a_single_read(
    tmp_path, broker, acker
) -> None:
    with start_sim(tmp_path, protocols=("opcua",), tickIntervalMs=100) as sim:
        gateway = await start_gateway(
            tmp_path,
            broker,
            connections=[
                opcua_connection("ua", sim.opcua_endpoint),
            ],
            tags=[
                tag(
                    "counter",
                    "ua",
                    "press-1",
                    "counter",
                    "ns=2;s=Press.counter",
                    subscribe={"publishingInterval": 100, "samplingInterval": 50, "queueSize": 4},
                ),
                tag(
                    "temperature",
                    "ua",
                    "press-1",
                    "temperature",
                    "ns=2;s=Press.temperature",
                    subscribe={"publishingInterval": 250},
                ),
            ],
        )
        try:
            wait_until(
                lambda: len(acker.values("press-1", "counter")) >= 2,
                20,
                "the first counter notifications",
            )
            sim.reset_counters()
            seen = len(acker.values("press-1", "counter"))
            wait_until(
                lambda: len(acker.values("press-1", "counter")) >= seen + 10,
                15,
                "10 more counter changes",
            )
            served = sim.reset_counters().get("opcua", {})
            assert served.get("read", 0) == 0, served  # no Read service call at all
            counters = acker.values("press-1", "counter")
            assert counters == sorted(counters)
            assert gateway.metric("spine_gateway_notifications_total", connection="ua") >= 10
            assert gateway.connection_status("ua")["state"] == "connected"
        finally:
            gateway.stop()


async def test_desired_values_are_written_read_back_and_reported(tmp_path, broker, acker) -> None:
    with start_sim(tmp_path, initialTargetSpeed=30) as sim:
        gateway = await start_gateway(
            tmp_path,
            broker,
            connections=[
                modbus_connection("mb", sim.ports.modbus),
                opcua_connection("ua", sim.opcua_endpoint),
                s7_connection("s7", sim.ports.s7),
            ],
            tags=[
                tag(
                    "mb-speed",
                    "mb",
                    "press-1",
                    "targetSpeed",
                    "holding:0",
                    type="uint16",
                    scale={"factor": 0.5},
                    writable=True,
                    interval=200,
                ),
                tag(
                    "mb-temp",
                    "mb",
                    "press-1",
                    "temperature",
                    "holding:2",
                    type="float32",
                    interval=200,
                ),
                tag(
                    "ua-speed",
                    "ua",
                    "press-2",
                    "targetSpeed",
                    "ns=2;s=Press.targetSpeed",
                    writable=True,
                    subscribe={"publishingInterval": 200},
                ),
                tag(
                    "s7-run",
                    "s7",
                    "press-3",
                    "running",
                    "DB1.DBX2.0",
                    type="BOOL",
                    writable=True,
                    interval=200,
                ),
            ],
        )
        try:
            # Every connection must be up before its first write: a write to a connection
            # that is down is refused, not retried (README, Writes). Waiting for S7 alone
            # flaked on a busy machine when the Modbus session came up late.
            wait_until(
                lambda: (
                    acker.values("press-3", "running")[-1:] == [True]
                    and acker.values("press-1", "targetSpeed")
                    and acker.values("press-2", "targetSpeed")
                ),
                20,
                "the first values of all three connections",
            )
            acker.publish_desired("press-1", "targetSpeed", 21)  # 21 / 0.5 = 42 in the PLC
            wait_until(lambda: sim.values()["targetSpeed"] == 42, 10, "Modbus write")
            wait_until(lambda: 21 in acker.values("press-1", "targetSpeed"), 10, "read-back")

            acker.publish_desired("press-2", "targetSpeed", 17)
            wait_until(lambda: sim.values()["targetSpeed"] == 17, 10, "OPC UA write")
            wait_until(lambda: 17 in acker.values("press-2", "targetSpeed"), 10, "reported")

            acker.publish_desired("press-3", "running", False)
            wait_until(lambda: sim.values()["running"] is False, 10, "S7 write")
            wait_until(lambda: acker.values("press-3", "running")[-1:] == [False], 10, "reported")

            # refused: by the PLC (61 spm is out of its range), by the gateway (not a whole
            # register value; not writable; not a number)
            acker.publish_desired("press-1", "targetSpeed", 30.5)  # 61 in the PLC
            acker.publish_desired("press-1", "targetSpeed", 10.25)
            acker.publish_desired("press-1", "temperature", 20.0)
            acker.publish_desired("press-3", "running", "yes")
            wait_until(
                lambda: (
                    gateway.status()["writes"]["error"] >= 1
                    and gateway.status()["writes"]["rejected"] >= 3
                ),
                10,
                "four refusals",
            )
            writes = gateway.status()["writes"]
            messages = [w["message"] for w in writes["recent"]]
            assert any("exception 3 (illegal data value)" in m for m in messages), messages
            assert any("not a whole number" in m for m in messages), messages
            assert any("no writable tag" in m for m in messages), messages
            assert any("is not a boolean" in m for m in messages), messages
            assert sim.values()["targetSpeed"] == 17  # nothing refused reached the PLC
            assert writes["ok"] == 3
            assert gateway.running()
        finally:
            gateway.stop()


async def test_a_changed_config_applies_without_a_restart(tmp_path, broker, acker) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text("push-token\n")
    counter = tag("count", "plc", "press-1", "counter", "holding:8", type="uint32", interval=100)
    speed = tag("speed", "plc", "press-1", "targetSpeed", "holding:0", type="uint16", interval=100)
    with start_sim(tmp_path, protocols=("modbus",)) as sim:
        gateway = await start_gateway(
            tmp_path,
            broker,
            connections=[modbus_connection("plc", sim.ports.modbus)],
            tags=[counter],
            http={"adminTokenFile": str(token_file)},
        )
        try:
            wait_until(lambda: acker.values("press-1", "counter"), 15, "the counter")
            pid = gateway.process.pid if gateway.process else 0
            pushed = {**gateway.config, "tags": [counter, speed]}
            response = httpx.put(
                f"{gateway.url}/admin/config",
                content=json.dumps(pushed),
                headers={"Authorization": "Bearer push-token"},
                timeout=10,
            )
            assert response.status_code == 200 and response.json()["applied"] is True
            wait_until(lambda: acker.values("press-1", "targetSpeed"), 10, "the new tag")

            needs_restart = {**pushed, "mqtt": {**pushed["mqtt"], "port": 1}}
            response = httpx.put(
                f"{gateway.url}/admin/config",
                content=json.dumps(needs_restart),
                headers={"Authorization": "Bearer push-token"},
                timeout=10,
            )
            assert response.status_code == 400
            assert "changing mqtt needs a restart" in response.json()["detail"]

            # the mounted file changes (kubelet's refresh; an unchanged file would not revert
            # the push): the tag goes again, and the counter is polled less often
            gateway.write_config({**pushed, "tags": [{**counter, "interval": 200}]})
            wait_until(lambda: gateway.status()["tags"]["total"] == 1, 10, "the file's config")
            assert gateway.connection_status("plc")["requestsPerCycle"] == {"0.2s": 1}
            assert gateway.process is not None and gateway.process.pid == pid
            assert gateway.status()["connections"][0]["state"] == "connected"
        finally:
            gateway.stop()
