"""Pure readiness checks of child workloads, as a controller's status reports them."""

from __future__ import annotations

from typing import Any


def statefulset_ready(statefulset: dict[str, Any] | None) -> tuple[bool, str]:
    """(ready, message): every replica ready on the current revision of the current spec."""
    if statefulset is None:
        return False, "the StatefulSet does not exist yet"
    spec_replicas = int(statefulset.get("spec", {}).get("replicas", 1))
    status = statefulset.get("status") or {}
    generation = int(statefulset.get("metadata", {}).get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0)
    if observed < generation:
        return False, "the StatefulSet controller has not seen the latest change yet"
    ready = int(status.get("readyReplicas") or 0)
    if ready < spec_replicas:
        return False, f"{ready} of {spec_replicas} pods ready"
    current, update = status.get("currentRevision"), status.get("updateRevision")
    if current and update and current != update:
        return False, "rolling out a new revision"
    return True, f"{ready} of {spec_replicas} pods ready"


def deployment_ready(deployment: dict[str, Any] | None) -> tuple[bool, str]:
    """(ready, message): every replica of the current spec updated and ready."""
    if deployment is None:
        return False, "the Deployment does not exist yet"
    replicas = int(deployment.get("spec", {}).get("replicas", 1))
    status = deployment.get("status") or {}
    generation = int(deployment.get("metadata", {}).get("generation") or 0)
    if int(status.get("observedGeneration") or 0) < generation:
        return False, "the Deployment controller has not seen the latest change yet"
    ready, updated = int(status.get("readyReplicas") or 0), int(status.get("updatedReplicas") or 0)
    if ready < replicas or updated < replicas:
        return False, f"{min(ready, updated)} of {replicas} pods ready on the latest revision"
    return True, f"{ready} of {replicas} pods ready"
