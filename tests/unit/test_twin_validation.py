"""Twin models and update validation: readable config errors, and what an update may contain."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from spine_operator.api.spine import SpineSpec
from spine_operator.desired import twin as twin_build
from spine_operator.environment import Environment
from spine_runtime.common.configsource import ConfigError, parse_config
from spine_runtime.config.twin import (
    PropertySchema,
    ThingInstance,
    ThingModel,
    TwinConfig,
    property_json_schema,
    thing_description,
)
from spine_runtime.twin.protocol import changes_at, read_changes, read_origin, twin_route
from spine_runtime.twin.state import Change
from spine_runtime.twin.validation import ModelValidator, Rejection

PRESS = {
    "name": "press",
    "version": "1.2.0",
    "title": "Hydraulic press",
    "properties": {
        "temperature": {"type": "number", "maximum": 80, "unit": "degC", "readOnly": True},
        "targetSpeed": {"type": "integer", "minimum": 0, "maximum": 100},
        "mode": {"type": "string", "enum": ["auto", "manual"]},
        "label": {"type": "string", "maxLength": 8, "pattern": "^[A-Z]"},
        "running": {"type": "boolean"},
        "setpoints": {"type": "array", "items": {"type": "number", "minimum": 0}, "maxItems": 3},
        "recipe": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "steps": {"type": "integer"}},
            "required": ["name"],
        },
    },
}


def base_config(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "namespace": "plant_a",
        "mqtt": {
            "host": "broker",
            "username": "spine-twin",
            "passwordFile": "/p",
            "clientId": "spine-twin",
        },
        "writeTokenFile": "/t",
        "storage": {"path": "/data/twin.db"},
        "models": [PRESS],
        "things": [{"name": "press-1", "model": "press", "attributes": {"line": "A"}}],
    }
    config.update(changes)
    return config


def config_error(document: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(TwinConfig, json.dumps(document))
    return str(caught.value)


# the config model ---------------------------------------------------------------------------------


def test_a_complete_config_parses_with_defaults() -> None:
    config = parse_config(TwinConfig, json.dumps(base_config()))
    assert config.desired_timeout_seconds == 30
    assert config.storage.synchronous == "full"
    assert config.models[0].definition == "press:1.2.0"
    assert config.model_of(config.things[0]).name == "press"
    assert config.to_wire()["storage"]["commitBatchSize"] == 2000


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"namespace": "plant-a"}, "namespace: 'plant-a' is invalid: it must be a Ditto namespace"),
        ({"namespace": "1plant"}, "must be a Ditto namespace"),
        (
            {"things": [{"name": "press/1", "model": "press"}]},
            "things[0].name: 'press/1' is invalid: it must be a Ditto thing name without "
            "whitespace, '/', '+' or '#'",
        ),
        ({"things": [{"name": "press+1", "model": "press"}]}, "things[0].name"),
        ({"things": [{"name": "press#1", "model": "press"}]}, "things[0].name"),
        ({"things": [{"name": "press 1", "model": "press"}]}, "things[0].name"),
        (
            {"things": [{"name": "press-1", "model": "drill"}]},
            "thing 'press-1' refers to model 'drill', which is not in models",
        ),
        (
            {"things": [{"name": "p", "model": "press"}, {"name": "p", "model": "press"}]},
            "thing 'p' is defined twice",
        ),
        ({"models": [PRESS, PRESS]}, "model 'press' is defined twice"),
        (
            {"models": [{**PRESS, "name": "Press"}]},
            "models[0].name: 'Press' is invalid: it must be a Kubernetes object name",
        ),
        (
            {"models": [{"name": "m", "properties": {"a/b": {"type": "number"}}}]},
            "property name 'a/b' must be letters, digits, '_' and '-'",
        ),
        (
            {"models": [{"name": "m", "properties": {"t": {"type": "text"}}}]},
            "models[0].properties.t.type: Input should be 'number', 'integer'",
        ),
        (
            {"models": [{"name": "m", "properties": {"t": {"type": "string", "maximum": 3}}}]},
            "maximum does not apply to type string",
        ),
        (
            {"models": [{"name": "m", "properties": {"t": {"type": "number", "minLength": 3}}}]},
            "minLength does not apply to type number",
        ),
        (
            {
                "models": [
                    {
                        "name": "m",
                        "properties": {"t": {"type": "number", "minimum": 5, "maximum": 1}},
                    }
                ]
            },
            "the minimum 5 is greater than the maximum 1",
        ),
        (
            {"models": [{"name": "m", "properties": {"t": {"type": "integer", "enum": [1, 1.5]}}}]},
            "enum value 1.5 does not fit the schema: 1.5 is not of type 'integer'",
        ),
        (
            {"models": [{"name": "m", "properties": {"t": {"type": "string", "pattern": "("}}}]},
            "pattern '(' is not a regular expression",
        ),
        (
            {"models": [{"name": "m", "properties": {"t": {"type": "object", "required": ["x"]}}}]},
            "required names members that are not in properties: ['x']",
        ),
        (
            {"models": [{"name": "m", "properties": {"t": {"type": "number", "maximum": True}}}]},
            "maximum",
        ),
        (
            {"models": [{"name": "m", "properties": {"t": {"type": "number", "readonly": True}}}]},
            "readonly: Extra inputs are not permitted",
        ),
        (
            {"things": [{"name": "p", "model": "press", "attributes": {"a b": 1}}]},
            "attribute name 'a b' must be letters",
        ),
        ({"desiredTimeoutSeconds": 0}, "desiredTimeoutSeconds: Input should be greater than 0"),
        ({"gateways": ["line-1", "line-1"]}, "gateway 'line-1' is defined twice"),
        ({"gateways": ["line/1"]}, "gateways[0]: 'line/1' is invalid: it must be a gateway name"),
        (
            {"ingest": {"maxSourceTimeAheadSeconds": -1}},
            "maxSourceTimeAheadSeconds: Input should be greater than or equal to 0",
        ),
    ],
)
def test_config_errors_name_the_field_and_the_fix(change: dict[str, Any], message: str) -> None:
    assert message in config_error(base_config(**change))


def test_nesting_is_limited() -> None:
    schema: dict[str, Any] = {"type": "number"}
    for _ in range(9):
        schema = {"type": "array", "items": schema}
    with pytest.raises(ValueError, match="nested more than 8 levels deep"):
        PropertySchema.model_validate(schema)


def test_property_json_schema_is_a_valid_json_schema() -> None:
    model = ThingModel.model_validate(PRESS)
    temperature = property_json_schema(model.properties["temperature"])
    assert temperature == {"type": "number", "maximum": 80, "readOnly": True}
    recipe = property_json_schema(model.properties["recipe"])
    assert recipe["properties"]["steps"] == {"type": "integer"}
    for schema in model.properties.values():
        jsonschema.Draft202012Validator.check_schema(property_json_schema(schema))


def test_thing_description_has_forms_on_the_http_api() -> None:
    model = ThingModel.model_validate(PRESS)
    thing = ThingInstance(name="press-1", model="press", attributes={"line": "A"})
    td = thing_description("plant_a", thing, model, "http://twin:8080/")
    assert td["@context"] == "https://www.w3.org/2022/wot/td/v1.1"
    assert td["id"] == "urn:spine:thing:plant_a:press-1"
    assert td["title"] == "press-1"
    assert td["base"] == "http://twin:8080/api/2/things/plant_a:press-1/"
    temperature = td["properties"]["temperature"]
    assert temperature["unit"] == "degC" and temperature["readOnly"] is True
    assert [form["op"] for form in temperature["forms"]] == [
        ["readproperty"],
        ["observeproperty", "unobserveproperty"],
    ]
    speed_ops = [form["op"] for form in td["properties"]["targetSpeed"]["forms"]]
    assert ["writeproperty"] in speed_ops
    write = next(
        f for f in td["properties"]["targetSpeed"]["forms"] if f["op"] == ["writeproperty"]
    )
    assert write["href"] == "features/targetSpeed/desiredProperties/value"
    assert write["security"] == ["bearer_sc"]
    assert td["securityDefinitions"]["bearer_sc"]["scheme"] == "bearer"


def _inline(node: Any, definitions: dict[str, Any], depth: int) -> Any:
    assert depth < 10, "the schema refers to itself"
    if isinstance(node, list):
        return [_inline(item, definitions, depth) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _inline(definitions[node["$ref"].split("/")[-1]], definitions, depth + 1)
    return {key: _inline(value, definitions, depth) for key, value in node.items()}


def test_the_crd_facing_schema_is_finite() -> None:
    """The operator inlines every $ref to build a CRD schema: that must end (nested data
    schemas are cut off with x-kubernetes-preserve-unknown-fields)."""
    for model in (ThingModel, ThingInstance):
        schema = model.model_json_schema(by_alias=True)
        definitions = schema.get("$defs", {})

        inlined = _inline(schema, definitions, 0)
        assert "x-kubernetes-preserve-unknown-fields" in json.dumps(inlined)


# update validation --------------------------------------------------------------------------------

VALIDATOR = ModelValidator(ThingModel.model_validate(PRESS))


def rejection(change: Change) -> Rejection:
    with pytest.raises(Rejection) as caught:
        VALIDATOR.check(change)
    return caught.value


@pytest.mark.parametrize(
    ("change", "reason", "field"),
    [
        (
            Change("temperature", "hot"),
            "'hot' is not of type 'number'",
            "/features/temperature/properties/value",
        ),
        (
            Change("temperature", True),
            "True is not of type 'number'",
            "/features/temperature/properties/value",
        ),
        (
            Change("temperature", 81.5),
            "81.5 is greater than the maximum of 80",
            "/features/temperature/properties/value",
        ),
        (
            Change("targetSpeed", 2.5),
            "2.5 is not of type 'integer'",
            "/features/targetSpeed/properties/value",
        ),
        (
            Change("targetSpeed", -1),
            "-1 is less than the minimum of 0",
            "/features/targetSpeed/properties/value",
        ),
        (
            Change("targetSpeed", 101, desired=True),
            "101 is greater than the maximum of 100",
            "/features/targetSpeed/desiredProperties/value",
        ),
        (
            Change("mode", "fast"),
            "'fast' is not one of ['auto', 'manual']",
            "/features/mode/properties/value",
        ),
        (
            Change("label", "lower"),
            "'lower' does not match '^[A-Z]'",
            "/features/label/properties/value",
        ),
        (
            Change("label", "ABCDEFGHIJ"),
            "'ABCDEFGHIJ' is too long",
            "/features/label/properties/value",
        ),
        (
            Change("setpoints", [1, -2]),
            "-2 is less than the minimum of 0",
            "/features/setpoints/properties/value/1",
        ),
        (
            Change("recipe", {"steps": 3}),
            "'name' is a required property",
            "/features/recipe/properties/value",
        ),
        (
            Change("recipe", {"name": "a", "steps": "x"}),
            "'x' is not of type 'integer'",
            "/features/recipe/properties/value/steps",
        ),
        (Change("pressure", 1.0), "model press has no property 'pressure'", "/features/pressure"),
        (
            Change("temperature", 20, desired=True),
            "property 'temperature' is readOnly: it cannot have a desired value",
            "/features/temperature/desiredProperties/value",
        ),
        (
            Change("targetSpeed", None),
            "a property value cannot be null",
            "/features/targetSpeed/properties/value",
        ),
    ],
)
def test_invalid_changes_are_rejected_with_reason_and_field(
    change: Change, reason: str, field: str
) -> None:
    refused = rejection(change)
    assert reason in refused.reason
    assert refused.field == field
    assert refused.status == 400


@pytest.mark.parametrize(
    "change",
    [
        Change("temperature", 80),  # the maximum itself
        Change("temperature", -300.25),
        Change("targetSpeed", 3.0),  # JSON Schema: 3.0 is an integer
        Change("targetSpeed", 40, desired=True),
        Change("mode", "auto", desired=True),
        Change("running", False),
        Change("recipe", {"name": "x", "extra": [1]}),
        Change("targetSpeed", desired=True, clear=True),
    ],
)
def test_valid_changes_pass(change: Change) -> None:
    VALIDATOR.check(change)


# update shapes --------------------------------------------------------------------------------


def test_a_modify_of_one_value() -> None:
    assert changes_at("/features/temperature/properties/value", 20, merge=False) == [
        Change("temperature", 20)
    ]
    assert changes_at("/features/targetSpeed/desiredProperties/value", 40, merge=False) == [
        Change("targetSpeed", 40, desired=True)
    ]


def test_the_shapes_of_a_merge() -> None:
    value = {
        "temperature": {"properties": {"value": 20}},
        "targetSpeed": {
            "properties": {"value": 3, "timestamp": "ignored"},
            "desiredProperties": {"value": 4},
        },
    }
    assert changes_at("/features", value, merge=True) == [
        Change("temperature", 20),
        Change("targetSpeed", 3),
        Change("targetSpeed", 4, desired=True),
    ]
    assert changes_at("/features/mode", {"properties": {"value": "auto"}}, merge=True) == [
        Change("mode", "auto")
    ]
    assert changes_at("/features/mode/properties", {"value": "auto"}, merge=False) == [
        Change("mode", "auto")
    ]
    assert changes_at("/features/mode/desiredProperties", None, merge=True) == [
        Change("mode", desired=True, clear=True)
    ]


def test_a_whole_thing_may_repeat_its_static_parts() -> None:
    static = {
        "thingId": "plant_a:press-1",
        "definition": "press:1.2.0",
        "attributes": {"line": "A"},
    }
    document = {**static, "_revision": 3, "features": {"mode": {"properties": {"value": "x"}}}}
    assert changes_at("/", document, merge=False, static=static) == [Change("mode", "x")]
    with pytest.raises(Rejection) as caught:
        changes_at("/", {**document, "attributes": {"line": "B"}}, merge=False, static=static)
    assert caught.value.status == 403
    assert "attributes is defined by the TwinModel" in caught.value.reason


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        ("/attributes/line", "B", "attributes is defined by the TwinModel"),
        ("/features/mode/definition", ["x"], "unsupported path"),
        ("/features/mode/properties/other", 1, "unsupported path"),
        ("/features//properties/value", 1, "malformed path"),
        ("/features/mode", {"definition": "x"}, "only properties and desiredProperties"),
        ("/features/mode/properties", {"value": 1, "colour": "red"}, "holds only value"),
        ("/features/mode/properties", {}, "properties needs a value"),
        ("/features/mode/properties", [1], "must be a JSON object"),
        ("/features", {}, "the update sets no property value"),
        ("/features", [], "features must be a JSON object"),
        (
            "/features/mode/properties/value",
            [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
            "nested more than 32 levels",
        ),
    ],
)
def test_unsupported_shapes_are_rejected(path: str, value: Any, reason: str) -> None:
    with pytest.raises(Rejection, match=reason):
        changes_at(path, value, merge=False)


def test_read_changes_checks_the_envelope() -> None:
    good = {
        "topic": "plant_a/press-1/things/twin/commands/modify",
        "path": "/features/mode/properties/value",
        "value": "auto",
    }
    assert read_changes(good, "plant_a", "press-1") == [Change("mode", "auto")]
    for document, reason in [
        ({**good, "topic": "plant_a/press-2/things/twin/commands/modify"}, "names thing"),
        ({**good, "topic": "plant_b/press-1/things/twin/commands/modify"}, "names thing"),
        ({**good, "topic": "plant_a/press-1/things/live/commands/modify"}, "unsupported topic"),
        ({**good, "topic": "plant_a/press-1/things/twin/commands/delete"}, "unsupported topic"),
        ({k: v for k, v in good.items() if k != "topic"}, "topic is missing"),
        ({k: v for k, v in good.items() if k != "value"}, "value is missing"),
        ({**good, "path": "features/mode"}, "path must be a string starting with '/'"),
    ]:
        with pytest.raises(Rejection, match=reason):
            read_changes(document, "plant_a", "press-1")


def test_read_origin_reads_gateway_headers() -> None:
    headers = {
        "correlation-id": "c",
        "spine-gateway": "press-line-1",
        "spine-epoch": "7f3a9c",
        "spine-seq": 42,
        "spine-source-time": "2026-11-22T19:45:01.123Z",
    }
    origin = read_origin({"headers": headers}, "press-line-1")
    assert (origin.gateway, origin.epoch, origin.seq) == ("press-line-1", "7f3a9c", 42)
    assert origin.source_time == "2026-11-22T19:45:01.123Z"
    assert origin.source_epoch == pytest.approx(1795376701.123)
    assert read_origin({"headers": {**headers, "spine-seq": "43"}}, "press-line-1").seq == 43
    # the gateway comes from the topic; the header may be left out
    unnamed = {key: value for key, value in headers.items() if key != "spine-gateway"}
    assert read_origin({"headers": unnamed}, "press-line-1").gateway == "press-line-1"
    assert read_origin({}).gateway is None
    for bad, reason in [
        ({"spine-seq": 0}, "spine-seq must be a positive integer"),
        ({"spine-seq": True}, "spine-seq must be a positive integer"),
        ({"spine-seq": 1.5}, "spine-seq must be a positive integer"),
        ({"spine-epoch": None}, "spine-epoch must be a string"),
        ({"spine-gateway": "press-line-2"}, "is not the gateway 'press-line-1' whose topic"),
        ({"spine-source-time": "yesterday"}, "is not an RFC 3339 time"),
        ({"spine-source-time": "2026-11-22T19:45:01"}, "a time zone is required"),
    ]:
        with pytest.raises(Rejection, match=reason):
            read_origin({"headers": {**headers, **bad}}, "press-line-1")
    with pytest.raises(Rejection, match="headers must be a JSON object"):
        read_origin({"headers": [1]})


@pytest.mark.parametrize("header", ["spine-gateway", "spine-epoch", "spine-seq"])
def test_sequence_headers_on_the_plain_topic_are_refused(header: str) -> None:
    """Anyone allowed to publish a thing's values could write them: only a topic the broker
    ties to one gateway login carries a gateway's identity."""
    with pytest.raises(Rejection, match="honoured only on a gateway's own topic") as caught:
        read_origin({"headers": {header: "x"}})
    assert caught.value.field == f"/headers/{header}"
    plain = read_origin(
        {"headers": {"correlation-id": "c", "spine-source-time": "2026-01-01T00:00:00Z"}}
    )
    assert plain.gateway is None and plain.source_time == "2026-01-01T00:00:00Z"


def test_the_update_topic_names_the_thing_and_perhaps_the_gateway() -> None:
    assert twin_route("spine/things/press-1/twin") == (None, "press-1")
    assert twin_route("spine/gateways/line-1/things/press-1/twin") == ("line-1", "press-1")
    for topic in [
        "spine/things//twin",
        "spine/things/press-1/events",
        "spine/gateways/line-1/things//twin",
        "spine/gateways/line 1/things/press-1/twin",
        "spine/gateways//things/press-1/twin",
        "spine/gateways/line-1/acks",
        "spine/gateways/line-1/things/press-1/twin/x",
    ]:
        assert twin_route(topic) is None, topic


def test_the_operator_lists_gateways_in_the_twin_config_and_they_apply_live() -> None:
    spec, env = SpineSpec.model_validate({}), Environment()
    unlisted = twin_build.twin_config(spec, env, "plant-a", [])
    assert unlisted.gateways is None and "gateways" not in unlisted.to_wire()
    listed = twin_build.twin_config(spec, env, "plant-a", [], gateways=["line-2", "line-1"])
    assert listed.to_wire()["gateways"] == ["line-1", "line-2"]
    # a new Gateway reaches the running twin by config push: no restart of its pod
    assert twin_build.restart_checksum(listed) == twin_build.restart_checksum(unlisted)


def test_a_resource_refused_for_its_name_cannot_break_the_twins_config() -> None:
    """The twin's list of numbered publishers holds only names the plans accept: a Gateway or
    Flow with a long or dotted name (both valid Kubernetes names) is left out, not rendered
    into a config the twin would refuse whole."""
    from spine_operator.desired.twin import numbered_publishers

    def item(name: str, spec: dict | None = None) -> dict:
        return {"metadata": {"name": name}, "spec": spec or {}}

    twin_sink = {"sinks": [{"twin": {"thing": "id", "property": "p", "value": "v"}}]}
    listed = numbered_publishers(
        [item("line-1"), item("g" * 200), item("a.b")],
        [
            item("legacy", twin_sink),
            item("f" * 250, twin_sink),
            item("x.y", twin_sink),
            item("no-twin", {"sinks": [{"mqtt": {"topic": "t"}}]}),
        ],
    )
    assert listed == ["flow.legacy", "line-1"]
    twin_build.twin_config(SpineSpec(), Environment(), "plant-a", [], gateways=listed)  # valid
