"""The operator's check of every Gateway tag against its thing's TwinModel, and its messages."""

from __future__ import annotations

from typing import Any

import pytest

from spine_operator.api.gateway import GatewaySpec
from spine_operator.api.twinmodel import TwinModelSpec
from spine_operator.desired import gateway as gateway_build
from spine_operator.environment import Environment

MODEL = TwinModelSpec.model_validate(
    {
        "properties": {
            "running": {"type": "boolean"},
            "targetSpeed": {"type": "integer", "minimum": 0, "maximum": 60},
            "temperature": {"type": "number", "readOnly": True},
            "cycleCount": {"type": "integer", "readOnly": True},
            "mode": {"type": "string"},
            "recipe": {"type": "object"},
        },
        "things": [{"name": "press-1"}, {"name": "press-2"}],
    }
)
MODELS = gateway_build.models_by_thing([("press", MODEL)])
CONNECTIONS = [
    {"name": "modbus", "modbusTcp": {"host": "10.0.0.5"}},
    {"name": "ua", "opcua": {"endpoint": "opc.tcp://10.0.0.6:4840"}},
    {"name": "s7", "s7": {"host": "10.0.0.7", "rack": 0, "slot": 1}},
]


def problems(*tags: dict[str, Any]) -> list[gateway_build.MappingProblem]:
    spec = GatewaySpec.model_validate(
        {"thing": "press-1", "connections": CONNECTIONS, "tags": list(tags)}
    )
    config = gateway_build.gateway_config(spec, Environment.cluster(), "plant-a", "gw", "plant_a")
    return gateway_build.check_tags_against_models(config, MODELS)


def modbus(name: str, prop: str, address: str, type_: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "connection": "modbus", "property": prop, "address": address,
            "type": type_, **more}  # fmt: skip


@pytest.mark.parametrize(
    "tag",
    [
        modbus("speed", "targetSpeed", "holding:0", "uint16", writable=True),
        modbus("temp", "temperature", "holding:2", "float32"),
        modbus("temp-x10", "temperature", "holding:12", "int16", scale={"factor": 0.1}),
        modbus("count", "temperature", "holding:6", "uint32"),  # an integer is a number too
        modbus("run", "running", "coil:0", "bool", writable=True),
        modbus("run-bit", "running", "holding:1.0", "bool"),
        modbus("twice", "cycleCount", "holding:6", "uint32", scale={"factor": 2, "offset": 1}),
        {
            "name": "ua-temp",
            "connection": "ua",
            "property": "temperature",
            "address": "ns=2;s=Press.temperature",
        },
        {
            "name": "ua-mode",
            "connection": "ua",
            "property": "mode",
            "address": "ns=2;s=Mode",
            "type": "String",
        },
        {
            "name": "s7-run",
            "connection": "s7",
            "property": "running",
            "address": "DB1.DBX2.0",
            "type": "BOOL",
            "writable": True,
        },
        {
            "name": "s7-speed",
            "connection": "s7",
            "property": "targetSpeed",
            "address": "DB1.DBW0",
            "type": "INT",
            "thing": "press-2",
        },
    ],
    ids=lambda tag: tag["name"],
)
def test_tags_that_fit_their_property(tag) -> None:
    assert problems(tag) == []


@pytest.mark.parametrize(
    ("tag", "reason", "message"),
    [
        (
            modbus("oil", "oilLevel", "holding:2", "float32"),
            "InvalidReference",
            "tag oil: TwinModel press (thing press-1) has no property oilLevel; its properties: "
            "cycleCount, mode, recipe, running, targetSpeed, temperature",
        ),
        (
            modbus("temp", "temperature", "holding:2", "float32", writable=True),
            "InvalidReference",
            "tag temp is writable but property temperature of TwinModel press is readOnly, so no "
            "desired value can reach it; drop writable from the tag or readOnly from the property",
        ),
        (
            modbus("pressure", "temperature", "coil:0", "bool"),
            "InvalidReference",
            "tag pressure publishes boolean values (bool) but property temperature of TwinModel "
            "press has type number",
        ),
        (
            modbus("speed", "targetSpeed", "holding:10", "float32"),
            "InvalidReference",
            "tag speed publishes number values (float32) but property targetSpeed of TwinModel "
            "press has type integer",
        ),
        (
            modbus("speed", "targetSpeed", "holding:0", "uint16", scale={"factor": 0.5}),
            "InvalidReference",
            "tag speed publishes number values (uint16, scaled) but property targetSpeed",
        ),
        (
            {
                "name": "s7-mode",
                "connection": "s7",
                "property": "mode",
                "address": "DB1.DBW0",
                "type": "INT",
            },
            "InvalidReference",
            "tag s7-mode publishes integer values (INT) but property mode of TwinModel press has "
            "type string",
        ),
        (
            modbus("recipe", "recipe", "holding:0", "uint16"),
            "InvalidReference",
            "property recipe of TwinModel press has type object",
        ),
        (
            modbus("speed", "targetSpeed", "holding:0", "uint16", thing="press-9"),
            "DependencyNotFound",
            "thing press-9 (tag speed) is in no TwinModel of the namespace; apply the TwinModel "
            "that lists it under spec.things",
        ),
    ],
)
def test_tags_that_do_not_fit_name_the_tag_and_the_property(tag, reason, message) -> None:
    [problem] = problems(tag)
    assert problem.tag == tag["name"]
    assert problem.reason == reason
    assert message in problem.message


def test_a_writable_tag_of_the_wrong_type_on_a_read_only_property_gets_both_problems() -> None:
    found = problems(modbus("temp", "temperature", "coil:0", "bool", writable=True))
    assert [p.reason for p in found] == ["InvalidReference", "InvalidReference"]
    assert "publishes boolean values" in found[0].message and "readOnly" in found[1].message


def test_a_missing_thing_is_one_problem_however_many_tags_it_has() -> None:
    tags = [
        modbus(f"t{index}", f"p{index}", f"holding:{2 * index}", "float32", thing="press-9")
        for index in range(5)
    ]
    [problem] = problems(*tags)
    assert problem.message.startswith("thing press-9 (tags t0, t1, t2 and 2 more) is in no")


def gateway_body(name: str, created: str, *tags: dict[str, Any], thing: str = "press-1") -> dict:
    spec = {"thing": thing, "connections": CONNECTIONS, "tags": list(tags)}
    return {"metadata": {"name": name, "creationTimestamp": created}, "spec": spec}


def conflicts(body: dict, *others: dict) -> list[str]:
    spec = GatewaySpec.model_validate(body["spec"])
    config = gateway_build.gateway_config(
        spec, Environment.cluster(), "plant-a", body["metadata"]["name"], "plant_a"
    )
    return [problem.message for problem in gateway_build.feeding_conflicts(body, config, others)]


def test_the_gateway_created_first_keeps_a_property_and_others_are_told_which() -> None:
    speed = {"name": "speed", "connection": "modbus", "property": "targetSpeed",
             "address": "holding:0", "type": "uint16"}  # fmt: skip
    first = gateway_body("line-a", "2026-12-01T10:00:00Z", speed)
    second = gateway_body("line-b", "2026-12-01T10:05:00Z", {**speed, "name": "set-point"})
    assert conflicts(first, second) == []
    assert conflicts(second, first) == [
        "tag set-point feeds press-1/targetSpeed, which tag speed of Gateway line-a already "
        "feeds: give each property one source"
    ]
    # Same second: the name decides, so exactly one of the two is refused.
    tie = gateway_body("line-0", "2026-12-01T10:00:00Z", speed)
    assert conflicts(first, tie) and not conflicts(tie, first)
    # Another thing's property, or an invalid Gateway (which applies nothing), is no conflict.
    other_thing = gateway_body("line-c", "2026-12-01T09:00:00Z", speed, thing="press-2")
    invalid = gateway_body("line-d", "2026-12-01T09:00:00Z", {**speed, "type": "float128"})
    assert conflicts(second, other_thing, invalid) == []
