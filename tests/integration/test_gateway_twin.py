"""The gateway feeding the real twin service: what the stand-in twin of the other gateway tests
cannot prove. The twin runs the press model of examples/press-line/twinmodel.yaml, rendered
the way the operator renders it; the PLC is the press simulator over Modbus TCP; the broker is
Debian's mosquitto on the operator's config, and each process logs in with its production ACL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from spine_operator.api.twinmodel import TwinModelSpec
from tests.support.gateway import GatewayHandle, modbus_connection, start_gateway
from tests.support.mosquitto import LocalBroker
from tests.support.processes import wait_until
from tests.support.sim import SimHandle, start_sim
from tests.support.twin import TwinHandle, start_twin

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "press-line" / "twinmodel.yaml"
TAGS: list[dict[str, Any]] = [
    {
        "name": "target-speed",
        "connection": "plc",
        "thing": "press-1",
        "property": "targetSpeed",
        "address": "holding:0",
        "type": "uint16",
        "writable": True,
        "interval": 100,
    },
    {
        "name": "temperature",
        "connection": "plc",
        "thing": "press-1",
        "property": "temperature",
        "address": "holding:12",
        "type": "int16",
        "scale": {"factor": 0.1},
        "interval": 100,
    },
    {
        "name": "cycle-count",
        "connection": "plc",
        "thing": "press-1",
        "property": "cycleCount",
        "address": "holding:6",
        "type": "uint32",
        "interval": 100,
    },
]


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimHandle]:
    # 60 strokes per minute: cycleCount moves every second.
    with start_sim(tmp_path, protocols=("modbus",), initialTargetSpeed=60) as handle:
        yield handle


@pytest.fixture
async def twin(tmp_path: Path, broker: LocalBroker) -> AsyncIterator[TwinHandle]:
    spec = TwinModelSpec.model_validate(yaml.safe_load(EXAMPLE.read_text())["spec"])
    handle = await start_twin(
        tmp_path,
        broker,
        [spec.thing_model("press").to_wire()],
        [thing.to_wire() for thing in spec.thing_instances("press")],
    )
    yield handle
    handle.stop()


@pytest.fixture
async def gateway(
    tmp_path: Path, broker: LocalBroker, sim: SimHandle, twin: TwinHandle
) -> AsyncIterator[GatewayHandle]:
    handle = await start_gateway(
        tmp_path, broker, connections=[modbus_connection("plc", sim.ports.modbus)], tags=TAGS
    )
    yield handle
    handle.stop()


def reported(twin: TwinHandle, feature: str) -> Any:
    return twin.thing("press-1")["features"][feature]["properties"].get("value")


def everything_acknowledged(gateway: GatewayHandle) -> bool:
    publish = gateway.status()["publish"]
    return bool(publish["lastSeq"]) and publish["ackedSeq"] == publish["lastSeq"]


async def test_plc_values_are_stored_and_a_value_the_model_refuses_is_rejected_by_the_twin(
    sim: SimHandle, twin: TwinHandle, gateway: GatewayHandle
) -> None:
    sim.put_values(temperature=81.5)  # held, so the scaled value is known
    wait_until(lambda: reported(twin, "temperature") == 81.5, 15, "81.5 degC in the twin")
    counted = wait_until(lambda: reported(twin, "cycleCount"), 15, "a cycle count in the twin")
    assert twin.thing("press-1")["features"]["temperature"]["properties"]["sourceTime"]

    # 3000.0 degC passes the gateway (an int16 of 30000 times 0.1) but not the model (max 150).
    rejected_before = twin.metric("spine_twin_updates_total", result="rejected")
    sim.put_values(temperature=3000.0)
    wait_until(
        lambda: twin.metric("spine_twin_updates_total", result="rejected") > rejected_before,
        15,
        "the twin to reject the out-of-range temperature",
    )
    assert reported(twin, "temperature") == 81.5, "a rejected value must change nothing"
    # The gateway is not stuck on the rejected update: the twin acknowledged it (processed,
    # reported on the errors topic) and later values keep arriving.
    wait_until(lambda: reported(twin, "cycleCount") > counted, 15, "the cycle count to move on")
    wait_until(lambda: everything_acknowledged(gateway), 15, "every update acknowledged")
    assert gateway.process is not None and gateway.process.running()

    sim.put_values(temperature=None)  # released: the physics' value comes back
    wait_until(lambda: reported(twin, "temperature") != 81.5, 15, "the temperature to follow again")


async def test_a_desired_speed_set_in_the_twin_reaches_the_plc_and_is_reported_back(
    sim: SimHandle, twin: TwinHandle, gateway: GatewayHandle
) -> None:
    wait_until(lambda: reported(twin, "targetSpeed") == 60, 15, "the PLC's set point")
    url = f"{twin.url}/api/2/things/plant_a:press-1/features/targetSpeed/desiredProperties/value"
    response = httpx.put(url, json=45, headers=twin.auth(), timeout=5)
    assert response.status_code in (201, 204), response.text

    wait_until(lambda: sim.values()["targetSpeed"] == 45, 15, "45 spm written to the PLC")
    wait_until(lambda: reported(twin, "targetSpeed") == 45, 15, "45 spm reported back")
    desired = twin.thing("press-1")["features"]["targetSpeed"]["desiredProperties"]
    assert desired["value"] == 45 and desired["status"] == "reached"

    # A value the model refuses never reaches the PLC.
    refused = httpx.put(url, json=90, headers=twin.auth(), timeout=5)
    assert refused.status_code == 400 and "maximum" in refused.json()["error"]
    assert sim.values()["targetSpeed"] == 45


async def test_updates_the_broker_refuses_do_not_stop_the_twins_acks(
    sim: SimHandle, twin: TwinHandle, gateway: GatewayHandle
) -> None:
    # The gateway's login may publish press-1 only; its config gains a tag for press-2 (a
    # config ahead of its login). The broker refuses those updates (135); the gateway keeps
    # them as dead letters and fills their seqs with gaps the real twin processes.
    wait_until(lambda: everything_acknowledged(gateway), 15, "the first updates acknowledged")
    refused_from = gateway.status()["publish"]["lastSeq"]
    press_2 = {**TAGS[1], "name": "temperature-2", "thing": "press-2", "interval": 100}
    gateway.write_config({**gateway.config, "tags": [*TAGS, press_2]})
    wait_until(
        lambda: gateway.status()["deadLetters"]["total"] >= 5, 15, "refused updates moved aside"
    )
    wait_until(
        lambda: gateway.status()["publish"]["ackedSeq"] >= refused_from + 30,
        20,
        "the twin's acks to pass the refused seqs",
    )
    counted = reported(twin, "cycleCount")
    wait_until(lambda: reported(twin, "cycleCount") > counted, 15, "press-1 to keep moving")
    assert twin.thing("press-2")["features"]["temperature"]["properties"].get("value") is None
