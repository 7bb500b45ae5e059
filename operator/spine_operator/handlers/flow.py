"""kopf wiring of the Flow kind: every Flow of a namespace runs on its one flow engine.

A Flow's change (or deletion), and a TwinModel's (a flow may name one), reconciles the flow
engine aggregate (`FLOWS`), which renders every flow into the engine's config, pushes it, and
writes each Flow's status. The engine's StatefulSet events refresh the Flows' readiness.
"""

from __future__ import annotations

from typing import Any

import kopf

from spine_operator import labels
from spine_operator.api.kinds import FLOW, GROUP, TWINMODEL, VERSION
from spine_operator.broker_admin import BrokerAccessError
from spine_operator.context import CONTEXT
from spine_operator.desired.flow import COMPONENT as FLOW_ENGINE_COMPONENT
from spine_operator.desired.flow import flow_username
from spine_operator.reconcile.kinds import FLOWS, FLOWS_KEY, TWIN_KEY, TWINS, engine_prune_held


@kopf.on.resume(GROUP, VERSION, FLOW.plural)
@kopf.on.create(GROUP, VERSION, FLOW.plural)
@kopf.on.update(GROUP, VERSION, FLOW.plural)
async def flow_changed(namespace: str | None, logger: kopf.Logger, **_: Any) -> None:
    assert namespace, "Flow is a namespaced kind"
    try:
        await FLOWS.reconcile(namespace, FLOWS_KEY, logger)
    finally:  # a flow with a twin sink sends numbered updates: the twin must know it
        await TWINS.reconcile_quietly(namespace, TWIN_KEY, logger)


@kopf.on.event(GROUP, VERSION, FLOW.plural)
async def flow_deleted(
    type: str, namespace: str | None, name: str, logger: kopf.Logger, **_: Any
) -> None:
    """No finalizer: the flow leaves the engine's config; its logins go from the broker (replica
    0's here, the other replicas' by the engine's reconcile, which prunes them)."""
    if type != "DELETED" or not namespace:
        return
    CONTEXT.metrics.forget(FLOW.kind, namespace, name)
    await FLOWS.reconcile_quietly(namespace, FLOWS_KEY, logger)
    await TWINS.reconcile_quietly(namespace, TWIN_KEY, logger)
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
