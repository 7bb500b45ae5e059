"""kopf handlers, one module per kind; importing this package registers them with kopf.

`configure` sets kopf's own settings the way Spine wants them: bookkeeping in annotations under
spine.iiot.dev (never in status), our finalizer name, and Kubernetes events only for warnings.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from spine_operator.labels import FINALIZER, PREFIX


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.batching.error_delays = [1, 2, 5, 10, 30]


from spine_operator.handlers import gateway, spine, twinmodel  # noqa: E402,F401  - registers the handlers
