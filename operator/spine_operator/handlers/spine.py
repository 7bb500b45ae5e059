"""kopf handlers of the Spine kind: apply the namespace's broker and report its status.

`sync_spine` is the whole level-based reconcile (create, update and resume alike); it also runs
when a Secret the Spine uses changes. Status has one writer, `refresh_spine_status`, which reads
the live Spine and StatefulSet every time, so an event about the broker and a reconcile can
never overwrite each other with stale conditions.
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
from spine_operator.api.common import parse_quantity
from spine_operator.api.registry import API_VERSION, GROUP, SPINE, VERSION
from spine_operator.api.spine import BrokerSpec, SpineSpec
from spine_operator.build import broker as broker_build
from spine_operator.build.common import controller_of, secret_data_digest, secret_values
from spine_operator.context import CONTEXT
from spine_operator.handlers.twin_workload import (
    TwinOutcome,
    refresh_twinmodel_statuses,
    sync_twin,
)
from spine_operator.k8s import ApiError, Kubernetes
from spine_operator.readiness import statefulset_ready
from spine_runtime.common.configsource import describe_validation_error

KIND = SPINE.kind


class DependencyMissing(Exception):
    """A Secret the spec names does not exist (yet) or lacks a key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class SpecConflict(Exception):
    """The spec is valid but cannot be honoured, e.g. a second Spine in one namespace."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class Outcome:
    """What the last reconcile of one Spine found, for the status writer."""

    generation: int
    failure: tuple[str, str] | None = None  # (reason, message) if the reconcile did not apply
    persistence: dict[str, Any] | None = None
    secret_digests: dict[str, str] = field(default_factory=dict)
    twin: TwinOutcome | None = None


_outcomes: dict[tuple[str, str], Outcome] = {}
_locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
_status_locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)


def invalid_spec_message(error: ValidationError) -> str:
    return f"Invalid spec: {describe_validation_error(error, prefix='spec')}"


# Secrets ------------------------------------------------------------------------------------


def required_values(secret: dict[str, Any], keys: tuple[str, ...], purpose: str) -> dict:
    """The Secret's values, or InvalidReference naming the keys it lacks."""
    values = secret_values(secret)
    missing = [key for key in keys if not values.get(key)]
    if missing:
        raise DependencyMissing(
            cond.INVALID_REFERENCE,
            f"Secret {secret['metadata']['name']} lacks {', '.join(missing)}: {purpose} "
            f"needs {' and '.join(keys)}",
        )
    return values


async def ensure_admin_secret(k8s: Kubernetes, spec: BrokerSpec, owner: dict[str, Any]) -> str:
    """The admin Secret's digest; generates the Secret once unless the user brings one."""
    namespace = owner["metadata"]["namespace"]
    if spec.admin_secret_name:
        secret = await k8s.get("v1", "Secret", namespace, spec.admin_secret_name)
        if secret is None:
            raise DependencyMissing(
                cond.DEPENDENCY_NOT_FOUND,
                f"Secret {spec.admin_secret_name} (spec.broker.adminSecretName) does not exist "
                f"in {namespace}: create it with keys username and password, or remove the "
                "field to let the operator generate one",
            )
    else:
        secret = await k8s.get_or_create(
            broker_build.build_admin_secret(
                namespace, owner["metadata"]["name"], broker_build.generate_password()
            ),
            owner=owner,
        )
    values = required_values(secret, ("username", "password"), "the broker admin login")
    return secret_data_digest(values)


async def tls_secret_digest(k8s: Kubernetes, spec: BrokerSpec, namespace: str) -> str | None:
    if spec.tls is None:
        return None
    secret = await k8s.get("v1", "Secret", namespace, spec.tls.secret_name)
    if secret is None:
        raise DependencyMissing(
            cond.DEPENDENCY_NOT_FOUND,
            f"Secret {spec.tls.secret_name} (spec.broker.tls.secretName) does not exist in "
            f"{namespace}: create a kubernetes.io/tls Secret, e.g. with cert-manager",
        )
    values = required_values(secret, ("tls.crt", "tls.key"), "the TLS listener")
    return secret_data_digest(values)


# Volume expansion ---------------------------------------------------------------------------


async def sync_broker_volume(
    k8s: Kubernetes, spec: BrokerSpec, namespace: str, generation: int
) -> dict[str, Any]:
    """Grow the broker's PVC to the requested size where the storage class allows it."""
    pvc_name = labels.broker_pvc_name()
    pvc = await k8s.get("v1", "PersistentVolumeClaim", namespace, pvc_name)
    wanted = spec.persistence.size
    if pvc is None:
        return cond.condition(
            cond.PERSISTENCE_SYNCED,
            True,
            cond.VOLUME_SIZE_MATCHES,
            f"PVC {pvc_name} will be created with {wanted}",
            generation,
        )
    current = pvc.get("spec", {}).get("resources", {}).get("requests", {}).get("storage", wanted)
    if parse_quantity(wanted) == parse_quantity(current):
        return cond.condition(
            cond.PERSISTENCE_SYNCED,
            True,
            cond.VOLUME_SIZE_MATCHES,
            f"PVC {pvc_name} has {current}",
            generation,
        )
    if parse_quantity(wanted) < parse_quantity(current):
        return cond.condition(
            cond.PERSISTENCE_SYNCED,
            False,
            cond.VOLUME_SHRINK_REFUSED,
            f"PVC {pvc_name} has {current} and cannot shrink to {wanted}: set "
            f"spec.broker.persistence.size back to {current} or more",
            generation,
        )
    class_name = pvc.get("spec", {}).get("storageClassName")
    storage_class = (
        await k8s.get("storage.k8s.io/v1", "StorageClass", None, class_name) if class_name else None
    )
    if not (storage_class or {}).get("allowVolumeExpansion"):
        return cond.condition(
            cond.PERSISTENCE_SYNCED,
            False,
            cond.VOLUME_EXPANSION_UNSUPPORTED,
            f"PVC {pvc_name} stays at {current}: storage class {class_name or '(none)'} does not "
            f"allow volume expansion, so {wanted} cannot be applied in place",
            generation,
        )
    await k8s.patch_merge(
        "v1",
        "PersistentVolumeClaim",
        namespace,
        pvc_name,
        {"spec": {"resources": {"requests": {"storage": wanted}}}},
    )
    return cond.condition(
        cond.PERSISTENCE_SYNCED,
        True,
        cond.VOLUME_EXPANDING,
        f"PVC {pvc_name} expansion from {current} to {wanted} requested",
        generation,
    )


# Reconcile ----------------------------------------------------------------------------------


async def sync_spine(k8s: Kubernetes, body: dict[str, Any]) -> Outcome:
    """Apply every child of a Spine. Raises ValidationError, DependencyMissing, SpecConflict
    or ApiError; on success returns the outcome the status writer reports."""
    metadata = body["metadata"]
    namespace, name = metadata["namespace"], metadata["name"]
    generation = int(metadata.get("generation") or 0)
    spec = SpineSpec.model_validate(body.get("spec") or {})
    env = CONTEXT.environment
    existing = await k8s.get("apps/v1", "StatefulSet", namespace, labels.BROKER_NAME)
    owner = controller_of(existing, KIND)
    if owner is not None and owner[0] != metadata.get("uid"):
        raise SpecConflict(
            cond.DUPLICATE_SPINE,
            f"Spine {owner[1]} already runs this namespace's broker: a namespace has one "
            f"Spine; delete {name} or move it to another namespace",
        )
    digests = broker_build.SecretDigests(
        admin=await ensure_admin_secret(k8s, spec.broker, body),
        tls=await tls_secret_digest(k8s, spec.broker, namespace),
    )
    objects = broker_build.build_broker(spec.broker, env, namespace, name, digests)
    statefulset = broker_build.keep_claim_templates(objects.statefulset, existing)
    for child in [objects.config_map, *objects.services, statefulset]:
        await k8s.apply(child, owner=body)
    persistence = await sync_broker_volume(k8s, spec.broker, namespace, generation)
    secret_digests = {broker_build.admin_secret_name(spec.broker): digests.admin}
    if spec.broker.tls and digests.tls:
        secret_digests[spec.broker.tls.secret_name] = digests.tls
    twin = await sync_twin(k8s, body, spec)
    secret_digests.update(twin.secret_digests)
    return Outcome(generation, persistence=persistence, secret_digests=secret_digests, twin=twin)


def spine_conditions(
    body: dict[str, Any],
    outcome: Outcome | None,
    statefulset: dict[str, Any] | None,
    twin_statefulset: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, dict[str, Any] | None]:
    """The conditions, broker status and twin status of a Spine, from what is live now. Pure."""
    generation = int(body["metadata"].get("generation") or 0)
    namespace = body["metadata"]["namespace"]
    try:
        spec = SpineSpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        message = invalid_spec_message(error)
        return (
            [
                cond.condition(cond.READY, False, cond.INVALID_SPEC, message, generation),
                cond.condition(cond.BROKER_READY, False, cond.INVALID_SPEC, message, generation),
            ],
            None,
            None,
        )
    if outcome is None or outcome.generation != generation:
        message = "Reconciling the latest change"
        return (
            [
                cond.condition(cond.READY, False, cond.PROGRESSING_REASON, message, generation),
                cond.condition(
                    cond.PROGRESSING, True, cond.PROGRESSING_REASON, message, generation
                ),
            ],
            None,
            None,
        )
    if outcome.failure is not None:
        reason, message = outcome.failure
        return (
            [
                cond.condition(cond.READY, False, reason, message, generation),
                cond.condition(cond.BROKER_READY, False, reason, message, generation),
                cond.condition(cond.PROGRESSING, False, reason, message, generation),
            ],
            None,
            None,
        )
    env = CONTEXT.environment
    broker_status = {
        "endpoint": broker_build.broker_endpoint(env, namespace),
        "adminSecretName": broker_build.admin_secret_name(spec.broker),
    }
    if spec.broker.tls:
        broker_status["tlsEndpoint"] = broker_build.broker_endpoint(env, namespace, tls=True)
    broker_ready, broker_detail = statefulset_ready(statefulset)
    twin_ready, twin_detail = statefulset_ready(twin_statefulset)
    twin_api = env.twin_url(namespace)
    twin_status: dict[str, Any] = {
        "api": twin_api,
        "namespace": spec.twin_namespace(namespace),
        "writeTokenSecretName": labels.TWIN_TOKENS_SECRET,
        "things": outcome.twin.things if outcome.twin else 0,
    }
    ready = broker_ready and twin_ready
    waiting = [f"broker: {broker_detail}"] if not broker_ready else []
    waiting += [f"twin: {twin_detail}"] if not twin_ready else []
    twin_message = f"Twin {labels.TWIN_NAME}: {twin_detail}"
    if outcome.twin is not None and not outcome.twin.push.delivered:
        twin_message += (
            f"; config push not delivered ({outcome.twin.push.message}), the twin "
            "reads its ConfigMap within about a minute"
        )
    found = [
        cond.condition(
            cond.BROKER_READY,
            broker_ready,
            cond.BROKER_RUNNING if broker_ready else cond.BROKER_STARTING,
            f"Broker {labels.BROKER_NAME}: {broker_detail}",
            generation,
        ),
        cond.condition(
            cond.TWIN_READY,
            twin_ready,
            cond.TWIN_RUNNING if twin_ready else cond.TWIN_STARTING,
            twin_message,
            generation,
        ),
        cond.condition(
            cond.PROGRESSING,
            not ready,
            cond.PROGRESSING_REASON if not ready else cond.RECONCILED,
            "Waiting for " + "; ".join(waiting)
            if not ready
            else "Every child is applied and ready",
            generation,
        ),
        cond.condition(
            cond.READY,
            ready,
            cond.RECONCILED if ready else cond.PROGRESSING_REASON,
            f"Broker at {broker_status['endpoint']}, twin API at {twin_api}"
            if ready
            else "Waiting for " + "; ".join(waiting),
            generation,
        ),
    ]
    if outcome.persistence is not None:
        found.append(outcome.persistence)
    return found, broker_status, twin_status


async def refresh_spine_status(k8s: Kubernetes, namespace: str, name: str) -> None:
    """Write the Spine's status from live state; the only writer of a Spine's status."""
    async with _status_locks[(namespace, name)]:
        body = await k8s.get(API_VERSION, KIND, namespace, name)
        if body is None:
            return
        statefulsets = []
        for child in (labels.BROKER_NAME, labels.TWIN_NAME):
            statefulset = await k8s.get("apps/v1", "StatefulSet", namespace, child)
            owner = controller_of(statefulset, KIND)
            if owner is not None and owner[0] != body["metadata"].get("uid"):
                statefulset = None  # another Spine's workload says nothing about this one
            statefulsets.append(statefulset)
        outcome = _outcomes.get((namespace, name))
        status = body.get("status") or {}
        if outcome is None and status.get("conditions"):
            # Not reconciled by this process yet (it just started): the last report stands
            # until the resumed reconcile writes a new one, instead of a false Ready=False.
            return
        found, broker_status, twin_status = spine_conditions(body, outcome, *statefulsets)
        merged = cond.merge_conditions(status.get("conditions"), found)
        new_status: dict[str, Any] = {
            "conditions": merged,
            "broker": broker_status,
            "twin": twin_status,
        }
        if outcome is not None:
            new_status["observedGeneration"] = outcome.generation
        CONTEXT.metrics.set_ready(KIND, namespace, name, cond.is_true(merged, cond.READY))
        await k8s.patch_status(KIND, namespace, name, status, new_status)


async def reconcile(namespace: str, name: str, logger: Any) -> None:
    """One reconcile of one Spine, translating failures as CONVENTIONS.md's table says.

    The Spine is read again under its lock: a reconcile started by a Secret event must never
    apply (and report) a spec older than the one a concurrent update handler just applied.
    """
    k8s = CONTEXT.k8s
    key = (namespace, name)
    with CONTEXT.metrics.reconciling(KIND) as result:
        async with _locks[key]:
            body = await k8s.get(API_VERSION, KIND, namespace, name)
            if body is None:
                return
            generation = int(body["metadata"].get("generation") or 0)
            try:
                _outcomes[key] = await sync_spine(k8s, body)
                logger.info("Applied the workloads of Spine %s/%s", *key)
            except ValidationError as error:
                result["result"] = "invalid"
                message = invalid_spec_message(error)
                await report_spine_failure(
                    k8s, *key, Outcome(generation, failure=(cond.INVALID_SPEC, message))
                )
                raise kopf.PermanentError(message) from None
            except (DependencyMissing, SpecConflict) as error:
                result["result"] = "retry"
                await report_spine_failure(
                    k8s, *key, Outcome(generation, failure=(error.reason, error.message))
                )
                raise kopf.TemporaryError(error.message, delay=CONTEXT.retry_delay) from None
            except ApiError as error:
                result["result"] = "retry"
                if not error.retryable:
                    await report_spine_failure(
                        k8s,
                        *key,
                        Outcome(
                            generation,
                            failure=(
                                cond.APPLY_FAILED,
                                f"The API server refused a child object: {error.message}",
                            ),
                        ),
                    )
                raise kopf.TemporaryError(str(error), delay=5 if error.retryable else 60) from None
        await refresh_spine_status(k8s, *key)


async def report_spine_failure(
    k8s: Kubernetes, namespace: str, name: str, outcome: Outcome
) -> None:
    """Write the Spine's status and tell its TwinModels they wait for it."""
    _outcomes[(namespace, name)] = outcome
    await refresh_spine_status(k8s, namespace, name)
    assert outcome.failure is not None
    await refresh_twinmodel_statuses(
        k8s,
        namespace,
        None,
        (cond.DEPENDENCY_NOT_READY, f"Spine {name} is not ready: {outcome.failure[1]}"),
        None,
    )


# kopf wiring ------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, SPINE.plural)
@kopf.on.create(GROUP, VERSION, SPINE.plural)
@kopf.on.update(GROUP, VERSION, SPINE.plural)
async def spine_changed(namespace: str | None, name: str, logger: kopf.Logger, **_: Any) -> None:
    assert namespace, "Spine is a namespaced kind"
    await reconcile(namespace, name, logger)


@kopf.on.event(GROUP, VERSION, SPINE.plural)
def spine_event(type: str, namespace: str | None, name: str, **_: Any) -> None:
    if type == "DELETED" and namespace:
        _outcomes.pop((namespace, name), None)
        CONTEXT.metrics.forget(KIND, namespace, name)


@kopf.index(GROUP, VERSION, SPINE.plural)
def spine_secrets(namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> dict[Any, str]:
    """(namespace, Secret name) -> the Spine that uses it, to roll the broker on a change."""
    broker = spec.get("broker") or {}
    names = {broker.get("adminSecretName") or labels.BROKER_ADMIN_SECRET}
    if (broker.get("tls") or {}).get("secretName"):
        names.add(broker["tls"]["secretName"])
    return {(namespace, secret): name for secret in names if isinstance(secret, str)}


@kopf.on.event("v1", "secrets")
async def secret_changed(
    namespace: str | None,
    name: str,
    body: kopf.Body,
    type: str,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    """A Secret a Spine uses appeared or changed: reconcile that Spine (rolls the broker)."""
    spine_secrets: kopf.Index[Any, str] = kwargs["spine_secrets"]  # kopf passes indexes by name
    if not namespace:
        return
    for spine_name in spine_secrets.get((namespace, name), []):
        outcome = _outcomes.get((namespace, spine_name))
        digest = secret_data_digest(secret_values(dict(body))) if type != "DELETED" else None
        # No outcome yet: a first reconcile may be running with the Secret's previous value;
        # reconcile again after it (the lock queues it), re-reading everything.
        if (
            outcome is not None
            and outcome.failure is None
            and (outcome.secret_digests.get(name) == digest)
        ):
            continue
        logger.info("Secret %s changed: reconciling Spine %s/%s", name, namespace, spine_name)
        try:
            await reconcile(namespace, spine_name, logger)
        except (kopf.TemporaryError, kopf.PermanentError) as error:
            logger.warning("Spine %s/%s not reconciled yet: %s", namespace, spine_name, error)


@kopf.on.event(
    "apps",
    "v1",
    "statefulsets",
    labels={labels.PART_OF: "spine", labels.MANAGED_BY: "spine-operator"},
)
async def workload_statefulset_changed(body: kopf.Body, namespace: str | None, **_: Any) -> None:
    """A Spine's StatefulSet changed (e.g. its pod became ready): refresh the Spine's status."""
    owner = controller_of(dict(body), KIND)
    if owner is not None and namespace:
        await refresh_spine_status(CONTEXT.k8s, namespace, owner[1])


@kopf.on.cleanup()
async def close_connections(**_: Any) -> None:
    await CONTEXT.close()
