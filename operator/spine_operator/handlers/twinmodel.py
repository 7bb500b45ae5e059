"""kopf handlers of the TwinModel kind: get the model into the namespace's twin service.

A TwinModel has no workload of its own: the Spine's twin service holds every model of the
namespace, so a change (or a deletion) re-runs the Spine's reconcile, which renders the twin's
config from all TwinModels, pushes it, and writes each TwinModel's status. Without a Spine the
model waits with `SpineNotFound`, and the Spine's first reconcile picks it up.
"""

from __future__ import annotations

from typing import Any

import kopf

from spine_operator import conditions as cond
from spine_operator.api.kinds import API_VERSION, GROUP, SPINE, TWINMODEL, VERSION
from spine_operator.context import CONTEXT
from spine_operator.handlers import spine as spine_handlers
from spine_operator.handlers.twin_workload import refresh_twinmodel_statuses
from spine_operator.k8s import resource_path


async def namespace_spine(namespace: str) -> str | None:
    """The name of the namespace's Spine (the oldest, if a second one was applied by mistake)."""
    listing = await CONTEXT.k8s.request("GET", resource_path(API_VERSION, SPINE.kind, namespace))
    items = sorted(
        listing.get("items") or [],
        key=lambda item: (
            item["metadata"].get("creationTimestamp") or "",
            item["metadata"]["name"],
        ),
    )
    return items[0]["metadata"]["name"] if items else None


async def deliver_models(namespace: str, logger: Any) -> None:
    with CONTEXT.metrics.reconciling(TWINMODEL.kind) as result:
        spine_name = await namespace_spine(namespace)
        if spine_name is None:
            result["result"] = "retry"
            await refresh_twinmodel_statuses(
                CONTEXT.k8s,
                namespace,
                None,
                (
                    cond.SPINE_NOT_FOUND,
                    f"Namespace {namespace} has no Spine: apply one (kind: Spine, spec: {{}}) "
                    "to get a twin service; this model is delivered as soon as it exists",
                ),
                None,
            )
            return
        try:
            await spine_handlers.reconcile(namespace, spine_name, logger)
        except (kopf.TemporaryError, kopf.PermanentError) as error:
            # The Spine reports its own problem, and has told its TwinModels they wait for it.
            result["result"] = "retry"
            logger.warning("TwinModels of %s wait for Spine %s: %s", namespace, spine_name, error)


@kopf.on.resume(GROUP, VERSION, TWINMODEL.plural)
@kopf.on.create(GROUP, VERSION, TWINMODEL.plural)
@kopf.on.update(GROUP, VERSION, TWINMODEL.plural)
async def twinmodel_changed(namespace: str | None, logger: kopf.Logger, **_: Any) -> None:
    assert namespace, "TwinModel is a namespaced kind"
    await deliver_models(namespace, logger)


@kopf.on.event(GROUP, VERSION, TWINMODEL.plural)
async def twinmodel_deleted(
    type: str, namespace: str | None, name: str, logger: kopf.Logger, **_: Any
) -> None:
    """No finalizer: the model only lives in the twin's config, rendered again without it."""
    if type == "DELETED" and namespace:
        CONTEXT.metrics.forget(TWINMODEL.kind, namespace, name)
        await deliver_models(namespace, logger)
