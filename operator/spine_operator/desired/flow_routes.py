"""A Flow's `http` source on the namespace's proxy: `source.http.expose` asks for the route
`/flows/<flow><path>` to the flow engine's Service, fail-closed with the OIDC checks of every
registration's route (a valid token of the Spine's issuer holding one of the roles).

Both aggregates read it: the flow engine's plan says on the Flow whether it can be exposed (the
Spine must have `auth`), the proxy's plan routes it. `/flows` is reserved on the proxy for
these routes, as `/twin` and `/catalog` are for theirs, so no registration path can collide with
a flow's, whichever is applied first. Pure.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from spine_operator import labels
from spine_operator.desired.haproxy import ProxyBackend, ProxyRoute, RateLimit
from spine_operator.environment import Environment
from spine_runtime.common.configsource import describe_validation_error
from spine_runtime.config.flow import FlowSpec

FLOWS_PATH = "/flows"


def flow_route_path(flow: str, spec: FlowSpec) -> str:
    """`/flows/<flow><path>` without a trailing '/': the engine's own path for the source."""
    assert spec.source.http is not None, "only an http source has a route"
    return f"{FLOWS_PATH}/{flow}{spec.source.http.path}".rstrip("/")


def flow_route(
    flow: str, spec: FlowSpec, env: Environment, namespace: str
) -> ProxyRoute | str | None:
    """The proxy's route to the flow's http source; None if it asks for none; a message (to
    start with the field path) if it cannot be routed."""
    source = spec.source.http
    if source is None or source.expose is None:
        return None
    path = flow_route_path(flow, spec)
    try:
        return ProxyRoute(
            name=labels.flow_route_name(flow),
            path=path,
            methods=list(source.methods),
            backend=ProxyBackend(
                host=env.proxy_backend_host(
                    namespace, labels.FLOW_ENGINE_NAME, env.flow_host_override
                ),
                port=env.flow_port,
                path_prefix=path,  # the engine sees the whole path, as it serves it
            ),
            roles=list(source.expose.roles),
            rate_limit=RateLimit.of(source.expose.rate_limit),
        )
    except ValidationError as error:
        return (
            "spec.source.http.expose: the source cannot be routed on the proxy: "
            f"{describe_validation_error(error, 'route')}"
        )


def exposed_flows(
    flows: list[dict[str, Any]], env: Environment, namespace: str
) -> list[tuple[str, FlowSpec, ProxyRoute]]:
    """(name, spec, route) of every Flow whose http source asks to be exposed and can be: a
    Flow the engine does not run (refused, or not started yet) is answered 404 by the engine."""
    found: list[tuple[str, FlowSpec, ProxyRoute]] = []
    for item in sorted(flows, key=lambda flow: flow["metadata"]["name"]):
        name = item["metadata"]["name"]
        if item["metadata"].get("deletionTimestamp") or not asks_for_route(item):
            continue
        try:
            spec = FlowSpec.model_validate(item.get("spec") or {})
        except ValidationError:
            continue  # the flow engine's plan says why on the Flow
        route = flow_route(name, spec, env, namespace)
        if isinstance(route, ProxyRoute):
            found.append((name, spec, route))
    return found


def flow_routes(
    flows: list[dict[str, Any]], env: Environment, namespace: str
) -> list[tuple[ProxyRoute, str]]:
    """(route, owner) of every exposed flow source."""
    return [(route, f"Flow/{name}") for name, _, route in exposed_flows(flows, env, namespace)]


def flow_catalog_entries(
    flows: list[dict[str, Any]], env: Environment, namespace: str, public_url: str
) -> list[dict[str, Any]]:
    """The catalog's entry of every exposed flow source, so a client finds where to send what:
    its URL on the proxy, methods and roles, and the JSON Schema its first step checks (a
    `validate` step with an inline schema). Ids `flow:<name>`: no registration (a DNS name)
    can take one."""
    entries = []
    for name, spec, route in exposed_flows(flows, env, namespace):
        first = spec.steps[0].validate_ if spec.steps else None
        schema = first.json_schema if first is not None else None
        api_spec: dict[str, Any] = {"mediaType": "application/json"}
        if schema is not None:
            api_spec = {"mediaType": "application/schema+json", "schema": schema}
        entries.append(
            {
                "id": f"flow:{name}",
                "type": "spine:flow",
                "title": f"Flow {name}",
                "description": "Send a JSON message to the flow: 202 once every sink accepted "
                "it, 422 when it went to the flow's dead letter topic, 503 when the flow is full.",
                "apis": [
                    {
                        "id": "source",
                        "title": "Source",
                        "protocol": "HTTP",
                        "url": f"{public_url}{route.path}",
                        "spec": api_spec,
                        "meta": {"methods": list(route.methods or []), "roles": route.roles},
                    }
                ],
                "owner": f"Flow/{name}",
            }
        )
    return entries


def asks_for_route(flow: dict[str, Any] | None) -> bool:
    """Whether a Flow's body asks for a route (cheap: its expressions are not compiled)."""
    source = ((flow or {}).get("spec") or {}).get("source")
    http = source.get("http") if isinstance(source, dict) else None
    return isinstance(http, dict) and http.get("expose") is not None
