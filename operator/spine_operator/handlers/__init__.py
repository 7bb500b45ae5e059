"""kopf handlers, one module per kind (plus Secrets); importing this package registers them.

`configure` sets kopf's own settings the way Spine wants them: bookkeeping in annotations under
spine.iiot.dev (never in status), our finalizer name, and Kubernetes events only for warnings.
It also starts the background pollers of runtime health (DESIGN.md: no timer per resource) and
the one task that refreshes each namespace's OIDC keys (keyrefresh.py).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from spine_operator import poller as status_poller
from spine_operator.context import CONTEXT
from spine_operator.labels import FINALIZER, PREFIX
from spine_operator.reconcile import kinds

_pollers: list[status_poller.RuntimePoller] = []


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.batching.error_delays = [1, 2, 5, 10, 30]
    kinds.reset()
    _pollers[:] = [
        status_poller.RuntimePoller(
            kind="Gateway",
            targets=lambda: sorted(kinds.ready_gateways),
            url_of=lambda key: CONTEXT.environment.gateway_url(*key),
            deliver=kinds.deliver_gateway_report,
            metrics=CONTEXT.metrics,
        ),
        status_poller.RuntimePoller(
            kind="Flow",
            targets=lambda: sorted(kinds.ready_engines),
            url_of=lambda key: CONTEXT.environment.flow_engine_url(key[0]),
            deliver=kinds.deliver_engine_report,
            metrics=CONTEXT.metrics,
            parse=status_poller.flow_engine_report,
            replica_urls=lambda key: CONTEXT.environment.flow_engine_replica_urls(
                key[0], kinds.engine_replicas(key[0])
            ),
            combine=status_poller.combine_flow_engine_reports,
        ),
        status_poller.RuntimePoller(
            kind="Proxy",
            targets=lambda: sorted(kinds.ready_proxies),
            url_of=lambda key: CONTEXT.environment.proxy_url(key[0]),
            deliver=kinds.deliver_proxy_report,
            metrics=CONTEXT.metrics,
            parse=status_poller.proxy_report,
        ),
        status_poller.RuntimePoller(
            kind="Catalog",
            targets=lambda: sorted(kinds.ready_catalogs),
            url_of=lambda key: CONTEXT.environment.catalog_url(key[0]),
            deliver=kinds.deliver_catalog_report,
            metrics=CONTEXT.metrics,
            parse=status_poller.catalog_report,
        ),
    ]
    for poller in _pollers:
        poller.start()
    CONTEXT.keys.reset()
    CONTEXT.keys.on_change = reconcile_proxy_after_key_change
    CONTEXT.keys.start()


async def reconcile_proxy_after_key_change(namespace: str) -> None:
    """New keys (or an issuer that now answers or no longer does): re-render the proxy."""
    await kinds.PROXIES.reconcile_quietly(namespace, kinds.PROXY_KEY)


@kopf.on.cleanup()
async def stop(**_: Any) -> None:
    for poller in _pollers:
        await poller.stop()
    _pollers.clear()
    await CONTEXT.keys.stop()
    await CONTEXT.close()


from spine_operator.handlers import (  # noqa: E402,F401
    flow,
    gateway,
    secrets,
    serviceregistration,
    spine,
    twinmodel,
)
