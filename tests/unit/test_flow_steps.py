"""Steps and the twin sink's sequence numbers, without a broker: the pure parts of the engine."""

from __future__ import annotations

import json
from typing import Any

from spine_runtime.config.flow import Step
from spine_runtime.flow.steps import build_step
from spine_runtime.flow.twin import TwinWriter, twin_ack_topic, twin_update_topic


class Origin:
    """Stands for a source message; steps only hand it on."""


def run(step: dict[str, Any], messages: list[Any]) -> tuple[list[Any], list[str]]:
    runner = build_step(Step.model_validate(step), "deadLetter", 0.25)
    failures: list[str] = []
    pairs = runner.run(
        [(Origin(), message) for message in messages],
        lambda origin, message, reason: failures.append(reason),
    )
    return [message for _, message in pairs], failures


def test_hysteresis_with_state_per_key():
    alarm = build_step(
        Step.model_validate(
            {
                "name": "hysteresis",
                "key": "thing",
                "set": {
                    "alarm": "temperature > 90 or (temperature >= 85 and $previous.alarm = true)"
                },
            }
        ),
        "deadLetter",
        0.25,
    )
    change = build_step(
        Step.model_validate(
            {
                "name": "on-change",
                "key": "thing",
                "filter": {"expression": "$exists($previous) ? alarm != $previous.alarm : alarm"},
            }
        ),
        "deadLetter",
        0.25,
    )
    readings = [("p1", 80), ("p1", 91), ("p2", 88), ("p1", 87), ("p1", 86), ("p1", 84), ("p1", 92)]
    emitted = []
    for thing, temperature in readings:
        pairs = alarm.run([(Origin(), {"thing": thing, "temperature": temperature})], print)
        pairs = change.run(pairs, print)
        emitted += [(m["thing"], m["temperature"], m["alarm"]) for _, m in pairs]
    # p1 turns on at 91, stays on at 87 and 86 (above 85), turns off at 84, on again at 92.
    assert emitted == [("p1", 91, True), ("p1", 84, False), ("p1", 92, True)]


def test_validate_says_where():
    out, failures = run(
        {
            "name": "check",
            "validate": {
                "schema": {"type": "object", "properties": {"t": {"type": "number", "maximum": 10}}}
            },
        },
        [{"t": 5}, {"t": 50}, []],
    )
    assert out == [{"t": 5}]
    assert failures[0].startswith("invalid at /t: 50 is greater than the maximum of 10")
    assert "is not of type 'object'" in failures[1]


def test_convert_refuses_what_is_not_a_number():
    out, failures = run(
        {"name": "c", "convert": {"field": "a.t", "from": "psi", "to": "bar"}},
        [{"a": {"t": 100}}, {"a": {"t": "100"}}, {"b": 1}, {"a": {"t": True}}],
    )
    assert out == [{"a": {"t": 6.89475729317}}]
    assert failures == [
        "field a.t is a string, not a number",
        "the message has no field a.t",
        "field a.t is a boolean, not a number",
    ]


def test_rename_and_remove_leave_other_fields():
    out, _ = run({"name": "r", "rename": {"a.b": "c", "missing": "x"}}, [{"a": {"b": 1, "d": 2}}])
    assert out == [{"a": {"d": 2}, "c": 1}]
    out, _ = run({"name": "r", "remove": ["a.d", "nothing.here"]}, [{"a": {"b": 1, "d": 2}}])
    assert out == [{"a": {"b": 1}}]
    _, failures = run({"name": "s", "set": {"x": "1"}}, [[1, 2]])
    assert failures == ["the message is not a JSON object"]


def test_transform_to_nothing_is_filtered_and_a_run_time_error_fails():
    out, failures = run(
        {"name": "t", "transform": {"expression": "value * 2"}},
        [{"value": 2}, {"other": 1}, {"value": "x"}],
    )
    assert out == [4]
    assert len(failures) == 1 and "T2001" in failures[0]


def test_count_window_groups_and_aggregates():
    step = {
        "name": "w",
        "window": {
            "count": 2,
            "groupBy": "thing",
            "aggregates": {
                "avg": {"op": "avg", "expression": "v"},
                "sum": {"op": "sum", "expression": "v"},
                "min": {"op": "min", "expression": "v"},
                "first": {"op": "first", "expression": "v"},
                "n": {"op": "count"},
            },
        },
    }
    out, failures = run(
        step,
        [
            {"thing": "a", "v": 1},
            {"thing": "b", "v": 10},
            {"thing": "a", "v": 3},
            {"thing": "a", "v": "x"},
        ],
    )
    assert [
        {k: m[k] for k in ("group", "count", "avg", "sum", "min", "first", "n")} for m in out
    ] == [{"group": "a", "count": 2, "avg": 2.0, "sum": 4.0, "min": 1, "first": 1, "n": 2}]
    assert failures == ["aggregate avg (avg) needs a number, got a string"]


def test_time_window_emits_every_group_when_it_closes():
    runner = build_step(
        Step.model_validate(
            {
                "name": "w",
                "window": {
                    "every": 60,
                    "groupBy": "thing",
                    "aggregates": {"max": {"op": "max", "expression": "v"}},
                },
            }
        ),
        "deadLetter",
        0.25,
    )
    start = runner.window_start
    runner.run([(Origin(), {"thing": t, "v": v}) for t, v in [("a", 1), ("b", 5), ("a", 7)]], print)
    assert runner.flush(start + 30) == []
    emitted = runner.flush(start + 60)
    assert sorted((m["group"], m["max"], m["count"]) for m in emitted) == [("a", 7, 2), ("b", 5, 1)]
    assert runner.flush(start + 121) == []  # empty windows emit nothing


def test_window_refuses_more_groups_than_allowed():
    _, failures = run(
        {
            "name": "w",
            "window": {
                "count": 5,
                "groupBy": "g",
                "maxGroups": 2,
                "aggregates": {"n": {"op": "count"}},
            },
        },
        [{"g": 1}, {"g": 2}, {"g": 3}],
    )
    assert failures == ["more than 2 open groups (maxGroups)"]


class Broker:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def publish(self, topic: str, payload: bytes, done: Any) -> None:
        self.sent.append((topic, json.loads(payload)))


def test_twin_writer_numbers_updates_and_accepts_them_on_the_twins_ack():
    broker = Broker()
    writer = TwinWriter("legacy", "plant_a", broker.publish, ack_timeout=30)
    accepted: list[int] = []
    for n in (1, 2, 3):
        writer.write("press-1", "temperature", 80 + n, lambda ok, n=n: accepted.append(n))
    topic, update = broker.sent[0]
    assert topic == twin_update_topic("flow.legacy", "press-1")
    assert topic == "spine/gateways/flow.legacy/things/press-1/twin"
    assert update["topic"] == "plant_a/press-1/things/twin/commands/merge"
    assert update["value"] == {"temperature": {"properties": {"value": 81}}}
    headers = update["headers"]
    assert (headers["spine-gateway"], headers["spine-seq"]) == ("flow.legacy", 1)
    epoch = headers["spine-epoch"]
    writer.on_ack(json.dumps({"gateway": "flow.legacy", "epoch": "other", "seq": 3}).encode())
    writer.on_ack(json.dumps({"gateway": "someone", "epoch": epoch, "seq": 3}).encode())
    writer.on_ack(b"not json")
    assert accepted == []
    writer.on_ack(json.dumps({"gateway": "flow.legacy", "epoch": epoch, "seq": 2}).encode())
    assert accepted == [1, 2] and list(writer.unacked) == [3]
    assert twin_ack_topic(writer.identity) == "spine/gateways/flow.legacy/acks"


def test_twin_writer_resends_from_the_oldest_unacknowledged():
    broker = Broker()
    writer = TwinWriter("f", "plant_a", broker.publish, ack_timeout=30)
    for value in (1, 2):
        writer.write("p", "x", value, lambda ok: None)
    sent_at = writer.unacked[1].sent_at
    assert writer.resend_overdue(sent_at + 10) == 0
    assert writer.resend_overdue(sent_at + 31) == 2
    assert [update["headers"]["spine-seq"] for _, update in broker.sent] == [1, 2, 1, 2]
