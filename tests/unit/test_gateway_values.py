"""Scaling, bad values, deadband, heartbeat and per-thing batching of published values."""

from __future__ import annotations

import datetime
import math

import pytest

from spine_runtime.gateway.addresses import MODBUS_TYPES, OPCUA_TYPES, S7_TYPES
from spine_runtime.gateway.values import (
    BadValue,
    Change,
    Scale,
    TagState,
    format_time,
    group_into_updates,
    to_json_value,
    to_published,
    to_raw,
)


def test_scale_is_value_times_factor_plus_offset() -> None:
    assert to_published(815, Scale(0.1)) == pytest.approx(81.5)
    assert to_published(2, Scale(10, -5)) == 15
    assert isinstance(to_published(2, Scale(10, -5)), int)  # whole factor and offset keep ints
    assert isinstance(to_published(2, Scale(0.5)), float)
    assert to_published(7, Scale()) == 7
    assert to_published(True, Scale()) is True
    assert to_published("text", Scale()) == "text"


@pytest.mark.parametrize("raw", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused_with_a_reason(raw: float) -> None:
    with pytest.raises(BadValue) as caught:
        to_published(raw, Scale())
    assert caught.value.reason == "not_finite"
    assert "JSON cannot carry" in str(caught.value)


def test_scaling_past_a_double_is_refused() -> None:
    with pytest.raises(BadValue) as caught:
        to_published(1e308, Scale(1e10))
    assert caught.value.reason == "out_of_range"


def test_hostile_opcua_values_become_json_or_a_reason() -> None:
    assert to_json_value([1, 2.5, True]) == [1, 2.5, True]
    assert to_json_value(b"\x00\xff") == "AP8="
    moment = datetime.datetime(2026, 1, 2, 3, 4, 5, 678000)
    assert to_json_value(moment) == "2026-01-02T03:04:05.678Z"
    with pytest.raises(BadValue, match=r"JSON cannot carry"):
        to_json_value([1.0, math.nan])
    with pytest.raises(BadValue) as caught:
        to_json_value(object())
    assert caught.value.reason == "unsupported_type"
    with pytest.raises(BadValue) as caught:
        to_published(None, Scale())
    assert caught.value.reason == "no_value"
    with pytest.raises(BadValue):
        to_published("text", Scale(2))


def test_inverse_scale_and_range_checks_for_writes() -> None:
    uint16 = MODBUS_TYPES["uint16"]
    assert to_raw(40, uint16, Scale(0.1)) == 400
    assert to_raw(15, uint16, Scale(10, -5)) == 2
    assert to_raw(1.5, MODBUS_TYPES["float32"], Scale()) == 1.5
    assert to_raw(True, MODBUS_TYPES["bool"], Scale()) is True
    with pytest.raises(BadValue, match="outside uint16"):
        to_raw(-1, uint16, Scale())
    with pytest.raises(BadValue, match="outside INT"):
        to_raw(40000, S7_TYPES["INT"], Scale())
    with pytest.raises(BadValue, match="whole number"):
        to_raw(1.25, uint16, Scale(0.1))
    with pytest.raises(BadValue, match="not a number"):
        to_raw("40", uint16, Scale())
    with pytest.raises(BadValue, match="not a number"):
        to_raw(True, uint16, Scale())
    with pytest.raises(BadValue, match="not a boolean"):
        to_raw(1, MODBUS_TYPES["bool"], Scale())
    assert to_raw("on", OPCUA_TYPES["String"], Scale()) == "on"
    assert to_raw(3, None, Scale(2)) == 1.5  # OPC UA without a type: the server's type decides


def test_deadband_is_absolute_and_against_the_last_published_value() -> None:
    state = TagState(deadband=1.0)
    assert state.should_publish(10.0, now=0, heartbeat=None)  # the first value
    state.published(10.0, 0)
    assert not state.should_publish(10.9, now=1, heartbeat=None)
    assert not state.should_publish(9.0, now=1, heartbeat=None)  # exactly the deadband
    assert state.should_publish(11.1, now=1, heartbeat=None)
    # slow drift adds up against the published value, not the last read one
    for value in (10.4, 10.8, 11.2):
        published = state.should_publish(value, now=2, heartbeat=None)
    assert published


def test_without_deadband_every_change_is_published_and_nothing_else() -> None:
    state = TagState()
    state.published(5, 0)
    assert not state.should_publish(5, now=1, heartbeat=None)
    assert state.should_publish(6, now=1, heartbeat=None)
    state.published(True, 0)
    assert not state.should_publish(True, now=1, heartbeat=None)
    assert state.should_publish(False, now=1, heartbeat=None)


def test_heartbeat_republishes_an_unchanged_value() -> None:
    state = TagState(deadband=5)
    state.published(1.0, now=100)
    assert not state.should_publish(1.0, now=159, heartbeat=60)
    assert state.should_publish(1.0, now=160, heartbeat=60)
    assert not state.should_publish(1.0, now=1000, heartbeat=None)
    state.has_value = True
    assert state.heartbeat_due(now=160, heartbeat=60)
    state.failing_reason = "the server reports BadSensorFailure"
    assert not state.heartbeat_due(now=160, heartbeat=60)  # no heartbeat for a failing tag


def test_one_update_per_thing_per_cycle() -> None:
    updates = group_into_updates(
        [
            Change("press-1", "temperature", 81.5, 10.0),
            Change("press-2", "temperature", 70.0, 10.0),
            Change("press-1", "pressure", 190.2, 10.0),
        ]
    )
    assert [(u.thing, u.features) for u in updates] == [
        ("press-1", {"temperature": 81.5, "pressure": 190.2}),
        ("press-2", {"temperature": 70.0}),
    ]


def test_queued_values_of_one_property_each_get_their_update_in_order() -> None:
    updates = group_into_updates(
        [
            Change("press-1", "speed", 3, 12.0),
            Change("press-1", "speed", 1, 10.0),
            Change("press-1", "temperature", 80, 11.0),
            Change("press-1", "speed", 2, 11.5),
        ]
    )
    assert [(u.features, u.source_time) for u in updates] == [
        ({"speed": 1, "temperature": 80}, 11.0),
        ({"speed": 2}, 11.5),
        ({"speed": 3}, 12.0),
    ]


def test_times_are_rfc3339_utc_with_milliseconds() -> None:
    assert format_time(0.5) == "1970-01-01T00:00:00.500Z"
