"""What goes wrong around a gateway, and what the user sees: a PLC that is down, a NaN, an
address the PLC does not have, an endpoint nobody answers, a config that cannot work."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.gateway import (
    REPO_ROOT,
    StandInAcker,
    gateway_config,
    modbus_connection,
    opcua_connection,
    s7_connection,
    start_gateway,
    tag,
)
from tests.support.processes import free_port, wait_until
from tests.support.sim import start_sim

pytestmark = pytest.mark.integration


def counter_advanced(acker: StandInAcker, by: int) -> Callable[[], bool]:
    """A condition: `by` more counter values arrived than now."""
    seen = len(acker.values("press-1", "counter"))
    return lambda: len(acker.values("press-1", "counter")) >= seen + by


def failing(gateway, name: str) -> dict[str, Any] | None:
    return next((t for t in gateway.status()["tags"]["failing"] if t["name"] == name), None)


async def test_a_plc_that_is_down_is_reported_while_the_others_keep_publishing(
    tmp_path, broker, acker
) -> None:
    with (
        start_sim(tmp_path, protocols=("modbus",), tickIntervalMs=100) as sim_a,
        start_sim(tmp_path, protocols=("modbus",), tickIntervalMs=100) as sim_b,
    ):
        gateway = await start_gateway(
            tmp_path,
            broker,
            connections=[
                modbus_connection("plc-a", sim_a.ports.modbus),
                modbus_connection("plc-b", sim_b.ports.modbus),
            ],
            tags=[
                tag("a", "plc-a", "press-a", "counter", "holding:8", type="uint32", interval=50),
                tag("b", "plc-b", "press-b", "counter", "holding:8", type="uint32", interval=50),
            ],
        )
        try:
            wait_until(
                lambda: acker.values("press-a", "counter") and acker.values("press-b", "counter"),
                15,
                "both PLCs publishing",
            )
            sim_b.kill()
            wait_until(
                lambda: gateway.connection_status("plc-b")["state"] == "disconnected",
                10,
                "plc-b reported down",
            )
            seen_a = len(acker.values("press-a", "counter"))
            seen_b = len(acker.values("press-b", "counter"))
            wait_until(
                lambda: len(acker.values("press-a", "counter")) >= seen_a + 20,
                15,
                "plc-a to keep publishing",
            )
            assert len(acker.values("press-b", "counter")) == seen_b
            down = gateway.connection_status("plc-b")
            assert f"127.0.0.1:{sim_b.ports.modbus}" in down["lastError"]
            assert down["reconnects"] >= 1
            assert gateway.connection_status("plc-a")["state"] == "connected"
            reason = failing(gateway, "b")
            assert reason is not None and "connection plc-b is disconnected" in reason["reason"]
            assert gateway.metric("spine_gateway_connection_up", connection="plc-b") == 0
            assert gateway.metric("spine_gateway_connection_up", connection="plc-a") == 1

            sim_b.start()  # the PLC comes back on the same port: the gateway reconnects
            wait_until(
                lambda: len(acker.values("press-b", "counter")) > seen_b,
                15,
                "plc-b publishing again",
            )
            assert gateway.connection_status("plc-b")["state"] == "connected"
            assert failing(gateway, "b") is None
        finally:
            gateway.stop()


async def test_a_nan_from_the_plc_is_reported_not_published_and_does_not_crash(
    tmp_path, broker, acker
) -> None:
    with start_sim(tmp_path, protocols=("modbus",), tickIntervalMs=100) as sim:
        gateway = await start_gateway(
            tmp_path,
            broker,
            connections=[
                modbus_connection("plc", sim.ports.modbus),
            ],
            tags=[
                tag(
                    "temp",
                    "plc",
                    "press-1",
                    "temperature",
                    "holding:2",
                    type="float32",
                    interval=50,
                ),
                tag("count", "plc", "press-1", "counter", "holding:8", type="uint32", interval=50),
            ],
        )
        try:
            wait_until(lambda: acker.values("press-1", "temperature"), 15, "a temperature")
            for hostile in ("NaN", "Infinity", "-Infinity"):  # as the simulator's API takes them
                sim.put_values(temperature=hostile)
                wait_until(lambda: failing(gateway, "temp"), 10, "the tag reported failing")
                reason = failing(gateway, "temp")
                assert reason is not None and "JSON cannot carry" in reason["reason"]
                wait_until(counter_advanced(acker, 5), 10, "the other tag to keep publishing")
                sim.put_values(temperature=None)
                wait_until(lambda: failing(gateway, "temp") is None, 10, "the tag to recover")
            assert (
                gateway.metric(
                    "spine_gateway_tag_errors_total", connection="plc", reason="not_finite"
                )
                >= 3
            )
            for update in acker.received("press-1"):
                assert "NaN" not in json.dumps(update.payload, allow_nan=True)
                if "temperature" in update.features:
                    assert math.isfinite(update.value("temperature"))
            assert gateway.running()
        finally:
            gateway.stop()


async def test_addresses_the_plc_lacks_and_unreachable_endpoints_are_reported(
    tmp_path, broker, acker
) -> None:
    closed_port = free_port()
    with start_sim(tmp_path, benchRegisters=10) as sim:
        gateway = await start_gateway(
            tmp_path,
            broker,
            connections=[
                modbus_connection("mb", sim.ports.modbus, maxGapRegisters=0),
                opcua_connection("ua", sim.opcua_endpoint),
                s7_connection("s7", sim.ports.s7),
                opcua_connection("ua-gone", f"opc.tcp://127.0.0.1:{closed_port}"),
                s7_connection("s7-gone", closed_port),
            ],
            tags=[
                tag("mb-ok", "mb", "press-1", "counter", "holding:8", type="uint32", interval=100),
                tag(
                    "mb-bad",
                    "mb",
                    "press-1",
                    "nothing",
                    "holding:5000",
                    type="uint16",
                    interval=100,
                ),
                tag(
                    "ua-ok",
                    "ua",
                    "press-2",
                    "counter",
                    "ns=2;s=Press.counter",
                    subscribe={"publishingInterval": 100},
                ),
                tag(
                    "ua-bad",
                    "ua",
                    "press-2",
                    "nothing",
                    "ns=2;s=Press.nothing",
                    subscribe={"publishingInterval": 100},
                ),
                tag(
                    "ua-bad-poll",
                    "ua",
                    "press-2",
                    "nothingPolled",
                    "ns=2;s=Press.nothing2",
                    interval=200,
                ),
                # a namespace URI instead of an index: resolved at connect, as indexes may move
                tag(
                    "ua-uri",
                    "ua",
                    "press-2",
                    "pressure",
                    "nsu=urn:spine:sim:press;s=Press.pressure",
                    subscribe={"publishingInterval": 100},
                ),
                tag(
                    "ua-uri-bad",
                    "ua",
                    "press-2",
                    "elsewhere",
                    "nsu=urn:nowhere;s=Press.pressure",
                    interval=200,
                ),
                tag("s7-ok", "s7", "press-3", "counter", "DB1.16", type="UDINT", interval=100),
                tag("s7-bad", "s7", "press-3", "nothing", "DB7.0", type="INT", interval=100),
                tag("gone-1", "ua-gone", "press-4", "counter", "ns=2;s=Press.counter"),
                tag("gone-2", "s7-gone", "press-5", "counter", "DB1.16", type="UDINT"),
            ],
        )
        try:
            wait_until(
                lambda: all(acker.values(t, "counter") for t in ("press-1", "press-2", "press-3")),
                20,
                "the good tags of every reachable PLC",
            )
            wait_until(
                lambda: len(gateway.status()["tags"]["failing"]) == 7,
                15,
                "the seven bad tags reported",
            )
            reasons = {t["name"]: t["reason"] for t in gateway.status()["tags"]["failing"]}
            assert "exception 2 (illegal data address) for holding 5000..5000" in reasons["mb-bad"]
            assert "BadNodeIdUnknown" in reasons["ua-bad"]
            assert "BadNodeIdUnknown" in reasons["ua-bad-poll"]
            assert reasons["ua-uri-bad"] == "the server has no namespace urn:nowhere"
            wait_until(lambda: acker.values("press-2", "pressure"), 10, "the nsu= tag's values")
            assert "object does not exist" in reasons["s7-bad"]
            assert (
                f"cannot connect to OPC UA server opc.tcp://127.0.0.1:{closed_port}"
                in (reasons["gone-1"])
            )
            assert f"cannot open an S7 session with 127.0.0.1:{closed_port}" in reasons["gone-2"]
            states = {c["name"]: c["state"] for c in gateway.status()["connections"]}
            assert states == {
                "mb": "connected",
                "ua": "connected",
                "s7": "connected",
                "ua-gone": "disconnected",
                "s7-gone": "disconnected",
            }
            assert httpx.get(f"{gateway.url}/healthz", timeout=5).status_code == 200
        finally:
            gateway.stop()


def run_gateway_with(config: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(config))
    return subprocess.run(
        [sys.executable, "-m", "spine_runtime.cli", "gateway", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PYTHONPATH": str(REPO_ROOT / "runtime"), "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.parametrize(
    ("bad_tag", "expected"),
    [
        (
            {"address": "holding:10", "type": "int17"},
            "tags[0] (t).type: unknown Modbus type 'int17'",
        ),
        ({"address": "hold:10", "type": "int16"}, "tags[0] (t).address: Modbus address 'hold:10'"),
        (
            {"address": "input:10", "type": "int16", "writable": True},
            "tags[0] (t).writable: a Modbus input is read-only",
        ),
    ],
)
def test_a_config_that_cannot_work_stops_the_gateway_with_the_field_named(
    tmp_path, broker, bad_tag, expected
) -> None:
    good = {"name": "t", "connection": "plc", "thing": "press-1", "property": "p"}
    config = gateway_config(
        name="line-1",
        broker=broker,
        username="gateway-line-1",
        password_file=tmp_path / "pw",
        buffer_dir=tmp_path / "buffer",
        http_port=free_port(),
        connections=[modbus_connection("plc", free_port())],
        tags=[{**good, "address": "holding:10", "type": "int16"}],
    )
    # The operator would refuse this tag; a hand-edited file reaches the gateway all the same.
    config["tags"] = [{**good, **bad_tag}]
    result = run_gateway_with(config, tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
