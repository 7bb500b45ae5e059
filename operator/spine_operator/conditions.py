"""Condition types, reasons and the pure helpers that merge them into a status.

Reasons are CamelCase constants with one comment each; add, never rename (users and alerts match
on them). `merge_conditions` keeps `lastTransitionTime` unless the status flips, as the
Kubernetes API conventions ask.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any

# Condition types.
READY = "Ready"
BROKER_READY = "BrokerReady"
TWIN_READY = "TwinReady"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"

# Reasons.
RECONCILED = "Reconciled"  # every child applied and ready
INVALID_SPEC = "InvalidSpec"  # the spec is wrong in itself; the message says what to fix
PROGRESSING_REASON = "Progressing"  # children applied, waiting for them to become ready
SPINE_NOT_FOUND = "SpineNotFound"  # a leaf resource in a namespace without a Spine
DEPENDENCY_NOT_FOUND = "DependencyNotFound"  # a referenced resource does not exist (yet)
DEPENDENCY_NOT_READY = "DependencyNotReady"  # a referenced resource exists but is not ready
INVALID_REFERENCE = "InvalidReference"  # a reference exists but does not fit
DEPENDENCY_UNAVAILABLE = "DependencyUnavailable"  # a dependency cannot be reached
APPLY_FAILED = "ApplyFailed"  # the API server refused a child; the message has its answer
BROKER_STARTING = "BrokerStarting"  # the broker pod is not ready yet
BROKER_RUNNING = "BrokerRunning"  # the broker pod is ready
TWIN_STARTING = "TwinStarting"  # the twin pod is not ready yet
TWIN_RUNNING = "TwinRunning"  # the twin pod is ready
VOLUME_EXPANSION_UNSUPPORTED = "VolumeExpansionUnsupported"  # PVC cannot grow in its class
VOLUME_SHRINK_REFUSED = "VolumeShrinkRefused"  # a PVC can never shrink
VOLUME_EXPANDING = "VolumeExpanding"  # a larger size was requested from the storage class


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    type_: str, status: bool | str, reason: str, message: str, generation: int | None
) -> dict[str, Any]:
    if isinstance(status, bool):
        status = "True" if status else "False"
    result: dict[str, Any] = {"type": type_, "status": status, "reason": reason, "message": message}
    if generation is not None:
        result["observedGeneration"] = generation
    return result


def merge_conditions(
    current: Iterable[dict[str, Any]] | None,
    updates: Iterable[dict[str, Any]],
    timestamp: str | None = None,
) -> list[dict[str, Any]]:
    """The whole new list (kopf's status patch replaces lists), sorted by type.

    A condition whose status is unchanged keeps its lastTransitionTime; a new or flipped one
    gets `timestamp`. Types not in `updates` are kept as they are.
    """
    stamp = timestamp or now()
    by_type = {item["type"]: dict(item) for item in (current or []) if "type" in item}
    for update in updates:
        previous = by_type.get(update["type"])
        merged = dict(update)
        if previous is not None and previous.get("status") == update["status"]:
            merged["lastTransitionTime"] = previous.get("lastTransitionTime") or stamp
        else:
            merged["lastTransitionTime"] = stamp
        by_type[update["type"]] = merged
    return [by_type[key] for key in sorted(by_type)]


def find(conditions: Iterable[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    return next((item for item in conditions or [] if item.get("type") == type_), None)


def is_true(conditions: Iterable[dict[str, Any]] | None, type_: str) -> bool:
    found = find(conditions, type_)
    return found is not None and found.get("status") == "True"


PERSISTENCE_SYNCED = "PersistenceSynced"  # condition type: the broker PVC has the requested size
VOLUME_SIZE_MATCHES = "SizeMatches"  # the PVC has the requested size
DUPLICATE_SPINE = "DuplicateSpine"  # another Spine already owns this namespace's workloads
CONNECTED = "Connected"  # condition type: a gateway's PLC connections and broker session are up
ALL_CONNECTED = "AllConnected"  # the gateway reports every connection up
CONNECTIONS_DOWN = "ConnectionsDown"  # the gateway reports a connection down; message says why
AWAITING_STATUS = "AwaitingStatus"  # the workload's /status has not been read yet
STATUS_REPORTED = "StatusReported"  # the workload's /status answered at the last poll
VOLUME_CLAIM_IMMUTABLE = "VolumeClaimImmutable"  # a PVC's storage class or kind cannot change
SPEC_VALID = "SpecValid"  # condition type: every API spec of a ServiceRegistration is valid
REACHABLE = "Reachable"  # condition type: the registered service answers probes and the proxy
SPEC_VALIDATED = "SpecValidated"  # every API's spec passed the OpenAPI/AsyncAPI validator
PROBE_SUCCEEDED = "ProbeSucceeded"  # the catalog's probe and the proxy's checks answered
PROBE_FAILED = "ProbeFailed"  # the catalog's probe or the proxy's check failed; message says why
NOT_ROUTED = "NotRouted"  # the registration is refused, so nothing probes it
KEYS_FETCHED = "KeysFetched"  # the issuer's verification keys were fetched at the last refresh
PROXY_CONFIG_FULL = (
    "ProxyConfigFull"  # the proxy's config has no room for this registration's routes
)
