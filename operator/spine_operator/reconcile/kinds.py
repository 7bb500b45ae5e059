"""The table of reconciled kinds: each a `Reconciler` of read, gather, plan and status writer.

Adding a kind means a model (`api/`), a plan (`desired/`), a status function (`statuses.py`),
and an entry here; its handler module only wires kopf's events to `RECONCILERS[...]`.
The twin is an aggregate: one per namespace, keyed by (namespace, TWIN_KEY), owned by the Spine
and fed by every TwinModel; it writes each TwinModel's status.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from functools import partial
from typing import Any

from spine_operator import conditions as cond
from spine_operator import labels
from spine_operator import poller as status_poller
from spine_operator.api.kinds import (
    API_VERSION,
    FLOW,
    GATEWAY,
    SERVICE_REGISTRATION,
    SPINE,
    TWINMODEL,
)
from spine_operator.context import CONTEXT
from spine_operator.desired.broker import plan_spine
from spine_operator.desired.common import controller_of
from spine_operator.desired.flow import plan_flows
from spine_operator.desired.gateway import plan_gateway
from spine_operator.desired.proxy import plan_proxy
from spine_operator.desired.twin import plan_twin
from spine_operator.errors import SpineNotFound
from spine_operator.k8s import ApiError, Kubernetes
from spine_operator.readiness import deployment_ready, statefulset_ready
from spine_operator.reconcile import gather
from spine_operator.reconcile.core import Key, Reconciler
from spine_operator.statuses import (
    flow_status,
    gateway_status,
    keys_conditions,
    registration_status,
    spine_status,
    twinmodel_status,
)

TWIN_KEY = "twin"  # the twin aggregate's name in its (namespace, name) key
TWIN = "Twin"  # its kind in metrics and logs

_status_locks: defaultdict[tuple[str, str, str], asyncio.Lock] = defaultdict(asyncio.Lock)


async def owned_statefulset(
    k8s: Kubernetes, namespace: str, name: str, owner_kind: str, owner: dict[str, Any]
) -> dict[str, Any] | None:
    """The StatefulSet, if `owner` controls it: another resource's says nothing about this one."""
    statefulset = await k8s.get("apps/v1", "StatefulSet", namespace, name)
    controller = controller_of(statefulset, owner_kind)
    if controller is None or controller[0] != owner["metadata"].get("uid"):
        return None
    return statefulset


def not_reconciled_yet(reconciler: Reconciler[Any], body: dict[str, Any]) -> bool:
    """Whether this process has not reconciled the resource yet although it has a status: right
    after an operator restart, events of its children (kopf lists them at start) would otherwise
    write Ready=False "Reconciling the latest change" before the resumed reconcile writes
    Ready=True again, a false Progressing for kubectl wait and Argo CD. The last report stands."""
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    return key not in reconciler.outcomes and bool((body.get("status") or {}).get("conditions"))


async def write_status(
    k8s: Kubernetes, kind: str, body: dict[str, Any], new_status: dict[str, Any]
) -> None:
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    current = body.get("status") or {}
    if "conditions" in new_status:
        new_status = {
            **new_status,
            "conditions": cond.merge_conditions(
                current.get("conditions"), new_status["conditions"]
            ),
        }
    CONTEXT.metrics.set_ready(
        kind, namespace, name, cond.is_true(new_status.get("conditions"), cond.READY)
    )
    await k8s.patch_status(kind, namespace, name, current, new_status)


async def report_spine(k8s: Kubernetes, namespace: str, name: str) -> None:
    """The only writer of a Spine's status: the broker's and the twin's outcomes, live state."""
    async with _status_locks[(SPINE.kind, namespace, name)]:
        body = await k8s.get(API_VERSION, SPINE.kind, namespace, name)
        twin_pending = (namespace, TWIN_KEY) not in TWINS.outcomes and bool(
            ((body or {}).get("status") or {}).get("conditions")
        )
        # Its status has both halves: until this process reconciled both, the last one stands.
        if body is None or not_reconciled_yet(SPINES, body) or twin_pending:
            return
        broker_sts = await owned_statefulset(k8s, namespace, labels.BROKER_NAME, SPINE.kind, body)
        twin_sts = await owned_statefulset(k8s, namespace, labels.TWIN_NAME, SPINE.kind, body)
        new_status = spine_status(
            body,
            SPINES.outcomes.get((namespace, name)),
            TWINS.outcomes.get((namespace, TWIN_KEY)),
            broker_sts,
            twin_sts,
        )
        add_proxy_status(new_status, body, PROXIES.outcomes.get((namespace, PROXY_KEY)))
        await write_status(k8s, SPINE.kind, body, new_status)


def add_proxy_status(status: dict[str, Any], body: dict[str, Any], proxy: Any) -> None:
    """The proxy's address and its issuer's keys in the Spine's status; a key problem makes
    the Spine Degraded (a broker problem, already Degraded, says more and stays)."""
    if proxy is None or proxy.plan is None or not proxy.fact("proxyUrl"):
        return
    status["proxy"] = {
        "url": proxy.fact("proxyUrl"),
        "catalogUrl": proxy.fact("catalogUrl"),
        **({"keys": proxy.fact("keys")} if proxy.fact("keys") is not None else {}),
        **({"keysFetchedAt": proxy.fact("keysFetchedAt")} if proxy.fact("keysFetchedAt") else {}),
    }
    generation = int(body["metadata"].get("generation") or 0)
    found = status.setdefault("conditions", [])
    if any(c["type"] == cond.DEGRADED and c["status"] == "True" for c in found):
        return
    found[:] = [c for c in found if c["type"] != cond.DEGRADED]
    found += keys_conditions(proxy, generation)


async def report_twin(k8s: Kubernetes, namespace: str, _: str) -> None:
    """Each TwinModel's status from the twin's outcome; then the owning Spine's TwinReady."""
    spine = await gather.namespace_spine(k8s, namespace)
    problem = None
    if spine is None:
        error = SpineNotFound.in_namespace(namespace, "this model is delivered")
        problem = (error.reason, error.message)
    outcome = TWINS.outcomes.get((namespace, TWIN_KEY))
    for item in await k8s.list(API_VERSION, TWINMODEL.kind, namespace):
        async with _status_locks[(TWINMODEL.kind, namespace, item["metadata"]["name"])]:
            new_status = twinmodel_status(item, outcome if spine else None, problem)
            if new_status is not None:
                await write_status(k8s, TWINMODEL.kind, item, new_status)
    if spine is not None:
        await report_spine(k8s, namespace, spine["metadata"]["name"])


# Gateways: the status poller's last report of each ready gateway is part of its status.
reports: dict[Key, status_poller.RuntimeReport] = {}
ready_gateways: set[Key] = set()  # the poller's targets
# (kind, namespace, name) -> generation of the dependencies last seen, to tell news from noise
dependency_generations: dict[tuple[str, str, str], int] = {}
# (namespace, registration) -> what a flow's serviceRef reads of it (generation, refusal) as
# last seen: its status is rewritten often (reachability), and only this is news to flows.
registration_fingerprints: dict[tuple[str, str], Any] = {}


async def report_gateway(k8s: Kubernetes, namespace: str, name: str) -> None:
    """The only writer of a Gateway's status: outcome, live StatefulSet, poller's report."""
    key = (namespace, name)
    async with _status_locks[(GATEWAY.kind, namespace, name)]:
        body = await k8s.get(API_VERSION, GATEWAY.kind, namespace, name)
        if body is None or not_reconciled_yet(GATEWAYS, body):
            return
        statefulset = await owned_statefulset(
            k8s, namespace, labels.gateway_name(name), GATEWAY.kind, body
        )
        if statefulset_ready(statefulset)[0]:
            ready_gateways.add(key)
        else:
            ready_gateways.discard(key)
            reports.pop(key, None)
        url = CONTEXT.environment.gateway_url(namespace, name)
        report = reports.get(key)
        new_status = gateway_status(body, GATEWAYS.outcomes.get(key), statefulset, report, url)
        last = cond.find((body.get("status") or {}).get("conditions"), cond.CONNECTED) or {}
        if (
            report is None
            and key in ready_gateways
            and last.get("reason")
            not in (
                None,
                cond.AWAITING_STATUS,
            )
        ):
            # A restarted operator has not polled yet: the last process's report (conditions
            # and figures) stands until this one's first poll, not a flip to AwaitingStatus.
            new_status = {
                "conditions": [
                    c
                    for c in new_status["conditions"]
                    if c["type"] not in (cond.CONNECTED, cond.DEGRADED)
                ],
                **(
                    {"observedGeneration": new_status["observedGeneration"]}
                    if "observedGeneration" in new_status
                    else {}
                ),
            }
        await write_status(k8s, GATEWAY.kind, body, new_status)


# The flow engine: the poller's last report of each namespace's engine.
engine_reports: dict[str, Any] = {}
ready_engines: set[Key] = set()  # (namespace, FLOWS_KEY): the poller's targets
FLOWS_KEY = "flows"  # the flow engine aggregate's name in its (namespace, name) key
FLOW_ENGINE = "FlowEngine"  # its kind in metrics and logs


def engine_replicas(namespace: str) -> int:
    """How many replicas the namespace's engine runs, as its last plan said."""
    outcome = FLOWS.outcomes.get((namespace, FLOWS_KEY))
    return int(outcome.fact("replicas", 1) if outcome is not None else 1)


def engine_prune_held(namespace: str) -> bool:
    """Whether replica logins wait for the pods of a scale-down to stop."""
    outcome = FLOWS.outcomes.get((namespace, FLOWS_KEY))
    return bool(outcome.fact("pruneHeld", False)) if outcome is not None else False


async def report_flows(k8s: Kubernetes, namespace: str, _: str) -> None:
    """Each Flow's status from the engine's outcome, its StatefulSet and the poller's report."""
    spine = await gather.namespace_spine(k8s, namespace)
    problem = None
    if spine is None:
        error = SpineNotFound.in_namespace(namespace, "this flow runs")
        problem = (error.reason, error.message)
    outcome = FLOWS.outcomes.get((namespace, FLOWS_KEY))
    deployment = None
    if spine is not None:
        deployment = await k8s.get("apps/v1", "StatefulSet", namespace, labels.FLOW_ENGINE_NAME)
        if deployment_ready(deployment)[0]:
            ready_engines.add((namespace, FLOWS_KEY))
        else:
            ready_engines.discard((namespace, FLOWS_KEY))
            engine_reports.pop(namespace, None)
    for item in await k8s.list(API_VERSION, FLOW.kind, namespace):
        async with _status_locks[(FLOW.kind, namespace, item["metadata"]["name"])]:
            new_status = flow_status(
                item, outcome if spine else None, deployment, engine_reports.get(namespace), problem
            )
            if new_status is not None:
                await write_status(k8s, FLOW.kind, item, new_status)


async def deliver_engine_report(key: Key, report: Any) -> None:
    engine_reports[key[0]] = report
    try:
        await report_flows(CONTEXT.k8s, *key)
    except ApiError as error:
        status_poller.log.warning("Status of the Flows of %s not written: %s", key[0], error)


# The proxy and catalog: the poller's last reports of each namespace's pair.
proxy_reports: dict[str, Any] = {}
catalog_reports: dict[str, Any] = {}
ready_proxies: set[Key] = set()  # (namespace, PROXY_KEY): the poller's targets
ready_catalogs: set[Key] = set()
PROXY_KEY = "proxy"  # the proxy aggregate's name in its (namespace, name) key
PROXY = "Proxy"  # its kind in metrics and logs


async def report_registrations(k8s: Kubernetes, namespace: str, _: str) -> None:
    """Each ServiceRegistration's status from the proxy's outcome, its Deployments and the
    poller's reports; then the owning Spine's (its keys, its proxy's address)."""
    spine = await gather.namespace_spine(k8s, namespace)
    problem = None
    if spine is None:
        error = SpineNotFound.in_namespace(namespace, "this service is registered and routed")
        problem = (error.reason, error.message)
        CONTEXT.keys.watch(namespace, None)  # no Spine, no issuer to keep keys of
    outcome = PROXIES.outcomes.get((namespace, PROXY_KEY))
    deployments: tuple[Any, Any] = (None, None)
    if spine is not None:
        deployments = (
            await k8s.get("apps/v1", "Deployment", namespace, labels.PROXY_NAME),
            await k8s.get("apps/v1", "Deployment", namespace, labels.CATALOG_NAME),
        )
        for deployment, targets, reports_ in (
            (deployments[0], ready_proxies, proxy_reports),
            (deployments[1], ready_catalogs, catalog_reports),
        ):
            if deployment_ready(deployment)[0]:
                targets.add((namespace, PROXY_KEY))
            else:
                targets.discard((namespace, PROXY_KEY))
                reports_.pop(namespace, None)
    reports_now = (proxy_reports.get(namespace), catalog_reports.get(namespace))
    for item in await k8s.list(API_VERSION, SERVICE_REGISTRATION.kind, namespace):
        async with _status_locks[(SERVICE_REGISTRATION.kind, namespace, item["metadata"]["name"])]:
            new_status = registration_status(
                item, outcome if spine else None, deployments, reports_now, problem
            )
            if new_status is not None:
                await write_status(k8s, SERVICE_REGISTRATION.kind, item, new_status)
    if spine is not None:
        await report_spine(k8s, namespace, spine["metadata"]["name"])


async def deliver_proxy_report(key: Key, report: Any) -> None:
    proxy_reports[key[0]] = report
    await _report_registrations_quietly(key[0])


async def deliver_catalog_report(key: Key, report: Any) -> None:
    catalog_reports[key[0]] = report
    await _report_registrations_quietly(key[0])


async def _report_registrations_quietly(namespace: str) -> None:
    try:
        await report_registrations(CONTEXT.k8s, namespace, PROXY_KEY)
    except ApiError as error:
        status_poller.log.warning(
            "Status of the ServiceRegistrations of %s not written: %s", namespace, error
        )


SPINES: Reconciler[Any] = Reconciler(
    SPINE.kind,
    read=partial(gather.read_resource, SPINE.kind),
    gather=gather.gather_spine,
    plan=plan_spine,
    report=report_spine,
)
TWINS: Reconciler[Any] = Reconciler(
    TWIN,
    read=gather.read_namespace_spine,
    gather=gather.gather_twin,
    plan=plan_twin,
    report=report_twin,
)
GATEWAYS: Reconciler[Any] = Reconciler(
    GATEWAY.kind,
    read=partial(gather.read_resource, GATEWAY.kind),
    gather=gather.gather_gateway,
    plan=plan_gateway,
    report=report_gateway,
)
FLOWS: Reconciler[Any] = Reconciler(
    FLOW_ENGINE,
    read=gather.read_namespace_spine,
    gather=gather.gather_flows,
    plan=plan_flows,
    report=report_flows,
)
PROXIES: Reconciler[Any] = Reconciler(
    PROXY,
    read=gather.read_namespace_spine,
    gather=gather.gather_proxy,
    plan=plan_proxy,
    report=report_registrations,
)
RECONCILERS: tuple[Reconciler[Any], ...] = (SPINES, TWINS, GATEWAYS, FLOWS, PROXIES)


def reset() -> None:
    """Forget an earlier operator run in this process (tests start several)."""
    for reconciler in RECONCILERS:
        reconciler.reset()
    _status_locks.clear()
    reports.clear()
    ready_gateways.clear()
    engine_reports.clear()
    ready_engines.clear()
    proxy_reports.clear()
    catalog_reports.clear()
    ready_proxies.clear()
    ready_catalogs.clear()
    dependency_generations.clear()
    registration_fingerprints.clear()


async def deliver_gateway_report(key: Key, report: status_poller.RuntimeReport) -> None:
    """The poller's report of one gateway into its status; an unreachable gateway keeps its
    last known figures, marked as unconfirmed."""
    previous = reports.get(key)
    if not report.reachable and previous is not None and report.error:
        report = previous.unreachable(report.error)
    reports[key] = report
    try:
        await report_gateway(CONTEXT.k8s, *key)
    except ApiError as error:
        status_poller.log.warning("Status of Gateway %s/%s not written: %s", *key, error)


async def proxy_may_route_flow(namespace: str, flow: str) -> bool:
    """Whether the namespace's proxy may hold a route of the Flow, as its last reconcile left
    it (one in flight is waited for: it may have read the Flow before its latest change).

    A Flow that does not ask for a route reconciles the proxy only then: what kopf passes as
    `old` is the last spec it recorded, not the one the proxy's reconciles read, which other
    events (a Secret, a registration) start at any time."""
    key = (namespace, PROXY_KEY)
    async with PROXIES.locks[key]:
        outcome = PROXIES.outcomes.get(key)
    if outcome is None or outcome.plan is None:  # not known here (a restart, a failure)
        return True
    return f"Flow/{flow}" in (outcome.fact("routes") or {}).values()
