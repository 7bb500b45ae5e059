"""Small pieces every builder uses: object metadata, checksums, the restricted security context."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import jinja2

from spine_operator import labels

# The one jinja2 environment for third-party config files (templates/): an undefined name is an
# error, not an empty string, and nothing is HTML-escaped (the models validate every value).
CONFIG_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("spine_operator", "templates"),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=False,
)


def metadata(name: str, namespace: str, component: str, instance: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": labels.labels(component, instance)}


def checksum(*parts: object) -> str:
    """A stable digest of configs and Secret digests, for pod template annotations."""
    canonical = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def secret_data_digest(data: dict[str, str] | None) -> str:
    """Digest of a Secret's data, so a pod can roll on a change without the value leaving here."""
    return checksum(sorted((data or {}).items()))


def restricted_container_security() -> dict[str, Any]:
    """Pod Security Standards "restricted", plus a read-only root filesystem."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def resources(spec_resources: Any) -> dict[str, Any]:
    """A pod spec's resources from a ResourceRequirements model, leaving out unset values."""
    result: dict[str, Any] = {}
    for section in ("requests", "limits"):
        values = getattr(spec_resources, section).to_wire()
        if values:
            result[section] = values
    return result


def secret_values(secret: dict[str, Any] | None) -> dict[str, str]:
    """A Secret's values, decoded (`data`) or as written (`stringData`)."""
    if not secret:
        return {}
    values = {
        key: base64.b64decode(value).decode(errors="replace")
        for key, value in (secret.get("data") or {}).items()
    }
    values.update(secret.get("stringData") or {})
    return values


def controller_of(obj: dict[str, Any] | None, kind: str) -> tuple[str, str] | None:
    """(uid, name) of the resource of `kind` that controls `obj` (its owner reference)."""
    for ref in (obj or {}).get("metadata", {}).get("ownerReferences", []):
        if ref.get("controller") and ref.get("kind") == kind:
            return ref.get("uid", ""), ref.get("name", "")
    return None


def oldest(items: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The oldest object (by creation time, then name): the namespace's Spine when a second one
    was applied by mistake, the first model to define a thing."""
    ordered = sorted(
        items,
        key=lambda item: (
            item["metadata"].get("creationTimestamp") or "",
            item["metadata"]["name"],
        ),
    )
    return ordered[0] if ordered else None
