"""kopf wiring of the Spine kind: its broker and, through the twin aggregate, its twin service.

A Spine's change reconciles the broker (`SPINES`), the twin (`TWINS`, which also hears every
TwinModel), the proxy and the flow engine (its `flowEngine` settings); they fail independently,
so a broker problem never blocks a TwinModel. The rest is in `reconcile/`.
"""

from __future__ import annotations

from typing import Any

import kopf

from spine_operator import labels
from spine_operator.api.kinds import API_VERSION, GROUP, SPINE, VERSION
from spine_operator.context import CONTEXT
from spine_operator.desired.broker import spine_secret_names
from spine_operator.desired.common import controller_of
from spine_operator.desired.logins import TWIN_USERNAME
from spine_operator.reconcile.core import retry_if_changed
from spine_operator.reconcile.kinds import (
    FLOWS,
    FLOWS_KEY,
    GATEWAYS,
    PROXIES,
    PROXY_KEY,
    SPINES,
    TWIN_KEY,
    TWINS,
)


async def reconcile_spine(namespace: str, name: str, logger: Any) -> None:
    """Broker, twin, proxy, then the flow engine; all run, and a retryable failure wins over a
    permanent one."""
    errors: list[Exception] = []
    for reconciler, key in (
        (SPINES, name),
        (TWINS, TWIN_KEY),
        (PROXIES, PROXY_KEY),
        (FLOWS, FLOWS_KEY),  # flowEngine.replicas and resources live on the Spine
    ):
        try:
            await reconciler.reconcile(namespace, key, logger)
        except (kopf.TemporaryError, kopf.PermanentError) as error:
            errors.append(error)
    if errors:
        raise next((e for e in errors if isinstance(e, kopf.TemporaryError)), errors[0])


@kopf.on.resume(GROUP, VERSION, SPINE.plural)
@kopf.on.create(GROUP, VERSION, SPINE.plural)
@kopf.on.update(GROUP, VERSION, SPINE.plural)
async def spine_changed(
    namespace: str | None, name: str, body: kopf.Body, logger: kopf.Logger, **_: Any
) -> None:
    assert namespace, "Spine is a namespaced kind"
    await reconcile_spine(namespace, name, logger)
    await retry_if_changed(API_VERSION, SPINE.kind, body)


@kopf.on.event(GROUP, VERSION, SPINE.plural)
async def spine_deleted(
    type: str, namespace: str | None, name: str, logger: kopf.Logger, **_: Any
) -> None:
    """A deleted Spine frees its namespace: a second Spine refused as a duplicate may run now."""
    if type != "DELETED" or not namespace:
        return
    SPINES.forget(namespace, name)
    for other in await CONTEXT.k8s.list(API_VERSION, SPINE.kind, namespace):
        try:
            await reconcile_spine(namespace, other["metadata"]["name"], logger)
        except (kopf.TemporaryError, kopf.PermanentError) as error:
            logger.info("Spine %s/%s not applied: %s", namespace, other["metadata"]["name"], error)


@kopf.index(GROUP, VERSION, SPINE.plural)
def spine_secrets(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[Any, tuple[tuple[str, str], ...]]:
    """(namespace, Secret name) -> (kind, name) of each aggregate that uses it: the Spine's
    broker, the namespace's twin, its proxy (the twin's write token reaches the proxy's
    environment, so a new one must roll the proxy too)."""
    found: dict[Any, tuple[tuple[str, str], ...]] = {}

    def used_by(secret: str, kind: str, key: str) -> None:
        found[(namespace, secret)] = (*found.get((namespace, secret), ()), (kind, key))

    for secret in spine_secret_names(dict(spec)):
        used_by(secret, SPINES.kind, name)
    for secret in (labels.TWIN_TOKENS_SECRET, labels.login_secret_name(TWIN_USERNAME)):
        used_by(secret, TWINS.kind, TWIN_KEY)
    tls = ((dict(spec).get("proxy") or {}).get("tls") or {}).get("secretName")
    for proxy_secret in (labels.PROXY_TOKEN_SECRET, labels.CATALOG_TOKEN_SECRET, tls):
        if isinstance(proxy_secret, str):
            used_by(proxy_secret, PROXIES.kind, PROXY_KEY)
    if dict(spec).get("auth") is not None:
        used_by(labels.TWIN_TOKENS_SECRET, PROXIES.kind, PROXY_KEY)
    return found


@kopf.on.event(
    "apps",
    "v1",
    "statefulsets",
    labels={labels.PART_OF: "spine", labels.MANAGED_BY: "spine-operator"},
)
async def workload_statefulset_changed(body: kopf.Body, namespace: str | None, **_: Any) -> None:
    """A StatefulSet of ours changed (e.g. its pod became ready): refresh its owner's status."""
    if not namespace:
        return
    for reconciler in (SPINES, GATEWAYS):
        owner = controller_of(dict(body), reconciler.kind)
        if owner is not None:
            await reconciler.report(CONTEXT.k8s, namespace, owner[1])
