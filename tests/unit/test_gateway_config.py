"""The gateway config model: what a user gets told for each mistake, and what it accepts.

Every message must name the field (tags[i] (name).field) and say what would work, because
the operator copies it into the Gateway's InvalidSpec condition.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from spine_runtime.common.configsource import ConfigError, parse_config
from spine_runtime.config.gateway import GatewayConfig, poll_interval_seconds

BASE: dict[str, Any] = {
    "name": "press-line-1",
    "twinNamespace": "plant_a",
    "mqtt": {
        "host": "broker",
        "username": "gateway-press-line-1",
        "passwordFile": "/secrets/mqtt/password",
        "clientId": "gateway-press-line-1",
    },
    "buffer": {"path": "/var/lib/spine/buffer"},
    "connections": [
        {"name": "plc-modbus", "modbusTcp": {"host": "10.0.0.5"}},
        {"name": "plc-opcua", "opcua": {"endpoint": "opc.tcp://10.0.0.6:4840"}},
        {"name": "plc-s7", "s7": {"host": "10.0.0.7", "rack": 0, "slot": 1}},
    ],
}


def tag(**fields: Any) -> dict[str, Any]:
    return {
        "name": "t1",
        "connection": "plc-modbus",
        "thing": "press-1",
        "property": "temperature",
        "address": "holding:10",
        "type": "int16",
        **fields,
    }


def config_with(tags: list[dict[str, Any]], **changes: Any) -> dict[str, Any]:
    document = copy.deepcopy(BASE)
    document["tags"] = tags
    document.update(changes)
    return document


def parse(document: dict[str, Any]) -> GatewayConfig:
    return parse_config(GatewayConfig, json.dumps(document))


def error_of(document: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(document)
    return str(caught.value)


def test_a_complete_config_parses_with_defaults() -> None:
    config = parse(
        config_with(
            [
                tag(),
                tag(name="t2", property="running", address="coil:0", type="bool", writable=True),
                tag(
                    name="t3",
                    connection="plc-opcua",
                    property="speed",
                    address="ns=2;s=Press.speed",
                    type=None,
                    subscribe={"publishingInterval": 500, "samplingInterval": 100, "queueSize": 5},
                ),
                tag(
                    name="t4",
                    connection="plc-s7",
                    property="flag",
                    address="DB1.DBX2.0",
                    type="BOOL",
                ),
                tag(name="t5", connection="plc-s7", property="count", address="%MW10", type="int"),
            ]
        )
    )
    assert config.connections[0].modbus_tcp is not None
    assert config.connections[0].modbus_tcp.port == 502
    assert config.connections[0].modbus_tcp.unit_id == 1
    assert config.connections[2].s7 is not None and config.connections[2].s7.port == 102
    assert config.publish.qos == 1
    assert config.resend_timeout_seconds == 30
    assert poll_interval_seconds(config.tags[0]) == 1.0
    assert config.things() == ["press-1"]
    assert config.writable_things() == ["press-1"]
    # a round trip through the wire form is stable (the operator renders, the gateway reads)
    assert parse(config.to_wire()) == config


@pytest.mark.parametrize(
    ("bad_tag", "expected"),
    [
        (
            tag(type="int17"),
            "tags[0] (t1).type: unknown Modbus type 'int17': use one of bool, int16",
        ),
        (
            tag(address="input:10", writable=True),
            "tags[0] (t1).writable: a Modbus input is read-only: only coils and holding registers",
        ),
        (
            tag(address="discrete:3", type="bool", writable=True),
            "tags[0] (t1).writable: a Modbus discrete is read-only",
        ),
        (
            tag(address="coil:4", type="float32"),
            "tags[0] (t1).address: a coil holds single bits: its type must be bool, not float32",
        ),
        (
            tag(address="holding:70000"),
            "tags[0] (t1).address: Modbus offset 70000 is out of range 0..65535",
        ),
        (
            tag(address="holding:65535", type="float32"),
            "a float32 at offset 65535 needs registers up to 65536, beyond 65535",
        ),
        (
            tag(address="holding:4", type="bool"),
            "a bool in a holding register needs a bit: holding:4.<0-15>",
        ),
        (tag(address="holding:4.16", type="bool"), "register bit 16 is out of range 0..15"),
        (
            tag(address="holding:4.3", type="bool", writable=True),
            "one bit of a register cannot be written on its own",
        ),
        (tag(address="40001"), "Modbus address '40001' must be <table>:<offset>"),
        (
            tag(connection="plc-s7", address="DB1.4", type="BOOL"),
            "tags[0] (t1).address: an S7 BOOL needs a bit: DB1.4.<0-7>",
        ),
        (tag(connection="plc-s7", address="DB1.4.9", type="BOOL"), "S7 bit 9 is out of range 0..7"),
        (
            tag(connection="plc-s7", address="DB1.DBW4", type="DINT"),
            "W addresses 2 byte(s) but a DINT has 4",
        ),
        (
            tag(connection="plc-s7", address="DB0.4", type="INT"),
            "S7 DB number 0 is out of range 1..65535",
        ),
        (
            tag(connection="plc-s7", address="DB1.65535", type="REAL"),
            "a REAL at byte 65535 ends at byte 65538, beyond 65535",
        ),
        (
            tag(connection="plc-s7", address="DB1.4.1", type="INT"),
            "only a BOOL has a bit: drop .1 or set type BOOL",
        ),
        (
            tag(connection="plc-s7", address="I0.1", type="BOOL", writable=True),
            "tags[0] (t1).writable: the S7 input image (I) is overwritten",
        ),
        (
            tag(connection="plc-s7", address="X1.2", type="BOOL"),
            "S7 address 'X1.2' must be DB<n>.<byte>[.<bit>]",
        ),
        (tag(connection="plc-s7", type=None), "tags[0] (t1).type: a S7 tag needs a type"),
        (
            tag(connection="plc-opcua", address="ns=2;x=1", type=None),
            "tags[0] (t1).address: OPC UA NodeId 'ns=2;x=1' must be",
        ),
        (
            tag(connection="plc-opcua", address="ns=2;s=a", type="Dubble"),
            "unknown OPC UA type 'Dubble': use one of Boolean",
        ),
        (
            tag(connection="nope"),
            "tags[0] (t1).connection: 'nope' is not a connection (connections: plc-modbus",
        ),
        (
            tag(byteOrder="little", connection="plc-s7", address="DB1.0", type="INT"),
            "tags[0] (t1).byteOrder: only Modbus tags have one, not S7 tags",
        ),
        (tag(subscribe={}), "tags[0] (t1).subscribe: only OPC UA tags can subscribe"),
        (
            tag(address="coil:1", type="bool", scale={"factor": 2}),
            "tags[0] (t1).scale: a bool cannot be scaled",
        ),
        (tag(address="coil:1", type="bool", deadband=1), "tags[0] (t1).deadband: only numbers"),
        (tag(scale={"factor": 0}), "factor must be a finite number other than 0"),
        (tag(interval=100, subscribe={}), "set interval (polling) or subscribe, not both"),
        (tag(interval=0), "tags[0].interval: Input should be greater than or equal to 1"),
        (tag(deadband=-1), "tags[0].deadband: Input should be greater than or equal to 0"),
        (tag(thing="press/1"), "tags[0].thing: 'press/1' is invalid: it must be a Ditto thing"),
        (tag(property="temp+x"), "tags[0].property: 'temp+x' is invalid: it must be letters"),
    ],
)
def test_a_bad_tag_is_refused_naming_the_field(bad_tag: dict[str, Any], expected: str) -> None:
    assert expected in error_of(config_with([bad_tag]))


def test_duplicate_tags_and_targets_are_refused() -> None:
    message = error_of(config_with([tag(), tag(), tag(name="t2")]))
    assert "tags[1] (t1).name: also used by tags[0]" in message
    assert "tags[2] (t2).property: press-1/temperature is fed by tag t1 already" in message


def test_every_problem_is_reported_at_once() -> None:
    message = error_of(
        config_with(
            [
                tag(type="int17"),
                tag(name="t2", property="b", address="holding:99999"),
            ]
        )
    )
    assert "tags[0] (t1).type" in message and "tags[1] (t2).address" in message


def test_a_float64_cannot_fit_a_device_reading_two_registers_at_a_time() -> None:
    document = config_with([tag(type="float64")])
    document["connections"][0]["modbusTcp"]["maxRegistersPerRead"] = 2
    assert "a float64 needs 4 registers but connection plc-modbus reads at most 2" in (
        error_of(document)
    )


@pytest.mark.parametrize(
    ("connection", "expected"),
    [
        ({"name": "x"}, "exactly one of modbusTcp, opcua and s7 (found: none)"),
        (
            {"name": "x", "modbusTcp": {"host": "a"}, "s7": {"host": "a", "rack": 0, "slot": 1}},
            "(found: modbusTcp, s7)",
        ),
        (
            {
                "name": "x",
                "opcua": {"endpoint": "opc.tcp://h:4840", "securityPolicy": "Basic256Sha256"},
            },
            "securityPolicy and securityMode must both be None or both be set",
        ),
        (
            {
                "name": "x",
                "opcua": {
                    "endpoint": "opc.tcp://h:4840",
                    "securityPolicy": "Basic256Sha256",
                    "securityMode": "SignAndEncrypt",
                },
            },
            "securityPolicy Basic256Sha256 needs certificateFile and privateKeyFile",
        ),
        (
            {"name": "x", "opcua": {"endpoint": "opc.tcp://h:4840", "usernameFile": "/u"}},
            "usernameFile and passwordFile go together",
        ),
        (
            {"name": "x", "opcua": {"endpoint": "http://h"}},
            "endpoint: 'http://h' is invalid: it must be an opc.tcp:// URL",
        ),
        (
            {"name": "x", "opcua": {"endpoint": "opc.tcp://h", "password": "s3cret"}},
            "password: Extra inputs are not permitted",
        ),
        ({"name": "x", "s7": {"host": "a", "rack": 0}}, "s7.slot: Field required"),
        (
            {"name": "x", "modbusTcp": {"host": "a", "maxRegistersPerRead": 126}},
            "maxRegistersPerRead: Input should be less than or equal to 125",
        ),
        (
            {"name": "X_1", "modbusTcp": {"host": "a"}},
            "connections[0].name: 'X_1' is invalid: it must be a DNS label",
        ),
        (
            {"name": "x", "modbusTcp": {"host": "a\nlistener 1"}},
            "modbusTcp.host: 'a\\nlistener 1' is invalid: it must be a host name",
        ),
    ],
)
def test_a_bad_connection_is_refused_naming_the_field(
    connection: dict[str, Any], expected: str
) -> None:
    assert expected in error_of(config_with([], connections=[connection]))


def test_duplicate_connection_names_are_refused() -> None:
    document = config_with([])
    document["connections"].append({"name": "plc-modbus", "modbusTcp": {"host": "b"}})
    assert "connections[3]: name 'plc-modbus' is used twice" in error_of(document)


def test_types_are_case_insensitive_and_published_json_types_follow_scaling() -> None:
    config = parse(
        config_with(
            [
                tag(type="INT16"),
                tag(name="t2", property="p2", scale={"factor": 0.1}),
                tag(name="t3", property="p3", scale={"factor": 10, "offset": -5}),
                tag(name="t4", property="p4", address="coil:1", type="Bool"),
                tag(name="t5", property="p5", connection="plc-opcua", address="i=2258", type=None),
                tag(name="t6", property="p6", connection="plc-s7", address="DB2.8", type="lreal"),
            ]
        )
    )
    types = [config.published_json_type(t) for t in config.tags]
    assert types == ["integer", "number", "integer", "boolean", None, "number"]


def test_secrets_are_paths_and_unknown_fields_are_refused() -> None:
    assert "mqtt.password: Extra inputs are not permitted" in error_of(
        config_with([], mqtt={**BASE["mqtt"], "password": "x"})
    )
    assert "twinNamespace: 'line-1' is invalid: it must be a Ditto namespace" in error_of(
        config_with([], twinNamespace="line-1")
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"x: " + b"[" * 1000 + b"]" * 1000, "the document is nested too deeply"),
        (b"[" * 5000 + b"]" * 5000, "the document is nested too deeply"),
        (b"a: &a [1, 2]\nb: *a\n", "aliases (*name) are not allowed in a config"),
    ],
)
def test_hostile_documents_are_refused_as_config_errors(raw: bytes, expected: str) -> None:
    # before: a RecursionError (a 500 on push) and alias expansion without bound
    with pytest.raises(ConfigError) as refused:
        parse_config(GatewayConfig, raw)
    assert expected in str(refused.value)
