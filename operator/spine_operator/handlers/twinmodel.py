"""kopf wiring of the TwinModel kind: a model lives in the namespace's twin service.

A TwinModel has no workload of its own: any change (or deletion) reconciles the twin aggregate
(`TWINS`), which renders the twin's config from every TwinModel, pushes it, and writes each
TwinModel's status. The broker is not touched. Gateways are re-checked against the models.
"""

from __future__ import annotations

from typing import Any

import kopf

from spine_operator.api.kinds import API_VERSION, GROUP, TWINMODEL, VERSION
from spine_operator.context import CONTEXT
from spine_operator.reconcile.core import retry_if_changed
from spine_operator.reconcile.kinds import TWIN_KEY, TWINS


@kopf.on.resume(GROUP, VERSION, TWINMODEL.plural)
@kopf.on.create(GROUP, VERSION, TWINMODEL.plural)
@kopf.on.update(GROUP, VERSION, TWINMODEL.plural)
async def twinmodel_changed(
    namespace: str | None, body: kopf.Body, logger: kopf.Logger, **_: Any
) -> None:
    assert namespace, "TwinModel is a namespaced kind"
    await TWINS.reconcile(namespace, TWIN_KEY, logger)
    await retry_if_changed(API_VERSION, TWINMODEL.kind, body)


@kopf.on.event(GROUP, VERSION, TWINMODEL.plural)
async def twinmodel_deleted(
    type: str, namespace: str | None, name: str, logger: kopf.Logger, **_: Any
) -> None:
    """No finalizer: the model only lives in the twin's config, rendered again without it."""
    if type == "DELETED" and namespace:
        CONTEXT.metrics.forget(TWINMODEL.kind, namespace, name)
        await TWINS.reconcile_quietly(namespace, TWIN_KEY, logger)
