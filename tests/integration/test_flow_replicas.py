"""Engine replicas against the real mosquitto and real engine processes, as the operator's
StatefulSet runs them: one config, a login per flow and replica bound to its own client id, and
each process told its ordinal (SPINE_FLOW_ORDINAL, the pod name in a cluster).

What a user relies on: a QoS 1 flow's input is split between the replicas with nothing lost and
nothing sent anywhere but the flow's sink, also when a replica is SIGKILLed mid-stream; one
replica's login cannot connect as another replica; a schedule fires once, not per replica; and
twin writes from two replicas are two numbered publishers the twin acknowledges separately.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry

from spine_operator.api.twinmodel import TwinModelSpec
from spine_operator.broker_admin import BrokerAdmin
from spine_operator.desired.flow import REPLICA_LOGIN_PATTERN
from spine_operator.desired.twin import numbered_publishers
from spine_operator.metrics import OperatorMetrics
from spine_operator.poller import RuntimePoller, combine_flow_engine_reports, flow_engine_report
from tests.support.flow import (
    Collector,
    FlowEngineHandle,
    publish_all,
    start_flow_engine,
    start_flow_replicas,
)
from tests.support.mosquitto import LocalBroker, connect_result
from tests.support.processes import wait_until
from tests.support.twin import start_twin

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "press-line" / "twinmodel.yaml"


def relay(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "source": {"mqtt": {"topic": f"in/{name}", "qos": 1}},
        "steps": [{"name": "shape", "transform": {"expression": '{"seq": seq, "v": v * 2}'}}],
        "sinks": [{"mqtt": {"topic": f"spine/flows/{name}/out", "qos": 1}}],
    }


def numbered(count: int, start: int = 0) -> list[bytes]:
    return [json.dumps({"seq": n, "v": n}).encode() for n in range(start, start + count)]


@pytest.fixture
def replicas_to_stop() -> Iterator[list[FlowEngineHandle]]:
    started: list[FlowEngineHandle] = []
    yield started
    for engine in started:
        engine.stop()


async def test_two_replicas_split_a_qos1_input_and_a_sigkill_of_one_loses_nothing(
    tmp_path: Path, broker: LocalBroker, replicas_to_stop: list[FlowEngineHandle]
):
    replicas = await start_flow_replicas(tmp_path, broker, [relay("split")])
    replicas_to_stop.extend(replicas)
    first, second = replicas
    # Everything the broker carries, to see that nothing goes anywhere but the sink.
    everything = Collector(broker, ["#"])
    out = "spine/flows/split/out"
    total = 6000
    try:
        publisher = threading.Thread(target=publish_all, args=(first, "in/split", numbered(total)))
        publisher.start()
        wait_until(
            lambda: second.flow_status("split")["received"] >= 300,
            30,
            "replica 1 to take its share",
        )
        second.kill()
        killed_at = len(everything.on(out))
        publisher.join(120)
        assert killed_at < total, "the flow finished before replica 1 was killed: test nothing"
        # The StatefulSet starts replica 1 again under the same name: it resumes its session.
        second.start()
        wait_until(
            lambda: {message["seq"] for message in everything.on(out)} == set(range(total)),
            60,
            "every message after replica 1 came back",
        )
        shares = [engine.flow_status("split")["received"] for engine in replicas]
        assert all(share > 0 for share in shares), shares
        # Only the input and the sink's topic carry messages: nothing leaked elsewhere (no dead
        # letters, no other topic), and each output is a message that was sent.
        topics = {topic for topic, _ in everything.all()}
        assert topics == {"in/split", out}, topics
        outputs = everything.on(out)
        assert all(message["v"] == message["seq"] * 2 for message in outputs)
        # At least once: only what replica 1 held unacknowledged when it died comes twice.
        duplicates = len(outputs) - total
        assert 0 <= duplicates <= 100 * 2, duplicates  # its window (maxInFlight 100), twice
    finally:
        everything.stop()


async def test_scaling_down_removes_the_replicas_login_and_session_and_loses_nothing(
    tmp_path: Path, broker: LocalBroker, replicas_to_stop: list[FlowEngineHandle]
):
    """mosquitto keeps handing an offline member of a shared subscription its share (measured:
    with replica 1 SIGKILLed, replica 0 got exactly half of what followed; the other half
    waited in replica 1's session). So the operator's prune of a scaled-away replica removes
    its login and ends its session; the input then goes to the replicas that remain."""
    replicas = await start_flow_replicas(tmp_path, broker, [relay("scale")])
    replicas_to_stop.extend(replicas)
    first, second = replicas
    out = Collector(broker, ["spine/flows/scale/out"])
    admin = BrokerAdmin(broker.host, broker.port, broker.admin_username, broker.admin_password)
    await admin.start()
    try:
        publish_all(first, "in/scale", numbered(200))
        wait_until(lambda: out.count() >= 200, 20, "the first messages through both replicas")
        assert second.flow_status("scale")["received"] > 0
        # The StatefulSet scaled to 1: the pod of replica 1 stops (SIGTERM), then the operator
        # prunes the replica logins the plan no longer lists.
        second.stop()
        await admin.wait_connected(10)
        assert await admin.prune_logins(REPLICA_LOGIN_PATTERN, {"flow-scale"}) == ["flow-scale.1"]
        password = Path(first.config["flows"][0]["replicaLogins"][0]["passwordFile"]).read_text()
        assert connect_result(broker, "flow-scale.1", password, "flow-scale.1") == "Not authorized"
        publish_all(first, "in/scale", numbered(1000, start=200))
        wait_until(
            lambda: (
                {message["seq"] for message in out.on("spine/flows/scale/out")} == set(range(1200))
            ),
            30,
            "every message after the scale-down, through replica 0 alone",
        )
    finally:
        await admin.close()
        out.stop()


async def test_a_replicas_login_cannot_connect_as_another_replica(
    tmp_path: Path, broker: LocalBroker, replicas_to_stop: list[FlowEngineHandle]
):
    replicas = await start_flow_replicas(tmp_path, broker, [relay("bound")])
    replicas_to_stop.extend(replicas)
    logins = [
        replicas[0].config["flows"][0]["login"],
        *replicas[0].config["flows"][0]["replicaLogins"],
    ]
    assert [login["clientId"] for login in logins] == ["flow-bound", "flow-bound.1"]
    connected = re.findall(r"New client connected from \S+ as (flow-bound\S*)", broker.log())
    assert set(connected) == {"flow-bound", "flow-bound.1"}, connected
    passwords = [Path(login["passwordFile"]).read_text() for login in logins]
    # Replica 1's login under replica 0's id, and the other way round: refused, so neither can
    # take the other's session (and its queued share of the input) over.
    assert connect_result(broker, "flow-bound.1", passwords[1], "flow-bound") == "Not authorized"
    assert connect_result(broker, "flow-bound", passwords[0], "flow-bound.1") == "Not authorized"
    assert connect_result(broker, "flow-bound.1", passwords[1], "flow-bound.2") == "Not authorized"
    # Both replicas still run, connected.
    assert all(engine.flow_status("bound")["connected"] for engine in replicas)


async def test_a_schedule_fires_on_one_replica_only(
    tmp_path: Path, broker: LocalBroker, replicas_to_stop: list[FlowEngineHandle]
):
    flow = {
        "name": "tick",
        "source": {"schedule": {"every": 0.1, "payload": {"kind": "tick"}}},
        "sinks": [{"mqtt": {"topic": "spine/flows/tick/out", "qos": 1}}],
    }
    replicas = await start_flow_replicas(tmp_path, broker, [flow])
    replicas_to_stop.extend(replicas)
    out = Collector(broker, ["spine/flows/tick/out"])
    try:
        out.wait_for(20, timeout=20)
        received = [engine.flow_status("tick")["received"] for engine in replicas]
        assert received[0] >= 20 and received[1] == 0, received
        # Each tick once: as many messages as replica 0 made (give the last ones time).
        wait_until(
            lambda: out.count() >= replicas[0].flow_status("tick")["received"] - 2,
            10,
            "the ticks of replica 0",
        )
        assert out.count() <= replicas[0].flow_status("tick")["received"]
        assert replicas[1].flow_status("tick")["received"] == 0
    finally:
        out.stop()


async def test_twin_writes_of_two_replicas_are_two_numbered_publishers(
    tmp_path: Path, broker: LocalBroker, replicas_to_stop: list[FlowEngineHandle]
):
    spec = TwinModelSpec.model_validate(yaml.safe_load(EXAMPLE.read_text())["spec"])
    flow = {
        "name": "temps",
        "source": {"mqtt": {"topic": "legacy/+/line", "qos": 1}},
        "sinks": [{"twin": {"thing": "id", "property": "temperature", "value": "t"}}],
    }
    # The list the operator renders into the twin's config for a two-replica engine.
    publishers = numbered_publishers([], [{"metadata": {"name": "temps"}, "spec": flow}], 2)
    assert publishers == ["flow.temps", "flow.temps.1"]
    twin = await start_twin(
        tmp_path,
        broker,
        [spec.thing_model("press").to_wire()],
        [thing.to_wire() for thing in spec.thing_instances("press")],
        gateways=publishers,
    )
    replicas = await start_flow_replicas(tmp_path / "engines", broker, [flow])
    replicas_to_stop.extend(replicas)
    acks = Collector(broker, ["spine/gateways/+/acks"])
    try:
        total = 400
        payloads = [json.dumps({"id": "press-1", "t": 20 + n / 100}).encode() for n in range(total)]
        publish_all(replicas[0], "legacy/a/line", payloads)
        wait_until(
            lambda: (
                sum(engine.flow_status("temps")["sinks"]["sink:0"]["out"] for engine in replicas)
                == total
            ),
            30,
            "the twin's acks of every update of both replicas",
        )
        shares = [engine.flow_status("temps")["received"] for engine in replicas]
        assert all(share > 0 for share in shares), shares
        # Each replica's updates are acknowledged under its own identity, up to its own count.
        highest: dict[str, int] = {}
        for topic, ack in acks.all():
            identity = topic.split("/")[2]
            highest[identity] = max(highest.get(identity, 0), int(ack.get("seq", 0)))
        assert highest == {"flow.temps": shares[0], "flow.temps.1": shares[1]}, highest
        assert all(engine.flow_status("temps")["twinUnacknowledged"] == 0 for engine in replicas)
    finally:
        acks.stop()
        twin.stop()


async def test_a_twin_source_is_split_and_the_operators_poller_adds_the_replicas_up(
    tmp_path: Path, broker: LocalBroker, replicas_to_stop: list[FlowEngineHandle]
):
    flow = {
        "name": "events",
        "source": {"twin": {"things": ["press-1"]}},
        "steps": [{"name": "pick", "transform": {"expression": '{"seq": value}'}}],
        "sinks": [{"mqtt": {"topic": "spine/flows/events/out", "qos": 1}}],
    }
    replicas = await start_flow_replicas(tmp_path, broker, [flow])
    replicas_to_stop.extend(replicas)
    out = Collector(broker, ["spine/flows/events/out"])
    total = 400
    events = [
        json.dumps({"path": "/features/temperature/properties/value", "value": n}).encode()
        for n in range(total)
    ]
    try:
        # The twin's change events (published here as the twin would), each handled once.
        publish_all(replicas[0], "spine/things/press-1/events", events)
        wait_until(
            lambda: (
                {message["seq"] for message in out.on("spine/flows/events/out")}
                == set(range(total))
            ),
            30,
            "every event through one of the replicas",
        )
        shares = [engine.flow_status("events")["received"] for engine in replicas]
        assert all(share > 0 for share in shares) and sum(shares) == total, shares
        assert out.count() == total  # no replica handled an event the other had

        # The operator's poller reads every replica and adds the figures up.
        delivered: list[Any] = []

        async def deliver(key: Any, report: Any) -> None:
            delivered.append(report)

        poller = RuntimePoller(
            "Flow",
            lambda: [("plant-a", "flows")],
            lambda key: replicas[0].url,
            deliver,
            OperatorMetrics(CollectorRegistry()),
            parse=flow_engine_report,
            replica_urls=lambda key: [engine.url for engine in replicas],
            combine=combine_flow_engine_reports,
        )
        async with httpx.AsyncClient() as client:
            await poller.poll_once(client)
        [report] = delivered
        assert report.reachable and report.flows["events"]["received"] == total
        assert report.flows["events"]["running"]
        assert report.flows["events"]["steps"]["pick"]["out"] == total
    finally:
        out.stop()


async def test_a_session_of_an_engine_before_shared_twin_sources_is_cleaned_up(
    tmp_path: Path, broker: LocalBroker
):
    """An engine before replicas subscribed a twin source's plain filter, and its persistent
    session keeps it: the upgraded engine drops it, or each event would come twice (once as
    the plain subscription's, once as the share's)."""
    flow = {
        "name": "legacy-events",
        "source": {"twin": {"things": ["press-1"]}},
        "steps": [{"name": "pick", "transform": {"expression": '{"seq": value}'}}],
        "sinks": [{"mqtt": {"topic": "spine/flows/legacy-events/out", "qos": 1}}],
    }
    engine = await start_flow_engine(tmp_path, broker, [flow], sharedSubscriptions=False)
    out = Collector(broker, ["spine/flows/legacy-events/out"])
    try:
        engine.stop()  # the old engine leaves its session (with the plain filter) behind
        config = json.loads(json.dumps(engine.config))
        del config["sharedSubscriptions"]
        engine.write_config(config)
        engine.start()
        total = 100
        events = [
            json.dumps({"path": "/features/temperature/properties/value", "value": n}).encode()
            for n in range(total)
        ]
        publish_all(engine, "spine/things/press-1/events", events)
        wait_until(
            lambda: engine.flow_status("legacy-events")["received"] >= total,
            20,
            "every event",
        )
        out.wait_for(total, timeout=20)
        # Delivered once each: a second copy through the old plain filter would have arrived
        # with the first (same connection, in order), before the last event's.
        assert engine.flow_status("legacy-events")["received"] == total
        assert sorted(message["seq"] for message in out.on("spine/flows/legacy-events/out")) == (
            list(range(total))
        )
    finally:
        out.stop()
        engine.stop()
