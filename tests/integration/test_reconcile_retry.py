"""`retry_if_changed`, which ends every change handler: kopf records the body a handler was
called with as handled, while the reconciles read the live objects, so a handler whose object
changed while it ran must be run again (a spec changed and changed back would stay handled with
the middle version's children otherwise: tests/integration/test_flow_operator.py shows it)."""

from __future__ import annotations

import kopf
import pytest

from spine_operator.api.kinds import API_VERSION, TWINMODEL
from spine_operator.k8s import Kubernetes
from spine_operator.reconcile.core import retry_if_changed
from tests.integration.test_twinmodel_operator import press_model

pytestmark = pytest.mark.integration


async def test_a_handler_is_run_again_only_when_its_object_changed_meanwhile(
    cluster, operator
) -> None:
    k8s = Kubernetes()
    await k8s.create(press_model(name="moving"))
    handled = await k8s.get(API_VERSION, TWINMODEL.kind, "plant-a", "moving")
    assert handled is not None
    await retry_if_changed(API_VERSION, TWINMODEL.kind, handled)  # unchanged: nothing to redo

    await k8s.patch_merge(
        API_VERSION, TWINMODEL.kind, "plant-a", "moving", {"spec": {"title": "Moved"}}
    )
    live = await k8s.get(API_VERSION, TWINMODEL.kind, "plant-a", "moving")
    assert live is not None
    assert live["metadata"]["generation"] != handled["metadata"]["generation"]
    with pytest.raises(kopf.TemporaryError, match="changed while it was reconciled"):
        await retry_if_changed(API_VERSION, TWINMODEL.kind, handled)
    await retry_if_changed(API_VERSION, TWINMODEL.kind, live)  # the retry, with the live body

    # A status write (the operator's own) does not move the generation: no retry for it.
    await k8s.patch_merge(
        API_VERSION,
        TWINMODEL.kind,
        "plant-a",
        "moving",
        {"status": {"observedGeneration": live["metadata"]["generation"]}},
        subresource="status",
    )
    await retry_if_changed(API_VERSION, TWINMODEL.kind, live)
