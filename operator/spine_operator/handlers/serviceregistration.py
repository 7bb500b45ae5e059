"""kopf wiring of the ServiceRegistration kind: every registration of a namespace is served by
its one proxy and catalog.

A registration's change (or deletion) reconciles the proxy aggregate (`PROXIES`), which routes
every accepted HTTP API, gives each MQTT API its login, pushes the proxy's and the catalog's
configs, and writes each registration's status. A Service or ConfigMap that a registration
names heals it when it appears or changes; the proxy's and catalog's Deployment events refresh
the registrations' readiness.
"""

from __future__ import annotations

from typing import Any

import kopf
from pydantic import ValidationError

from spine_operator import conditions as cond
from spine_operator import labels
from spine_operator.api.kinds import API_VERSION, GROUP, SERVICE_REGISTRATION, VERSION
from spine_operator.api.serviceregistration import ServiceRegistrationSpec
from spine_operator.broker_admin import BrokerAccessError
from spine_operator.context import CONTEXT
from spine_operator.desired.proxy import registration_logins
from spine_operator.reconcile.core import retry_if_changed
from spine_operator.reconcile.kinds import PROXIES, PROXY_KEY

# A registration refused for these is retried; its Service's or ConfigMap's event may come first.
RETRIED_REASONS = (cond.DEPENDENCY_NOT_FOUND, cond.DEPENDENCY_UNAVAILABLE)


@kopf.on.resume(GROUP, VERSION, SERVICE_REGISTRATION.plural)
@kopf.on.create(GROUP, VERSION, SERVICE_REGISTRATION.plural)
@kopf.on.update(GROUP, VERSION, SERVICE_REGISTRATION.plural)
async def registration_changed(
    namespace: str | None, name: str, body: kopf.Body, logger: kopf.Logger, **_: Any
) -> None:
    assert namespace, "ServiceRegistration is a namespaced kind"
    await PROXIES.reconcile(namespace, PROXY_KEY, logger)
    await retry_if_changed(API_VERSION, SERVICE_REGISTRATION.kind, body)
    # The proxy as a whole was applied; this registration may still wait for something no
    # event announces (a spec URL that did not answer): kopf retries it with backoff.
    outcome = PROXIES.outcomes.get((namespace, PROXY_KEY))
    verdict = outcome.fact("registrations", {}).get(name) if outcome is not None else None
    if verdict is not None and verdict.reason in RETRIED_REASONS:
        raise kopf.TemporaryError(verdict.message, delay=CONTEXT.retry_delay)


@kopf.on.event(GROUP, VERSION, SERVICE_REGISTRATION.plural)
async def registration_deleted(
    type: str, namespace: str | None, name: str, body: kopf.Body, logger: kopf.Logger, **_: Any
) -> None:
    """No finalizer: the routes and the catalog entry go; its logins go from the broker."""
    if type != "DELETED" or not namespace:
        return
    CONTEXT.metrics.forget(SERVICE_REGISTRATION.kind, namespace, name)
    await PROXIES.reconcile_quietly(namespace, PROXY_KEY, logger)
    try:
        spec = ServiceRegistrationSpec.model_validate(dict(body.get("spec") or {}))
    except ValidationError:
        return  # never accepted, so it never had a login
    for login in registration_logins(name, spec):
        try:
            await CONTEXT.broker_access.remove_login(namespace, login.username)
        except BrokerAccessError as error:
            logger.warning(
                "Broker login %s of %s/%s not removed: %s", login.username, namespace, name, error
            )


@kopf.index(GROUP, VERSION, SERVICE_REGISTRATION.plural)
def registration_references(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[Any, str]:
    """(namespace, kind, name) of each Service and ConfigMap a registration names -> the
    registration: their events heal a registration waiting for them."""
    found: dict[Any, str] = {}
    for api in dict(spec).get("apis") or []:
        if not isinstance(api, dict):
            continue
        service = (api.get("serviceRef") or {}).get("name")
        if isinstance(service, str):
            found[(namespace, "Service", service)] = name
        config_map = ((api.get("spec") or {}).get("configMapKeyRef") or {}).get("name")
        if isinstance(config_map, str):
            found[(namespace, "ConfigMap", config_map)] = name
    return found


async def _referenced_changed(
    kind: str, type: str | None, namespace: str | None, name: str, logger: Any, index: Any
) -> None:
    if not namespace or type is None or not index.get((namespace, kind, name)):
        return
    logger.info("%s %s changed: reconciling the proxy of %s", kind, name, namespace)
    await PROXIES.reconcile_quietly(namespace, PROXY_KEY, logger)


@kopf.on.event("v1", "services")
async def service_changed(
    type: str | None, namespace: str | None, name: str, logger: kopf.Logger, **kwargs: Any
) -> None:
    """A Service a registration routes to appeared, changed or went."""
    await _referenced_changed(
        "Service", type, namespace, name, logger, kwargs["registration_references"]
    )


@kopf.on.event("v1", "configmaps")
async def config_map_changed(
    type: str | None, namespace: str | None, name: str, logger: kopf.Logger, **kwargs: Any
) -> None:
    """A ConfigMap holding a registration's spec appeared, changed or went."""
    await _referenced_changed(
        "ConfigMap", type, namespace, name, logger, kwargs["registration_references"]
    )


@kopf.on.event(
    "apps",
    "v1",
    "deployments",
    labels={labels.PART_OF: "spine", labels.MANAGED_BY: "spine-operator"},
)
async def proxy_or_catalog_changed(namespace: str | None, name: str, **_: Any) -> None:
    """The proxy's or the catalog's Deployment changed: refresh the registrations' status."""
    if namespace and name in (labels.PROXY_NAME, labels.CATALOG_NAME):
        await PROXIES.report(CONTEXT.k8s, namespace, PROXY_KEY)
