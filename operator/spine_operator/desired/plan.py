"""What a plan is: everything one reconcile will do, decided before anything is written.

Every kind has one pure `plan_<kind>(inputs) -> Plan | Refusal` (in `desired/<kind>.py`). The
operator's reconcile core applies a Plan; `spine render` prints its objects; `spine up` writes
its config documents and logins to files. So the three cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spine_operator import conditions as cond
from spine_operator.api.common import parse_quantity
from spine_operator.desired.common import secret_data_digest, secret_values
from spine_operator.desired.logins import Login
from spine_operator.errors import DependencyNotFound, InvalidReference, ReconcileError

# A plan that cannot be carried out: the error says why (its reason and retry policy).
Refusal = ReconcileError


@dataclass(frozen=True)
class ConfigPush:
    """The runtime's new config, pushed to its admin endpoint so it applies within a second."""

    url: str
    token: str
    document: str


@dataclass(frozen=True)
class VolumeResize:
    """A PVC to grow in place (its StatefulSet's claim templates cannot change)."""

    pvc_name: str
    size: str


@dataclass
class Plan:
    """Children to apply (server-side, owned by the resource), in order, and what goes with them."""

    objects: list[dict[str, Any]]
    # Generated Secrets: created once, never rewritten; `spine render` shows them without data.
    generated: list[dict[str, Any]] = field(default_factory=list)
    logins: list[Login] = field(default_factory=list)  # the broker must hold exactly these
    resizes: list[VolumeResize] = field(default_factory=list)
    push: ConfigPush | None = None  # None: the pod (re)starts with the ConfigMap instead
    more_pushes: list[ConfigPush] = field(default_factory=list)  # two runtimes, or replicas
    # (apiVersion, kind, name) of children to delete before the others are applied: a workload
    # that changed kind (the flow engine's Deployment became a StatefulSet).
    removals: list[tuple[str, str, str]] = field(default_factory=list)
    # A regular expression of usernames of a family of logins (the flow engine's replica
    # logins): the broker must hold only those of them that `logins` lists.
    prune_logins: str | None = None
    # Usernames of that family to keep besides `logins`: those of a Flow refused for now, whose
    # sessions hold its share of the input until it is fixed.
    prune_keep: list[str] = field(default_factory=list)
    conditions: list[dict[str, Any]] = field(default_factory=list)  # kind-specific, e.g. volumes
    secret_digests: dict[str, str] = field(default_factory=dict)  # name -> digest of its data
    facts: dict[str, Any] = field(default_factory=dict)  # what the status reports (counts, URLs)

    def object_of(self, kind: str) -> dict[str, Any]:
        """The (first) child of a kind, e.g. the workload whose pod `spine up` runs locally."""
        return next(obj for obj in self.objects if obj["kind"] == kind)

    def container_command(self) -> list[str]:
        """The command of the workload's first container."""
        workload = next(obj for obj in self.objects if obj["kind"] in ("StatefulSet", "Deployment"))
        return list(workload["spec"]["template"]["spec"]["containers"][0]["command"])


@dataclass(frozen=True)
class SecretInput:
    """A Secret a plan reads, as gathered: its name, what names it, and its values (None when it
    does not exist). `spine render` passes placeholders: values exist only in a cluster."""

    name: str
    values: dict[str, str] | None
    field: str = ""  # where the spec names it; empty for Secrets the operator generates

    @classmethod
    def of(cls, name: str, secret: dict[str, Any] | None, field: str = "") -> SecretInput:
        return cls(name, secret_values(secret) if secret is not None else None, field)

    def require(self, keys: tuple[str, ...], purpose: str, hint: str = "") -> str:
        """The digest of its data, or the refusal that says what is missing."""
        if self.values is None:
            where = f" ({self.field})" if self.field else ""
            raise DependencyNotFound(
                f"Secret {self.name}{where} does not exist: create it with keys "
                f"{' and '.join(keys)}{hint}"
            )
        missing = [key for key in keys if not self.values.get(key)]
        if missing:
            raise InvalidReference(
                f"Secret {self.name} lacks {', '.join(missing)}: {purpose} needs "
                f"{' and '.join(keys)}"
            )
        return secret_data_digest(self.values)


def volume_condition(
    pvc_name: str,
    wanted: str,
    size_field: str,
    pvc: dict[str, Any] | None,
    storage_class: dict[str, Any] | None,
    generation: int,
) -> tuple[dict[str, Any], VolumeResize | None]:
    """The PersistenceSynced condition of a PVC made from a claim template, and the resize to
    request: PVCs grow where the storage class allows it, and never shrink."""

    def synced(ok: bool, reason: str, message: str) -> dict[str, Any]:
        return cond.condition(cond.PERSISTENCE_SYNCED, ok, reason, message, generation)

    if pvc is None:
        return synced(
            True, cond.VOLUME_SIZE_MATCHES, f"PVC {pvc_name} will be created with {wanted}"
        ), None
    current = pvc.get("spec", {}).get("resources", {}).get("requests", {}).get("storage", wanted)
    if parse_quantity(wanted) == parse_quantity(current):
        return synced(True, cond.VOLUME_SIZE_MATCHES, f"PVC {pvc_name} has {current}"), None
    if parse_quantity(wanted) < parse_quantity(current):
        return synced(
            False,
            cond.VOLUME_SHRINK_REFUSED,
            f"PVC {pvc_name} has {current} and cannot shrink to {wanted}: set {size_field} "
            f"back to {current} or more",
        ), None
    class_name = pvc.get("spec", {}).get("storageClassName")
    if not (storage_class or {}).get("allowVolumeExpansion"):
        return synced(
            False,
            cond.VOLUME_EXPANSION_UNSUPPORTED,
            f"PVC {pvc_name} stays at {current}: storage class {class_name or '(none)'} does not "
            f"allow volume expansion, so {wanted} cannot be applied in place",
        ), None
    return synced(
        True,
        cond.VOLUME_EXPANDING,
        f"PVC {pvc_name} expansion from {current} to {wanted} requested",
    ), VolumeResize(pvc_name, wanted)
