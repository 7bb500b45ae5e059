"""The flow engine's plan with replicas: a StatefulSet whose pods learn their ordinal from their
name, a login per flow and replica bound to its own client id and twin identity, pushes to
every replica, the legacy Deployment removed, replica logins pruned only once their pods
stopped, and the poller's reports of the replicas combined into one."""

from __future__ import annotations

import json
import re
from typing import Any

from spine_operator.api.spine import SpineSpec
from spine_operator.desired import flow
from spine_operator.desired.plan import Plan, SecretInput
from spine_operator.desired.twin import numbered_publishers
from spine_operator.environment import Environment
from spine_operator.poller import FlowEngineReport, RuntimeReport, combine_flow_engine_reports
from spine_runtime.config.flow import FlowEngineConfig, ordinal_from_environment

ENV = Environment.cluster()
NAMESPACE = "plant-a"


def spine(replicas: int | None = None) -> dict[str, Any]:
    spec = {} if replicas is None else {"flowEngine": {"replicas": replicas}}
    return {"metadata": {"name": "default", "namespace": NAMESPACE}, "spec": spec}


def flow_resource(name: str, **spec: Any) -> dict[str, Any]:
    body = {
        "source": {"mqtt": {"topic": f"in/{name}", "qos": 1}},
        "sinks": [{"twin": {"thing": "id", "property": "temperature", "value": "t"}}],
        **spec,
    }
    return {"metadata": {"name": name, "namespace": NAMESPACE}, "spec": body}


def plan(
    replicas: int | None = None,
    flows: list[dict[str, Any]] | None = None,
    existing: dict[str, Any] | None = None,
    existing_ready: bool = False,
    legacy: bool = False,
) -> Plan:
    flows = [flow_resource("relay")] if flows is None else flows
    inputs = flow.FlowInputs(
        spine(replicas), flows, [], ENV, SecretInput("spine-flow-engine-token", {"token": "t"}), {}
    )
    _, _, logins = flow.select_flows(
        inputs, SpineSpec.model_validate(spine(replicas)["spec"]), NAMESPACE
    )
    secrets = {
        f"spine-mqtt-{login.username}": SecretInput(
            f"spine-mqtt-{login.username}", {"password": "p"}
        )
        for login in logins
    }
    result = flow.plan_flows(
        flow.FlowInputs(
            spine(replicas),
            flows,
            [],
            ENV,
            SecretInput("spine-flow-engine-token", {"token": "t"}),
            secrets,
            existing,
            existing_ready,
            legacy_deployment=legacy,
        )
    )
    assert isinstance(result, Plan), result
    return result


def config_of(result: Plan) -> dict[str, Any]:
    return json.loads(result.object_of("ConfigMap")["data"]["flows.json"])


def test_one_replica_keeps_the_names_it_always_had() -> None:
    result = plan()
    statefulset = result.object_of("StatefulSet")
    assert statefulset["spec"]["replicas"] == 1
    assert [login.username for login in result.logins] == ["flow-relay"]
    assert result.logins[0].client_id == "flow-relay"
    document = config_of(result)
    assert document["replicas"] == 1
    assert document["flows"][0]["login"]["clientId"] == "flow-relay"
    assert document["flows"][0]["replicaLogins"] == []
    assert result.facts["identities"] == ["flow.relay"]
    assert not [obj for obj in result.objects if obj["kind"] == "Deployment"]


def test_the_engine_is_a_statefulset_whose_pods_know_their_ordinal() -> None:
    result = plan(replicas=3)
    statefulset = result.object_of("StatefulSet")
    spec = statefulset["spec"]
    assert spec["replicas"] == 3
    # One pod per ordinal at a time (no surge), and ordinals start independently.
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["updateStrategy"] == {"type": "RollingUpdate"}
    assert spec["serviceName"] == "spine-flow-engine-pods"
    pods = next(
        obj
        for obj in result.objects
        if obj["kind"] == "Service" and obj["metadata"]["name"] == "spine-flow-engine-pods"
    )
    assert pods["spec"]["clusterIP"] == "None" and pods["spec"]["publishNotReadyAddresses"]
    container = spec["template"]["spec"]["containers"][0]
    assert container["env"] == [
        {"name": "SPINE_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    ]
    # Every replica's password is mounted (the pods share one template).
    sources = spec["template"]["spec"]["volumes"][2]["projected"]["sources"]
    assert [source["secret"]["name"] for source in sources] == [
        "spine-mqtt-flow-relay",
        "spine-mqtt-flow-relay.1",
        "spine-mqtt-flow-relay.2",
    ]
    assert [source["secret"]["items"][0]["path"] for source in sources] == [
        "relay/password",
        "relay.1/password",
        "relay.2/password",
    ]


def test_each_replica_has_its_own_bound_login_and_twin_identity() -> None:
    result = plan(replicas=2)
    first, second = result.logins
    assert (first.username, first.client_id) == ("flow-relay", "flow-relay")
    assert (second.username, second.client_id) == ("flow-relay.1", "flow-relay.1")
    # Each publishes and hears the acks of its own twin identity only.
    assert "spine/gateways/flow.relay/things/+/twin" in first.publish
    assert "spine/gateways/flow.relay.1/things/+/twin" not in first.publish
    assert "spine/gateways/flow.relay.1/things/+/twin" in second.publish
    assert "spine/gateways/flow.relay.1/acks" in second.subscribe
    assert "spine/gateways/flow.relay/acks" not in second.subscribe
    # Both may join the flow's shared subscription group.
    assert "$share/flow-relay/in/relay" in first.subscribe
    assert "$share/flow-relay/in/relay" in second.subscribe
    document = config_of(result)
    assert document["flows"][0]["replicaLogins"] == [
        {
            "username": "flow-relay.1",
            "passwordFile": "/var/run/spine/logins/relay.1/password",
            "clientId": "flow-relay.1",
        }
    ]
    FlowEngineConfig.model_validate(document)  # what each replica reads
    assert result.facts["identities"] == ["flow.relay", "flow.relay.1"]
    assert [secret["metadata"]["name"] for secret in result.generated[1:]] == [
        "spine-mqtt-flow-relay",
        "spine-mqtt-flow-relay.1",
    ]


def test_a_twin_source_is_shared_by_the_replicas() -> None:
    flows = [flow_resource("events", source={"twin": {"things": ["press-1"]}})]
    login = plan(replicas=2, flows=flows).logins[1]
    assert "$share/flow-events/spine/things/press-1/events" in login.subscribe


def test_the_twin_knows_every_replica_as_a_numbered_publisher() -> None:
    flows = [flow_resource("relay"), flow_resource("plain", sinks=[{"mqtt": {"topic": "x/y"}}])]
    assert numbered_publishers([], flows, 3) == ["flow.relay", "flow.relay.1", "flow.relay.2"]
    assert numbered_publishers([], flows) == ["flow.relay"]


def ready_statefulset(result: Plan, pods: int) -> dict[str, Any]:
    statefulset = json.loads(json.dumps(result.object_of("StatefulSet")))
    statefulset["metadata"]["generation"] = 1
    statefulset["status"] = {
        "observedGeneration": 1,
        "replicas": pods,
        "readyReplicas": pods,
        "updatedReplicas": pods,
    }
    return statefulset


def test_a_config_change_is_pushed_to_every_replica() -> None:
    first = plan(replicas=3)
    result = plan(replicas=3, existing=ready_statefulset(first, 3), existing_ready=True)
    pushes = [result.push, *result.more_pushes]
    assert [push.url for push in pushes if push] == [
        f"http://spine-flow-engine-{n}.spine-flow-engine-pods.plant-a.svc:8080" for n in range(3)
    ]


def test_replica_logins_are_pruned_only_once_their_pods_stopped() -> None:
    before = plan(replicas=3)
    # Scaled to 2 while the StatefulSet still has 3 pods: the third keeps its login meanwhile.
    stopping = plan(replicas=2, existing=ready_statefulset(before, 3))
    assert stopping.prune_logins is None and stopping.facts["pruneHeld"]
    stopped = plan(replicas=2, existing=ready_statefulset(before, 2))
    assert stopped.prune_logins == flow.REPLICA_LOGIN_PATTERN and not stopped.facts["pruneHeld"]
    # The pattern takes replica logins, never replica 0's nor another workload's.
    family = re.compile(flow.REPLICA_LOGIN_PATTERN)
    assert family.match("flow-relay.2") and family.match("flow-a-b.10")
    assert not family.match("flow-relay") and not family.match("gateway-press.1")
    # A Flow refused for now keeps its replicas' logins (and their sessions with its input).
    refused = flow_resource("broken", steps=[{"name": "x", "filter": {"expression": "a = = 1"}}])
    kept = plan(replicas=2, flows=[flow_resource("relay"), refused])
    assert [login.username for login in kept.logins] == ["flow-relay", "flow-relay.1"]
    assert kept.prune_keep == ["flow-relay.1", "flow-broken.1"]
    # The last Flow gone: every replica login goes.
    assert plan(flows=[]).prune_logins == flow.REPLICA_LOGIN_PATTERN


def test_the_deployment_of_an_earlier_operator_is_removed() -> None:
    assert plan(legacy=True).removals == [("apps/v1", "Deployment", "spine-flow-engine")]
    assert plan().removals == []


def test_the_replica_ordinal_comes_from_the_environment() -> None:
    assert ordinal_from_environment({"SPINE_FLOW_ORDINAL": "2"}) == 2
    assert ordinal_from_environment({"SPINE_POD_NAME": "spine-flow-engine-11"}) == 11
    assert ordinal_from_environment({}) is None
    for bad in ({"SPINE_FLOW_ORDINAL": "x"}, {"SPINE_POD_NAME": "no-ordinal-here"}):
        try:
            ordinal_from_environment(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} was accepted")


def test_a_config_with_too_few_replica_logins_is_refused() -> None:
    document = config_of(plan(replicas=2))
    document["replicas"] = 3
    try:
        FlowEngineConfig.model_validate(document)
    except ValueError as error:
        assert "3 replicas need 2 replicaLogins, not 1" in str(error)
    else:
        raise AssertionError("accepted")


def engine_status(received: int, running: bool = True, errors: int = 0) -> FlowEngineReport:
    return FlowEngineReport(
        True,
        flows={
            "relay": {
                "running": running,
                "received": received,
                "inFlight": 1,
                "deadLetters": 0,
                "messagesPerSecond": 1.5,
                "lastMessageTime": f"2026-01-01T00:00:0{received % 10}Z",
                "steps": {
                    "shape": {
                        "kind": "transform",
                        "in": received,
                        "out": received,
                        "filtered": 0,
                        "errors": errors,
                    }
                },
                "sinks": {"sink:0": {"in": received, "out": received, "errors": 0}},
            }
        },
    )


def test_the_replicas_reports_add_up() -> None:
    report = combine_flow_engine_reports([engine_status(3), engine_status(5, errors=2)])
    relay = report.flows["relay"]
    assert report.reachable and report.error is None
    assert relay["received"] == 8 and relay["inFlight"] == 2
    assert relay["messagesPerSecond"] == 3.0 and relay["running"]
    assert relay["steps"]["shape"]["in"] == 8 and relay["steps"]["shape"]["errors"] == 2
    assert relay["sinks"]["sink:0"]["out"] == 8
    assert relay["lastMessageTime"] == "2026-01-01T00:00:05Z"


def test_a_flow_runs_only_if_every_replica_runs_it() -> None:
    report = combine_flow_engine_reports([engine_status(3), engine_status(5, running=False)])
    assert not report.flows["relay"]["running"]
    away = combine_flow_engine_reports([engine_status(3), RuntimeReport(False, "refused")])
    # The figures of the replica that answered, and Degraded naming the one that did not.
    assert not away.reachable and away.error == "replica 1: refused"
    assert away.flows["relay"]["received"] == 3 and not away.flows["relay"]["running"]


def test_a_flow_without_its_own_max_in_flight_or_batch_window_takes_the_spines() -> None:
    spine_body = {"metadata": {"name": "default", "namespace": NAMESPACE}}
    spine_body["spec"] = {"flowEngine": {"maxInFlight": 400, "batchWindowMs": 3}}
    flows = [
        flow_resource("default-window"),
        flow_resource("own-window", maxInFlight=7, batchWindowMs=0),
    ]
    inputs = flow.FlowInputs(
        spine_body, flows, [], ENV, SecretInput("spine-flow-engine-token", {"token": "t"}), {}
    )
    accepted, _, _ = flow.select_flows(
        inputs, SpineSpec.model_validate(spine_body["spec"]), NAMESPACE
    )
    windows = {
        document["name"]: (document["maxInFlight"], document["batchWindowMs"])
        for document in accepted
    }
    assert windows == {"default-window": (400, 3), "own-window": (7, 0)}
