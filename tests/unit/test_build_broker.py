"""Broker builders: golden files of what `spine render` prints, and the properties that matter.

Golden files: set SPINE_UPDATE_GOLDEN=1 to rewrite them after an intended change, then review
the diff like any other code change.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from spine_operator.api.spine import SpineSpec
from spine_operator.desired import broker
from spine_operator.environment import Environment
from spine_operator.render import dump_yaml, load_resources, render

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
ENV = Environment.cluster()
DIGESTS = broker.SecretDigests(admin="a1", tls=None)


@pytest.mark.parametrize("example", ["spine.yaml", "spine-tuned.yaml"])
def test_rendered_objects_match_golden_files(example) -> None:
    rendered = dump_yaml(render(load_resources([ROOT / "examples" / example]), ENV))
    golden = GOLDEN / example
    if os.environ.get("SPINE_UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert rendered == golden.read_text(), f"run with SPINE_UPDATE_GOLDEN=1 and review {golden}"


def build(spec: dict | None = None, digests=DIGESTS) -> broker.BrokerObjects:
    return broker.build_broker(
        SpineSpec.model_validate(spec or {}).broker, ENV, "plant-a", "default", digests
    )


def test_broker_pod_is_locked_down() -> None:
    pod = build().statefulset["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in pod["initContainers"] + pod["containers"]:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert container["resources"]["limits"] and container["resources"]["requests"]
    mosquitto = pod["containers"][0]
    assert mosquitto["image"].startswith("eclipse-mosquitto:2.0.")
    assert mosquitto["readinessProbe"]["tcpSocket"] and mosquitto["livenessProbe"]["tcpSocket"]


def test_broker_is_a_one_replica_statefulset_with_a_kept_pvc() -> None:
    sts = build().statefulset["spec"]
    assert sts["replicas"] == 1
    assert sts["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    claim = sts["volumeClaimTemplates"][0]["spec"]
    assert claim["resources"]["requests"]["storage"] == "1Gi" and "storageClassName" not in claim
    deleting = build(
        {"broker": {"persistence": {"retainOnDelete": False, "storageClassName": "fast"}}}
    ).statefulset
    assert deleting["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"
    assert deleting["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "fast"


def checksum(objects: broker.BrokerObjects) -> str:
    return objects.statefulset["spec"]["template"]["metadata"]["annotations"][
        "spine.iiot.dev/config-checksum"
    ]


def test_checksum_follows_config_and_secrets_only() -> None:
    base = checksum(build())
    assert checksum(build()) == base
    assert checksum(build({"broker": {"autosaveInterval": 30}})) != base
    assert checksum(build(digests=broker.SecretDigests(admin="a2"))) != base
    # resources change the pod spec itself, not the checksum
    assert checksum(build({"broker": {"resources": {"limits": {"memory": "1Gi"}}}})) == base


def test_tls_adds_a_listener_a_port_and_a_volume() -> None:
    objects = build({"broker": {"tls": {"secretName": "broker-tls"}}})
    conf = objects.config_map["data"]["mosquitto.conf"]
    assert "listener 8883\n" in conf and "certfile /mosquitto/certs/tls.crt" in conf
    assert [p["port"] for p in objects.services[0]["spec"]["ports"]] == [1883, 8883]
    assert objects.services[1]["spec"]["clusterIP"] == "None"


def test_config_has_no_anonymous_access_and_large_queues() -> None:
    conf = build().config_map["data"]["mosquitto.conf"]
    lines = conf.splitlines()
    assert "allow_anonymous false" in lines and "per_listener_settings false" in lines
    assert "max_queued_messages 100000" in lines
    assert "plugin /usr/lib/mosquitto_dynamic_security.so" in lines


def test_local_environment_changes_paths_and_addresses_only(tmp_path) -> None:
    local = Environment.for_local(tmp_path, broker_port=18831)
    spec = SpineSpec().broker
    cluster_conf = broker.render_mosquitto_conf(spec, ENV, "plant-a", "default")
    local_conf = broker.render_mosquitto_conf(spec, local, "plant-a", "default")
    assert "listener 18831 127.0.0.1" in local_conf
    differing = set(cluster_conf.splitlines()) ^ set(local_conf.splitlines())
    assert all(
        line.split()[0] in {"plugin", "plugin_opt_config_file", "persistence_location", "listener"}
        for line in differing
    )


def test_existing_claim_templates_are_kept() -> None:
    desired = build({"broker": {"persistence": {"size": "5Gi"}}}).statefulset
    existing = build().statefulset
    kept = broker.keep_claim_templates(desired, existing)
    assert (
        kept["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "1Gi"
    )
    assert broker.keep_claim_templates(desired, None) is desired
