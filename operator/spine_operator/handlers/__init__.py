"""kopf handlers, one module per kind (plus Secrets); importing this package registers them.

`configure` sets kopf's own settings the way Spine wants them: bookkeeping in annotations under
spine.iiot.dev (never in status), our finalizer name, and Kubernetes events only for warnings.
It also starts the one background poller of runtime health (DESIGN.md: no timer per resource).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from spine_operator import poller as status_poller
from spine_operator.context import CONTEXT
from spine_operator.labels import FINALIZER, PREFIX
from spine_operator.reconcile import kinds

_poller: status_poller.RuntimePoller | None = None


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _poller
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.batching.error_delays = [1, 2, 5, 10, 30]
    kinds.reset()
    _poller = status_poller.RuntimePoller(
        kind="Gateway",
        targets=lambda: sorted(kinds.ready_gateways),
        url_of=lambda key: CONTEXT.environment.gateway_url(*key),
        deliver=kinds.deliver_gateway_report,
        metrics=CONTEXT.metrics,
    )
    _poller.start()


@kopf.on.cleanup()
async def stop(**_: Any) -> None:
    global _poller
    if _poller is not None:
        await _poller.stop()
        _poller = None
    await CONTEXT.close()


from spine_operator.handlers import gateway, secrets, spine, twinmodel  # noqa: E402,F401
