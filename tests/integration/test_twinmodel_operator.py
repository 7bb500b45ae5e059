"""The TwinModel kind through the real kopf runtime against the emulated API server: models
gathered into the Spine's twin config, refused with a reason, and waiting for a Spine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from spine_operator.api.kinds import API_VERSION
from spine_operator.desired.common import secret_values
from spine_operator.k8s import Kubernetes
from tests.integration.test_spine_operator import STS, spine, stored
from tests.support.crd_schema import validate_against_crd
from tests.support.processes import eventually

pytestmark = pytest.mark.integration

MODELS = "spine.iiot.dev/v1alpha1/twinmodels"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "press-line" / "twinmodel.yaml"


def press_model(namespace: str = "plant-a", name: str = "press", **spec_changes) -> dict:
    body = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"] = {"name": name, "namespace": namespace}
    body["spec"].update(spec_changes)
    return body


def model_ready(cluster, namespace: str, name: str) -> dict:
    status = stored(cluster, MODELS, namespace, name)["status"]
    return next(c for c in status["conditions"] if c["type"] == "Ready")


def twin_config(cluster, namespace: str = "plant-a") -> dict:
    config_map = stored(cluster, "v1/configmaps", namespace, "spine-twin-config")
    return json.loads(config_map["data"]["twin.json"])


async def test_model_waits_for_a_spine_then_reaches_the_twin_config(cluster, operator) -> None:
    k8s = Kubernetes()
    await k8s.create(press_model())
    await eventually(
        lambda: model_ready(cluster, "plant-a", "press")["reason"] == "SpineNotFound",
        10,
        "SpineNotFound",
    )
    assert "apply one (kind: Spine" in model_ready(cluster, "plant-a", "press")["message"]

    await k8s.create(spine("plant-a"))
    await eventually(
        lambda: model_ready(cluster, "plant-a", "press")["status"] == "True",
        10,
        "the model in the twin",
    )
    status = stored(cluster, MODELS, "plant-a", "press")["status"]
    assert status["things"] == 2 and status["version"] == "1.2.0"
    assert status["api"] == "http://spine-twin.plant-a.svc:8080"
    config = twin_config(cluster)
    assert config["namespace"] == "plant_a"
    assert [model["name"] for model in config["models"]] == ["press"]
    assert config["models"][0]["properties"]["temperature"]["readOnly"] is True
    assert [(t["name"], t["model"]) for t in config["things"]] == [
        ("press-1", "press"),
        ("press-2", "press"),
    ]
    assert config["things"][0]["attributes"]["serial"] == "X123"
    assert config["mqtt"]["username"] == "spine-twin"
    # Secrets reach the twin as mounted files, never through its ConfigMap.
    text = json.dumps(config)
    for secret in ("spine-mqtt-spine-twin", "spine-twin-tokens"):
        values = secret_values(stored(cluster, "v1/secrets", "plant-a", secret))
        for key in ("password", "write", "admin"):
            if key in values:
                assert values[key] not in text


async def test_model_change_reaches_the_config_without_restarting_the_twin(cluster, operator):
    k8s = Kubernetes()
    await k8s.create(spine("plant-a"))
    await k8s.create(press_model())
    await eventually(
        lambda: model_ready(cluster, "plant-a", "press")["status"] == "True",
        10,
        "the model in the twin",
    )
    template = stored(cluster, STS, "plant-a", "spine-twin")["spec"]["template"]
    checksum = template["metadata"]["annotations"]["spine.iiot.dev/config-checksum"]
    await k8s.patch_merge(
        API_VERSION,
        "TwinModel",
        "plant-a",
        "press",
        {"spec": {"things": [{"name": "press-1"}, {"name": "press-2"}, {"name": "press-3"}]}},
    )
    await eventually(lambda: len(twin_config(cluster)["things"]) == 3, 10, "the third press")
    await eventually(
        lambda: stored(cluster, MODELS, "plant-a", "press")["status"]["things"] == 3,
        10,
        "things: 3",
    )
    template = stored(cluster, STS, "plant-a", "spine-twin")["spec"]["template"]
    assert template["metadata"]["annotations"]["spine.iiot.dev/config-checksum"] == checksum


async def test_invalid_and_clashing_models_are_refused_while_others_are_delivered(
    cluster, operator
) -> None:
    k8s = Kubernetes()
    await k8s.create(spine("plant-a"))
    await k8s.create(press_model())
    await eventually(
        lambda: model_ready(cluster, "plant-a", "press")["status"] == "True", 10, "the press model"
    )
    # Accepted by the CRD schema, refused by the operator: a range that cannot be satisfied.
    bad = press_model(
        name="oven",
        things=[{"name": "oven-1"}],
        properties={"heat": {"type": "number", "minimum": 300, "maximum": 100}},
    )
    validate_against_crd("TwinModel", bad)
    await k8s.create(bad)
    clash = press_model(name="press-copy", things=[{"name": "press-2"}])
    await k8s.create(clash)
    await eventually(
        lambda: model_ready(cluster, "plant-a", "oven")["reason"] == "InvalidSpec",
        10,
        "InvalidSpec",
    )
    message = model_ready(cluster, "plant-a", "oven")["message"]
    assert "spec.properties" in message and "minimum 300 is greater than the maximum 100" in message
    await eventually(
        lambda: model_ready(cluster, "plant-a", "press-copy")["reason"] == "InvalidReference",
        10,
        "InvalidReference",
    )
    assert (
        "press-2 is already defined by TwinModel press"
        in model_ready(cluster, "plant-a", "press-copy")["message"]
    )
    assert [m["name"] for m in twin_config(cluster)["models"]] == ["press"]
    assert model_ready(cluster, "plant-a", "press")["status"] == "True"


async def test_deleted_model_leaves_the_twin_config(cluster, operator) -> None:
    k8s = Kubernetes()
    await k8s.create(spine("plant-a"))
    await k8s.create(press_model())
    await eventually(lambda: twin_config(cluster)["models"], 10, "the model in the config")
    await k8s.request("DELETE", f"/apis/{API_VERSION}/namespaces/plant-a/twinmodels/press")
    await eventually(lambda: twin_config(cluster)["models"] == [], 10, "an empty config")
    assert twin_config(cluster)["things"] == []
