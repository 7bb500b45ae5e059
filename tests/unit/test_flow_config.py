"""The flow engine's config model: what it accepts, what it refuses and how it says so, and
that the Flow CRD can reuse its types as a structural schema (the operator half)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from spine_operator.crdgen import _check_typed, structural_schema
from spine_runtime.common.configsource import ConfigError, describe_validation_error, parse_config
from spine_runtime.config.flow import (
    FlowEngineConfig,
    FlowSpec,
    acl_pattern,
    dead_letter_topic,
    shared_group,
)
from spine_runtime.flow.twin import twin_acl_topics

EXAMPLES = Path(__file__).parent / "data" / "flow-press-line.yaml"


def example_flows() -> list[dict[str, Any]]:
    return list(yaml.safe_load(EXAMPLES.read_text())["flows"])


def engine_document(flows: list[dict[str, Any]], tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "pw").write_text("secret")
    return {
        "broker": {"host": "spine-broker", "port": 1883},
        "twinNamespace": "plant_a",
        "flows": [
            {
                **flow,
                "login": {"username": f"flow-{flow['name']}", "passwordFile": str(tmp_path / "pw")},
            }
            for flow in flows
        ],
    }


def spec_error(spec: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        FlowSpec.model_validate(spec)
    return describe_validation_error(caught.value, "spec")


def minimal(**more: Any) -> dict[str, Any]:
    return {
        "source": {"mqtt": {"topic": "plant/+/temperature"}},
        "sinks": [{"mqtt": {"topic": "spine/flows/x/out"}}],
        **more,
    }


def test_the_press_line_examples_are_valid_engine_configs(tmp_path: Path):
    config = FlowEngineConfig.model_validate(engine_document(example_flows(), tmp_path))
    assert [flow.name for flow in config.flows] == [
        "press-alarms",
        "press-kpi",
        "legacy-press",
        "alarm-enrich",
    ]
    alarms = config.flows[0]
    assert alarms.on_error == "deadLetter" and alarms.max_in_flight == 100
    assert (
        alarms.steps[2]
        .expression("set.alarm")
        .evaluate({"temperature": 88}, {"previous": {"alarm": True}})
        is True
    )
    assert config.flows[2].model_refs() == ["press"]
    assert config.flows[3].service_refs() == []  # resolved: the engine gets the URL


def test_a_bad_expression_is_refused_naming_the_step_and_the_position():
    message = spec_error(
        minimal(
            steps=[
                {"name": "ok", "filter": {"expression": "value > 1"}},
                {"name": "hot", "filter": {"expression": "value >"}},
            ]
        )
    )
    assert message == (
        "spec.steps[1]: step hot (filter): expression does not compile: "
        "Unexpected end of expression (S0207) at position 7"
    )
    message = spec_error(
        minimal(
            steps=[
                {
                    "name": "kpi",
                    "window": {"count": 2, "aggregates": {"a": {"op": "avg", "expression": "(x"}}},
                }
            ]
        )
    )
    assert "step kpi (window): aggregates.a does not compile" in message
    twin_sink = spec_error(minimal(sinks=[{"twin": {"thing": "$$$(", "property": "temperature"}}]))
    assert "twin sink: thing does not compile" in twin_sink


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"source": {"mqtt": {"topic": "a/#/b"}}}, "'#' must be a whole topic level and the last"),
        ({"source": {"mqtt": {"topic": "a/b+"}}}, "'+' must be a whole topic level"),
        ({"source": {"mqtt": {"topic": "$SYS/#"}}}, "not starting with '$'"),
        ({"source": {"mqtt": {"topic": "a\nb"}}}, "without control characters"),
        ({"source": {"mqtt": {"topic": "a" * 257}}}, "at most 256 characters"),
        (
            {"source": {"mqtt": {"topic": "a"}, "http": {}}},
            "source needs exactly one of mqtt, twin, http, schedule (found: mqtt, http)",
        ),
        ({"source": {}}, "source needs exactly one of mqtt, twin, http, schedule (found: none)"),
        ({"sinks": [{"mqtt": {"topic": "out/+"}}]}, "without wildcards"),
        ({"sinks": [{"mqtt": {"topic": "out/#"}}]}, "without wildcards"),
        ({"sinks": [{"mqtt": {"topic": "out/\u0000"}}]}, "control characters"),
        ({"sinks": [{"mqtt": {"topic": "out/{thing"}}]}, "unbalanced brace"),
        ({"sinks": [{"mqtt": {"topic": "out/{a b}"}}]}, "placeholder 'a b'"),
        ({"sinks": []}, "at least 1 item"),
        ({"steps": [{"name": "Bad_Name", "filter": {"expression": "1"}}]}, "must be a DNS label"),
        (
            {
                "steps": [
                    {"name": "a", "filter": {"expression": "1"}, "transform": {"expression": "1"}}
                ]
            },
            "step a needs exactly one of validate, filter, transform",
        ),
        (
            {
                "steps": [
                    {"name": "a", "filter": {"expression": "1"}},
                    {"name": "a", "filter": {"expression": "1"}},
                ]
            },
            "steps[1]: name 'a' is used by steps[0] too",
        ),
        (
            {"steps": [{"name": "c", "convert": {"field": "t", "from": "degF", "to": "bar"}}]},
            "degF is a temperature and bar a pressure",
        ),
        (
            {"steps": [{"name": "c", "convert": {"field": "t", "from": "furlong", "to": "m"}}]},
            "unknown unit 'furlong'",
        ),
        (
            {
                "steps": [
                    {
                        "name": "w",
                        "window": {"every": 1, "count": 2, "aggregates": {"n": {"op": "count"}}},
                    }
                ]
            },
            "exactly one of every and count",
        ),
        (
            {"steps": [{"name": "w", "window": {"count": 2, "aggregates": {"a": {"op": "avg"}}}}]},
            "aggregate a (avg) needs an expression",
        ),
        (
            {"steps": [{"name": "v", "validate": {"schema": {"type": "nonsense"}}}]},
            "schema is not a valid JSON Schema",
        ),
        (
            {
                "steps": [
                    {
                        "name": "k",
                        "key": "thing",
                        "convert": {"field": "t", "from": "K", "to": "degC"},
                    }
                ]
            },
            "key (state per key) is for filter, transform and set steps",
        ),
        ({"steps": [{"name": "f", "filter": {"expression": "x" * 4097}}]}, "at most 4096"),
        ({"maxInFlight": 0}, "greater than or equal to 1"),
        ({"maxInFlight": 10_001}, "less than or equal to 10000"),
        ({"batchWindowMs": 51}, "less than or equal to 50"),
        ({"batchWindowMs": -1}, "greater than or equal to 0"),
        ({"expressionTimeoutMs": 6000}, "less than or equal to 5000"),
        ({"steps": [{"name": "c", "call": {"url": "ftp://x"}}]}, "must be an http:// or https://"),
        (
            {"steps": [{"name": "c", "call": {"url": "http://x", "timeoutSeconds": 500}}]},
            "less than or equal to 120",
        ),
        ({"onError": "ignore"}, "'deadLetter' or 'drop'"),
        ({"steps": [{"name": "s", "set": {"a b": "1"}}]}, "set: 'a b' is not a field path"),
        (
            {
                "steps": [
                    {"name": "w", "window": {"count": 1, "aggregates": {"$x": {"op": "count"}}}}
                ]
            },
            "aggregates: '$x' is not a field path",
        ),
    ],
)
def test_hostile_or_wrong_specs_are_refused_with_a_reason(change: dict[str, Any], expected: str):
    assert expected in spec_error(minimal(**change))


def test_the_engine_refuses_references_the_operator_must_resolve(tmp_path: Path):
    flows = example_flows()
    unresolved = copy.deepcopy(flows)
    del unresolved[2]["steps"][0]["validate"]["schema"]
    del unresolved[3]["steps"][1]["call"]["url"]
    unresolved[3]["steps"][1]["call"]["serviceRef"] = {"name": "maintenance", "path": "/x"}
    unresolved[0]["source"]["twin"].pop("things")
    with pytest.raises(ConfigError) as caught:
        parse_config(FlowEngineConfig, yaml.safe_dump(engine_document(unresolved, tmp_path)))
    message = str(caught.value)
    assert "source.twin: things must be listed (the operator resolves model)" in message
    assert "step check: validate needs schema (model unresolved)" in message
    assert "step contact: call needs url (serviceRef unresolved)" in message
    duplicate = engine_document([flows[0], flows[0]], tmp_path)
    with pytest.raises(ValidationError, match="flow 'press-alarms' is listed twice"):
        FlowEngineConfig.model_validate(duplicate)


def test_topics_the_flow_login_needs():
    spec = FlowSpec.model_validate(
        minimal(
            sinks=[
                {"mqtt": {"topic": "spine/flows/x/out/{thing}/t-{value.unit}"}},
                {"twin": {"thing": "thing", "property": "temperature"}},
            ]
        )
    )
    publish, subscribe = twin_acl_topics("x")
    assert spec.publish_topics("x", publish) == sorted(
        ["spine/flows/x/out/+/+", "spine/gateways/flow.x/things/+/twin", dead_letter_topic("x")]
    )
    assert spec.subscribe_topics(subscribe, shared_group("x")) == [
        "plant/+/temperature",
        "$share/flow-x/plant/+/temperature",
        "spine/gateways/flow.x/acks",
    ]
    assert acl_pattern("a/{b}/c") == "a/+/c"


def test_the_flow_spec_is_a_structural_schema_the_crd_can_reuse():
    schema = structural_schema(FlowSpec)
    _check_typed(schema, "Flow.spec")
    source = schema["properties"]["source"]
    assert source["oneOf"] == [
        {"required": ["mqtt"]},
        {"required": ["twin"]},
        {"required": ["http"]},
        {"required": ["schedule"]},
    ]
    step = schema["properties"]["steps"]["items"]
    assert {"required": ["validate"]} in step["oneOf"] and "validate" in step["properties"]
    validate = step["properties"]["validate"]["properties"]["schema"]
    assert validate.get("x-kubernetes-preserve-unknown-fields") is True
    text = json.dumps(schema)
    for forbidden in (
        "patternProperties",
        "propertyNames",
        "$ref",
        '"additionalProperties": false',
    ):
        assert forbidden not in text  # not allowed in a structural schema
    sink = schema["properties"]["sinks"]["items"]
    assert (
        len(sink["oneOf"]) == 3
        and sink["properties"]["mqtt"]["properties"]["topic"]["maxLength"] == 256
    )
