"""Sources other than MQTT topics: the twin's change events (with the press line's alarm flow
with hysteresis, as in tests/unit/data/flow-press-line.yaml) and a schedule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from spine_operator.api.twinmodel import TwinModelSpec
from tests.support.flow import Collector, publish_all, start_flow_engine
from tests.support.mosquitto import LocalBroker
from tests.support.processes import wait_until
from tests.support.twin import start_twin

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_MODEL = ROOT / "examples" / "press-line" / "twinmodel.yaml"
EXAMPLE_FLOWS = ROOT / "tests" / "unit" / "data" / "flow-press-line.yaml"


def modify(thing: str, prop: str, value: float) -> bytes:
    return json.dumps(
        {
            "topic": f"plant_a/{thing}/things/twin/commands/modify",
            "path": f"/features/{prop}/properties/value",
            "value": value,
        }
    ).encode()


async def test_twin_events_drive_the_alarm_with_hysteresis(tmp_path: Path, broker: LocalBroker):
    spec = TwinModelSpec.model_validate(yaml.safe_load(EXAMPLE_MODEL.read_text())["spec"])
    twin = await start_twin(
        tmp_path,
        broker,
        [spec.thing_model("press").to_wire()],
        [thing.to_wire() for thing in spec.thing_instances("press")],
    )
    (alarms,) = [
        f for f in yaml.safe_load(EXAMPLE_FLOWS.read_text())["flows"] if f["name"] == "press-alarms"
    ]
    engine = await start_flow_engine(tmp_path / "engine", broker, [alarms])
    out = Collector(broker, ["spine/flows/press-alarms/out/#"])
    try:
        for temperature in (80, 91, 87, 86, 84, 95):
            publish_all(
                engine, "spine/things/press-1/twin", [modify("press-1", "temperature", temperature)]
            )
            wait_until(
                lambda t=temperature: (
                    twin.thing("press-1")["features"]["temperature"]["properties"].get("value") == t
                ),
                10,
                f"{temperature} in the twin",
            )
        publish_all(engine, "spine/things/press-2/twin", [modify("press-2", "pressure", 200)])
        out.wait_for(3, timeout=15)
        seen = [
            (m["thing"], m["temperature"], m["alarm"])
            for m in out.on("spine/flows/press-alarms/out/press-1")
        ]
        assert seen == [("press-1", 91, True), ("press-1", 84, False), ("press-1", 95, True)]
        # press-2's pressure carries no temperature: filtered (its event may come after the three)
        wait_until(
            lambda: engine.flow_status("press-alarms")["steps"]["has-temperature"]["filtered"] == 1,
            10,
            "press-2's event filtered out",
        )
    finally:
        out.stop()
        engine.stop()
        twin.stop()


async def test_a_schedule_sends_its_payload_with_the_time(tmp_path: Path, broker: LocalBroker):
    flow = {
        "name": "heartbeat",
        "source": {"schedule": {"every": 0.2, "payload": {"line": "1"}}},
        "sinks": [{"mqtt": {"topic": "spine/flows/heartbeat/out", "qos": 0}}],
    }
    engine = await start_flow_engine(tmp_path / "engine", broker, [flow])
    out = Collector(broker, ["spine/flows/heartbeat/out"])
    try:
        out.wait_for(3, timeout=10)
        first = out.on("spine/flows/heartbeat/out")[0]
        assert first["line"] == "1" and first["time"].endswith("Z")
    finally:
        out.stop()
        engine.stop()
