"""The flow engine against the real mosquitto: transform, filter, set/rename/convert, window,
dead letters, bad input, and a config change that restarts one flow alone.

Each flow logs in with its own login allowed exactly its declared topics (tests/support/flow.py),
so a flow that published or subscribed beyond its spec would fail here.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.support.flow import Collector, publish_all, start_flow_engine
from tests.support.mosquitto import LocalBroker
from tests.support.processes import wait_until

pytestmark = pytest.mark.integration


def alarm_flow(name: str = "press-alarms", **more) -> dict:
    return {
        "name": name,
        "source": {"mqtt": {"topic": "plant/+/temperature", "qos": 1}},
        "steps": [
            {"name": "hot", "filter": {"expression": "value > 80"}},
            {
                "name": "shape",
                "transform": {
                    "expression": '{"thing": thing, "celsius": value, "level": value > 100 '
                    '? "critical" : "warning"}'
                },
            },
        ],
        "sinks": [{"mqtt": {"topic": f"spine/flows/{name}/out/{{thing}}", "qos": 1}}],
        **more,
    }


def reading(thing: str, value: float, **more) -> bytes:
    return json.dumps({"thing": thing, "value": value, **more}).encode()


async def test_filter_and_transform_route_by_message_field(tmp_path: Path, broker: LocalBroker):
    engine = await start_flow_engine(tmp_path / "engine", broker, [alarm_flow()])
    collector = Collector(broker, ["spine/flows/press-alarms/#"])
    try:
        publish_all(
            engine,
            "plant/press-1/temperature",
            [reading("press-1", 70), reading("press-1", 85), reading("press-2", 120)],
        )
        collector.wait_for(2, topic=None)
        assert collector.all() == [
            (
                "spine/flows/press-alarms/out/press-1",
                {"thing": "press-1", "celsius": 85, "level": "warning"},
            ),
            (
                "spine/flows/press-alarms/out/press-2",
                {"thing": "press-2", "celsius": 120, "level": "critical"},
            ),
        ]
        status = engine.flow_status("press-alarms")
        assert status["steps"]["hot"] == {
            "kind": "filter",
            "in": 3,
            "out": 2,
            "filtered": 1,
            "errors": 0,
        }
        assert status["running"] and status["lastMessageTime"] is not None
        wait_until(
            lambda: (
                engine.metric(
                    "spine_flow_messages_total", flow="press-alarms", step="hot", result="filtered"
                )
                == 1
            ),
            5,
            "the filtered count in /metrics",
        )
    finally:
        collector.stop()
        engine.stop()


async def test_bad_input_goes_to_the_dead_letter_topic_and_the_flow_keeps_running(
    tmp_path: Path, broker: LocalBroker
):
    flow = alarm_flow(
        steps=[
            {"name": "hot", "filter": {"expression": "value > 80"}},
            {"name": "ratio", "transform": {"expression": '{"thing": thing, "r": value / "x"}'}},
        ]
    )
    engine = await start_flow_engine(tmp_path / "engine", broker, [flow], maxMessageBytes=2048)
    collector = Collector(broker, ["spine/flows/press-alarms/#"])
    dead = "spine/flows/press-alarms/deadletter"
    try:
        publish_all(
            engine,
            "plant/press-1/temperature",
            [
                b"not json {",
                reading("press-1", 90, pad="x" * 5000),  # over maxMessageBytes
                reading("press-1", 95),  # fails at run time in the transform
                reading("a/b", 99),  # the step fails before the topic; see below
            ],
        )
        collector.wait_for(4, topic=dead)
        letters = collector.on(dead)
        assert [letter["step"] for letter in letters] == ["source", "source", "ratio", "ratio"]
        assert "not JSON" in letters[0]["reason"] and letters[0]["message"] == "not json {"
        assert "larger than maxMessageBytes (2048)" in letters[1]["reason"]
        assert letters[1]["message"]["bytes"] > 2048
        assert "T2002" in letters[2]["reason"] and letters[2]["message"]["value"] == 95
        assert letters[2]["topic"] == "plant/press-1/temperature"
        status = engine.flow_status("press-alarms")
        assert status["deadLetters"] == 4 and status["lastError"]["step"] == "ratio"
        # Counters reach /metrics on each scrape (and on the flow's tick).
        wait_until(
            lambda: (
                engine.metric("spine_flow_dead_letters_total", flow="press-alarms", step="ratio")
                == 2
            ),
            5,
            "the dead letters in /metrics",
        )
    finally:
        collector.stop()
        engine.stop()


async def test_a_topic_that_renders_invalid_is_a_dead_letter(tmp_path: Path, broker: LocalBroker):
    engine = await start_flow_engine(tmp_path / "engine", broker, [alarm_flow()])
    collector = Collector(broker, ["spine/flows/press-alarms/#", "spine/flows/press-alarms"])
    dead = "spine/flows/press-alarms/deadletter"
    try:
        publish_all(
            engine,
            "plant/x/temperature",
            [reading("a/b", 99), reading("#", 99), reading("", 99), reading("press-9", 99)],
        )
        collector.wait_for(3, topic=dead)
        collector.wait_for(1, topic="spine/flows/press-alarms/out/press-9")
        reasons = [letter["reason"] for letter in collector.on(dead)]
        assert all("cannot be a topic level" in reason for reason in reasons), reasons
        assert {topic for topic, _ in collector.all()} == {
            dead,
            "spine/flows/press-alarms/out/press-9",
        }
    finally:
        collector.stop()
        engine.stop()


async def test_set_rename_remove_convert(tmp_path: Path, broker: LocalBroker):
    flow = {
        "name": "legacy",
        "source": {"mqtt": {"topic": "legacy/line", "qos": 1}},
        "steps": [
            {"name": "unit", "convert": {"field": "t", "from": "degF", "to": "degC"}},
            {"name": "names", "rename": {"t": "temperature.value", "id": "thing"}},
            {"name": "mark", "set": {"temperature.unit": '"degC"', "ok": "temperature.value < 50"}},
            {"name": "clean", "remove": ["junk"]},
        ],
        "sinks": [{"mqtt": {"topic": "spine/flows/legacy/out", "qos": 0}}],
    }
    engine = await start_flow_engine(tmp_path / "engine", broker, [flow])
    collector = Collector(broker, ["spine/flows/legacy/#"])
    try:
        publish_all(engine, "legacy/line", [b'{"id": "press-1", "t": 212, "junk": 1}'])
        collector.wait_for(1)
        assert collector.on("spine/flows/legacy/out") == [
            {"thing": "press-1", "temperature": {"value": 100.0, "unit": "degC"}, "ok": False}
        ]
    finally:
        collector.stop()
        engine.stop()


async def test_count_window_per_group_and_time_window(tmp_path: Path, broker: LocalBroker):
    counted = {
        "name": "kpi",
        "source": {"mqtt": {"topic": "plant/+/speed", "qos": 1}},
        "steps": [
            {
                "name": "per-press",
                "window": {
                    "count": 3,
                    "groupBy": "thing",
                    "aggregates": {
                        "avgSpeed": {"op": "avg", "expression": "speed"},
                        "maxSpeed": {"op": "max", "expression": "speed"},
                        "n": {"op": "count"},
                        "last": {"op": "last", "expression": "speed"},
                    },
                },
            }
        ],
        "sinks": [{"mqtt": {"topic": "spine/flows/kpi/out/{group}", "qos": 1}}],
    }
    timed = {
        "name": "kpi-timed",
        "source": {"mqtt": {"topic": "plant/+/pressure", "qos": 1}},
        "steps": [
            {
                "name": "second",
                "window": {"every": 0.5, "aggregates": {"sum": {"op": "sum", "expression": "p"}}},
            }
        ],
        "sinks": [{"mqtt": {"topic": "spine/flows/kpi-timed/out", "qos": 1}}],
    }
    engine = await start_flow_engine(tmp_path / "engine", broker, [counted, timed])
    collector = Collector(broker, ["spine/flows/#"])
    try:
        speeds = [("p1", 10), ("p2", 100), ("p1", 20), ("p1", 30), ("p2", 200), ("p1", 99)]
        publish_all(
            engine,
            "plant/x/speed",
            [json.dumps({"thing": t, "speed": s}).encode() for t, s in speeds],
        )
        publish_all(engine, "plant/x/pressure", [b'{"p": 1.5}', b'{"p": 2.5}'])
        collector.wait_for(1, topic="spine/flows/kpi/out/p1")
        collector.wait_for(1, topic="spine/flows/kpi-timed/out", timeout=10)
        (p1,) = collector.on("spine/flows/kpi/out/p1")
        assert {k: p1[k] for k in ("group", "count", "avgSpeed", "maxSpeed", "n", "last")} == {
            "group": "p1",
            "count": 3,
            "avgSpeed": 20,
            "maxSpeed": 30,
            "n": 3,
            "last": 30,
        }
        assert collector.on("spine/flows/kpi/out/p2") == []  # 2 of 3: the window is open
        sums = [letter["sum"] for letter in collector.on("spine/flows/kpi-timed/out")]
        assert sums[0] == 4.0
    finally:
        collector.stop()
        engine.stop()


async def test_a_changed_flow_restarts_alone(tmp_path: Path, broker: LocalBroker):
    other = {
        "name": "steady",
        "source": {"mqtt": {"topic": "steady/in", "qos": 1}},
        "sinks": [{"mqtt": {"topic": "spine/flows/steady/out", "qos": 1}}],
    }
    engine = await start_flow_engine(tmp_path / "engine", broker, [alarm_flow(), other])
    collector = Collector(broker, ["spine/flows/#"])
    try:
        publish_all(engine, "steady/in", [b'{"n": 1}'])
        collector.wait_for(1, topic="spine/flows/steady/out")
        before = engine.status()["flows"]
        config = json.loads(json.dumps(engine.config))
        config["flows"][0]["steps"][0]["filter"]["expression"] = "value > 200"
        response = engine.push(config)
        assert response.status_code == 200, response.text
        after = engine.status()["flows"]
        assert after["press-alarms"]["revision"] != before["press-alarms"]["revision"]
        assert after["steady"]["revision"] == before["steady"]["revision"]
        assert after["steady"]["received"] == 1  # not restarted: its counters go on
        publish_all(engine, "plant/press-1/temperature", [reading("press-1", 150)])
        publish_all(engine, "steady/in", [b'{"n": 2}'])
        collector.wait_for(2, topic="spine/flows/steady/out")
        wait_until(
            lambda: engine.flow_status("press-alarms")["steps"]["hot"]["filtered"] == 1,
            5,
            "the new filter to drop 150",
        )
        bad = json.loads(json.dumps(config))
        bad["flows"][0]["steps"][0]["filter"]["expression"] = "value >"
        refused = engine.push(bad)
        assert refused.status_code == 400
        assert "step hot (filter): expression does not compile" in refused.json()["detail"]
        assert "position 7" in refused.json()["detail"]
        assert engine.push(config, token="wrong").status_code == 401
    finally:
        collector.stop()
        engine.stop()


async def test_http_source(tmp_path: Path, broker: LocalBroker):
    flow = {
        "name": "orders",
        "source": {"http": {"path": "/orders"}},
        "steps": [{"name": "check", "filter": {"expression": "qty > 0"}}],
        "sinks": [{"mqtt": {"topic": "spine/flows/orders/out", "qos": 1}}],
    }
    engine = await start_flow_engine(tmp_path / "engine", broker, [flow])
    collector = Collector(broker, ["spine/flows/orders/#"])
    try:
        url = f"{engine.url}/flows/orders/orders"
        assert httpx.post(url, json={"qty": 2}).status_code == 202
        assert httpx.post(url, content=b"{nope").status_code == 422
        assert httpx.get(url).status_code == 405
        assert httpx.post(f"{engine.url}/flows/orders/other", json={}).status_code == 404
        collector.wait_for(1, topic="spine/flows/orders/out")
        assert collector.on("spine/flows/orders/out") == [{"qty": 2}]
    finally:
        collector.stop()
        engine.stop()


async def test_drop_counts_and_a_flow_that_cannot_start_leaves_the_others_running(
    tmp_path: Path, broker: LocalBroker
):
    dropping = alarm_flow(
        "quiet",
        onError="drop",
        steps=[
            {"name": "ratio", "transform": {"expression": '{"thing": thing, "r": value / "x"}'}}
        ],
    )
    broken = alarm_flow("broken")
    engine = await start_flow_engine(tmp_path / "engine", broker, [dropping, broken], wait=False)
    collector = Collector(broker, ["spine/flows/#"])
    try:
        # The broken flow's password file disappears (a Secret not mounted): the engine
        # restarts with the same document and runs what it can.
        Path(engine.config["flows"][1]["login"]["passwordFile"]).unlink()
        engine.stop()
        engine.start(wait=False)
        wait_until(lambda: engine.status()["missing"] == ["broken"], 20, "broken reported missing")
        wait_until(lambda: engine.flow_status("quiet")["connected"], 20, "quiet to connect")
        publish_all(engine, "plant/press-1/temperature", [reading("press-1", 99)])
        wait_until(lambda: engine.flow_status("quiet")["dropped"] == 1, 10, "the drop counted")
        assert engine.flow_status("quiet")["lastError"]["step"] == "ratio"
        wait_until(
            lambda: engine.metric("spine_flow_dropped_total", flow="quiet", step="ratio") == 1,
            5,
            "the drop in /metrics",
        )
        assert collector.on("spine/flows/quiet/deadletter") == []
        assert "Cannot start flow broken" in engine.log()
    finally:
        collector.stop()
        engine.stop()
