"""The gateway's payloads against docs/protocol.md: updates, acks, desired commands."""

from __future__ import annotations

import json

import pytest

from spine_runtime.gateway.protocol import (
    ack_topic,
    desired_topic,
    features_json,
    parse_ack,
    parse_desired,
    twin_topic,
    update_payload,
)
from spine_runtime.gateway.values import UpdateDraft


def test_an_update_is_a_ditto_merge_with_the_gateway_headers() -> None:
    draft = UpdateDraft("press-1", {"temperature": 81.5, "pressure": 190.2})
    payload = json.loads(
        update_payload(
            namespace="plant_a",
            thing="press-1",
            features=features_json(draft),
            gateway="press-line-1",
            epoch="7f3a9c",
            seq=42,
            source_time="2026-11-22T19:45:01.123Z",
        )
    )
    assert payload == {
        "topic": "plant_a/press-1/things/twin/commands/merge",
        "path": "/features",
        "value": {
            "temperature": {"properties": {"value": 81.5}},
            "pressure": {"properties": {"value": 190.2}},
        },
        "headers": {
            "content-type": "application/merge-patch+json",
            "correlation-id": "press-line-1:7f3a9c:42",
            "spine-gateway": "press-line-1",
            "spine-epoch": "7f3a9c",
            "spine-seq": 42,
            "spine-source-time": "2026-11-22T19:45:01.123Z",
        },
    }
    assert (
        twin_topic("press-line-1", "press-1") == "spine/gateways/press-line-1/things/press-1/twin"
    )
    assert desired_topic("press-1") == "spine/things/press-1/desired"
    assert ack_topic("press-line-1") == "spine/gateways/press-line-1/acks"


def test_a_nan_never_reaches_the_wire() -> None:
    with pytest.raises(ValueError):
        features_json(UpdateDraft("press-1", {"temperature": float("nan")}))


def test_acks() -> None:
    ack = parse_ack(b'{"gateway": "press-line-1", "epoch": "7f3a9c", "seq": 42}')
    assert (ack.gateway, ack.epoch, ack.seq) == ("press-line-1", "7f3a9c", 42)
    for bad in (
        b"[]",
        b'{"gateway": "g", "epoch": "e"}',
        b'{"gateway": "g", "epoch": "e", "seq": -1}',
        b'{"gateway": "g", "epoch": 1, "seq": 1}',
        b"not json",
        b'{"gateway": "g", "epoch": "e", "seq": true}',
    ):
        with pytest.raises(ValueError):
            parse_ack(bad)


def modify(path: str, value: object, thing: str = "press-1") -> bytes:
    return json.dumps(
        {
            "topic": f"plant_a/{thing}/things/twin/commands/modify",
            "path": path,
            "value": value,
            "headers": {"correlation-id": "c-1"},
        }
    ).encode()


def test_desired_commands_in_each_accepted_form() -> None:
    (one,) = parse_desired(
        "press-1", "plant_a", modify("/features/targetSpeed/desiredProperties/value", 40)
    )
    assert (one.property, one.value, one.correlation_id) == ("targetSpeed", 40, "c-1")
    (two,) = parse_desired(
        "press-1", "plant_a", modify("/features/targetSpeed/desiredProperties", {"value": 41})
    )
    assert two.value == 41
    merge = json.dumps(
        {
            "topic": "plant_a/press-1/things/twin/commands/merge",
            "path": "/features",
            "value": {
                "targetSpeed": {"desiredProperties": {"value": 42}},
                "running": {"desiredProperties": {"value": True}},
            },
        }
    ).encode()
    assert [(d.property, d.value) for d in parse_desired("press-1", "plant_a", merge)] == [
        ("targetSpeed", 42),
        ("running", True),
    ]


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b'{"value": 1}',
        modify("/features/targetSpeed/properties/value", 40),  # reported, not desired
        modify("/features/targetSpeed/desiredProperties/value", 40, thing="press-2"),
        modify("/attributes/line", "A"),
        b'{"topic": "plant_a/press-1/things/twin/commands/modify", '
        b'"path": "/features/t/desiredProperties/value", "value": NaN}',
        b'{"topic": "other_ns/press-1/things/twin/commands/modify", '
        b'"path": "/features/t/desiredProperties/value", "value": 1}',
    ],
)
def test_anything_else_is_refused(payload: bytes) -> None:
    with pytest.raises(ValueError):
        parse_desired("press-1", "plant_a", payload)
