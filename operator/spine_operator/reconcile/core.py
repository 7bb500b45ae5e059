"""One reconcile, written once for every kind: read under lock -> gather -> plan -> apply ->
status -> kopf's error.

A `Reconciler` is a kind's entry in the table (`reconcile/kinds.py`): how to read the resource,
what to gather (I/O, reads only, plus Secrets generated once), the pure plan, and how to write
status. Level-based: create, update, resume and every dependency's event run the same function.
The resource is read again under its lock, so a reconcile started by an event never applies a
spec older than one an update handler just applied. Errors follow `errors.py`, one policy.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import kopf
from pydantic import ValidationError

from spine_operator.brokeraccess import BrokerAccessError
from spine_operator.context import CONTEXT
from spine_operator.desired.plan import Plan
from spine_operator.errors import (
    ApplyConflict,
    ApplyRefused,
    DependencyNotReady,
    InvalidSpec,
    ReconcileError,
)
from spine_operator.external import PushResult, push_config
from spine_operator.k8s import ApiError, Kubernetes

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)
Inputs = TypeVar("Inputs")


@dataclass
class Outcome:
    """What the last reconcile of one resource found, for its status writer."""

    generation: int
    plan: Plan | None = None
    error: ReconcileError | None = None
    push: PushResult | None = None
    logins_applied: bool = True

    @property
    def failure(self) -> tuple[str, str] | None:
        return (self.error.reason, self.error.message) if self.error is not None else None

    def fact(self, name: str, default: Any = None) -> Any:
        return self.plan.facts.get(name, default) if self.plan is not None else default


def translate(error: Exception) -> ReconcileError:
    """Any failure of a reconcile as a node of the error tree."""
    if isinstance(error, ReconcileError):
        return error
    if isinstance(error, ValidationError):
        return InvalidSpec.of(error)
    if isinstance(error, ApiError):
        if error.retryable:
            return ApplyConflict(str(error))
        return ApplyRefused(f"The API server refused a child object: {error.message}")
    if isinstance(error, BrokerAccessError):
        return DependencyNotReady(f"The namespace's broker: {error}")
    raise error


def kopf_error(error: ReconcileError, retry_delay: float) -> Exception:
    if not error.retried:
        return kopf.PermanentError(error.message)
    delay = error.delay if error.delay is not None else retry_delay
    return kopf.TemporaryError(error.message, delay=delay)


async def apply_plan(
    k8s: Kubernetes, owner: dict[str, Any], plan: Plan, generation: int
) -> Outcome:
    """Logins first (so no config reaches a pod before its login), then the children (after
    removing those whose kind changed), logins the plan prunes, the volume resizes, and the
    config push, which waits while a login is only declared."""
    namespace = owner["metadata"]["namespace"]
    applied = True
    for login in plan.logins:
        applied &= await CONTEXT.broker_access.ensure_login(namespace, login, owner, wait=False)
    for api_version, kind, name in plan.removals:
        if await k8s.delete(api_version, kind, namespace, name):
            log.info("Deleted %s %s/%s", kind, namespace, name)
    for child in plan.objects:
        await k8s.apply(child, owner=owner)
    if plan.prune_logins is not None and applied:
        keep = {login.username for login in plan.logins} | set(plan.prune_keep)
        for username in await CONTEXT.broker_access.prune_logins(
            namespace, plan.prune_logins, keep
        ):
            log.info("Removed broker login %s of namespace %s", username, namespace)
    for resize in plan.resizes:
        await k8s.patch_merge(
            "v1",
            "PersistentVolumeClaim",
            namespace,
            resize.pvc_name,
            {"spec": {"resources": {"requests": {"storage": resize.size}}}},
        )
    push = None
    for wanted in [*([plan.push] if plan.push is not None else []), *plan.more_pushes]:
        if applied:
            result = await push_config(wanted.url, wanted.token, wanted.document)
        else:
            result = PushResult(
                False,
                "held back until the broker holds the workload's login; the broker is not "
                "reachable yet",
            )
        if push is None or push.delivered:  # the first failure is the one to report
            push = result
    return Outcome(generation, plan=plan, push=push, logins_applied=applied)


# Soon enough to follow a user at once, late enough not to spin while a spec is still moving.
CHANGED_RETRY_DELAY = 1.0


async def retry_if_changed(api_version: str, kind: str, body: Any) -> None:
    """After a change handler's reconciles: ask kopf to run the handler again if the object's
    spec changed while they ran (its generation moved).

    kopf records the body it called the handler with as handled, but the reconciles read the
    live objects. A spec changed and changed back while the handler ran (A, then B, then A
    again) had B applied, and kopf, finding A handled, would never call the handler for the
    final A: the children would stay B's for good. A retry runs with the live body instead."""
    metadata = body.get("metadata") or {}
    namespace, name = metadata.get("namespace"), metadata["name"]
    try:
        live = await CONTEXT.k8s.get(api_version, kind, namespace, name)
    except ApiError as error:
        raise kopf_error(translate(error), CONTEXT.retry_delay) from None
    if live is None:  # deleted: its event handler cleans up
        return
    if live["metadata"].get("generation") != metadata.get("generation"):
        raise kopf.TemporaryError(
            f"{kind} {namespace}/{name} changed while it was reconciled: reconciling it again",
            delay=CHANGED_RETRY_DELAY,
        )


@dataclass
class Reconciler(Generic[Inputs]):
    """A kind's reconcile: the table entry every handler calls."""

    kind: str
    read: Callable[[Kubernetes, str, str], Awaitable[dict[str, Any] | None]]
    gather: Callable[[Kubernetes, dict[str, Any]], Awaitable[Inputs]]
    plan: Callable[[Inputs], Plan | ReconcileError]
    report: Callable[[Kubernetes, str, str], Awaitable[None]]  # the only status writer
    outcomes: dict[Key, Outcome] = field(default_factory=dict)
    locks: defaultdict[Key, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))

    def reset(self) -> None:
        """Forget an earlier operator run (its locks belong to another event loop)."""
        self.outcomes.clear()
        self.locks.clear()

    async def reconcile(self, namespace: str, name: str, logger: Any = log) -> None:
        """One reconcile; raises kopf's error as the error tree says."""
        k8s = CONTEXT.k8s
        key = (namespace, name)
        error: ReconcileError | None = None
        with CONTEXT.metrics.reconciling(self.kind) as result:
            async with self.locks[key]:
                body = await self.read(k8s, namespace, name)
                if body is None:  # deleted, or an aggregate without its owner: say so
                    await self.report(k8s, namespace, name)
                    return
                generation = int(body["metadata"].get("generation") or 0)
                try:
                    planned = self.plan(await self.gather(k8s, body))
                    if isinstance(planned, ReconcileError):
                        raise planned
                    self.outcomes[key] = await apply_plan(k8s, body, planned, generation)
                    logger.info("Applied the children of %s %s/%s", self.kind, *key)
                except Exception as failure:
                    error = translate(failure)
                    if error.reported:
                        self.outcomes[key] = Outcome(generation, error=error)
            await self.report(k8s, namespace, name)
            if error is not None:
                result["result"] = "retry" if error.retried else "invalid"
                raise kopf_error(error, CONTEXT.retry_delay) from None

    async def reconcile_quietly(self, namespace: str, name: str, logger: Any = log) -> None:
        """A reconcile started by a dependency's event: its failure is in the status."""
        try:
            await self.reconcile(namespace, name, logger)
        except (kopf.TemporaryError, kopf.PermanentError) as error:
            logger.info("%s %s/%s not applied: %s", self.kind, namespace, name, error)

    def forget(self, namespace: str, name: str) -> None:
        self.outcomes.pop((namespace, name), None)
        CONTEXT.metrics.forget(self.kind, namespace, name)
