"""A Flow's `serviceRef` resolved by the flow engine's plan: to the registration's HTTP API's
backend inside the namespace (or its url) plus the reference's path, and each way it can fail to
resolve reported with the reason and a message that names the fix."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pydantic import ValidationError

from spine_operator import conditions as cond
from spine_operator import labels
from spine_operator.desired import flow
from spine_operator.desired.plan import Plan, SecretInput
from spine_operator.environment import Environment
from spine_runtime.common.configsource import describe_validation_error
from spine_runtime.config.flow import FlowSpec

NAMESPACE = "plant-a"
ENV = Environment.cluster()
OPENAPI = '{"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {}}'


def spine() -> dict[str, Any]:
    return {"metadata": {"name": "default", "namespace": NAMESPACE}, "spec": {}}


def http_api(api_id: str = "orders", **target: Any) -> dict[str, Any]:
    return {
        "id": api_id,
        "protocol": "HTTP",
        **(target or {"serviceRef": {"name": "maintenance-planner", "port": 8080}}),
        "spec": {"mediaType": "application/json", "value": OPENAPI},
    }


def mqtt_api(api_id: str = "events") -> dict[str, Any]:
    return {
        "id": api_id,
        "protocol": "MQTT",
        "access": {"publish": ["plant/orders"]},
        "spec": {"mediaType": "application/yaml", "value": "asyncapi: 3.0.0"},
    }


def registration(name: str, *apis: dict[str, Any], **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "spine.iiot.dev/v1alpha1",
        "kind": "ServiceRegistration",
        "metadata": {"name": name, "namespace": NAMESPACE, "generation": 2},
        "spec": {"type": "maintenance-planner", "apis": list(apis) or [http_api()]},
    }
    if status:
        body["status"] = status
    return body


def flow_body(name: str, call_ref: dict | None = None, sink_ref: dict | None = None) -> dict:
    steps = []
    if call_ref is not None:
        steps.append({"name": "contact", "call": {"serviceRef": call_ref, "method": "POST"}})
    sink: dict[str, Any] = {"mqtt": {"topic": f"spine/flows/{name}/out"}}
    if sink_ref is not None:
        sink = {"http": {"serviceRef": sink_ref}}
    return {
        "apiVersion": "spine.iiot.dev/v1alpha1",
        "kind": "Flow",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "source": {"mqtt": {"topic": "plant/+/alarms"}},
            "steps": steps,
            "sinks": [sink],
        },
    }


def flow_inputs(
    flows: list[dict], registrations: list[dict], env: Environment = ENV
) -> flow.FlowInputs:
    logins = {
        labels.login_secret_name(flow.flow_username(item["metadata"]["name"])): SecretInput(
            "x", {"password": "p"}
        )
        for item in flows
    }
    logins = {name: SecretInput(name, {"password": "p"}) for name in logins}
    return flow.FlowInputs(
        spine(),
        flows,
        [],
        env,
        SecretInput(labels.FLOW_ENGINE_TOKEN_SECRET, {"token": "t"}),
        logins,
        registrations=registrations,
    )


def verdicts(flows: list[dict], registrations: list[dict]) -> dict[str, flow.FlowVerdict]:
    return flow.select_flows(flow_inputs(flows, registrations), flow.SpineSpec(), NAMESPACE)[1]


def engine_flows(plan: Plan) -> dict[str, dict[str, Any]]:
    config_map = next(obj for obj in plan.objects if obj["kind"] == "ConfigMap")
    document = json.loads(config_map["data"][labels.FLOW_ENGINE_CONFIG_FILE])
    return {item["name"]: item for item in document["flows"]}


def test_a_service_ref_becomes_the_url_of_the_registrations_service_in_the_namespace():
    flows = [
        flow_body("enrich", call_ref={"name": "maintenance", "path": "/api/contacts"}),
        flow_body("report", sink_ref={"name": "maintenance", "api": "orders", "path": "/orders"}),
    ]
    plan = flow.plan_flows(flow_inputs(flows, [registration("maintenance")]))
    assert isinstance(plan, Plan), plan
    engine = engine_flows(plan)
    host = "maintenance-planner.plant-a.svc.cluster.local"
    assert engine["enrich"]["steps"][0]["call"]["url"] == f"http://{host}:8080/api/contacts"
    assert "serviceRef" not in engine["enrich"]["steps"][0]["call"]
    assert engine["report"]["sinks"][0]["http"]["url"] == f"http://{host}:8080/orders"
    assert {v.reason for v in plan.facts["flows"].values()} == {cond.RECONCILED}


def test_a_registered_url_is_the_base_and_locally_the_service_is_on_127_0_0_1():
    external = registration(
        "erp", http_api("sap", url="https://erp.example.com/odata/"), mqtt_api()
    )
    local_env = ENV.replace(service_host_override="127.0.0.1")
    flows = [
        flow_body("to-erp", sink_ref={"name": "erp", "path": "/orders"}),
        flow_body("enrich", call_ref={"name": "maintenance"}),
    ]
    plan = flow.plan_flows(flow_inputs(flows, [external, registration("maintenance")], local_env))
    assert isinstance(plan, Plan), plan
    engine = engine_flows(plan)
    # the registration's only HTTP API is chosen without `api`; its MQTT API does not count
    assert engine["to-erp"]["sinks"][0]["http"]["url"] == "https://erp.example.com/odata/orders"
    assert engine["enrich"]["steps"][0]["call"]["url"] == "http://127.0.0.1:8080/"


@pytest.mark.parametrize(
    ("registrations", "ref", "reason", "words"),
    [
        (
            [],
            {"name": "maintenance"},
            cond.DEPENDENCY_NOT_FOUND,
            "spec.steps[0].call.serviceRef: ServiceRegistration maintenance does not exist in "
            "namespace plant-a: apply it",
        ),
        (
            [registration("maintenance", http_api("orders"), http_api("contacts"))],
            {"name": "maintenance"},
            cond.INVALID_REFERENCE,
            "has several HTTP APIs (orders, contacts): say which in serviceRef.api",
        ),
        (
            [registration("maintenance", http_api("orders"))],
            {"name": "maintenance", "api": "contacts"},
            cond.INVALID_REFERENCE,
            "has no API contacts (its HTTP APIs: orders)",
        ),
        (
            [registration("maintenance", http_api("orders"), mqtt_api("events"))],
            {"name": "maintenance", "api": "events"},
            cond.INVALID_REFERENCE,
            "API events of ServiceRegistration maintenance is an MQTT API",
        ),
        (
            [registration("maintenance", mqtt_api("events"))],
            {"name": "maintenance"},
            cond.INVALID_REFERENCE,
            "ServiceRegistration maintenance has no HTTP API to call",
        ),
        (
            [
                registration(
                    "maintenance",
                    conditions=[
                        {
                            "type": "Ready",
                            "status": "False",
                            "reason": "DependencyNotFound",
                            "message": "Service maintenance-planner does not exist.",
                            "observedGeneration": 2,
                        }
                    ],
                )
            ],
            {"name": "maintenance"},
            cond.DEPENDENCY_NOT_READY,
            "is refused (DependencyNotFound: Service maintenance-planner does not exist); "
            "the flow starts once it is accepted",
        ),
    ],
    ids=["missing", "several-apis", "no-such-api", "mqtt-api", "no-http-api", "refused"],
)
def test_a_service_ref_that_does_not_resolve_refuses_the_flow_alone(
    registrations: list[dict], ref: dict, reason: str, words: str
):
    flows = [flow_body("enrich", call_ref=ref), flow_body("plain")]
    found = verdicts(flows, registrations)
    assert found["enrich"].reason == reason
    assert words in found["enrich"].message, found["enrich"].message
    assert found["enrich"].message.startswith("spec.steps[0].call.serviceRef: ")
    assert found["plain"].reason == cond.RECONCILED


def test_a_registration_refused_for_an_older_generation_or_only_waiting_does_not_hold_back():
    stale = registration(
        "maintenance",
        conditions=[
            {"type": "Ready", "status": "False", "reason": "InvalidSpec", "observedGeneration": 1}
        ],
    )
    starting = registration(
        "maintenance",
        conditions=[
            {"type": "Ready", "status": "False", "reason": "Progressing", "observedGeneration": 2}
        ],
    )
    for body in (stale, starting):
        found = verdicts([flow_body("enrich", call_ref={"name": "maintenance"})], [body])
        assert found["enrich"].reason == cond.RECONCILED, found["enrich"].message


def test_a_registration_with_an_invalid_spec_or_being_deleted_is_not_called():
    invalid = registration("maintenance")
    invalid["spec"]["apis"] = []
    deleting = registration("maintenance")
    deleting["metadata"]["deletionTimestamp"] = "2026-12-04T10:00:00Z"
    flows = [flow_body("enrich", call_ref={"name": "maintenance"})]
    assert verdicts(flows, [invalid])["enrich"].reason == cond.DEPENDENCY_NOT_READY
    assert verdicts(flows, [deleting])["enrich"].reason == cond.DEPENDENCY_NOT_FOUND


def test_url_and_service_ref_are_exclusive_and_the_reference_is_checked():
    spec = flow_body("x", call_ref={"name": "maintenance"})["spec"]
    both = copy.deepcopy(spec)
    both["steps"][0]["call"]["url"] = "http://elsewhere:8080/"
    with pytest.raises(ValidationError) as caught:
        FlowSpec.model_validate(both)
    assert "call needs exactly one of url and serviceRef" in describe_validation_error(
        caught.value, "spec"
    )
    bad_path = copy.deepcopy(spec)
    bad_path["steps"][0]["call"]["serviceRef"]["path"] = "contacts?x=1"
    with pytest.raises(ValidationError) as caught:
        FlowSpec.model_validate(bad_path)
    assert "steps[0].call.serviceRef.path" in describe_validation_error(caught.value, "spec")
