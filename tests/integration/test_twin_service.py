"""The twin service as a real process: real mosquitto, the twin's production broker login, real
MQTT and HTTP clients. Covers ingest and validation, SSE, persistence across SIGKILL, gateway
acks, live model changes, writes with tokens and ETags, desired state, and hostile input.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.mosquitto import LocalBroker
from tests.support.processes import wait_until
from tests.support.twin import Gateway, Observer, TwinHandle, ensure_gateway_login, start_twin

pytestmark = pytest.mark.integration

GATEWAY = "press-line-1"
MODELS: list[dict[str, Any]] = [
    {
        "name": "press",
        "version": "1.2.0",
        "properties": {
            "temperature": {"type": "number", "maximum": 80, "unit": "degC", "readOnly": True},
            "targetSpeed": {"type": "integer", "minimum": 0, "maximum": 100},
            "mode": {"type": "string", "enum": ["auto", "manual"]},
            "count": {"type": "integer", "minimum": 0},
        },
    }
]
THINGS: list[dict[str, Any]] = [
    {"name": "press-1", "model": "press", "attributes": {"line": "A", "serial": "X1"}},
    {"name": "press-2", "model": "press", "attributes": {"line": "B", "serial": "X2"}},
]


@pytest.fixture
async def twin(broker: LocalBroker, tmp_path: Path):
    handle = await start_twin(tmp_path, broker, MODELS, THINGS, desiredTimeoutSeconds=1.0)
    yield handle
    handle.stop()


@pytest.fixture
async def gateway(broker: LocalBroker):
    username, password = await ensure_gateway_login(
        broker, GATEWAY, ["press-1", "press-2"], ["press-1"]
    )
    publisher = Gateway(broker, username, password)
    yield publisher
    publisher.close()


@pytest.fixture
def observer(broker: LocalBroker):
    watching = Observer(broker)
    yield watching
    watching.close()


def get_thing(twin: TwinHandle, name: str) -> dict[str, Any]:
    return twin.thing(name)


def metric(twin: TwinHandle, name: str, labels: dict[str, str] | None = None) -> float:
    text = httpx.get(f"{twin.url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and (labels or {}).items() <= sample.labels.items():
                return float(sample.value)
    raise AssertionError(f"no metric {name} {labels}")


async def read_event(response: aiohttp.ClientResponse, timeout: float = 5) -> dict[str, Any]:
    """The next `data:` line of an SSE stream, parsed."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "no SSE event in time"
        line = await asyncio.wait_for(response.content.readline(), remaining)
        assert line, "the SSE stream ended"
        if line.startswith(b"data: "):
            return dict(json.loads(line[len(b"data: ") :]))


# ingest ------------------------------------------------------------------------------------------


async def test_a_valid_update_changes_state_and_reaches_sse_and_events(
    twin: TwinHandle, gateway: Gateway, observer: Observer
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{twin.url}/api/2/things",
            params={"ids": "plant_a:press-1"},
            headers={"Accept": "text/event-stream"},
        ) as stream,
    ):
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        assert await asyncio.wait_for(stream.content.readline(), 5) == b": connected\n"
        gateway.report("press-2", "temperature", 50.0, seq=1)  # filtered out by ids=
        gateway.report(
            "press-1", "temperature", 71.5, seq=2, source_time="2026-11-22T19:45:01.123Z"
        )
        event = await read_event(stream)
    assert event["thingId"] == "plant_a:press-1"
    reported = event["features"]["temperature"]["properties"]
    assert reported["value"] == 71.5 and reported["sourceTime"] == "2026-11-22T19:45:01.123Z"
    assert event["_revision"] == 2

    thing = get_thing(twin, "press-1")
    assert thing["definition"] == "press:1.2.0"
    assert thing["attributes"] == {"line": "A", "serial": "X1"}
    assert thing["features"]["temperature"]["properties"]["value"] == 71.5
    assert thing["_revision"] == 2
    published = observer.wait_for("spine/things/press-1/events")
    assert published["topic"] == "plant_a/press-1/things/twin/events/modified"
    assert published["path"] == "/features/temperature/properties/value"
    assert published["value"] == 71.5 and published["revision"] == 2
    assert observer.wait_for(f"spine/gateways/{GATEWAY}/acks", lambda ack: ack["seq"] == 2) == {
        "gateway": GATEWAY,
        "epoch": gateway.epoch,
        "seq": 2,
    }
    assert metric(twin, "spine_twin_updates_total", {"result": "accepted"}) == 2
    assert metric(twin, "spine_twin_update_latency_seconds_count") == 2

    # A merge of several values is one revision, announced as one Ditto `merged` event.
    gateway.publish(
        "press-1",
        gateway.command(
            "press-1",
            "/features",
            {
                "temperature": {"properties": {"value": 72.0}},
                "targetSpeed": {"properties": {"value": 20}},
            },
            merge=True,
        ),
    )
    merged = observer.wait_for(
        "spine/things/press-1/events", lambda m: m["topic"].endswith("/events/merged")
    )
    assert merged["path"] == "/features" and merged["revision"] == 3
    assert merged["value"] == {
        "temperature": {"properties": {"value": 72.0}},
        "targetSpeed": {"properties": {"value": 20}},
    }
    assert len(observer.on("spine/things/press-1/events")) == 2


async def test_invalid_updates_are_rejected_with_a_reason_and_change_nothing(
    twin: TwinHandle, gateway: Gateway, observer: Observer, broker: LocalBroker
) -> None:
    gateway.report("press-1", "targetSpeed", 10)
    wait_until(lambda: get_thing(twin, "press-1")["_revision"] == 2, 5, "the valid update")
    before = get_thing(twin, "press-1")
    value = "/features/{}/properties/value"
    cases: list[tuple[bytes | dict[str, Any], str, str | None]] = [
        (
            gateway.command("press-1", value.format("targetSpeed"), "fast"),
            "'fast' is not of type 'integer'",
            value.format("targetSpeed"),
        ),
        (
            gateway.command("press-1", value.format("temperature"), 81.5),
            "81.5 is greater than the maximum of 80",
            value.format("temperature"),
        ),
        (
            gateway.command("press-1", value.format("pressure"), 1.0),
            "model press has no property 'pressure'",
            "/features/pressure",
        ),
        (b"not json {", "the payload is not JSON", None),
        (
            gateway.command("press-1", "/features/temperature/desiredProperties/value", 20),
            "desired values are set over HTTP",
            "/features/temperature/desiredProperties/value",
        ),
        # one bad value spoils the whole update: the good one is not applied either
        (
            gateway.command(
                "press-1",
                "/features",
                {
                    "targetSpeed": {"properties": {"value": 11}},
                    "mode": {"properties": {"value": "turbo"}},
                },
                merge=True,
            ),
            "'turbo' is not one of ['auto', 'manual']",
            value.format("mode"),
        ),
        (
            gateway.command("press-1", "/attributes/line", "B"),
            "defined by the TwinModel",
            "/attributes",
        ),
    ]
    for payload, reason, field in cases:
        gateway.publish("press-1", payload)
        error = observer.wait_for(
            "spine/things/press-1/errors",
            lambda message, reason=reason: reason in message["reason"],
        )
        assert error["thingId"] == "plant_a:press-1"
        assert error["field"] == field
        assert error["status"] in (400, 403)
        expected = payload if isinstance(payload, dict) else payload.decode()
        assert error["message"] == expected
    assert get_thing(twin, "press-1") == before
    assert metric(twin, "spine_twin_updates_total", {"result": "rejected"}) == len(cases)
    assert [event["revision"] for event in observer.on("spine/things/press-1/events")] == [2]
    # an update for a thing no TwinModel defines is refused on that thing's errors topic
    username, password = await ensure_gateway_login(broker, "stray", ["press-9"])
    stray = Gateway(broker, username, password, name="stray")
    try:
        stray.report("press-9", "count", 1)
    finally:
        stray.close()
    error = observer.wait_for("spine/things/press-9/errors")
    assert error["status"] == 404 and "unknown thing plant_a:press-9" in error["reason"]


async def test_state_survives_sigkill_mid_stream(
    twin: TwinHandle, gateway: Gateway, observer: Observer
) -> None:
    total = 8000

    def publish_all() -> None:
        infos = []
        for seq in range(1, total + 1):
            thing = "press-1" if seq % 2 else "press-2"
            command = gateway.command(
                thing, "/features/count/properties/value", seq, headers=gateway.numbered(seq)
            )
            infos.append(gateway.publish(thing, command, wait=False))
        for info in infos:
            info.wait_for_publish(30)

    publisher = threading.Thread(target=publish_all)
    publisher.start()
    accepted = wait_until(
        lambda: (n := twin.status()["updates"]["accepted"]) >= 800 and n,
        20,
        "the twin to be part-way through",
    )
    twin.kill()  # while the gateway keeps publishing; the broker queues for the twin's session
    assert accepted < total, "the twin finished before it could be killed; raise `total`"
    publisher.join(30)
    twin.start()
    wait_until(
        lambda: any(ack["seq"] == total for ack in observer.on(f"spine/gateways/{GATEWAY}/acks")),
        30,
        f"the ack of all {total} updates",
    )
    press_1, press_2 = get_thing(twin, "press-1"), get_thing(twin, "press-2")
    assert press_1["features"]["count"]["properties"]["value"] == total - 1
    assert press_2["features"]["count"]["properties"]["value"] == total
    # each stored update is one revision (both things start at 1): none lost, none twice
    assert press_1["_revision"] + press_2["_revision"] - 2 == total
    acked = [
        ack["seq"]
        for ack in observer.on(f"spine/gateways/{GATEWAY}/acks")
        if ack["epoch"] == gateway.epoch
    ]
    assert acked == sorted(acked)  # acks never go back


async def test_acks_cover_what_was_stored_and_a_duplicate_is_ignored(
    twin: TwinHandle, gateway: Gateway, observer: Observer
) -> None:
    acks = f"spine/gateways/{GATEWAY}/acks"

    def acked(seq: int) -> Any:
        return observer.wait_for(acks, lambda ack: ack["seq"] == seq)

    for seq in (1, 2, 3):
        gateway.report("press-1", "count", seq, seq=seq, source_time=f"2026-11-22T10:00:0{seq}Z")
    assert acked(3) == {"gateway": GATEWAY, "epoch": gateway.epoch, "seq": 3}
    before = len(observer.on(acks))
    gateway.report("press-1", "count", 99, seq=2)  # re-sent: ignored, its ack repeated
    wait_until(lambda: len(observer.on(acks)) > before, 5, "the repeated ack")
    assert observer.on(acks)[-1]["seq"] == 3
    assert get_thing(twin, "press-1")["features"]["count"]["properties"]["value"] == 3
    assert twin.status()["updates"]["duplicate"] == 1

    gateway.report("press-1", "count", 5, seq=5, source_time="2026-11-22T10:00:05Z")
    wait_until(
        lambda: get_thing(twin, "press-1")["features"]["count"]["properties"]["value"] == 5,
        5,
        "seq 5 stored",
    )
    assert max(ack["seq"] for ack in observer.on(acks)) == 3  # 4 is missing
    gateway.report("press-1", "count", -4, seq=4)  # invalid, but processed
    assert acked(5)["epoch"] == gateway.epoch
    # an older source time does not turn the value back, and still counts as processed
    gateway.report("press-1", "count", 6, seq=6, source_time="2026-11-22T10:00:04Z")
    acked(6)
    assert get_thing(twin, "press-1")["features"]["count"]["properties"]["value"] == 5
    assert twin.status()["updates"] == {
        "accepted": 4,
        "rejected": 1,
        "duplicate": 1,
        "stale": 1,
        "unknown_gateway": 0,
    }


async def test_a_model_change_applies_within_a_second_without_losing_state(
    twin: TwinHandle, gateway: Gateway
) -> None:
    gateway.report("press-1", "temperature", 42.0)
    wait_until(lambda: get_thing(twin, "press-1")["_revision"] == 2, 5, "the first update")
    config = json.loads(json.dumps(twin.config))
    press = config["models"][0]
    press["version"] = "1.3.0"
    press["properties"]["pressure"] = {"type": "number", "unit": "bar"}
    press["properties"]["targetSpeed"]["maximum"] = 50

    started = time.monotonic()
    response = twin.push_config(config)
    assert response.status_code == 200, response.text
    assert response.json()["applied"] is True
    gateway.report("press-1", "pressure", 190.2)
    wait_until(
        lambda: "value" in get_thing(twin, "press-1")["features"]["pressure"]["properties"],
        1,
        "the new property to be accepted",
    )
    assert time.monotonic() - started < 1.0
    thing = get_thing(twin, "press-1")
    assert thing["definition"] == "press:1.3.0"
    assert thing["features"]["temperature"]["properties"]["value"] == 42.0  # kept
    assert thing["_revision"] == 3
    rejected = twin.status()["updates"]["rejected"]
    gateway.report("press-1", "targetSpeed", 60)  # allowed before, above the new maximum
    wait_until(lambda: twin.status()["updates"]["rejected"] == rejected + 1, 2, "a rejection")
    assert twin.status()["configDigest"] == response.json()["digest"]

    # the mounted file changes (kubelet's refresh): a new thing appears
    config["things"].append({"name": "press-3", "model": "press", "attributes": {"line": "C"}})
    started = time.monotonic()
    twin.write_config(config)
    wait_until(
        lambda: httpx.get(f"{twin.url}/api/2/things/plant_a:press-3").status_code == 200,
        1,
        "the new thing",
    )
    assert time.monotonic() - started < 1.0
    assert get_thing(twin, "press-1")["features"]["pressure"]["properties"]["value"] == 190.2
    # a push with a bad admin token or an invalid document changes nothing
    denied = httpx.put(
        f"{twin.url}/admin/config",
        content=json.dumps(config),
        headers={"Authorization": "Bearer wrong"},
    )
    assert denied.status_code == 401
    broken = twin.push_config({**config, "things": [{"name": "x", "model": "missing"}]})
    assert broken.status_code == 400
    assert "refers to model 'missing'" in broken.json()["detail"]
    assert httpx.get(f"{twin.url}/api/2/things/plant_a:press-3").status_code == 200


# HTTP writes ---------------------------------------------------------------------------------


async def test_writes_need_the_token_and_a_current_etag(twin: TwinHandle) -> None:
    url = f"{twin.url}/api/2/things/plant_a:press-1/features/targetSpeed/properties/value"
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {twin.token}"},
        {"Authorization": "Bearer"},
    ):
        denied = httpx.put(url, json=30, headers=headers)
        assert denied.status_code == 401
        assert denied.json()["status"] == 401
    assert httpx.get(url).status_code == 404  # no value yet, and still none

    current = httpx.get(f"{twin.url}/api/2/things/plant_a:press-1")
    etag = current.headers["ETag"]
    assert etag == '"1"'

    async def put(value: int, tag: str) -> httpx.Response:
        async with httpx.AsyncClient() as client:
            return await client.put(url, json=value, headers={**twin.auth(), "If-Match": tag})

    results = await asyncio.gather(put(30, etag), put(31, etag))
    assert sorted(response.status_code for response in results) == [201, 412]
    winner = next(response for response in results if response.status_code == 201)
    assert winner.headers["ETag"] == '"2"'
    loser = next(response for response in results if response.status_code == 412)
    assert "revision is 2" in loser.json()["error"]
    assert (await put(32, '"1"')).status_code == 412
    updated = await put(33, '"2"')
    assert updated.status_code == 204 and updated.headers["ETag"] == '"3"'
    assert (await put(34, "*")).status_code == 204
    assert httpx.get(url).json() == 34
    assert (
        httpx.get(
            f"{twin.url}/api/2/things/plant_a:press-1", headers={"If-None-Match": '"4"'}
        ).status_code
        == 304
    )


async def test_desired_values_are_commanded_then_pending_reached_or_failed(
    twin: TwinHandle, gateway: Gateway, observer: Observer
) -> None:
    subscribed = threading.Event()
    gateway.client.on_subscribe = lambda *args: subscribed.set()
    gateway.client.subscribe("spine/things/press-1/desired", qos=1)
    assert subscribed.wait(5)
    base = f"{twin.url}/api/2/things/plant_a:press-1/features"

    put = httpx.put(f"{base}/targetSpeed/desiredProperties/value", json=40, headers=twin.auth())
    assert put.status_code == 201, put.text
    command = wait_until(
        lambda: next((m for t, m in gateway.received if t.endswith("/desired")), None),
        5,
        "the command at the gateway",
    )
    assert command["topic"] == "plant_a/press-1/things/twin/commands/modify"
    assert command["path"] == "/features/targetSpeed/desiredProperties/value"
    assert command["value"] == 40
    assert command["headers"]["correlation-id"]
    desired = httpx.get(f"{base}/targetSpeed/desiredProperties").json()
    assert desired["value"] == 40 and desired["status"] == "pending" and desired["since"]
    assert metric(twin, "spine_twin_desired_pending") == 1

    gateway.report("press-1", "targetSpeed", 40)  # the read-back after the PLC write
    wait_until(
        lambda: httpx.get(f"{base}/targetSpeed/desiredProperties").json()["status"] == "reached",
        5,
        "the desired value to be reached",
    )
    assert metric(twin, "spine_twin_desired_pending") == 0

    httpx.put(f"{base}/targetSpeed/desiredProperties", json={"value": 45}, headers=twin.auth())
    # nobody reports 45: failed after desiredTimeoutSeconds (1 s here)
    failed = wait_until(
        lambda: (
            (d := httpx.get(f"{base}/targetSpeed/desiredProperties").json())["status"] == "failed"
            and d
        ),
        5,
        "the desired value to fail",
    )
    assert failed["value"] == 45 and "within 1 s" in failed["reason"]
    assert metric(twin, "spine_twin_desired_failed") == 1
    event = observer.wait_for(
        "spine/things/press-1/events",
        lambda m: isinstance(m["value"], dict) and m["value"].get("status") == "failed",
    )
    assert event["path"] == "/features/targetSpeed/desiredProperties"

    read_only = httpx.put(
        f"{base}/temperature/desiredProperties/value", json=20, headers=twin.auth()
    )
    assert read_only.status_code == 400 and "readOnly" in read_only.json()["error"]
    withdrawn = httpx.delete(f"{base}/targetSpeed/desiredProperties", headers=twin.auth())
    assert withdrawn.status_code == 204
    assert metric(twin, "spine_twin_desired_failed") == 0
    assert "desiredProperties" not in get_thing(twin, "press-1")["features"]["targetSpeed"]


# reads --------------------------------------------------------------------------------------------


async def test_search_fields_and_thing_description(twin: TwinHandle, gateway: Gateway) -> None:
    gateway.report("press-1", "temperature", 75.0)
    gateway.report("press-2", "temperature", 65.0)
    wait_until(lambda: twin.status()["updates"]["accepted"] == 2, 5, "two updates")
    with twin.http() as client:
        found = client.get(
            "/api/2/search/things",
            params={
                "filter": "gt(features/temperature/properties/value,70)",
                "fields": "thingId,attributes/line,_revision",
            },
        ).json()
        assert found == {
            "items": [{"thingId": "plant_a:press-1", "attributes": {"line": "A"}, "_revision": 2}]
        }
        page = client.get(
            "/api/2/search/things",
            params={
                "filter": 'like(thingId,"plant_a:press-*")',
                "fields": "thingId",
                "option": "sort(-thingId),limit(0,1)",
            },
        ).json()
        assert page == {"items": [{"thingId": "plant_a:press-2"}], "nextPageOffset": 1}
        last = client.get(
            "/api/2/search/things",
            params={"fields": "thingId", "option": "sort(-thingId),limit(1,1)"},
        ).json()
        assert last == {"items": [{"thingId": "plant_a:press-1"}]}
        assert (
            client.get(
                "/api/2/search/things/count", params={"filter": 'eq(attributes/line,"B")'}
            ).json()
            == 1
        )
        listed = client.get(
            "/api/2/things",
            params={
                "ids": "plant_a:press-2,plant_a:nope,plant_a:press-1",
                "fields": "thingId,features/temperature/properties/value",
            },
        ).json()
        assert listed == [
            {
                "thingId": "plant_a:press-2",
                "features": {"temperature": {"properties": {"value": 65.0}}},
            },
            {
                "thingId": "plant_a:press-1",
                "features": {"temperature": {"properties": {"value": 75.0}}},
            },
        ]
        assert client.get("/api/2/things/plant_a:press-1/attributes/serial").json() == "X1"
        td = client.get("/api/2/things/plant_a:press-1", headers={"Accept": "application/td+json"})
        assert td.headers["Content-Type"].startswith("application/td+json")
        description = td.json()
        assert description["@context"] == "https://www.w3.org/2022/wot/td/v1.1"
        assert description["id"] == "urn:spine:thing:plant_a:press-1"
        form = description["properties"]["temperature"]["forms"][0]
        value = client.get(description["base"] + form["href"])
        assert value.json() == 75.0


# hostile input -----------------------------------------------------------------------------------


HOSTILE_REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/api/2/things/plant_a:nope", {}),
    ("GET", "/api/2/things/%00", {}),
    ("GET", "/api/2/things/..%2F..%2Fetc%2Fpasswd", {}),
    ("GET", "/api/2/things/plant_a:press-1/features/nope", {}),
    ("GET", "/api/2/things/plant_a:press-1/features/mode/properties/value/deeper", {}),
    ("GET", "/api/2/things/plant_a:press-1/features/mode/properties/value", {}),  # no value yet
    ("GET", "/api/2/things/%C0%AF%E2%80%AE", {}),
    ("GET", "/api/2/nothing", {}),
    ("GET", "/api/3/things", {}),
    ("POST", "/api/2/things", {}),
    ("DELETE", "/api/2/things/plant_a:press-1", {}),
    ("OPTIONS", "/api/2/things/plant_a:press-1", {}),
    ("GET", "/api/2/search/things?filter=eq(", {}),
    ("GET", "/api/2/search/things?filter=" + "not(" * 200 + "exists(a)" + ")" * 200, {}),
    ("GET", "/api/2/search/things?filter=eq(a,1e999)", {}),
    ("GET", "/api/2/search/things?filter=like(thingId,1)", {}),
    ("GET", "/api/2/search/things?filter=%FF%FE", {}),
    ("GET", "/api/2/search/things?filter=eq(a,%221%22%00)", {}),
    ("GET", "/api/2/search/things?option=limit(0,100000)", {}),
    ("GET", "/api/2/search/things?option=limit(-1,2)", {}),
    ("GET", "/api/2/search/things?option=sort(thingId)", {}),
    ("GET", "/api/2/search/things?option=" + "x" * 5000, {}),
    ("GET", "/api/2/search/things?fields=((", {}),
    ("GET", "/api/2/search/things?fields=", {}),
    ("GET", "/api/2/search/things/count?filter=and()", {}),
    ("GET", "/api/2/things?ids=" + ",".join(f"x{i}" for i in range(1500)), {}),
    ("GET", "/api/2/things?fields=a(b", {}),
    ("GET", "/api/2/things?ids=%ZZ&fields=a,,b", {}),
    (
        "PUT",
        "/api/2/things/plant_a:press-1/features/mode/properties/value",
        {"content": b"not json"},
    ),
    ("PUT", "/api/2/things/plant_a:press-1/features/mode/properties/value", {"content": b""}),
    (
        "PUT",
        "/api/2/things/plant_a:press-1/features/mode/properties/value",
        {"content": b"[" * 100_000 + b"]" * 100_000},
    ),
    (
        "PUT",
        "/api/2/things/plant_a:press-1/features/mode/properties/value",
        {"content": b"\xff\xfe\x00"},
    ),
    (
        "PUT",
        "/api/2/things/plant_a:press-1/features/mode/properties/value",
        {"content": b'"' + b"x" * (2 * 1024 * 1024) + b'"'},
    ),
    (
        "PUT",
        "/api/2/things/plant_a:press-1/features/mode/properties/value",
        {
            "content": json.dumps(
                [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
            ).encode()
        },
    ),
    ("PUT", "/api/2/things/plant_a:press-1/features/mode/properties/value", {"json": "fast"}),
    ("PUT", "/api/2/things/plant_a:press-1/features/mode/properties/value", {"json": None}),
    ("PUT", "/api/2/things/plant_a:press-1/features/mode/definition", {"json": ["a:b:1"]}),
    ("PUT", "/api/2/things/plant_a:press-1/attributes/line", {"json": "B"}),
    ("PUT", "/api/2/things/plant_a:press-1", {"json": {"thingId": "plant_a:other"}}),
    ("PUT", "/api/2/things/plant_a:press-1", {"json": [1, 2]}),
    ("PUT", "/api/2/things/plant_a:nope/features/mode/properties/value", {"json": "auto"}),
    ("PATCH", "/api/2/things/plant_a:press-1", {"json": {"features": {"mode": None}}}),
    ("PATCH", "/api/2/things/plant_a:press-1", {"json": {"features": {"x": {"properties": {}}}}}),
    ("DELETE", "/api/2/things/plant_a:press-1/features/mode/properties/value", {}),
    ("DELETE", "/api/2/things/plant_a:press-1/features/mode/desiredProperties", {}),
    (
        "PUT",
        "/api/2/things/plant_a:press-1/features/mode/properties/value",
        {"json": "auto", "headers": {"If-Match": "garbage"}},
    ),
    (
        "PUT",
        "/api/2/things/plant_a:press-1/features/mode/properties/value",
        {"json": "fast", "headers": {"Content-Type": "text/plain; charset=nope"}},
    ),
    ("GET", "/admin/config", {}),
    ("PUT", "/admin/config", {"content": b"{}"}),
]


async def test_hostile_input_gets_4xx_json_and_the_twin_stays_up(
    twin: TwinHandle, gateway: Gateway, observer: Observer
) -> None:
    with twin.http(timeout=20) as client:
        for method, path, options in HOSTILE_REQUESTS:
            headers = {**twin.auth(), **options.pop("headers", {})}
            response = client.request(method, path, headers=headers, **options)
            where = f"{method} {path[:80]}"
            assert 400 <= response.status_code < 500, f"{where}: {response.status_code}"
            assert response.headers["Content-Type"].startswith("application/json"), where
            assert response.json()["status"] == response.status_code, where
    # and the same on the broker side
    before = get_thing(twin, "press-1")
    hostile: list[bytes] = [
        b"",
        b"\xff\xfe\x00garbage",
        b"[]",
        b"null",
        b"1e999",
        b'{"topic": 1}',
        b"[" * 5000 + b"]" * 5000,
        json.dumps(
            {
                "topic": "plant_a/press-1/things/twin/commands/modify",
                "path": "/features/mode/properties/value",
                "value": "x" * 900_000,
            }
        ).encode(),
        json.dumps(
            {
                "topic": "plant_a/press-1/things/twin/commands/modify",
                "path": "/features/count/properties/value",
                "value": 1,
                "headers": {"spine-gateway": GATEWAY, "spine-epoch": "e", "spine-seq": -1},
            }
        ).encode(),
        json.dumps(
            {
                "topic": "plant_a/press-1/things/twin/commands/modify",
                "path": "/features/count/properties/value",
                "value": 1,
                "headers": {"spine-gateway": GATEWAY, "spine-epoch": "e", "spine-seq": 10**12},
            }
        ).encode(),
        json.dumps(
            {
                "topic": "plant_a/press-1/things/twin/commands/modify",
                "path": "/features/count/properties/value",
                "value": json.loads("[" * 40 + "]" * 40),
            }
        ).encode(),
    ]
    for payload in hostile:
        gateway.publish("press-1", payload)
    wait_until(
        lambda: twin.status()["updates"]["rejected"] == len(hostile),
        10,
        "every hostile message to be rejected",
    )
    assert twin.process.running()
    assert httpx.get(f"{twin.url}/healthz").json() == {"status": "ok"}
    assert get_thing(twin, "press-1") == before
    huge = observer.wait_for("spine/things/press-1/errors", lambda m: m.get("truncated"))
    assert len(huge["message"]) == 65_536
