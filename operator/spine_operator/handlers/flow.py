"""kopf wiring of the Flow kind: every Flow of a namespace runs on its one flow engine.

A Flow's change (or deletion), a TwinModel's (a flow may name one), and a change of a
ServiceRegistration a flow's `serviceRef` names (index `flow_service_references`) reconcile the
flow engine aggregate (`FLOWS`), which renders every flow into the engine's config, pushes it,
and writes each Flow's status. A Flow whose http source is exposed, or whose route the proxy
may still hold, reconciles the proxy aggregate (`PROXIES`) too: its route is there. A Flow
changed while its handler ran is handled again (`retry_if_changed`). The engine's StatefulSet
events refresh the Flows' readiness.
"""

from __future__ import annotations

from typing import Any

import kopf

from spine_operator import labels
from spine_operator.api.kinds import (
    API_VERSION,
    FLOW,
    GROUP,
    SERVICE_REGISTRATION,
    TWINMODEL,
    VERSION,
)
from spine_operator.broker_admin import BrokerAccessError
from spine_operator.context import CONTEXT
from spine_operator.desired.flow import COMPONENT as FLOW_ENGINE_COMPONENT
from spine_operator.desired.flow import flow_username
from spine_operator.desired.flow_routes import asks_for_route
from spine_operator.desired.flow_services import registration_refusal
from spine_operator.reconcile.core import retry_if_changed
from spine_operator.reconcile.kinds import (
    FLOWS,
    FLOWS_KEY,
    PROXIES,
    PROXY_KEY,
    TWIN_KEY,
    TWINS,
    engine_prune_held,
    proxy_may_route_flow,
    registration_fingerprints,
)


@kopf.on.resume(GROUP, VERSION, FLOW.plural)
@kopf.on.create(GROUP, VERSION, FLOW.plural)
@kopf.on.update(GROUP, VERSION, FLOW.plural)
async def flow_changed(
    namespace: str | None, name: str, body: kopf.Body, logger: kopf.Logger, **_: Any
) -> None:
    assert namespace, "Flow is a namespaced kind"
    try:
        await FLOWS.reconcile(namespace, FLOWS_KEY, logger)
    finally:  # a flow with a twin sink sends numbered updates: the twin must know it
        await TWINS.reconcile_quietly(namespace, TWIN_KEY, logger)
        # An http source exposed (or no longer) is a route on the namespace's proxy.
        if asks_for_route(dict(body)) or await proxy_may_route_flow(namespace, name):
            await PROXIES.reconcile_quietly(namespace, PROXY_KEY, logger)
    # The reconciles read the live Flow, kopf records `body` as handled: they must agree.
    await retry_if_changed(API_VERSION, FLOW.kind, body)


@kopf.on.event(GROUP, VERSION, FLOW.plural)
async def flow_deleted(
    type: str, namespace: str | None, name: str, body: kopf.Body, logger: kopf.Logger, **_: Any
) -> None:
    """No finalizer: the flow leaves the engine's config; its logins go from the broker (replica
    0's here, the other replicas' by the engine's reconcile, which prunes them)."""
    if type != "DELETED" or not namespace:
        return
    CONTEXT.metrics.forget(FLOW.kind, namespace, name)
    await FLOWS.reconcile_quietly(namespace, FLOWS_KEY, logger)
    await TWINS.reconcile_quietly(namespace, TWIN_KEY, logger)
    if asks_for_route(dict(body)) or await proxy_may_route_flow(namespace, name):
        await PROXIES.reconcile_quietly(namespace, PROXY_KEY, logger)
    try:
        await CONTEXT.broker_access.remove_login(namespace, flow_username(name))
    except BrokerAccessError as error:
        logger.warning("Broker login of Flow %s/%s not removed: %s", namespace, name, error)


@kopf.on.event(GROUP, VERSION, TWINMODEL.plural)
async def twinmodel_changed_recheck_flows(
    type: str | None, namespace: str | None, logger: kopf.Logger, **_: Any
) -> None:
    """A flow may validate against a TwinModel or read its things."""
    if namespace and type is not None and FLOWS.outcomes.get((namespace, FLOWS_KEY)):
        await FLOWS.reconcile_quietly(namespace, FLOWS_KEY, logger)


@kopf.index(GROUP, VERSION, FLOW.plural)
def flow_service_references(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[Any, str]:
    """(namespace, ServiceRegistration) each `serviceRef` of a Flow names -> the Flow: its
    events heal a flow waiting for it and move a flow whose backend moved."""
    found: dict[Any, str] = {}
    body = dict(spec)
    places = [(step, "call") for step in body.get("steps") or [] if isinstance(step, dict)]
    places += [(sink, "http") for sink in body.get("sinks") or [] if isinstance(sink, dict)]
    for item, kind in places:
        ref = (item.get(kind) or {}).get("serviceRef") if isinstance(item.get(kind), dict) else None
        if isinstance(ref, dict) and isinstance(ref.get("name"), str):
            found[(namespace, ref["name"])] = name
    return found


@kopf.on.event(GROUP, VERSION, SERVICE_REGISTRATION.plural)
async def registration_changed_recheck_flows(
    type: str | None,
    namespace: str | None,
    name: str,
    body: kopf.Body,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    """A registration a flow calls appeared, changed (its APIs, or the operator's verdict on
    it) or went: the flows are resolved again. Other status writes are not news to them."""
    if not namespace or type is None:
        return
    key = (namespace, name)
    if type == "DELETED":
        fingerprint = None
    else:
        generation = body.get("metadata", {}).get("generation")
        fingerprint = (generation, registration_refusal(dict(body)))
    if registration_fingerprints.get(key, "unseen") == fingerprint:
        return
    registration_fingerprints[key] = fingerprint
    if kwargs["flow_service_references"].get(key):
        logger.info("ServiceRegistration %s changed: resolving the flows of %s", name, namespace)
        await FLOWS.reconcile_quietly(namespace, FLOWS_KEY, logger)


@kopf.on.event(
    "apps",
    "v1",
    "statefulsets",
    labels={
        labels.PART_OF: "spine",
        labels.MANAGED_BY: "spine-operator",
        labels.COMPONENT: FLOW_ENGINE_COMPONENT,
    },
)
async def flow_engine_changed(namespace: str | None, logger: kopf.Logger, **_: Any) -> None:
    """The engine's StatefulSet changed (e.g. a pod became ready, or the pods of a scale-down
    stopped): refresh the Flows' status, and remove the replica logins that waited for that."""
    if not namespace:
        return
    if engine_prune_held(namespace):
        await FLOWS.reconcile_quietly(namespace, FLOWS_KEY, logger)
    else:
        await FLOWS.report(CONTEXT.k8s, namespace, FLOWS_KEY)
