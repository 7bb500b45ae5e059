"""What `spine up` runs, from the very resources a user would `kubectl apply`.

`plan_local_run(resources)` validates every `spine.iiot.dev` object with the operator's own
models and rules (one Spine per namespace; TwinModels chosen by `select_twin_models`; each
Gateway rendered by the operator's builder, which checks it against its TwinModel) and groups
them by namespace. Every problem is collected and raised at once as a `RenderError`, naming the
file, the object and the field, as `spine render` does. Pure: no files, no processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from spine_operator.api.kinds import kind_by_name
from spine_operator.api.spine import SpineSpec
from spine_operator.api.twinmodel import TwinModelSpec
from spine_operator.desired.twin import select_twin_models
from spine_operator.render import RenderError, Resource
from spine_runtime.common.configsource import describe_validation_error


@dataclass
class NamespacePlan:
    """One namespace's Spine and the resources its workloads serve."""

    namespace: str
    spine_name: str
    spine: SpineSpec
    source: str
    spine_body: dict[str, Any] = field(default_factory=dict)  # as the API server stores it
    models: list[tuple[str, TwinModelSpec]] = field(default_factory=list)  # accepted ones
    model_bodies: list[dict[str, Any]] = field(default_factory=list)
    gateways: list[Resource] = field(default_factory=list)
    flow_bodies: list[dict[str, Any]] = field(default_factory=list)
    registration_bodies: list[dict[str, Any]] = field(default_factory=list)
    # ConfigMaps among the files, by (namespace, name): a registration's spec may be in one.
    config_maps: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    @property
    def twin_namespace(self) -> str:
        return self.spine.twin_namespace(self.namespace)

    def thing_names(self) -> list[str]:
        return [thing.name for _, model in self.models for thing in model.things]


@dataclass
class LocalPlan:
    namespaces: list[NamespacePlan]
    skipped: list[str] = field(default_factory=list)  # kinds `spine up` cannot run yet


# Kinds `spine up` runs; any other kind of the API is reported and skipped.
RUNNABLE = ("Spine", "TwinModel", "Gateway", "Flow", "ServiceRegistration")


def _namespace(resource: Resource) -> str:
    return str((resource.body.get("metadata") or {}).get("namespace") or "default")


def _name(resource: Resource) -> str:
    return str((resource.body.get("metadata") or {}).get("name") or "")


def plan_local_run(
    resources: list[Resource], config_maps: dict[tuple[str, str], dict[str, Any]] | None = None
) -> LocalPlan:
    """Group and validate the resources; RenderError lists every problem."""
    problems: list[str] = []
    skipped: list[str] = []
    by_namespace: dict[str, dict[str, list[Resource]]] = {}
    for resource in resources:
        kind = str(resource.body.get("kind", ""))
        if kind_by_name(kind) is None and kind not in RUNNABLE:
            problems.append(f"{resource.label}: unknown kind {kind!r}")
            continue
        if not _name(resource):
            problems.append(f"{resource.label}: metadata.name is required")
            continue
        if kind not in RUNNABLE:
            skipped.append(f"{resource.label}: spine up does not run {kind} resources yet")
            continue
        by_namespace.setdefault(_namespace(resource), {}).setdefault(kind, []).append(resource)

    plans: list[NamespacePlan] = []
    for namespace, kinds in sorted(by_namespace.items()):
        spines = kinds.get("Spine", [])
        if not spines:
            first = next(iter(kinds.values()))[0]
            problems.append(
                f"{first.label}: namespace {namespace} has no Spine (SpineNotFound): add one "
                f"(kind: Spine, metadata.namespace: {namespace}, spec: {{}}) to the files"
            )
            continue
        if len(spines) > 1:
            problems.append(
                f"{spines[1].label}: namespace {namespace} already has Spine "
                f"{_name(spines[0])} (DuplicateSpine): one Spine per namespace"
            )
            continue
        try:
            spec = SpineSpec.model_validate(spines[0].body.get("spec") or {})
        except ValidationError as error:
            problems.append(f"{spines[0].label}: {describe_validation_error(error, 'spec')}")
            continue
        plan = NamespacePlan(
            namespace, _name(spines[0]), spec, spines[0].source, _as_item(spines[0])
        )
        models = kinds.get("TwinModel", [])
        plan.model_bodies = [_as_item(resource) for resource in models]
        selection = select_twin_models(plan.model_bodies)
        labels = {_name(resource): resource.label for resource in models}
        for model_name, (reason, message) in sorted(selection.rejected.items()):
            problems.append(f"{labels[model_name]}: {reason}: {message}")
        plan.models = selection.accepted
        plan.gateways = kinds.get("Gateway", [])
        plan.flow_bodies = [_as_item(resource) for resource in kinds.get("Flow", [])]
        plan.registration_bodies = [
            _as_item(resource) for resource in kinds.get("ServiceRegistration", [])
        ]
        plan.config_maps = {
            key: body for key, body in (config_maps or {}).items() if key[0] == namespace
        }
        plans.append(plan)
    if problems:
        raise RenderError("\n".join(problems))
    if not plans:
        raise RenderError("no Spine resources found: nothing to run")
    return LocalPlan(plans, skipped)


def _as_item(resource: Resource) -> dict[str, Any]:
    """The resource as the operator lists it; without a creation time, models are taken in
    name order, as the operator orders models created in the same second."""
    metadata = dict(resource.body.get("metadata") or {})
    metadata.setdefault("creationTimestamp", "")
    metadata["namespace"] = _namespace(resource)
    return {**resource.body, "metadata": metadata}
