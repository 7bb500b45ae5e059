"""A Flow's exposed `http` source in the proxy's plan: a fail-closed route /flows/<flow><path>
to the flow engine's Service with the source's methods and roles, only with the Spine's `auth`;
`/flows` is reserved, so a registration cannot take a flow's path; nothing a Flow writes reaches
haproxy.cfg unchecked."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
from pydantic import ValidationError

from spine_operator import conditions as cond
from spine_operator.desired import proxy
from spine_operator.desired.flow_routes import asks_for_route, flow_routes
from spine_operator.desired.plan import Plan
from spine_runtime.common.configsource import describe_validation_error
from spine_runtime.config.flow import FlowSpec
from tests.unit.test_build_proxy import (
    AUTH,
    ENV,
    NAMESPACE,
    catalog_document,
    http_api,
    inputs,
    proxy_document,
    registration,
    spine,
    verdict,
)

SOURCE = {
    "http": {"path": "/orders/", "methods": ["POST", "PUT"], "expose": {"roles": ["orders:w"]}}
}


def flow(name: str = "intake", source: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "source": copy.deepcopy(source or SOURCE),
            "sinks": [{"mqtt": {"topic": f"spine/flows/{name}/out"}}],
        },
    }


def plan_with(spec: dict[str, Any], registrations: list, flows: list) -> Plan:
    result = proxy.plan_proxy(dataclasses.replace(inputs(spine(spec), registrations), flows=flows))
    assert isinstance(result, Plan), result
    return result


def test_an_exposed_source_is_a_route_to_the_engine_with_its_methods_and_roles():
    unexposed = flow("internal", {"http": {"path": "/x"}})
    plan = plan_with({"auth": AUTH}, [], [flow(), unexposed])
    routes = {route.name: route for route in proxy_document(plan).routes}
    assert routes["intake.flow"].path == "/flows/intake/orders"
    assert routes["intake.flow"].owner == "Flow/intake"
    assert not any("internal" in name for name in routes)
    (route,) = [r for r, _ in flow_routes([flow()], ENV, NAMESPACE)]
    assert route.methods == ["POST", "PUT"] and route.roles == ["orders:w"]
    assert not route.public
    assert route.backend.host == "spine-flow-engine.plant-a.svc.cluster.local"
    assert route.backend.port == ENV.flow_port
    assert route.backend.path_prefix == "/flows/intake/orders"  # the engine sees its own path
    config = proxy_document(plan).haproxy_cfg
    assert "route-intake.flow" in config and "orders:w" in config


def test_without_auth_no_flow_is_routed_and_none_asks_for_a_proxy():
    assert plan_with({}, [], [flow()]).objects == []
    registered = plan_with({}, [registration("a", "1", http_api())], [flow()])
    assert not any(r.owner == "Flow/intake" for r in proxy_document(registered).routes)


def test_flows_is_reserved_so_no_registration_takes_a_flows_path():
    taken = registration("grabby", "1", http_api(path="/flows/intake"))
    plan = plan_with({"auth": AUTH}, [taken], [flow()])
    refused = verdict(plan, "grabby")
    assert refused.reason == cond.INVALID_REFERENCE
    assert "overlaps /flows, which the Flows' http sources holds" in refused.message
    routes = {route.name: route for route in proxy_document(plan).routes}
    assert routes["intake.flow"].owner == "Flow/intake"


@pytest.mark.parametrize(
    "roles",
    [["orders read"], ["x\nbind :1"], ["#comment"], ['"q"'], []],
    ids=["space", "newline", "hash", "quote", "none"],
)
def test_nothing_a_flow_writes_adds_a_line_to_haproxy_cfg(roles: list[str]):
    source = {"http": {"path": "/o", "expose": {"roles": roles}}}
    with pytest.raises(ValidationError) as caught:
        FlowSpec.model_validate(flow(source=source)["spec"])
    assert "source.http.expose.roles" in describe_validation_error(caught.value, "spec")
    # a refused spec is not routed, and the proxy's other routes stay
    plan = plan_with({"auth": AUTH}, [], [flow(source=source), flow("ok")])
    names = [route.name for route in proxy_document(plan).routes]
    assert "ok.flow" in names and "intake.flow" not in names
    assert all(role not in proxy_document(plan).haproxy_cfg for role in roles)


def test_asks_for_route_reads_the_body_without_compiling_it():
    assert asks_for_route(flow())
    assert not asks_for_route(flow(source={"mqtt": {"topic": "a"}}))
    assert not asks_for_route({"spec": {"source": "nonsense"}})
    assert not asks_for_route(None)


def test_the_catalog_lists_each_exposed_source_with_the_schema_its_first_step_checks():
    schema = {"type": "object", "required": ["order"]}
    checked = flow("checked")
    checked["spec"]["steps"] = [{"name": "check", "validate": {"schema": schema}}]
    plain = flow("plain")
    unexposed = flow("internal", {"http": {"path": "/x"}})
    plan = plan_with({"auth": AUTH}, [], [checked, plain, unexposed])
    entries = {entry.id: entry for entry in catalog_document(plan).entries}
    assert {"flow:checked", "flow:plain"} <= set(entries)
    assert not any("internal" in entry for entry in entries)
    api = entries["flow:checked"].apis[0]
    assert api.url.endswith("/flows/checked/orders") and api.protocol == "HTTP"
    assert api.meta == {"methods": ["POST", "PUT"], "roles": ["orders:w"]}
    assert api.spec is not None and api.spec.schema_ == schema
    assert entries["flow:plain"].apis[0].spec.media_type == "application/json"
    assert entries["flow:checked"].owner == "Flow/checked"
    # Without auth nothing is exposed, so nothing is listed.
    bare = plan_with({}, [registration("a", "1", http_api())], [checked])
    assert not any(entry.id.startswith("flow:") for entry in catalog_document(bare).entries)
