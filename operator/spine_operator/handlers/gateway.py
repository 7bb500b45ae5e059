"""kopf wiring of the Gateway kind: reconcile on change, and again when what it depends on
changes (a TwinModel or the Spine of its namespace, via index `gateways_by_namespace`; a Secret it
mounts, via index `gateway_secrets` in `handlers/secrets.py`). The rest is in `reconcile/`.
"""

from __future__ import annotations

from typing import Any

import kopf

from spine_operator import conditions as cond
from spine_operator.api.kinds import API_VERSION, GATEWAY, GROUP, SPINE, TWINMODEL, VERSION
from spine_operator.broker_admin import BrokerAccessError
from spine_operator.context import CONTEXT
from spine_operator.desired.gateway import gateway_secret_names
from spine_operator.desired.logins import gateway_username
from spine_operator.reconcile.core import retry_if_changed
from spine_operator.reconcile.kinds import (
    GATEWAYS,
    TWIN_KEY,
    TWINS,
    dependency_generations,
    ready_gateways,
    reports,
)


async def recheck_refused_siblings(namespace: str, name: str, index: Any, logger: Any) -> None:
    """A Gateway changed or went: one refused for feeding the same property may fit now."""
    for other in list(index.get(namespace, [])):
        outcome = GATEWAYS.outcomes.get((namespace, other))
        failure = outcome.failure if outcome is not None else None
        if other != name and failure is not None and failure[0] == cond.INVALID_REFERENCE:
            await GATEWAYS.reconcile_quietly(namespace, other, logger)


@kopf.on.resume(GROUP, VERSION, GATEWAY.plural)
@kopf.on.create(GROUP, VERSION, GATEWAY.plural)
@kopf.on.update(GROUP, VERSION, GATEWAY.plural)
async def gateway_changed(
    namespace: str | None, name: str, body: kopf.Body, logger: kopf.Logger, **kwargs: Any
) -> None:
    assert namespace, "Gateway is a namespaced kind"
    try:
        await GATEWAYS.reconcile(namespace, name, logger)
    finally:
        await recheck_refused_siblings(namespace, name, kwargs["gateways_by_namespace"], logger)
    await retry_if_changed(API_VERSION, GATEWAY.kind, body)


@kopf.on.event(GROUP, VERSION, GATEWAY.plural)
async def gateway_deleted(
    type: str, namespace: str | None, name: str, logger: kopf.Logger, **kwargs: Any
) -> None:
    """No finalizer: owner references remove the children; the broker login is removed here
    when the broker is reachable (its Secret, the only copy of its password, goes anyway)."""
    if type in ("ADDED", "DELETED") and namespace:
        # The twin keeps sequence numbers only for the namespace's gateways: tell it.
        await TWINS.reconcile_quietly(namespace, TWIN_KEY, logger)
    if type != "DELETED" or not namespace:
        return
    GATEWAYS.forget(namespace, name)
    reports.pop((namespace, name), None)
    ready_gateways.discard((namespace, name))
    try:
        await CONTEXT.broker_access.remove_login(namespace, gateway_username(name))
    except BrokerAccessError as error:
        logger.warning("Broker login of Gateway %s/%s not removed: %s", namespace, name, error)
    await recheck_refused_siblings(namespace, name, kwargs["gateways_by_namespace"], logger)


@kopf.index(GROUP, VERSION, GATEWAY.plural)
def gateways_by_namespace(namespace: str | None, name: str, **_: Any) -> dict[Any, str]:
    """namespace -> its Gateways, to re-check them when a TwinModel or the Spine changes."""
    return {namespace: name}


@kopf.index(GROUP, VERSION, GATEWAY.plural)
def gateway_secrets(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[Any, tuple[str, str]]:
    """(namespace, Secret name) -> the Gateway that mounts it, to roll the pod on a change."""
    return {
        (namespace, secret): (GATEWAYS.kind, name)
        for secret in gateway_secret_names(name, dict(spec))
    }


def dependency_changed(
    kind: str, type: str | None, namespace: str, name: str, body: kopf.Body
) -> bool:
    """Whether a TwinModel or Spine event is news (created, deleted or a new generation)."""
    key = (kind, namespace, name)
    if type == "DELETED":
        dependency_generations.pop(key, None)
        return True
    generation = int(body.get("metadata", {}).get("generation") or 0)
    changed = dependency_generations.get(key) != generation
    dependency_generations[key] = generation
    # The initial listing at startup is no news: each Gateway's resume handler runs anyway.
    return changed and type is not None


async def recheck_gateways(namespace: str, index: Any, logger: Any) -> None:
    for gateway in list(index.get(namespace, [])):
        await GATEWAYS.reconcile_quietly(namespace, gateway, logger)


@kopf.on.event(GROUP, VERSION, TWINMODEL.plural)
async def twinmodel_changed_recheck_gateways(
    type: str | None,
    namespace: str | None,
    name: str,
    body: kopf.Body,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    """A TwinModel appeared, changed or went: re-check the namespace's Gateways against it."""
    if namespace and dependency_changed(TWINMODEL.kind, type, namespace, name, body):
        await recheck_gateways(namespace, kwargs["gateways_by_namespace"], logger)


@kopf.on.event(GROUP, VERSION, SPINE.plural)
async def spine_changed_recheck_gateways(
    type: str | None,
    namespace: str | None,
    name: str,
    body: kopf.Body,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    """The Spine appeared or changed (its twin namespace is in every gateway's config)."""
    if namespace and dependency_changed(SPINE.kind, type, namespace, name, body):
        await recheck_gateways(namespace, kwargs["gateways_by_namespace"], logger)
