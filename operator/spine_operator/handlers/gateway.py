"""kopf handlers of the Gateway kind: check the tags, apply the gateway's workload, report status.

`reconcile` is the whole level-based reconcile (create, update and resume alike). It runs again,
without waiting for a retry, when something a Gateway depends on changes: a TwinModel or the
Spine of its namespace (kopf index `gateways_by_namespace`), or a Secret it uses (index
`gateway_secrets`; a changed Secret rolls the pod through the checksum). Status has one writer,
`refresh_gateway_status`, fed by the last reconcile's outcome, the live StatefulSet and the
status poller's last report (`poller.py`, started here at operator startup).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import kopf
from pydantic import ValidationError

from spine_operator import conditions as cond
from spine_operator import labels
from spine_operator import poller as status_poller
from spine_operator.api.common import parse_quantity
from spine_operator.api.gateway import GatewaySpec
from spine_operator.api.registry import API_VERSION, GATEWAY, GROUP, SPINE, TWINMODEL, VERSION
from spine_operator.api.spine import SpineSpec
from spine_operator.brokeraccess import BrokerAccessError, SpineNotFound
from spine_operator.build import gateway as gateway_build
from spine_operator.build.common import controller_of, secret_data_digest, secret_values
from spine_operator.build.logins import gateway_login, gateway_username
from spine_operator.build.twin import select_twin_models
from spine_operator.context import CONTEXT
from spine_operator.external import PushResult, push_config
from spine_operator.handlers.spine import DependencyMissing, invalid_spec_message, required_values
from spine_operator.handlers.twin_workload import list_twin_models
from spine_operator.k8s import ApiError, Kubernetes, resource_path
from spine_operator.readiness import statefulset_ready
from spine_runtime.config.gateway import GatewayConfig

KIND = GATEWAY.kind
# Problems that waiting cannot fix: re-checked when the spec or what it refers to changes.
PERMANENT_REASONS = {cond.INVALID_SPEC, cond.INVALID_REFERENCE}
SHOWN_PROBLEMS = 5

Key = tuple[str, str]  # (namespace, name)


@dataclass
class Outcome:
    """What the last reconcile of one Gateway found, for the status writer."""

    generation: int
    failure: tuple[str, str] | None = None  # (reason, message) if the reconcile did not apply
    secret_digests: dict[str, str] = field(default_factory=dict)
    push: PushResult | None = None
    persistence: dict[str, Any] | None = None  # the PersistenceSynced condition
    connections: int = 0
    tags: int = 0


_outcomes: dict[Key, Outcome] = {}
_locks: defaultdict[Key, asyncio.Lock] = defaultdict(asyncio.Lock)
_status_locks: defaultdict[Key, asyncio.Lock] = defaultdict(asyncio.Lock)
_reports: dict[Key, status_poller.RuntimeReport] = {}
_ready: set[Key] = set()  # gateways whose StatefulSet is ready: the poller's targets
_seen_generations: dict[tuple[str, str, str], int] = {}  # (kind, namespace, name) of dependencies
_poller: status_poller.GatewayPoller | None = None


def reset_state() -> None:
    """Forget everything of an earlier operator run (its locks belong to another event loop)."""
    for state in (_outcomes, _locks, _status_locks, _reports, _seen_generations):
        state.clear()
    _ready.clear()


# Reading what a Gateway depends on ----------------------------------------------------------


async def namespace_spine(k8s: Kubernetes, namespace: str) -> dict[str, Any] | None:
    """The namespace's Spine (the oldest, if a second one was applied by mistake)."""
    listing = await k8s.request("GET", resource_path(API_VERSION, SPINE.kind, namespace))
    items = sorted(
        listing.get("items") or [],
        key=lambda item: (
            item["metadata"].get("creationTimestamp") or "",
            item["metadata"]["name"],
        ),
    )
    return items[0] if items else None


async def twin_namespace_of(k8s: Kubernetes, namespace: str) -> str:
    spine = await namespace_spine(k8s, namespace)
    if spine is None:
        raise DependencyMissing(
            cond.SPINE_NOT_FOUND,
            f"Namespace {namespace} has no Spine: apply one (kind: Spine, spec: {{}}) to get a "
            "broker and a twin service; this gateway is applied as soon as it exists",
        )
    try:
        return SpineSpec.model_validate(spine.get("spec") or {}).twin_namespace(namespace)
    except ValidationError:
        raise DependencyMissing(
            cond.DEPENDENCY_NOT_READY,
            f"Spine {spine['metadata']['name']} has an invalid spec (its status says what to "
            "fix); this gateway is applied once it is valid",
        ) from None


def mapping_failure(problems: list[gateway_build.MappingProblem]) -> DependencyMissing:
    """One condition for all tags that do not fit: what cannot heal by waiting comes first."""
    invalid = [p for p in problems if p.reason == cond.INVALID_REFERENCE]
    chosen = invalid or problems
    shown = [p.message for p in chosen[:SHOWN_PROBLEMS]]
    if len(chosen) > SHOWN_PROBLEMS:
        shown.append(f"and {len(chosen) - SHOWN_PROBLEMS} more")
    if invalid:
        return DependencyMissing(
            cond.INVALID_REFERENCE, "Tags do not fit their TwinModels: " + "; ".join(shown)
        )
    return DependencyMissing(
        cond.DEPENDENCY_NOT_FOUND,
        "Waiting for TwinModels: " + "; ".join(shown) + ". The gateway is applied as soon as "
        "they exist",
    )


async def check_mapping(k8s: Kubernetes, namespace: str, config: GatewayConfig) -> None:
    selection = select_twin_models(await list_twin_models(k8s, namespace))
    problems = gateway_build.check_tags_against_models(
        config, gateway_build.models_by_thing(selection.accepted)
    )
    if problems:
        raise mapping_failure(problems)


async def check_single_source(k8s: Kubernetes, body: dict[str, Any], config: GatewayConfig) -> None:
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    listing = await k8s.request("GET", resource_path(API_VERSION, KIND, namespace))
    others = [item for item in listing.get("items") or [] if item["metadata"]["name"] != name]
    conflicts = gateway_build.feeding_conflicts(body, config, others)
    if conflicts:
        shown = [problem.message for problem in conflicts[:SHOWN_PROBLEMS]]
        if len(conflicts) > SHOWN_PROBLEMS:
            shown.append(f"and {len(conflicts) - SHOWN_PROBLEMS} more")
        message = "; ".join(shown)
        raise DependencyMissing(cond.INVALID_REFERENCE, message[:1].upper() + message[1:])


async def recheck_refused_siblings(namespace: str, name: str, index: Any, logger: Any) -> None:
    """A Gateway changed or went: one refused for feeding the same property may fit now."""
    for other in list(index.get(namespace, [])):
        outcome = _outcomes.get((namespace, other))
        if (
            other != name
            and outcome is not None
            and outcome.failure is not None
            and outcome.failure[0] == cond.INVALID_REFERENCE
        ):
            await reconcile_quietly(namespace, other, logger)


async def user_secret_digests(
    k8s: Kubernetes, spec: GatewaySpec, namespace: str, name: str
) -> dict[str, str]:
    """Digests of the Secrets the spec names; missing ones or missing keys stop the reconcile."""
    digests: dict[str, str] = {}
    for mount in gateway_build.user_secret_mounts(spec, CONTEXT.environment, name):
        secret = await k8s.get("v1", "Secret", namespace, mount.secret_name)
        if secret is None:
            raise DependencyMissing(
                cond.DEPENDENCY_NOT_FOUND,
                f"Secret {mount.secret_name} ({mount.field}) does not exist in {namespace}: "
                f"create it with keys {' and '.join(mount.keys)}",
            )
        required_values(secret, mount.keys, mount.field)
        digests[mount.secret_name] = secret_data_digest(secret_values(secret))
    return digests


async def sync_buffer_volume(
    k8s: Kubernetes,
    spec: GatewaySpec,
    namespace: str,
    name: str,
    generation: int,
    storage_problem: str | None,
) -> dict[str, Any]:
    """The PersistenceSynced condition; grows the buffer's PVC where the storage class allows."""
    storage = spec.buffer.storage

    def synced(ok: bool, reason: str, message: str) -> dict[str, Any]:
        return cond.condition(cond.PERSISTENCE_SYNCED, ok, reason, message, generation)

    if storage_problem is not None:
        return synced(False, cond.VOLUME_CLAIM_IMMUTABLE, storage_problem)
    if storage.type == "emptyDir":
        return synced(
            True, cond.VOLUME_SIZE_MATCHES, f"The buffer is on an emptyDir of {storage.size}"
        )
    pvc_name = labels.gateway_pvc_name(name)
    pvc = await k8s.get("v1", "PersistentVolumeClaim", namespace, pvc_name)
    wanted = storage.size
    if pvc is None:
        return synced(
            True, cond.VOLUME_SIZE_MATCHES, f"PVC {pvc_name} will be created with {wanted}"
        )
    current = pvc.get("spec", {}).get("resources", {}).get("requests", {}).get("storage", wanted)
    if parse_quantity(wanted) == parse_quantity(current):
        return synced(True, cond.VOLUME_SIZE_MATCHES, f"PVC {pvc_name} has {current}")
    if parse_quantity(wanted) < parse_quantity(current):
        return synced(
            False,
            cond.VOLUME_SHRINK_REFUSED,
            f"PVC {pvc_name} has {current} and cannot shrink to {wanted}: set "
            f"spec.buffer.storage.size back to {current} or more",
        )
    class_name = pvc.get("spec", {}).get("storageClassName")
    storage_class = (
        await k8s.get("storage.k8s.io/v1", "StorageClass", None, class_name) if class_name else None
    )
    if not (storage_class or {}).get("allowVolumeExpansion"):
        return synced(
            False,
            cond.VOLUME_EXPANSION_UNSUPPORTED,
            f"PVC {pvc_name} stays at {current}: storage class {class_name or '(none)'} does not "
            f"allow volume expansion, so {wanted} cannot be applied in place",
        )
    await k8s.patch_merge(
        "v1",
        "PersistentVolumeClaim",
        namespace,
        pvc_name,
        {"spec": {"resources": {"requests": {"storage": wanted}}}},
    )
    return synced(
        True,
        cond.VOLUME_EXPANDING,
        f"PVC {pvc_name} expansion from {current} to {wanted} requested",
    )


# Reconcile ----------------------------------------------------------------------------------


async def sync_gateway(k8s: Kubernetes, body: dict[str, Any]) -> Outcome:
    """Apply every child of a Gateway and push its config. Raises ValidationError,
    DependencyMissing, SpineNotFound, BrokerAccessError or ApiError."""
    metadata = body["metadata"]
    namespace, name = metadata["namespace"], metadata["name"]
    generation = int(metadata.get("generation") or 0)
    name_problem = gateway_build.gateway_name_problem(name)
    if name_problem is not None:
        raise DependencyMissing(cond.INVALID_SPEC, f"Invalid name: {name_problem}")
    spec = GatewaySpec.model_validate(body.get("spec") or {})
    env = CONTEXT.environment
    config = gateway_build.gateway_config(
        spec, env, namespace, name, await twin_namespace_of(k8s, namespace)
    )
    size_problem = gateway_build.config_size_problem(config)
    if size_problem is not None:
        raise DependencyMissing(cond.INVALID_SPEC, f"Invalid spec: {size_problem}")
    await check_mapping(k8s, namespace, config)
    await check_single_source(k8s, body, config)
    digests = await user_secret_digests(k8s, spec, namespace, name)
    login_name = await CONTEXT.broker_access.ensure_login(
        namespace, gateway_login(name, config.things(), config.writable_things()), body, wait=False
    )
    assert login_name == gateway_build.login_secret_name(name), "the pod mounts this name"
    login = await k8s.get("v1", "Secret", namespace, login_name)
    admin = await k8s.get_or_create(
        gateway_build.build_admin_token_secret(namespace, name, gateway_build.generate_token()),
        owner=body,
    )
    token = secret_values(admin).get("token", "")
    digests[login_name] = secret_data_digest(secret_values(login))
    digests[labels.gateway_admin_secret_name(name)] = secret_data_digest({"token": token})
    objects = gateway_build.build_gateway(
        spec, env, namespace, name, config, tuple(digests[key] for key in sorted(digests))
    )
    existing = await k8s.get("apps/v1", "StatefulSet", namespace, labels.gateway_name(name))
    statefulset, storage_problem = gateway_build.keep_buffer_storage(objects.statefulset, existing)
    for child in [objects.config_map, objects.service, statefulset]:
        await k8s.apply(child, owner=body)
    persistence = await sync_buffer_volume(k8s, spec, namespace, name, generation, storage_problem)
    # A running pod whose restart checksum stays gets the change by push (tags, publish
    # settings); one that rolls reads the new ConfigMap when it starts.
    push = None
    if (
        existing is not None
        and statefulset_ready(existing)[0]
        and gateway_build.pod_checksum(existing) == gateway_build.pod_checksum(statefulset)
    ):
        push = await push_config(
            env.gateway_url(namespace, name), token, gateway_build.config_document(config)
        )
    return Outcome(
        generation,
        secret_digests=digests,
        push=push,
        persistence=persistence,
        connections=len(config.connections),
        tags=len(config.tags),
    )


async def reconcile(namespace: str, name: str, logger: Any) -> None:
    """One reconcile of one Gateway, translating failures as CONVENTIONS.md's table says.

    The Gateway is read again under its lock, so a reconcile started by a TwinModel or Secret
    event never applies a spec older than one an update handler just applied.
    """
    k8s = CONTEXT.k8s
    key = (namespace, name)
    with CONTEXT.metrics.reconciling(KIND) as result:
        async with _locks[key]:
            body = await k8s.get(API_VERSION, KIND, namespace, name)
            if body is None:
                return
            generation = int(body["metadata"].get("generation") or 0)
            failure: tuple[str, str] | None = None
            try:
                _outcomes[key] = await sync_gateway(k8s, body)
                logger.info("Applied the workload of Gateway %s/%s", *key)
            except ValidationError as error:
                failure = (cond.INVALID_SPEC, invalid_spec_message(error))
            except DependencyMissing as error:
                failure = (error.reason, error.message)
            except SpineNotFound as error:
                message = str(error)
                failure = (cond.SPINE_NOT_FOUND, message[:1].upper() + message[1:])
            except BrokerAccessError as error:
                failure = (cond.DEPENDENCY_NOT_READY, f"The namespace's broker: {error}")
            except ApiError as error:
                if error.retryable:
                    result["result"] = "retry"
                    raise kopf.TemporaryError(str(error), delay=5) from None
                failure = (
                    cond.APPLY_FAILED,
                    f"The API server refused a child object: {error.message}",
                )
            if failure is not None:
                _outcomes[key] = Outcome(generation, failure=failure)
        await refresh_gateway_status(k8s, *key)
        if failure is not None:
            reason, message = failure
            if reason in PERMANENT_REASONS:
                result["result"] = "invalid"
                raise kopf.PermanentError(message)
            result["result"] = "retry"
            delay = 60 if reason == cond.APPLY_FAILED else CONTEXT.retry_delay
            raise kopf.TemporaryError(message, delay=delay)


async def reconcile_quietly(namespace: str, name: str, logger: Any) -> None:
    """A reconcile started by a dependency's event: its failure is in the Gateway's status."""
    try:
        await reconcile(namespace, name, logger)
    except (kopf.TemporaryError, kopf.PermanentError) as error:
        logger.info("Gateway %s/%s not applied: %s", namespace, name, error)


# Status -------------------------------------------------------------------------------------


def connection_conditions(
    ready: bool, report: status_poller.RuntimeReport | None, url: str, generation: int
) -> list[dict[str, Any]]:
    """Connected and Degraded, from the poller's last report. Pure."""

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
    report: status_poller.RuntimeReport | None,
    url: str,
) -> list[dict[str, Any]]:
    """Every condition of a Gateway from what is known now. Pure."""
    generation = int(body["metadata"].get("generation") or 0)
    ready, detail = statefulset_ready(statefulset)
    found = connection_conditions(ready, report, url, generation)
    if outcome is None or outcome.generation != generation:
        message = "Reconciling the latest change"
        return [
            *found,
            cond.condition(cond.READY, False, cond.PROGRESSING_REASON, message, generation),
            cond.condition(cond.PROGRESSING, True, cond.PROGRESSING_REASON, message, generation),
        ]
    if outcome.failure is not None:
        reason, message = outcome.failure
        return [
            *found,
            cond.condition(cond.READY, False, reason, message, generation),
            cond.condition(cond.PROGRESSING, False, reason, message, generation),
        ]
    workload = labels.gateway_name(body["metadata"]["name"])
    if ready:
        message = (
            f"StatefulSet {workload} is ready with {outcome.connections} connections "
            f"and {outcome.tags} tags"
        )
        if outcome.push is not None and not outcome.push.delivered:
            message += (
                f"; config push not delivered ({outcome.push.message}), the gateway reads its "
                "ConfigMap within about a minute"
            )
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
        message = f"Waiting for StatefulSet {workload}: {detail}"
        found += [
            cond.condition(cond.READY, False, cond.PROGRESSING_REASON, message, generation),
            cond.condition(cond.PROGRESSING, True, cond.PROGRESSING_REASON, message, generation),
        ]
    if outcome.persistence is not None:
        found.append(outcome.persistence)
    return found


async def refresh_gateway_status(k8s: Kubernetes, namespace: str, name: str) -> None:
    """Write the Gateway's status from live state; the only writer of a Gateway's status."""
    key = (namespace, name)
    async with _status_locks[key]:
        body = await k8s.get(API_VERSION, KIND, namespace, name)
        if body is None:
            return
        statefulset = await k8s.get("apps/v1", "StatefulSet", namespace, labels.gateway_name(name))
        owner = controller_of(statefulset, KIND)
        if owner is None or owner[0] != body["metadata"].get("uid"):
            statefulset = None  # not this Gateway's (yet): says nothing about it
        if statefulset_ready(statefulset)[0]:
            _ready.add(key)
        else:
            _ready.discard(key)
            _reports.pop(key, None)
        report = _reports.get(key)
        outcome = _outcomes.get(key)
        url = CONTEXT.environment.gateway_url(namespace, name)
        status = body.get("status") or {}
        if outcome is None and status.get("conditions"):
            # Not reconciled by this process yet (it just started): the last report stands
            # until the resumed reconcile writes a new one, instead of a false Ready=False.
            return
        updates = gateway_conditions(body, outcome, statefulset, report, url)
        last_connected = cond.find(status.get("conditions"), cond.CONNECTED) or {}
        # A restarted operator has not polled yet: the last process's report (conditions and
        # figures) stands until this one's first poll, rather than flipping to AwaitingStatus.
        keep_last_report = (
            report is None
            and key in _ready
            and last_connected.get("reason") not in (None, cond.AWAITING_STATUS)
        )
        if keep_last_report:
            updates = [c for c in updates if c["type"] not in (cond.CONNECTED, cond.DEGRADED)]
        merged = cond.merge_conditions(status.get("conditions"), updates)
        empty = dict.fromkeys(("connections", "tags", "buffered", "oldestBufferedSeconds"))
        figures = report.status_fields() if report is not None else {**empty, "publishRate": None}
        new_status: dict[str, Any] = {"conditions": merged, **({} if keep_last_report else figures)}
        if outcome is not None:
            new_status["observedGeneration"] = outcome.generation
        CONTEXT.metrics.set_ready(KIND, namespace, name, cond.is_true(merged, cond.READY))
        await k8s.patch_status(KIND, namespace, name, status, new_status)


async def deliver_report(key: Key, report: status_poller.RuntimeReport) -> None:
    """The poller's report of one gateway into its status; an unreachable gateway keeps its
    last known figures, marked as unconfirmed."""
    previous = _reports.get(key)
    if not report.reachable and previous is not None and report.error:
        report = previous.unreachable(report.error)
    _reports[key] = report
    try:
        await refresh_gateway_status(CONTEXT.k8s, *key)
    except ApiError as error:
        status_poller.log.warning("Status of Gateway %s/%s not written: %s", *key, error)


# kopf wiring --------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, GATEWAY.plural)
@kopf.on.create(GROUP, VERSION, GATEWAY.plural)
@kopf.on.update(GROUP, VERSION, GATEWAY.plural)
async def gateway_changed(
    namespace: str | None, name: str, logger: kopf.Logger, **kwargs: Any
) -> None:
    assert namespace, "Gateway is a namespaced kind"
    try:
        await reconcile(namespace, name, logger)
    finally:
        await recheck_refused_siblings(namespace, name, kwargs["gateways_by_namespace"], logger)


@kopf.on.event(GROUP, VERSION, GATEWAY.plural)
async def gateway_deleted(
    type: str, namespace: str | None, name: str, logger: kopf.Logger, **kwargs: Any
) -> None:
    """No finalizer: owner references remove the children; the broker login is removed here
    when the broker is reachable (its Secret, the only copy of its password, goes anyway)."""
    if type != "DELETED" or not namespace:
        return
    key = (namespace, name)
    for state in (_outcomes, _reports):
        state.pop(key, None)
    _ready.discard(key)
    CONTEXT.metrics.forget(KIND, namespace, name)
    try:
        await CONTEXT.broker_access.remove_login(namespace, gateway_username(name))
    except BrokerAccessError as error:
        logger.warning("Broker login of Gateway %s/%s not removed: %s", namespace, name, error)
    await recheck_refused_siblings(namespace, name, kwargs["gateways_by_namespace"], logger)


@kopf.index(GROUP, VERSION, GATEWAY.plural)
def gateways_by_namespace(namespace: str | None, name: str, **_: Any) -> dict[Any, str]:
    """namespace -> its Gateways, to re-check them when a TwinModel or the Spine changes."""
    return {namespace: name}


@kopf.index(GROUP, VERSION, GATEWAY.plural)
def gateway_secrets(namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> dict[Any, str]:
    """(namespace, Secret name) -> the Gateway that mounts it, to roll the pod on a change."""
    names = {gateway_build.login_secret_name(name), labels.gateway_admin_secret_name(name)}
    for connection in spec.get("connections") or []:
        opcua = connection.get("opcua") if isinstance(connection, dict) else None
        if isinstance(opcua, dict):
            for field_name in (
                "credentialsSecretName",
                "certificateSecretName",
                "serverCertificateSecretName",
            ):
                if isinstance(opcua.get(field_name), str):
                    names.add(opcua[field_name])
    return {(namespace, secret): name for secret in names}


def secret_is_news(outcome: Outcome, secret: str, digest: str | None) -> bool:
    """Whether a Secret event can change what the last reconcile of a Gateway found."""
    if outcome.failure is None:
        return outcome.secret_digests.get(secret) != digest
    return outcome.failure[0] != cond.INVALID_SPEC  # no Secret can fix the spec


@kopf.on.event("v1", "secrets")
async def gateway_secret_changed(
    type: str | None,
    namespace: str | None,
    name: str,
    body: kopf.Body,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    """A Secret a Gateway uses appeared or changed: reconcile it (a new digest rolls the pod)."""
    index: kopf.Index[Any, str] = kwargs["gateway_secrets"]  # kopf passes indexes by name
    if not namespace:
        return
    digest = secret_data_digest(secret_values(dict(body))) if type != "DELETED" else None
    for gateway in list(index.get((namespace, name), [])):
        outcome = _outcomes.get((namespace, gateway))
        if outcome is None and type is None:
            continue  # the initial listing: the resume handler reconciles with this value
        if outcome is not None and not secret_is_news(outcome, name, digest):
            continue
        logger.info("Secret %s changed: reconciling Gateway %s/%s", name, namespace, gateway)
        await reconcile_quietly(namespace, gateway, logger)


def _dependency_changed(
    kind: str, type: str | None, namespace: str, name: str, body: kopf.Body
) -> bool:
    """Whether a TwinModel or Spine event is news (created, deleted or a new generation)."""
    key = (kind, namespace, name)
    if type == "DELETED":
        _seen_generations.pop(key, None)
        return True
    generation = int(body.get("metadata", {}).get("generation") or 0)
    changed = _seen_generations.get(key) != generation
    _seen_generations[key] = generation
    # The initial listing at startup is no news: each Gateway's resume handler runs anyway.
    return changed and type is not None


@kopf.on.event(GROUP, VERSION, TWINMODEL.plural)
async def twinmodel_changed_recheck_gateways(
    type: str | None,
    namespace: str | None,
    name: str,
    body: kopf.Body,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    """A TwinModel appeared, changed or went: re-check the namespace's Gateways against it."""
    if not namespace or not _dependency_changed(TWINMODEL.kind, type, namespace, name, body):
        return
    for gateway in list(kwargs["gateways_by_namespace"].get(namespace, [])):
        await reconcile_quietly(namespace, gateway, logger)


@kopf.on.event(GROUP, VERSION, SPINE.plural)
async def spine_changed_recheck_gateways(
    type: str | None,
    namespace: str | None,
    name: str,
    body: kopf.Body,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    """The Spine appeared or changed (its twin namespace is in every gateway's config)."""
    if not namespace or not _dependency_changed(SPINE.kind, type, namespace, name, body):
        return
    for gateway in list(kwargs["gateways_by_namespace"].get(namespace, [])):
        await reconcile_quietly(namespace, gateway, logger)


@kopf.on.event(
    "apps",
    "v1",
    "statefulsets",
    labels={labels.COMPONENT: gateway_build.COMPONENT, labels.MANAGED_BY: "spine-operator"},
)
async def gateway_statefulset_changed(body: kopf.Body, namespace: str | None, **_: Any) -> None:
    """A Gateway's StatefulSet changed (e.g. its pod became ready): refresh the Gateway's status."""
    owner = controller_of(dict(body), KIND)
    if owner is not None and namespace:
        await refresh_gateway_status(CONTEXT.k8s, namespace, owner[1])


@kopf.on.startup()
async def start_status_poller(**_: Any) -> None:
    global _poller
    reset_state()
    _poller = status_poller.GatewayPoller(
        targets=lambda: sorted(_ready),
        url_of=lambda key: CONTEXT.environment.gateway_url(*key),
        deliver=deliver_report,
        metrics=CONTEXT.metrics,
    )
    _poller.start()


@kopf.on.cleanup()
async def stop_status_poller(**_: Any) -> None:
    global _poller
    if _poller is not None:
        await _poller.stop()
        _poller = None
