"""The emulator refuses a status its CRD would not keep, so an operator test cannot pass while a
real API server silently prunes what the operator writes."""

from __future__ import annotations

from tests.support.emulator import status_refusal


def test_a_status_field_the_crd_lacks_is_refused_naming_it() -> None:
    refusal = status_refusal("Gateway", {"observedGeneration": 2, "bufferedUpdates": 3})
    assert refusal is not None and "bufferedUpdates" in refusal


def test_a_wrong_type_is_refused_and_a_fitting_status_kept() -> None:
    assert status_refusal("Spine", {"observedGeneration": "two"}) is not None
    condition = {
        "type": "Ready",
        "status": "True",
        "reason": "Reconciled",
        "message": "ok",
        "lastTransitionTime": "2026-12-04T00:00:00Z",
        "observedGeneration": 2,
    }
    assert status_refusal("Spine", {"observedGeneration": 2, "conditions": [condition]}) is None
    assert status_refusal("ConfigMap", {"anything": 1}) is None  # not one of our kinds
