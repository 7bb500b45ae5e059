"""Gateway builders: the golden file of what `spine render` prints, and the properties that matter
(what rolls the pod and what is pushed, a locked-down pod, Secrets as files, placement, storage).

Golden files: set SPINE_UPDATE_GOLDEN=1 to rewrite them after an intended change, then review
the diff like any other code change.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from spine_operator.api.gateway import GatewaySpec
from spine_operator.api.twinmodel import TwinModelSpec
from spine_operator.desired import gateway as gateway_build
from spine_operator.desired.workload import pod_checksum as workload_checksum
from spine_operator.environment import Environment
from spine_operator.render import RenderError, dump_yaml, load_resources, render
from spine_runtime.common.configsource import describe_validation_error
from spine_runtime.gateway.app import RESTART_FIELDS
from tests.support.crd_schema import validate_against_crd

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
PRESS_LINE = ROOT / "examples" / "press-line"
ENV = Environment.cluster()
DIGESTS = ("login", "token")


def example() -> dict[str, Any]:
    return yaml.safe_load((PRESS_LINE / "gateway.yaml").read_text())


def spec(**changes: Any) -> GatewaySpec:
    raw = example()["spec"]
    raw.update(changes)
    return GatewaySpec.model_validate(raw)


def build(gateway: GatewaySpec | None = None, env: Environment = ENV, digests=DIGESTS):
    gateway = gateway or spec()
    config = gateway_build.gateway_config(gateway, env, "plant-a", "press-line-1", "plant_a")
    return gateway_build.build_gateway(gateway, env, "plant-a", "press-line-1", config, digests)


def pod_checksum(objects: gateway_build.GatewayObjects) -> str | None:
    return workload_checksum(objects.statefulset)


def test_rendered_objects_match_the_golden_file() -> None:
    resources = load_resources([PRESS_LINE / "gateway.yaml", PRESS_LINE / "twinmodel.yaml"])
    rendered = dump_yaml(render(resources, ENV))
    golden = GOLDEN / "gateway.yaml"
    if os.environ.get("SPINE_UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert rendered == golden.read_text(), f"run with SPINE_UPDATE_GOLDEN=1 and review {golden}"
    kinds = [(o["kind"], o["metadata"]["name"]) for o in yaml.safe_load_all(rendered)]
    assert kinds == [
        ("Secret", "spine-mqtt-gateway-press-line-1"),
        ("Secret", "spine-gateway-press-line-1-admin"),
        ("ConfigMap", "spine-gateway-press-line-1-config"),
        ("Service", "spine-gateway-press-line-1"),
        ("StatefulSet", "spine-gateway-press-line-1"),
        ("NetworkPolicy", "spine-gateway-press-line-1"),
    ]
    assert "stringData" not in rendered.split("---")[0]  # no token before apply time


def test_rendering_the_examples_folder_includes_the_gateway() -> None:
    objects = render(load_resources([ROOT / "examples"]), ENV)
    names = [(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects]
    assert ("StatefulSet", "plant-a", "spine-gateway-press-line-1") in names
    assert len(names) == len(set(names)), "an object rendered twice"


def test_render_refuses_a_tag_its_twin_model_lacks(tmp_path) -> None:
    body = example()
    body["spec"]["tags"][1]["property"] = "oilTemperature"
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(body))
    (tmp_path / "twinmodel.yaml").write_text((PRESS_LINE / "twinmodel.yaml").read_text())
    with pytest.raises(RenderError) as caught:
        render(load_resources([tmp_path]), ENV)
    assert "Gateway/press-line-1" in str(caught.value)
    assert "TwinModel press (thing press-1) has no property oilTemperature" in str(caught.value)


def test_the_example_fits_the_crd_and_the_twin_model() -> None:
    body = example()
    validate_against_crd("Gateway", body)
    gateway = GatewaySpec.model_validate(body["spec"])
    protocols = {connection.protocol.value for connection in gateway.connections}
    assert protocols == {"modbusTcp", "opcua", "s7"}
    assert [tag.name for tag in gateway.tags if tag.writable] == ["target-speed"]
    assert any(tag.subscribe for tag in gateway.tags)
    model = yaml.safe_load((PRESS_LINE / "twinmodel.yaml").read_text())
    models = gateway_build.models_by_thing(
        [(model["metadata"]["name"], TwinModelSpec.model_validate(model["spec"]))]
    )
    config = gateway_build.gateway_config(gateway, ENV, "plant-a", "press-line-1", "plant_a")
    assert gateway_build.check_tags_against_models(config, models) == []


def test_gateway_pod_is_locked_down_and_a_singleton() -> None:
    statefulset = build().statefulset["spec"]
    assert statefulset["replicas"] == 1
    assert statefulset["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    pod = statefulset["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "hostNetwork" not in pod and "dnsPolicy" not in pod
    [container] = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["limits"] and container["resources"]["requests"]
    assert container["command"][-1] == "/etc/spine/gateway.json"
    [claim] = statefulset["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts["buffer"] == "/var/lib/spine/gateway"


def test_placement_settings_reach_the_pod() -> None:
    placed = spec(
        hostNetwork=True,
        nodeSelector={"spine.iiot.dev/plc-network": "line-1"},
        tolerations=[{"key": "plc", "operator": "Exists", "effect": "NoSchedule"}],
        image="registry.local/spine:0.1.0",
        resources={"limits": {"memory": "1Gi"}},
    )
    pod = build(placed).statefulset["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"  # or the broker's name does not resolve
    assert pod["nodeSelector"] == {"spine.iiot.dev/plc-network": "line-1"}
    assert pod["tolerations"] == [{"key": "plc", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["containers"][0]["image"] == "registry.local/spine:0.1.0"
    assert pod["containers"][0]["resources"] == {"limits": {"memory": "1Gi"}}


def test_an_empty_dir_buffer_and_a_deleted_pvc() -> None:
    on_empty_dir = build(spec(buffer={"storage": {"type": "emptyDir", "size": "512Mi"}}))
    statefulset = on_empty_dir.statefulset["spec"]
    assert "volumeClaimTemplates" not in statefulset
    volume = next(v for v in statefulset["template"]["spec"]["volumes"] if v["name"] == "buffer")
    assert volume == {"name": "buffer", "emptyDir": {"sizeLimit": "512Mi"}}
    deleting = build(
        spec(buffer={"storage": {"retainOnDelete": False, "storageClassName": "local-path"}})
    ).statefulset["spec"]
    assert deleting["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"
    assert deleting["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "local-path"


def test_tags_and_publish_settings_do_not_roll_the_pod_but_connections_and_secrets_do() -> None:
    base = pod_checksum(build())
    tags = copy.deepcopy(example()["spec"]["tags"])
    tags[1]["deadband"] = 0.5
    assert pod_checksum(build(spec(tags=tags[:2]))) == base
    assert pod_checksum(build(spec(tags=tags))) == base
    assert pod_checksum(build(spec(publish={"heartbeatSeconds": 5}))) == base
    connections = copy.deepcopy(example()["spec"]["connections"])
    connections[0]["modbusTcp"]["timeout"] = 3
    assert pod_checksum(build(spec(connections=connections))) != base
    assert pod_checksum(build(spec(buffer={"fsync": True}))) != base
    assert pod_checksum(build(digests=("login", "rotated"))) != base


def test_what_is_pushed_is_what_the_running_gateway_applies_without_a_restart() -> None:
    """The runtime refuses a push that changes one of its RESTART_FIELDS; the operator pushes
    only when the checksum stays, so none of those may be outside the checksum."""
    camel = {"name", "twinNamespace", "mqtt", "http", "buffer"}
    assert {field.replace("_n", "N") for field in RESTART_FIELDS} == camel
    assert not camel & gateway_build.LIVE_FIELDS


def test_the_config_has_secret_paths_only_and_follows_the_environment(tmp_path) -> None:
    gateway = spec()
    opcua = gateway.connections[1].opcua
    assert opcua is not None
    opcua.credentials_secret_name = "ua-login"
    opcua.server_certificate_secret_name = "ua-server"
    config = gateway_build.gateway_config(gateway, ENV, "plant-a", "press-line-1", "plant_a")
    wire = config.to_wire()
    assert wire["mqtt"] == {
        "host": "spine-broker.plant-a.svc",
        "port": 1883,
        "username": "gateway-press-line-1",
        "passwordFile": "/var/run/spine/mqtt/password",
        "clientId": "gateway-press-line-1",
    }
    assert wire["http"]["adminTokenFile"] == "/var/run/spine/admin/token"
    assert wire["buffer"]["path"] == "/var/lib/spine/gateway"
    assert wire["connections"][1]["opcua"] == {
        "endpoint": "opc.tcp://press-1-plc.plant-a.svc:4840",
        "securityPolicy": "None",
        "securityMode": "None",
        "timeout": 4.0,
        "usernameFile": "/var/run/spine/opcua/plc-opcua/login/username",
        "passwordFile": "/var/run/spine/opcua/plc-opcua/login/password",
        "serverCertificateFile": "/var/run/spine/opcua/plc-opcua/server/ca.crt",
    }
    pod = build(gateway).statefulset["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["opcua-1-login"]["secret"]["items"] == [
        {"key": "username", "path": "username"},
        {"key": "password", "path": "password"},
    ]
    assert volumes["opcua-1-server"]["secret"] == {
        "secretName": "ua-server",
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
        "defaultMode": 0o440,
    }
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["opcua-1-login"] == "/var/run/spine/opcua/plc-opcua/login"
    user_secrets = gateway_build.user_secret_mounts(gateway, ENV, "press-line-1")
    assert [(m.secret_name, m.field) for m in user_secrets] == [
        ("ua-login", "spec.connections[1].opcua.credentialsSecretName"),
        ("ua-server", "spec.connections[1].opcua.serverCertificateSecretName"),
    ]

    local = Environment.for_local(tmp_path, broker_port=18831, gateway_port=18082)
    local_wire = gateway_build.gateway_config(
        gateway, local, "plant-a", "press-line-1", "plant_a"
    ).to_wire()
    assert local_wire["mqtt"]["host"] == "127.0.0.1" and local_wire["mqtt"]["port"] == 18831
    assert local_wire["http"] == {
        "host": "127.0.0.1",
        "port": 18082,
        "adminTokenFile": f"{tmp_path}/gateways/secrets/press-line-1/admin/token",
    }
    assert local_wire["buffer"]["path"] == f"{tmp_path}/gateways/data/press-line-1"
    assert local.gateway_url("plant-a", "press-line-1") == "http://127.0.0.1:18082"
    assert ENV.gateway_url("plant-a", "x") == "http://spine-gateway-x.plant-a.svc:8080"
    # What a local runner writes, and where: the very paths the config names.
    mounts_by_volume = {m.volume: m for m in gateway_build.secret_mounts(gateway, local, "x")}
    assert mounts_by_volume["mqtt"].directory == f"{tmp_path}/gateways/secrets/x/mqtt"
    assert mounts_by_volume["mqtt"].keys == ("password",)


def test_no_value_a_user_writes_can_add_a_line_to_the_config() -> None:
    hostile = example()
    hostile["spec"]["tags"][0]["address"] = "holding:0\nmqtt: {host: evil}"
    with pytest.raises(ValidationError):
        GatewaySpec.model_validate(hostile["spec"])
    with pytest.raises(jsonschema.ValidationError):
        validate_against_crd("Gateway", hostile)
    document = gateway_build.config_document(build_config(spec()))
    assert len(document.splitlines()) == len(
        json.dumps(json.loads(document), indent=1).splitlines()
    )


def build_config(gateway: GatewaySpec):
    return gateway_build.gateway_config(gateway, ENV, "plant-a", "press-line-1", "plant_a")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {
                "connections": [
                    {
                        "name": "plc",
                        "modbusTcp": {"host": "a"},
                        "s7": {"host": "b", "rack": 0, "slot": 1},
                    }
                ]
            },
            "spec.connections[0]: a connection needs exactly one of modbusTcp, opcua and s7 "
            "(found: modbusTcp, s7)",
        ),
        (
            {"thing": None},
            "spec.tags: tags[0] (target-speed).thing: name the tag's thing, or set spec.thing",
        ),
        (
            {"connections": [{"name": "plc-modbus", "modbusTcp": {"host": "a"}}]},
            "spec.tags: tags[4] (pressure).connection: 'plc-opcua' is not a connection",
        ),
        (
            {
                "connections": [
                    {
                        "name": "plc-modbus",
                        "opcua": {
                            "endpoint": "opc.tcp://a:4840",
                            "securityPolicy": "Basic256Sha256",
                            "securityMode": "SignAndEncrypt",
                        },
                    }
                ],
                "tags": [],
            },
            "spec.connections[0].opcua: securityPolicy Basic256Sha256 needs certificateSecretName",
        ),
        (
            {"buffer": {"maxBytes": 2_000_000_000}},
            "spec.buffer: maxBytes (2000000000) is larger than storage.size (1Gi)",
        ),
        ({"nodeSelector": {"bad key!": "x"}}, "spec.nodeSelector: 'bad key!' is not a label key"),
        ({"connections": []}, "spec.connections: List should have at least 1 item"),
    ],
)
def test_spec_errors_name_the_field_and_the_fix(change, expected) -> None:
    raw = example()["spec"]
    raw.update(change)
    raw = {key: value for key, value in raw.items() if value is not None}
    with pytest.raises(ValidationError) as caught:
        GatewaySpec.model_validate(raw)
    assert expected in describe_validation_error(caught.value, "spec")


@pytest.mark.parametrize(
    "connection",
    [
        {"name": "plc", "modbusTcp": {"host": "a"}, "s7": {"host": "b", "rack": 0, "slot": 1}},
        {"name": "plc"},
        {"name": "plc", "modbusTcp": {"host": "a b"}},
        {"name": "plc", "opcua": {"endpoint": "http://a"}},
    ],
)
def test_the_crd_refuses_a_connection_without_exactly_one_valid_protocol(connection) -> None:
    body = example()
    body["spec"]["connections"] = [connection]
    body["spec"]["tags"] = []
    with pytest.raises(jsonschema.ValidationError):
        validate_against_crd("Gateway", body)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("press-line-1", False),
        ("a" * 38, False),
        ("a" * 39, True),
        ("press.line", True),  # a DNS subdomain is a valid object name, not a Service name
    ],
)
def test_gateway_names_must_fit_their_children(name, problem) -> None:
    assert (gateway_build.gateway_name_problem(name) is not None) is problem


def test_a_config_too_large_for_a_config_map_is_refused() -> None:
    long_node_id = "ns=2;s=Line1.Press1." + "Segment." * 40
    tag = {"connection": "plc-opcua", "property": "p", "address": long_node_id}
    many = spec(
        tags=[{**tag, "name": f"t{index}", "thing": f"thing-{index}"} for index in range(4000)]
    )
    problem = gateway_build.config_size_problem(build_config(many))
    assert problem is not None and "split the tags over two Gateways" in problem
    assert gateway_build.config_size_problem(build_config(spec())) is None


def existing(objects: gateway_build.GatewayObjects) -> dict[str, Any]:
    return copy.deepcopy(objects.statefulset)


def test_the_buffer_volume_of_an_existing_statefulset_is_kept() -> None:
    on_pvc = build()
    on_empty_dir = build(spec(buffer={"storage": {"type": "emptyDir"}}))
    kept, problem = gateway_build.keep_buffer_storage(on_pvc.statefulset, None)
    assert kept is on_pvc.statefulset and problem is None

    kept, problem = gateway_build.keep_buffer_storage(on_empty_dir.statefulset, existing(on_pvc))
    assert kept["spec"]["volumeClaimTemplates"] == existing(on_pvc)["spec"]["volumeClaimTemplates"]
    names = [v["name"] for v in kept["spec"]["template"]["spec"]["volumes"]]
    assert "buffer" not in names  # the claim provides it
    assert problem is not None and "stays on its PVC" in problem

    kept, problem = gateway_build.keep_buffer_storage(on_pvc.statefulset, existing(on_empty_dir))
    assert "volumeClaimTemplates" not in kept["spec"]
    assert any(
        v.get("emptyDir")
        for v in kept["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "buffer"
    )
    assert problem is not None and "stays on an emptyDir" in problem

    other_class = build(spec(buffer={"storage": {"storageClassName": "fast"}}))
    kept, problem = gateway_build.keep_buffer_storage(other_class.statefulset, existing(on_pvc))
    assert "storageClassName" not in kept["spec"]["volumeClaimTemplates"][0]["spec"]
    assert problem is not None and "keeps storage class (cluster default)" in problem

    larger = build(spec(buffer={"storage": {"size": "5Gi"}}))
    kept, problem = gateway_build.keep_buffer_storage(larger.statefulset, existing(on_pvc))
    claim = kept["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["resources"]["requests"]["storage"] == "1Gi" and problem is None


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {
            "hostNetwork": True,
            "nodeSelector": {"kubernetes.io/hostname": "edge-1"},
            "tolerations": [
                {"key": "plc", "operator": "Equal", "value": "a", "effect": "NoSchedule"}
            ],
            "buffer": {"storage": {"type": "emptyDir", "size": "512Mi"}},
        },
    ],
    ids=["default", "placed-on-empty-dir"],
)
def test_every_rendered_object_is_valid_kubernetes(changes) -> None:
    """Strict schema validation (unknown fields fail), as an API server would check them."""
    import kubernetes_validate

    gateway = spec(**changes)
    objects = [
        gateway_build.build_admin_token_secret("plant-a", "press-line-1", "token"),
        *build(gateway).all(),
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, "1.30", strict=True)
