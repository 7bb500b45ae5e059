"""The twin against a publisher that lies: a forged gateway identity, a flood of gateway names,
a source time far ahead, desired values over MQTT, and a value that would make a pattern
backtrack. Real mosquitto with the production logins, the real twin, real MQTT and HTTP clients.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from spine_operator.desired.logins import Login
from spine_runtime.twin.state import Origin
from spine_runtime.twin.store import TwinStore
from tests.support.mosquitto import LocalBroker
from tests.support.processes import wait_until
from tests.support.twin import (
    GATEWAY,
    Gateway,
    Observer,
    TwinHandle,
    ensure_gateway_login,
    ensure_login,
    start_twin,
    storage_path,
)

pytestmark = pytest.mark.integration

MODELS: list[dict[str, Any]] = [
    {
        "name": "press",
        "properties": {
            "count": {"type": "integer", "minimum": 0},
            "targetSpeed": {"type": "integer", "minimum": 0, "maximum": 100},
            # exponential for a backtracking engine on "aaa...!", yet no nested quantifier
            "code": {"type": "string", "pattern": "^(a|aa)*$"},
        },
    }
]
THINGS: list[dict[str, Any]] = [
    {"name": "press-1", "model": "press"},
    {"name": "press-2", "model": "press"},
]
OTHER = "press-line-2"


@pytest.fixture
async def twin(broker: LocalBroker, tmp_path: Path):
    handle = await start_twin(tmp_path, broker, MODELS, THINGS, gateways=[GATEWAY, OTHER])
    yield handle
    handle.stop()


@pytest.fixture
async def gateway(broker: LocalBroker):
    publisher = Gateway(
        broker, *await ensure_gateway_login(broker, GATEWAY, ["press-1"], ["press-1"])
    )
    yield publisher
    publisher.close()


@pytest.fixture
def observer(broker: LocalBroker):
    watching = Observer(broker)
    yield watching
    watching.close()


async def plain_publisher(broker: LocalBroker) -> mqtt.Client:
    """A login allowed the plain thing topics only, as a flow or a person would have."""
    password = secrets.token_urlsafe(12)
    await ensure_login(broker, Login("reporter", publish=("spine/things/+/twin",)), password)
    return broker.client("reporter", password)


def publish_reason(client: mqtt.Client, topic: str, payload: bytes) -> int:
    """Publish at QoS 1 over MQTT v5 and return the PUBACK reason code (135: not authorized)."""
    acked = threading.Event()
    codes: list[int] = []

    def on_publish(c: Any, userdata: Any, mid: int, reason: Any, properties: Any = None) -> None:
        codes.append(reason.value)
        acked.set()

    client.on_publish = on_publish
    client.publish(topic, payload, qos=1)
    assert acked.wait(5), "no PUBACK"
    return codes[0]


def command(thing: str, feature: str, value: Any, headers: dict[str, Any]) -> dict[str, Any]:
    return {
        "topic": f"plant_a/{thing}/things/twin/commands/modify",
        "path": f"/features/{feature}/properties/value",
        "value": value,
        "headers": headers,
    }


def rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# item 5: the gateway identity -------------------------------------------------------------------


async def test_a_gateway_identity_is_its_topic_and_the_broker_enforces_it(
    twin: TwinHandle, gateway: Gateway, observer: Observer, broker: LocalBroker
) -> None:
    forged = command("press-1", "count", 666, gateway.numbered(1))
    # Another gateway's login may not publish on this gateway's topic, nor on the plain one.
    other = Gateway(broker, *await ensure_gateway_login(broker, OTHER, ["press-2"]), name=OTHER)
    try:
        assert (
            publish_reason(other.client, gateway.topic("press-1"), json.dumps(forged).encode())
            == 135
        )
        assert publish_reason(other.client, "spine/things/press-1/twin", b"{}") == 135
        # On its own topic, a header naming another gateway is refused and tracks nothing.
        other.publish(
            "press-2",
            command("press-2", "count", 1, {**other.numbered(), "spine-gateway": GATEWAY}),
        )
        refused = observer.wait_for("spine/things/press-2/errors")
        assert refused["status"] == 400 and refused["field"] == "/headers/spine-gateway"
        assert f"is not the gateway '{OTHER}'" in refused["reason"]
    finally:
        other.close()
    # A login allowed the plain topic may write headers, but they are not an identity there:
    # before, these forged numbers would have marked the gateway's real updates 1-3 as done.
    reporter = await plain_publisher(broker)
    try:
        for seq in (1, 2, 3):
            forged = command("press-1", "count", 666, gateway.numbered(seq))
            assert publish_reason(
                reporter, "spine/things/press-1/twin", json.dumps(forged).encode()
            ) in (0, 16)
    finally:
        reporter.disconnect()
        reporter.loop_stop()
    wait_until(lambda: twin.status()["updates"]["rejected"] == 4, 10, "four refusals")
    refusal = observer.wait_for("spine/things/press-1/errors")
    assert "honoured only on a gateway's own topic" in refusal["reason"]
    assert refusal["field"] == "/headers/spine-gateway"
    assert twin.status()["gatewaysTracked"] == 0
    assert observer.on(f"spine/gateways/{GATEWAY}/acks") == []

    # The real gateway's update 1 is new to the twin: stored and acknowledged.
    gateway.report("press-1", "count", 7, seq=1)
    ack = observer.wait_for(f"spine/gateways/{GATEWAY}/acks")
    assert ack == {"gateway": GATEWAY, "epoch": gateway.epoch, "seq": 1}
    assert twin.thing("press-1")["features"]["count"]["properties"]["value"] == 7
    assert twin.status()["updates"]["duplicate"] == 0
    assert twin.status()["gatewaysTracked"] == 1


async def test_a_gateway_missing_from_the_config_is_not_tracked_and_loses_nothing(
    twin: TwinHandle, gateway: Gateway, observer: Observer, broker: LocalBroker
) -> None:
    stray = Gateway(broker, *await ensure_gateway_login(broker, "stray", ["press-2"]), name="stray")
    try:
        stray.report("press-2", "count", 5, seq=1)
        gateway.report("press-1", "count", 1, seq=1)  # processed after the stray one
        observer.wait_for(f"spine/gateways/{GATEWAY}/acks")
        status = twin.status()
        assert status["updates"]["unknown_gateway"] == 1 and status["gatewaysTracked"] == 1
        error = observer.wait_for("spine/things/press-2/errors")
        assert (
            error["status"] == 403 and "gateway stray is not one of the twin's" in error["reason"]
        )
        assert observer.on("spine/gateways/stray/acks") == []
        assert "value" not in twin.thing("press-2")["features"]["count"]["properties"]

        # Once the operator lists it, the gateway's resend is stored and acknowledged.
        config = json.loads(json.dumps(twin.config))
        config["gateways"].append("stray")
        assert twin.push_config(config).status_code == 200
        stray.report("press-2", "count", 5, seq=1)
        assert observer.wait_for("spine/gateways/stray/acks")["seq"] == 1
        assert twin.thing("press-2")["features"]["count"]["properties"]["value"] == 5
    finally:
        stray.close()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
async def unlisted_twin(broker: LocalBroker, tmp_path: Path):
    """A twin whose config lists no gateways: it tracks at most MAX_UNLISTED_GATEWAYS."""
    handle = await start_twin(tmp_path, broker, MODELS, THINGS)
    yield handle
    handle.stop()


@pytest.fixture
async def wide_client(broker: LocalBroker):
    """A login allowed to publish anywhere below spine/: an ACL made too wide by mistake."""
    password = secrets.token_urlsafe(12)
    await ensure_login(broker, Login("wide", publish=("spine/#",)), password)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="wide", protocol=mqtt.MQTTv5)
    client.username_pw_set("wide", password)
    client.max_inflight_messages_set(0)  # a bounded window makes paho slow at thousands
    client.connect(broker.host, broker.port)
    client.loop_start()
    wait_until(client.is_connected, 5, "the flooding client to connect")
    yield client
    client.disconnect()
    client.loop_stop()


async def test_ten_thousand_forged_names_keep_memory_and_health_bounded(
    unlisted_twin: TwinHandle, wide_client: mqtt.Client, gateway: Gateway, observer: Observer
) -> None:
    """A login whose ACL is too wide floods gateway topics with 10,000 names and the plain
    topic with 10,000 forged headers. The twin keeps at most MAX_UNLISTED_GATEWAYS trackers;
    health checks and a real gateway's ack stay prompt, and memory does not follow the names."""
    names, twin = 10_000, unlisted_twin
    gateway.report("press-1", "count", 1, seq=1)
    observer.wait_for(f"spine/gateways/{GATEWAY}/acks")
    before = rss_mib(twin.process.pid)
    slowest = [0.0]
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                started = time.monotonic()
                assert client.get(f"{twin.url}/healthz").status_code == 200
                slowest[0] = max(slowest[0], time.monotonic() - started)
                stop.wait(0.05)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        infos = []
        for index in range(names):
            headers = {"spine-gateway": f"forged-{index}", "spine-epoch": "e", "spine-seq": 1}
            body = json.dumps(command("press-1", "count", index, headers)).encode()
            topic = f"spine/gateways/forged-{index}/things/press-1/twin"
            infos.append(wide_client.publish(topic, body, qos=1))
            infos.append(wide_client.publish("spine/things/press-1/twin", body, qos=1))
        for info in infos:
            info.wait_for_publish(60)
        wait_until(
            lambda: sum(twin.status()["updates"].values()) >= 2 * names + 1,
            120,
            "every forged update to be processed",
        )
        # the gateway itself hears its ack (the observer has 20,000 forged messages to read)
        gateway.subscribe(f"spine/gateways/{GATEWAY}/acks")
        started = time.monotonic()
        gateway.report("press-1", "count", 2, seq=2)
        wait_until(
            lambda: any(message["seq"] == 2 for _, message in gateway.received),
            10,
            "the real gateway's ack",
            interval=0.005,
        )
        ack_seconds = time.monotonic() - started
    finally:
        stop.set()
        prober.join(30)
    after = rss_mib(twin.process.pid)
    status = twin.status()
    print(
        f"\n{names:,} forged names: RSS {before:.0f} -> {after:.0f} MiB, slowest /healthz "
        f"{1000 * slowest[0]:.0f} ms, real ack {1000 * ack_seconds:.0f} ms after the flood"
    )
    assert status["gatewaysTracked"] == 256  # MAX_UNLISTED_GATEWAYS, the real one included
    assert status["updates"]["unknown_gateway"] == names - 255
    assert status["updates"]["rejected"] == names  # the plain-topic forgeries
    # bounds with room for a busy machine; the defect took 8-15 s and +86 MB
    assert slowest[0] < 3.0, "a health check took longer than the kubelet's probe timeout"
    assert after - before < 40


async def test_forged_trackers_in_an_old_database_leave_room_for_real_gateways(
    broker: LocalBroker, tmp_path: Path, gateway: Gateway, observer: Observer
) -> None:
    """A database written while identities came from headers may hold thousands of forged
    names; without a gateway list, they must not use up the room of the real gateways."""
    old = TwinStore(storage_path(tmp_path))
    old.path.parent.mkdir(parents=True, exist_ok=True)
    old.open()
    for index in range(1_000):
        old.record_processed(Origin(gateway=f"forged-{index}", epoch="e", seq=1), 0.0)
    old.write(old.take_batch())
    old.close()
    twin = await start_twin(tmp_path, broker, MODELS, THINGS)
    try:
        gateway.report("press-1", "count", 3, seq=1)
        ack = observer.wait_for(f"spine/gateways/{GATEWAY}/acks")
        assert ack == {"gateway": GATEWAY, "epoch": gateway.epoch, "seq": 1}
        assert twin.status()["updates"]["unknown_gateway"] == 0
    finally:
        twin.stop()


# item 6: a source time far ahead ----------------------------------------------------------------


async def test_a_source_time_far_ahead_cannot_freeze_a_property(
    twin: TwinHandle, gateway: Gateway
) -> None:
    now = datetime.now(UTC)

    def count() -> dict[str, Any]:
        return dict(twin.thing("press-1")["features"]["count"]["properties"])

    gateway.report("press-1", "count", 1, source_time=rfc3339(now + timedelta(days=365)))
    wait_until(lambda: count().get("value") == 1, 5, "the update from a clock a year ahead")
    stored = datetime.fromisoformat(count()["sourceTime"])
    assert abs((stored - datetime.now(UTC)).total_seconds()) < 10  # the receive time instead
    assert twin.metric("spine_twin_source_time_ahead_total") == 1
    assert twin.status()["sourceTimeAhead"] == 1
    # a later real reading is not stale
    gateway.report("press-1", "count", 2, source_time=rfc3339(datetime.now(UTC)))
    wait_until(lambda: count().get("value") == 2, 5, "the next real update")

    # within the allowance (30 s by default) a source time is kept as sent...
    ahead = rfc3339(datetime.now(UTC) + timedelta(seconds=10))
    gateway.report("press-1", "count", 3, source_time=ahead)
    wait_until(lambda: count().get("value") == 3, 5, "an update 10 s ahead")
    assert count()["sourceTime"] == ahead
    # ...and a reading older than it is stale, as for any newer value
    gateway.report("press-1", "count", 4, source_time=rfc3339(datetime.now(UTC)))
    wait_until(lambda: twin.status()["updates"]["stale"] == 1, 5, "the stale update")
    assert count()["value"] == 3 and twin.status()["sourceTimeAhead"] == 1


# item 8: desired values only over HTTP -------------------------------------------------------


async def test_desired_values_cannot_be_set_over_mqtt(
    twin: TwinHandle, gateway: Gateway, observer: Observer, broker: LocalBroker
) -> None:
    desired = "/features/targetSpeed/desiredProperties/value"
    attempts = [
        gateway.command("press-1", desired, 40),
        gateway.command(
            "press-1",
            "/features",
            {"targetSpeed": {"desiredProperties": {"value": None}}},
            merge=True,
        ),
        gateway.command(
            "press-1",
            "/features",
            {
                "count": {"properties": {"value": 1}},
                "targetSpeed": {"desiredProperties": {"value": 50}},
            },
            merge=True,
        ),
    ]
    for attempt in attempts:
        gateway.publish("press-1", attempt)
    ack = observer.wait_for(f"spine/gateways/{GATEWAY}/acks", lambda a: a["seq"] == 3)
    assert ack["epoch"] == gateway.epoch  # refused, but processed: not re-sent forever
    # the twin publishes a batch's acks before its errors: wait for the errors too
    wait_until(lambda: len(observer.on("spine/things/press-1/errors")) == 3, 5, "three refusals")
    errors = observer.on("spine/things/press-1/errors")
    for error in errors:
        assert error["status"] == 403 and error["field"] == desired
        assert "desired values are set over HTTP with the write token" in error["reason"]
    # a plain-topic publisher is refused the same way
    reporter = await plain_publisher(broker)
    try:
        body = json.dumps(gateway.command("press-1", desired, 41, headers={})).encode()
        reporter.publish("spine/things/press-1/twin", body, qos=1).wait_for_publish(5)
    finally:
        reporter.disconnect()
        reporter.loop_stop()
    wait_until(lambda: len(observer.on("spine/things/press-1/errors")) == 4, 5, "the refusal")
    thing = twin.thing("press-1")
    assert "desiredProperties" not in thing["features"]["targetSpeed"]
    assert thing["_revision"] == 1 and observer.on("spine/things/press-1/desired") == []

    # over HTTP, with the write token, a desired value is set and commanded
    put = httpx.put(
        f"{twin.url}/api/2/things/plant_a:press-1/features/targetSpeed/desiredProperties/value",
        json=40,
        headers=twin.auth(),
    )
    assert put.status_code == 201
    assert observer.wait_for("spine/things/press-1/desired")["value"] == 40


# item 7: patterns --------------------------------------------------------------------------------


async def test_a_backtracking_pattern_cannot_block_the_twin(
    twin: TwinHandle, gateway: Gateway, observer: Observer
) -> None:
    """`^(a|aa)*$` passes the nesting check; Python's re needs about a minute for a 40-character
    mismatch, and doubling time for each character more. The twin matches with RE2."""
    values = 20
    slowest = 0.0
    for index in range(values):
        gateway.report("press-1", "code", "a" * (40 + index) + "!")
        started = time.monotonic()
        assert httpx.get(f"{twin.url}/healthz", timeout=30).status_code == 200
        slowest = max(slowest, time.monotonic() - started)
    wait_until(lambda: twin.status()["updates"]["rejected"] == values, 10, "every refusal")
    error = observer.wait_for("spine/things/press-1/errors")
    assert "does not match '^(a|aa)*$'" in error["reason"]
    assert slowest < 2.0
    gateway.report("press-1", "code", "a" * 41)
    wait_until(
        lambda: twin.thing("press-1")["features"]["code"]["properties"].get("value") == "a" * 41,
        5,
        "a matching value",
    )

    # a model with a nested quantifier is refused when it is pushed, and the old one stays
    config = json.loads(json.dumps(twin.config))
    config["models"][0]["properties"]["code"]["pattern"] = "^(a+)+$"
    refused = twin.push_config(config)
    assert refused.status_code == 400
    assert (
        "repeats a group that holds an unbounded quantifier ('(a+)+')" in refused.json()["detail"]
    )
    gateway.report("press-1", "code", "aa!")
    wait_until(lambda: twin.status()["updates"]["rejected"] == values + 1, 5, "the old model")


async def test_a_like_search_cannot_block_the_twin(twin: TwinHandle) -> None:
    """Reads are open: `like` with many `*` over a long value backtracked for minutes."""
    value = httpx.put(
        f"{twin.url}/api/2/things/plant_a:press-1/features/code/properties/value",
        json="a" * 5000,
        headers=twin.auth(),
    )
    assert value.status_code == 201, value.text
    started = time.monotonic()
    found = httpx.get(
        f"{twin.url}/api/2/search/things",
        params={"filter": 'like(features/code/properties/value,"' + "*a" * 30 + '*b")'},
        timeout=30,
    )
    assert found.status_code == 200 and found.json() == {"items": []}
    assert time.monotonic() - started < 2.0
    assert httpx.get(
        f"{twin.url}/api/2/search/things",
        params={"filter": 'like(features/code/properties/value,"a*a")', "fields": "thingId"},
    ).json() == {"items": [{"thingId": "plant_a:press-1"}]}
