"""The Gateway kind through the real kopf runtime against the emulated API server: tags checked
against TwinModels, the workload applied, what rolls the pod, and runtime status from /status.

No controllers run under the emulator: a test that wants the gateway pod ready marks the
StatefulSet ready as its controller would. The last test runs a real gateway process (real
mosquitto, the press simulator as its PLC) and lets the operator's poller read its /status.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from spine_operator import poller
from spine_operator.api.kinds import API_VERSION
from spine_operator.context import CONTEXT
from spine_operator.desired.common import secret_values
from spine_operator.k8s import Kubernetes
from tests.integration.test_spine_operator import STS, mark_statefulset_ready, spine, stored
from tests.integration.test_twinmodel_operator import press_model
from tests.support.crd_schema import validate_against_crd
from tests.support.gateway import modbus_connection, start_gateway
from tests.support.processes import eventually
from tests.support.sim import start_sim

pytestmark = pytest.mark.integration

GATEWAYS = "spine.iiot.dev/v1alpha1/gateways"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "press-line" / "gateway.yaml"
CHECKSUM = "spine.iiot.dev/config-checksum"
NAMESPACE = "plant-a"


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """The poller reads its interval when the operator starts (before each test body)."""
    monkeypatch.setattr(poller.SETTINGS, "interval", 0.2)


def example_gateway(name: str = "press-line-1", **spec_changes: Any) -> dict:
    body = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"] = {"name": name, "namespace": NAMESPACE}
    body["spec"].update(spec_changes)
    return body


def modbus_gateway(name: str, *tags: dict) -> dict:
    """A small Gateway: one Modbus connection, the given tags on press-1."""
    return example_gateway(
        name,
        connections=[{"name": "plc", "modbusTcp": {"host": "10.20.0.5"}}],
        tags=[{"connection": "plc", **tag} for tag in tags],
    )


def condition(cluster, name: str, type_: str = "Ready") -> dict:
    status = stored(cluster, GATEWAYS, NAMESPACE, name)["status"]
    return next(item for item in status["conditions"] if item["type"] == type_)


def pod_checksum(cluster, name: str) -> str:
    statefulset = stored(cluster, STS, NAMESPACE, f"spine-gateway-{name}")
    return statefulset["spec"]["template"]["metadata"]["annotations"][CHECKSUM]


def gateway_config(cluster, name: str) -> dict:
    config_map = stored(cluster, "v1/configmaps", NAMESPACE, f"spine-gateway-{name}-config")
    return json.loads(config_map["data"]["gateway.json"])


async def spine_with_broker_login(cluster, k8s: Kubernetes) -> None:
    """A Spine whose broker admin Secret exists, so a gateway's login can be declared."""
    await k8s.create(spine(NAMESPACE))
    await eventually(
        lambda: stored(cluster, "v1/secrets", NAMESPACE, "spine-broker-admin"),
        10,
        "the broker admin Secret",
    )


async def patch_gateway(k8s: Kubernetes, name: str, spec: dict) -> None:
    await k8s.patch_merge(API_VERSION, "Gateway", NAMESPACE, name, {"spec": spec})


async def test_gateway_waits_for_its_twin_model_then_applies_its_workload(
    cluster, operator
) -> None:
    k8s = Kubernetes()
    await spine_with_broker_login(cluster, k8s)
    CONTEXT.retry_delay = 60  # only the TwinModel's event can bring the gateway on in time
    await k8s.create(example_gateway())
    await eventually(
        lambda: condition(cluster, "press-line-1")["reason"] == "DependencyNotFound",
        10,
        "DependencyNotFound",
    )
    message = condition(cluster, "press-line-1")["message"]
    assert (
        "thing press-1 (tags target-speed, temperature, cycle-count and 3 more) is in no "
        "TwinModel of the namespace" in message
    )
    with pytest.raises(KeyError):
        stored(cluster, STS, NAMESPACE, "spine-gateway-press-line-1")

    await k8s.create(press_model())
    await eventually(
        lambda: condition(cluster, "press-line-1")["reason"] == "Progressing",
        10,
        "the gateway applied once its TwinModel exists",
    )
    gateway = stored(cluster, GATEWAYS, NAMESPACE, "press-line-1")
    for resource, child in [
        (STS, "spine-gateway-press-line-1"),
        ("v1/services", "spine-gateway-press-line-1"),
        ("v1/configmaps", "spine-gateway-press-line-1-config"),
        ("v1/secrets", "spine-gateway-press-line-1-admin"),
        ("v1/secrets", "spine-mqtt-gateway-press-line-1"),
    ]:
        refs = stored(cluster, resource, NAMESPACE, child)["metadata"]["ownerReferences"]
        assert [(r["kind"], r["name"], r["uid"], r["controller"]) for r in refs] == [
            ("Gateway", "press-line-1", gateway["metadata"]["uid"], True)
        ], child
    applies = [
        request
        for request in list(cluster)
        if request.method == "PATCH"
        and request.name == "spine-gateway-press-line-1"
        and request.headers.get("Content-Type", "").startswith("application/apply-patch")
    ]
    assert applies and all(r.params.get("fieldManager") == "spine-operator" for r in applies)

    config = gateway_config(cluster, "press-line-1")
    assert config["twinNamespace"] == "plant_a"
    assert config["mqtt"]["host"] == "spine-broker.plant-a.svc"
    assert config["mqtt"]["username"] == "gateway-press-line-1"
    assert {tag["thing"] for tag in config["tags"]} == {"press-1"}
    assert [c["name"] for c in config["connections"]] == ["plc-modbus", "plc-opcua", "plc-s7"]
    text = json.dumps(config) + json.dumps(gateway.get("status"))
    for secret, key in [
        ("spine-gateway-press-line-1-admin", "token"),
        ("spine-mqtt-gateway-press-line-1", "password"),
    ]:
        value = secret_values(stored(cluster, "v1/secrets", NAMESPACE, secret))[key]
        assert len(value) >= 32 and value not in text, f"{secret} leaks into ConfigMap or status"
    assert condition(cluster, "press-line-1", "Connected")["status"] == "Unknown"

    await mark_statefulset_ready(k8s, cluster, NAMESPACE, "spine-gateway-press-line-1")
    await eventually(
        lambda: condition(cluster, "press-line-1")["status"] == "True", 10, "Ready=True"
    )
    ready = condition(cluster, "press-line-1")
    assert ready["reason"] == "Reconciled" and "3 connections and 6 tags" in ready["message"]
    assert stored(cluster, GATEWAYS, NAMESPACE, "press-line-1")["status"]["observedGeneration"]


async def test_tags_that_do_not_fit_the_model_are_refused_while_others_are_applied(
    cluster, operator
) -> None:
    k8s = Kubernetes()
    await spine_with_broker_login(cluster, k8s)
    await k8s.create(press_model())
    bad = {
        "no-such-property": (
            {"name": "oil", "property": "oilLevel", "address": "holding:2", "type": "float32"},
            "tag oil: TwinModel press (thing press-1) has no property oilLevel",
        ),
        "writable-read-only": (
            {
                "name": "temp",
                "property": "temperature",
                "address": "holding:2",
                "type": "float32",
                "writable": True,
            },
            "tag temp is writable but property temperature of TwinModel press is readOnly",
        ),
        "bool-as-number": (
            {"name": "press", "property": "pressure", "address": "coil:0", "type": "bool"},
            "tag press publishes boolean values (bool) but property pressure of TwinModel press "
            "has type number",
        ),
    }
    for name, (tag, _) in bad.items():
        body = modbus_gateway(name, tag)
        validate_against_crd("Gateway", body)  # the API server accepts each of them
        await k8s.create(body)
    speed = {
        "name": "speed",
        "property": "targetSpeed",
        "address": "holding:0",
        "type": "uint16",
        "writable": True,
    }
    await k8s.create(modbus_gateway("good", speed))
    for name, (_, expected) in bad.items():
        await eventually(
            lambda name=name: condition(cluster, name)["reason"] == "InvalidReference",
            10,
            f"InvalidReference of {name}",
        )
        assert expected in condition(cluster, name)["message"]
        with pytest.raises(KeyError):
            stored(cluster, STS, NAMESPACE, f"spine-gateway-{name}")
    await eventually(
        lambda: condition(cluster, "good")["reason"] == "Progressing", 10, "the valid gateway"
    )
    assert stored(cluster, STS, NAMESPACE, "spine-gateway-good")

    # Re-checked when the model changes: targetSpeed becomes readOnly.
    await k8s.patch_merge(
        API_VERSION,
        "TwinModel",
        NAMESPACE,
        "press",
        {"spec": {"properties": {"targetSpeed": {"readOnly": True}}}},
    )
    await eventually(
        lambda: condition(cluster, "good")["reason"] == "InvalidReference",
        10,
        "the valid gateway refused after the model changed",
    )
    assert "tag speed is writable but property targetSpeed" in condition(cluster, "good")["message"]


async def test_a_property_has_one_source_and_the_first_gateway_keeps_it(cluster, operator) -> None:
    k8s = Kubernetes()
    await spine_with_broker_login(cluster, k8s)
    await k8s.create(press_model())
    speed = {"name": "speed", "property": "targetSpeed", "address": "holding:0", "type": "uint16"}
    await k8s.create(modbus_gateway("line-a", speed))
    await eventually(
        lambda: condition(cluster, "line-a")["reason"] == "Progressing", 10, "line-a applied"
    )
    await k8s.create(modbus_gateway("line-b", {**speed, "name": "set-point"}))
    await eventually(
        lambda: condition(cluster, "line-b")["reason"] == "InvalidReference",
        10,
        "line-b refused",
    )
    assert (
        "Tag set-point feeds press-1/targetSpeed, which tag speed of Gateway line-a already feeds"
        in condition(cluster, "line-b")["message"]
    )
    with pytest.raises(KeyError):
        stored(cluster, STS, NAMESPACE, "spine-gateway-line-b")
    assert condition(cluster, "line-a")["reason"] == "Progressing"

    # When line-a lets go of the property, line-b is checked again and applied.
    temperature = {
        "name": "speed",
        "connection": "plc",
        "property": "temperature",
        "address": "holding:2",
        "type": "float32",
    }
    await patch_gateway(k8s, "line-a", {"tags": [temperature]})
    await eventually(
        lambda: condition(cluster, "line-b")["reason"] == "Progressing", 10, "line-b applied"
    )
    assert stored(cluster, STS, NAMESPACE, "spine-gateway-line-b")


async def test_invalid_spec_and_name_are_refused_with_the_field_to_fix(cluster, operator) -> None:
    k8s = Kubernetes()
    await spine_with_broker_login(cluster, k8s)
    await k8s.create(press_model())
    body = modbus_gateway(
        "bad-address",
        {"name": "speed", "property": "targetSpeed", "address": "holding:70000", "type": "uint16"},
    )
    validate_against_crd("Gateway", body)  # the schema cannot know Modbus offsets
    await k8s.create(body)
    long_name = "a-gateway-name-longer-than-its-children-allow"
    body = modbus_gateway(
        long_name,
        {"name": "speed", "property": "targetSpeed", "address": "holding:0", "type": "uint16"},
    )
    await k8s.create(body)
    await eventually(
        lambda: condition(cluster, "bad-address")["reason"] == "InvalidSpec", 10, "InvalidSpec"
    )
    message = condition(cluster, "bad-address")["message"]
    assert message.startswith("Invalid spec: spec.tags: tags[0] (speed).address:")
    assert "65535" in message
    await eventually(
        lambda: condition(cluster, long_name)["reason"] == "InvalidSpec", 10, "InvalidSpec (name)"
    )
    assert "at most 38 characters" in condition(cluster, long_name)["message"]


async def test_a_tag_change_is_pushed_and_a_connection_change_rolls_the_pod(
    cluster, operator
) -> None:
    k8s = Kubernetes()
    await spine_with_broker_login(cluster, k8s)
    await k8s.create(press_model())
    await k8s.create(example_gateway())
    await eventually(
        lambda: stored(cluster, STS, NAMESPACE, "spine-gateway-press-line-1"), 10, "the StatefulSet"
    )
    await mark_statefulset_ready(k8s, cluster, NAMESPACE, "spine-gateway-press-line-1")
    await eventually(lambda: condition(cluster, "press-line-1")["status"] == "True", 10, "Ready")
    before = pod_checksum(cluster, "press-line-1")

    tags = copy.deepcopy(example_gateway()["spec"]["tags"])
    tags[1]["deadband"] = 0.5
    await patch_gateway(k8s, "press-line-1", {"tags": tags, "publish": {"heartbeatSeconds": 30}})
    await eventually(
        lambda: gateway_config(cluster, "press-line-1")["tags"][1]["deadband"] == 0.5,
        10,
        "the new deadband in the ConfigMap",
    )
    await eventually(
        lambda: "config push not delivered" in condition(cluster, "press-line-1")["message"],
        10,
        "the push attempted (no gateway answers under the emulator)",
    )
    assert pod_checksum(cluster, "press-line-1") == before
    assert condition(cluster, "press-line-1")["status"] == "True"  # the pod was not rolled

    connections = copy.deepcopy(example_gateway()["spec"]["connections"])
    connections[0]["modbusTcp"]["timeout"] = 3
    await patch_gateway(k8s, "press-line-1", {"connections": connections})
    await eventually(
        lambda: pod_checksum(cluster, "press-line-1") != before, 10, "a new pod checksum"
    )
    await eventually(
        lambda: condition(cluster, "press-line-1")["reason"] == "Progressing",
        10,
        "Progressing while the pod rolls",
    )


async def test_a_referenced_secret_is_waited_for_checked_and_rolls_the_pod(
    cluster, operator
) -> None:
    k8s = Kubernetes()
    await spine_with_broker_login(cluster, k8s)
    await k8s.create(press_model())
    CONTEXT.retry_delay = 60  # only the Secret's events can bring the gateway on in time
    body = example_gateway()
    body["spec"]["connections"][1]["opcua"]["credentialsSecretName"] = "press-1-ua-login"
    await k8s.create(body)
    await eventually(
        lambda: condition(cluster, "press-line-1")["reason"] == "DependencyNotFound",
        10,
        "DependencyNotFound",
    )
    assert (
        "Secret press-1-ua-login (spec.connections[1].opcua.credentialsSecretName) does not exist"
        in condition(cluster, "press-line-1")["message"]
    )

    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "press-1-ua-login", "namespace": NAMESPACE},
        "type": "Opaque",
        "data": {"username": base64.b64encode(b"gateway").decode()},
    }
    await k8s.create(secret)
    await eventually(
        lambda: condition(cluster, "press-line-1")["reason"] == "InvalidReference",
        10,
        "InvalidReference (no password)",
    )
    assert "Secret press-1-ua-login lacks password" in condition(cluster, "press-line-1")["message"]

    password = {"password": base64.b64encode(b"first").decode()}
    await k8s.patch_merge("v1", "Secret", NAMESPACE, "press-1-ua-login", {"data": password})
    await eventually(
        lambda: condition(cluster, "press-line-1")["reason"] == "Progressing", 10, "applied"
    )
    opcua = gateway_config(cluster, "press-line-1")["connections"][1]["opcua"]
    assert opcua["usernameFile"] == "/var/run/spine/opcua/plc-opcua/login/username"
    assert opcua["passwordFile"] == "/var/run/spine/opcua/plc-opcua/login/password"
    pod = stored(cluster, STS, NAMESPACE, "spine-gateway-press-line-1")["spec"]["template"]
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "opcua-1-login")
    assert volume["secret"]["secretName"] == "press-1-ua-login"
    before = pod_checksum(cluster, "press-line-1")

    password = {"password": base64.b64encode(b"rotated").decode()}
    await k8s.patch_merge("v1", "Secret", NAMESPACE, "press-1-ua-login", {"data": password})
    await eventually(lambda: pod_checksum(cluster, "press-line-1") != before, 10, "the pod rolled")


async def test_the_poller_brings_a_running_gateways_status_into_the_resource(
    cluster, operator, broker, tmp_path, monkeypatch
) -> None:
    """A real gateway process reads the press simulator over Modbus; the operator's poller
    reads its /status and writes Connected, connections, tags and buffer figures."""
    tags = [
        {"name": "speed", "property": "targetSpeed", "address": "holding:0", "type": "uint16"},
        {"name": "temp", "property": "temperature", "address": "holding:2", "type": "float32"},
    ]
    with start_sim(tmp_path, protocols=("modbus",)) as sim:
        running = await start_gateway(
            tmp_path,
            broker,
            name="press-line-1",
            connections=[modbus_connection("plc", sim.ports.modbus)],
            tags=[{"connection": "plc", "thing": "press-1", **tag} for tag in tags],
            wait=False,
        )
        try:
            await asyncio.to_thread(running.wait_ready)
            monkeypatch.setattr(
                CONTEXT,
                "environment",
                CONTEXT.environment.replace(
                    gateway_host_override="127.0.0.1", gateway_port=running.port
                ),
            )
            k8s = Kubernetes()
            await spine_with_broker_login(cluster, k8s)
            await k8s.create(press_model())
            body = modbus_gateway("press-line-1", *tags)
            await k8s.create(body)
            await eventually(
                lambda: stored(cluster, STS, NAMESPACE, "spine-gateway-press-line-1"),
                10,
                "the StatefulSet",
            )
            await mark_statefulset_ready(k8s, cluster, NAMESPACE, "spine-gateway-press-line-1")
            await eventually(
                lambda: condition(cluster, "press-line-1", "Connected")["status"] == "True",
                15,
                "Connected=True from the gateway's /status",
            )
            status = stored(cluster, GATEWAYS, NAMESPACE, "press-line-1")["status"]
            assert condition(cluster, "press-line-1", "Connected")["reason"] == "AllConnected"
            assert condition(cluster, "press-line-1", "Degraded")["status"] == "False"
            [connection] = status["connections"]
            assert connection["name"] == "plc" and connection["protocol"] == "modbusTcp"
            assert connection["state"] == "connected" and connection["lastSuccess"]
            await eventually(
                lambda: (
                    stored(cluster, GATEWAYS, NAMESPACE, "press-line-1")["status"]["tags"]["ok"]
                    == 2
                ),
                10,
                "both tags read",
            )
            status = stored(cluster, GATEWAYS, NAMESPACE, "press-line-1")["status"]
            assert status["tags"] == {"total": 2, "ok": 2, "waiting": 0, "failing": 0}
            assert isinstance(status["buffered"], int) and "publishRate" in status

            sim.stop()  # the PLC goes away
            await eventually(
                lambda: condition(cluster, "press-line-1", "Connected")["status"] == "False",
                15,
                "Connected=False once the PLC is gone",
            )
            connected = condition(cluster, "press-line-1", "Connected")
            assert connected["reason"] == "ConnectionsDown"
            assert connected["message"].startswith("Down: plc (modbusTcp) is disconnected")
        finally:
            running.stop()
    await eventually(
        lambda: condition(cluster, "press-line-1", "Degraded")["status"] == "True",
        15,
        "Degraded=True once /status cannot be read",
    )
    degraded = condition(cluster, "press-line-1", "Degraded")
    assert degraded["reason"] == "DependencyUnavailable"
    assert f"127.0.0.1:{running.port} is not reachable" in degraded["message"]
    assert condition(cluster, "press-line-1", "Connected")["status"] == "Unknown"
    # The last known figures stay, and the resource stays Ready: its pod still runs.
    assert stored(cluster, GATEWAYS, NAMESPACE, "press-line-1")["status"]["connections"]
    for result in ("ok", "unreachable"):
        polls = REGISTRY.get_sample_value(
            "spine_runtime_health_polls_total", {"kind": "Gateway", "result": result}
        )
        assert polls, f"no {result} polls counted"
