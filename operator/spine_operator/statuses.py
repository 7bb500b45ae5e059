"""Every kind's status, derived from what the last reconcile found and what is live now. Pure.

One function per kind, called by the only status writer of that kind (`reconcile/report.py`):
`spine_status`, `twinmodel_status`, `gateway_status`. Each returns the whole new status (kopf's
and Kubernetes' merge patch replaces lists), following CONVENTIONS.md: `Ready` summarises,
`Progressing` and `Degraded` say why, `observedGeneration` says which spec was reconciled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spine_operator import conditions as cond
from spine_operator import labels
from spine_operator.readiness import statefulset_ready

if TYPE_CHECKING:  # the status model is pure; the Outcome type belongs to the reconcile core
    from spine_operator.poller import RuntimeReport
    from spine_operator.reconcile.core import Outcome


def _generation(body: dict[str, Any]) -> int:
    return int(body["metadata"].get("generation") or 0)


def failed(
    generation: int, reason: str, message: str, *types: str, degraded: bool = False
) -> list[dict[str, Any]]:
    """Ready=False (and the given types False) with the reason; Progressing stops."""
    found = [cond.condition(type_, False, reason, message, generation) for type_ in types]
    found += [
        cond.condition(cond.READY, False, reason, message, generation),
        cond.condition(cond.PROGRESSING, False, reason, message, generation),
    ]
    if degraded:
        found.append(cond.condition(cond.DEGRADED, True, reason, message, generation))
    return found


def progressing(generation: int, message: str, ready_reason: str | None = None) -> list[dict]:
    return [
        cond.condition(
            cond.READY, False, ready_reason or cond.PROGRESSING_REASON, message, generation
        ),
        cond.condition(cond.PROGRESSING, True, cond.PROGRESSING_REASON, message, generation),
    ]


def _undelivered(push: Any, what: str, fallback: str) -> str:
    if push is None or push.delivered:
        return ""
    return f"; config push not delivered ({push.message}), {what} {fallback}"


def spine_status(
    body: dict[str, Any],
    broker: Outcome | None,
    twin: Outcome | None,
    broker_statefulset: dict[str, Any] | None,
    twin_statefulset: dict[str, Any] | None,
) -> dict[str, Any]:
    """Conditions BrokerReady, TwinReady, Progressing, Ready (and PersistenceSynced), and the
    broker's and twin's addresses."""
    generation = _generation(body)
    status: dict[str, Any] = {"broker": None, "twin": None}
    if broker is not None:
        status["observedGeneration"] = broker.generation
    if broker is None or broker.generation != generation:
        status["conditions"] = progressing(generation, "Reconciling the latest change")
        return status
    if broker.error is not None:
        status["conditions"] = failed(
            generation,
            broker.error.reason,
            broker.error.message,
            cond.BROKER_READY,
            degraded=broker.error.degraded,
        )
        return status
    broker_ready, broker_detail = statefulset_ready(broker_statefulset)
    endpoint = broker.fact("endpoint")
    status["broker"] = {
        "endpoint": endpoint,
        "adminSecretName": broker.fact("adminSecretName"),
        **({"tlsEndpoint": broker.fact("tlsEndpoint")} if broker.fact("tlsEndpoint") else {}),
    }
    found = [
        cond.condition(
            cond.BROKER_READY,
            broker_ready,
            cond.BROKER_RUNNING if broker_ready else cond.BROKER_STARTING,
            f"Broker {labels.BROKER_NAME}: {broker_detail}",
            generation,
        ),
        *(broker.plan.conditions if broker.plan is not None else []),
    ]
    waiting = [] if broker_ready else [f"broker: {broker_detail}"]
    twin_api = twin.fact("api") if twin is not None else None
    if twin is None or twin.generation != generation:
        twin_ready = False
        waiting.append("twin: reconciling the latest change")
        found.append(
            cond.condition(
                cond.TWIN_READY,
                False,
                cond.PROGRESSING_REASON,
                "Reconciling the latest change",
                generation,
            )
        )
    elif twin.error is not None:
        twin_ready = False
        found.append(
            cond.condition(
                cond.TWIN_READY, False, twin.error.reason, twin.error.message, generation
            )
        )
    else:
        twin_ready, twin_detail = statefulset_ready(twin_statefulset)
        status["twin"] = {
            "api": twin_api,
            "namespace": twin.fact("twinNamespace"),
            "writeTokenSecretName": labels.TWIN_TOKENS_SECRET,
            "things": twin.fact("things", 0),
        }
        found.append(
            cond.condition(
                cond.TWIN_READY,
                twin_ready,
                cond.TWIN_RUNNING if twin_ready else cond.TWIN_STARTING,
                f"Twin {labels.TWIN_NAME}: {twin_detail}"
                + _undelivered(twin.push, "the twin reads its ConfigMap", "within about a minute"),
                generation,
            )
        )
        if not twin_ready:
            waiting.append(f"twin: {twin_detail}")
    if twin is not None and twin.generation == generation and twin.error is not None:
        message = f"Twin: {twin.error.message}"
        found += [
            cond.condition(cond.READY, False, twin.error.reason, message, generation),
            cond.condition(cond.PROGRESSING, False, twin.error.reason, message, generation),
        ]
    else:
        ready = broker_ready and twin_ready
        found += [
            cond.condition(
                cond.PROGRESSING,
                not ready,
                cond.RECONCILED if ready else cond.PROGRESSING_REASON,
                "Every child is applied and ready"
                if ready
                else "Waiting for " + "; ".join(waiting),
                generation,
            ),
            cond.condition(
                cond.READY,
                ready,
                cond.RECONCILED if ready else cond.PROGRESSING_REASON,
                f"Broker at {endpoint}, twin API at {twin_api}"
                if ready
                else "Waiting for " + "; ".join(waiting),
                generation,
            ),
        ]
    status["conditions"] = found
    return status


def twinmodel_status(
    body: dict[str, Any], twin: Outcome | None, spine_problem: tuple[str, str] | None
) -> dict[str, Any] | None:
    """In the twin, refused (and why), or waiting for the Spine; None: nothing known yet."""
    name = body["metadata"]["name"]
    generation = _generation(body)
    model = None
    if twin is not None and twin.error is None:
        model = twin.fact("models", {}).get(name)
    if model is None and spine_problem is None and twin is not None and twin.error is not None:
        spine_problem = (twin.error.reason, twin.error.message)
    if model is not None:
        reason, message = model.reason, model.message
    elif spine_problem is not None:
        reason, message = spine_problem
    else:
        return None
    ready = reason == cond.RECONCILED
    return {
        "observedGeneration": generation,
        "conditions": [cond.condition(cond.READY, ready, reason, message, generation)],
        "things": model.things if model is not None else None,
        "version": model.version if model is not None else None,
        "api": twin.fact("api") if ready and twin is not None else None,
    }


def connection_conditions(
    ready: bool, report: RuntimeReport | None, url: str, generation: int
) -> list[dict[str, Any]]:
    """Connected and Degraded, from the poller's last report of the runtime's /status."""

    def both(status: str, reason: str, message: str) -> list[dict[str, Any]]:
        return [
            cond.condition(cond.CONNECTED, status, reason, message, generation),
            cond.condition(cond.DEGRADED, status, reason, message, generation),
        ]

    if not ready:
        return both("Unknown", cond.AWAITING_STATUS, "The gateway pod is not ready yet")
    if report is None:
        return both("Unknown", cond.AWAITING_STATUS, f"Waiting for the first poll of {url}/status")
    if not report.reachable:
        message = f"The gateway's /status cannot be read: {report.error}"
        return [
            cond.condition(
                cond.CONNECTED, "Unknown", cond.DEPENDENCY_UNAVAILABLE, message, generation
            ),
            cond.condition(cond.DEGRADED, True, cond.DEPENDENCY_UNAVAILABLE, message, generation),
        ]
    down = report.down()
    if down:
        connected = cond.condition(
            cond.CONNECTED, False, cond.CONNECTIONS_DOWN, "Down: " + "; ".join(down), generation
        )
    else:
        connected = cond.condition(
            cond.CONNECTED,
            True,
            cond.ALL_CONNECTED,
            f"All {len(report.connections)} PLC connections and the broker session are up",
            generation,
        )
    degraded = cond.condition(
        cond.DEGRADED, False, cond.STATUS_REPORTED, f"{url}/status answered", generation
    )
    return [connected, degraded]


def gateway_conditions(
    body: dict[str, Any],
    outcome: Outcome | None,
    statefulset: dict[str, Any] | None,
    report: RuntimeReport | None,
    url: str,
) -> list[dict[str, Any]]:
    """Every condition of a Gateway from what is known now."""
    generation = _generation(body)
    ready, detail = statefulset_ready(statefulset)
    found = connection_conditions(ready, report, url, generation)
    if outcome is None or outcome.generation != generation:
        return [*found, *progressing(generation, "Reconciling the latest change")]
    if outcome.error is not None:
        error = outcome.error
        return [*found, *failed(generation, error.reason, error.message, degraded=error.degraded)]
    workload = labels.gateway_name(body["metadata"]["name"])
    if ready:
        message = (
            f"StatefulSet {workload} is ready with {outcome.fact('connections', 0)} connections "
            f"and {outcome.fact('tags', 0)} tags"
        ) + _undelivered(outcome.push, "the gateway reads its ConfigMap", "within about a minute")
        found += [
            cond.condition(cond.READY, True, cond.RECONCILED, message, generation),
            cond.condition(
                cond.PROGRESSING,
                False,
                cond.RECONCILED,
                "Every child is applied and ready",
                generation,
            ),
        ]
    else:
        found += progressing(generation, f"Waiting for StatefulSet {workload}: {detail}")
    if outcome.plan is not None:
        found += outcome.plan.conditions
    return found


def gateway_status(
    body: dict[str, Any],
    outcome: Outcome | None,
    statefulset: dict[str, Any] | None,
    report: RuntimeReport | None,
    url: str,
) -> dict[str, Any]:
    empty = dict.fromkeys(("connections", "tags", "buffered", "oldestBufferedSeconds"))
    status: dict[str, Any] = {
        "conditions": gateway_conditions(body, outcome, statefulset, report, url),
        **(report.status_fields() if report is not None else {**empty, "publishRate": None}),
    }
    if outcome is not None:
        status["observedGeneration"] = outcome.generation
    return status
