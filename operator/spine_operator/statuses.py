"""Every kind's status, derived from what the last reconcile found and what is live now. Pure.

One function per kind, called by the only status writer of that kind (`reconcile/kinds.py`):
`spine_status`, `twinmodel_status`, `gateway_status`, `flow_status`. Each returns the whole new
status (Kubernetes' merge patch replaces lists), following CONVENTIONS.md: `Ready` summarises,
`Progressing` and `Degraded` say why, `observedGeneration` says which spec was reconciled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spine_operator import conditions as cond
from spine_operator import labels
from spine_operator.readiness import deployment_ready, statefulset_ready

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


def _flow_figures(flow: dict[str, Any] | None) -> dict[str, Any]:
    """A flow's figures from the engine's /status, as the Flow's status carries them."""
    if flow is None:
        return {}
    steps = flow.get("steps") or {}
    sinks = flow.get("sinks") or {}
    errors = sum(int(step.get("errors") or 0) for step in steps.values())
    errors += sum(int(sink.get("errors") or 0) for sink in sinks.values())
    return {
        "running": bool(flow.get("running")),
        "messagesIn": int(flow.get("received") or 0),
        "messagesPerSecond": float(flow.get("messagesPerSecond") or 0.0),
        "errors": errors,
        "deadLetters": int(flow.get("deadLetters") or 0),
        "inFlight": int(flow.get("inFlight") or 0),
        "lastMessageTime": flow.get("lastMessageTime"),
        "lastError": (str(flow["lastError"])[:300] if flow.get("lastError") else None),
        "steps": [
            {
                "name": name,
                "kind": step.get("kind"),
                "messagesIn": int(step.get("in") or 0),
                "messagesOut": int(step.get("out") or 0),
                "filtered": int(step.get("filtered") or 0),
                "errors": int(step.get("errors") or 0),
            }
            for name, step in steps.items()
        ],
    }


def flow_status(
    body: dict[str, Any],
    engine: Outcome | None,
    deployment: dict[str, Any] | None,
    report: Any,
    spine_problem: tuple[str, str] | None,
) -> dict[str, Any] | None:
    """Ready when the engine runs the flow; refused (and why) or waiting otherwise; None when
    nothing is known yet. `report` is the poller's last FlowEngineReport."""
    name = body["metadata"]["name"]
    generation = _generation(body)
    verdict = None
    if engine is not None and engine.error is None:
        verdict = engine.fact("flows", {}).get(name)
    if verdict is None and spine_problem is None and engine is not None and engine.error:
        spine_problem = (engine.error.reason, engine.error.message)
    status: dict[str, Any] = {"observedGeneration": generation}
    if verdict is None:
        if spine_problem is None:
            return None
        status["conditions"] = failed(generation, *spine_problem)
        return status
    status["loginSecretName"] = verdict.login_secret
    status["routeUrl"] = verdict.route_url  # None: not exposed (removes a stale one)
    if verdict.reason != cond.RECONCILED:
        status["conditions"] = failed(generation, verdict.reason, verdict.message)
        return status
    ready, detail = deployment_ready(deployment)
    # With replicas, the figures of those that answered (summed), even if one did not.
    flow = getattr(report, "flows", {}).get(name) if report is not None else None
    status.update(_flow_figures(flow))
    if not ready:
        status["conditions"] = progressing(
            generation, f"Waiting for StatefulSet {labels.FLOW_ENGINE_NAME}: {detail}"
        )
        return status
    message = f"Running on StatefulSet {labels.FLOW_ENGINE_NAME}" + _undelivered(
        engine.push if engine else None, "the engine reads its ConfigMap", "within about a minute"
    )
    found = [
        cond.condition(cond.READY, True, cond.RECONCILED, message, generation),
        cond.condition(
            cond.PROGRESSING, False, cond.RECONCILED, "Every child is applied and ready", generation
        ),
    ]
    if report is not None and not report.reachable:
        text = f"The flow engine's /status cannot be read: {report.error}"
        found.append(
            cond.condition(cond.DEGRADED, True, cond.DEPENDENCY_UNAVAILABLE, text, generation)
        )
    elif report is not None:
        # A message a step refused is counted (status.errors, lastError) and dead-lettered; it
        # does not make the flow Degraded, or one bad message would mark it so for good.
        text = "The flow engine answered"
        found.append(cond.condition(cond.DEGRADED, False, cond.STATUS_REPORTED, text, generation))
    status["conditions"] = found
    return status


def reachable_condition(
    verdict: Any, name: str, proxy_report: Any, catalog_report: Any, generation: int
) -> dict[str, Any]:
    """Reachable from the poller's reads: the proxy's health of each route and the catalog's
    probe of the entry. Unknown until both answered about this registration."""
    problems: list[str] = []
    known = 0
    wanted = 0
    for route in verdict.routes:
        wanted += 1
        found = (
            proxy_report.routes.get(route)
            if proxy_report is not None and proxy_report.reachable
            else None
        )
        if found is None or found.get("up") is None:
            continue
        known += 1
        if not found.get("up"):
            detail = f": {str(found['detail'])[:200]}" if found.get("detail") else ""
            problems.append(f"route {route} is down{detail}")
    entry = None
    if catalog_report is not None and catalog_report.reachable:
        entry = catalog_report.entries.get(name)
    if entry is not None and entry.get("reachable") is not None:
        wanted += 1
        known += 1
        if not entry["reachable"]:
            detail = f": {str(entry['detail'])[:200]}" if entry.get("detail") else ""
            problems.append(f"the catalog's probe failed{detail}")
    if problems:
        return cond.condition(
            cond.REACHABLE, False, cond.PROBE_FAILED, "; ".join(problems), generation
        )
    if wanted == 0 or known < wanted:
        away = [
            report.error
            for report in (proxy_report, catalog_report)
            if report is not None and not report.reachable and report.error
        ]
        message = (
            f"The proxy's or the catalog's /status cannot be read: {away[0]}"
            if away
            else "Waiting for the proxy's and the catalog's checks"
        )
        return cond.condition(cond.REACHABLE, "Unknown", cond.AWAITING_STATUS, message, generation)
    return cond.condition(
        cond.REACHABLE, True, cond.PROBE_SUCCEEDED, "The service answers", generation
    )


def registration_status(
    body: dict[str, Any],
    proxy: Outcome | None,
    deployments: tuple[dict[str, Any] | None, dict[str, Any] | None],
    reports: tuple[Any, Any],
    spine_problem: tuple[str, str] | None,
) -> dict[str, Any] | None:
    """Ready when routed, registered and both workloads are ready; SpecValid from the spec
    validator; Reachable from the poller; None when nothing is known yet."""
    name = body["metadata"]["name"]
    generation = _generation(body)
    verdict = None
    if proxy is not None and proxy.error is None:
        verdict = proxy.fact("registrations", {}).get(name)
    if verdict is None and spine_problem is None and proxy is not None and proxy.error:
        spine_problem = (proxy.error.reason, proxy.error.message)
    status: dict[str, Any] = {"observedGeneration": generation}
    if verdict is None:
        if spine_problem is None:
            return None
        status["conditions"] = [
            *failed(generation, *spine_problem),
            cond.condition(
                cond.SPEC_VALID, "Unknown", spine_problem[0], spine_problem[1], generation
            ),
            cond.condition(
                cond.REACHABLE, "Unknown", cond.NOT_ROUTED, spine_problem[1], generation
            ),
        ]
        return status
    spec_status = "Unknown" if verdict.spec_valid is None else verdict.spec_valid
    spec_valid = cond.condition(
        cond.SPEC_VALID,
        spec_status,
        verdict.spec_reason,
        verdict.spec_message or verdict.message,
        generation,
    )
    status["routes"] = [api.route_url for api in verdict.apis if api.route_url]
    status["routeCount"] = len(verdict.routes)
    status["loginSecretNames"] = [api.login_secret for api in verdict.apis if api.login_secret]
    status["apis"] = [
        {
            key: value
            for key, value in {
                "id": api.id,
                "protocol": api.protocol,
                "routeUrl": api.route_url,
                "loginSecretName": api.login_secret,
                "specHash": api.spec_hash,
                "specValid": api.spec_valid,
            }.items()
            if value is not None
        }
        for api in verdict.apis
    ]
    if verdict.reason != cond.RECONCILED:
        status["routeCount"] = 0
        status["routes"] = []
        status["conditions"] = [
            *failed(generation, verdict.reason, verdict.message),
            spec_valid,
            cond.condition(
                cond.REACHABLE,
                "Unknown",
                cond.NOT_ROUTED,
                "Not routed or probed while it is refused",
                generation,
            ),
        ]
        return status
    waiting = []
    for workload_name, deployment in zip(
        (labels.PROXY_NAME, labels.CATALOG_NAME), deployments, strict=True
    ):
        ready, detail = deployment_ready(deployment)
        if not ready:
            waiting.append(f"Deployment {workload_name}: {detail}")
    reachable = reachable_condition(verdict, name, *reports, generation)
    if waiting:
        status["conditions"] = [
            *progressing(generation, "Waiting for " + "; ".join(waiting)),
            spec_valid,
            reachable,
        ]
        return status
    message = verdict.message + _undelivered(
        proxy.push if proxy else None, "the proxy reads its ConfigMap", "within about a minute"
    )
    status["conditions"] = [
        cond.condition(cond.READY, True, cond.RECONCILED, message, generation),
        cond.condition(
            cond.PROGRESSING, False, cond.RECONCILED, "Every child is applied and ready", generation
        ),
        spec_valid,
        reachable,
    ]
    return status


def keys_conditions(proxy: Outcome | None, generation: int) -> list[dict[str, Any]]:
    """The Spine's Degraded from its issuer's keys: none fetched yet (every protected route
    answers 503), or the last fetch failed (the last good keys stay)."""
    if proxy is None or proxy.plan is None or not proxy.fact("issuer"):
        return []
    issuer, error, keys = proxy.fact("issuer"), proxy.fact("keysError"), proxy.fact("keys") or 0
    if keys == 0:
        detail = f": {error}" if error else ""
        message = (
            f"No verification keys from issuer {issuer} yet{detail}; every protected route "
            "answers 503 until they are fetched"
        )
        return [
            cond.condition(cond.DEGRADED, True, cond.DEPENDENCY_UNAVAILABLE, message, generation)
        ]
    if error:
        message = f"Issuer {issuer}: {error}; the proxy keeps its last {keys} good keys"
        return [
            cond.condition(cond.DEGRADED, True, cond.DEPENDENCY_UNAVAILABLE, message, generation)
        ]
    return [
        cond.condition(
            cond.DEGRADED,
            False,
            cond.KEYS_FETCHED,
            f"{keys} verification keys from issuer {issuer}",
            generation,
        )
    ]
