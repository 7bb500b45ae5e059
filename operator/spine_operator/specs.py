"""Stand-in for the specs-keys branch's OpenAPI/AsyncAPI validator, with the brief's interface.

Only the document's family and version are checked here; the real module (openapi-spec-validator
and the @asyncapi/specs JSON Schemas) replaces this file when that branch is merged. Pure.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

import yaml

MAX_SPEC_BYTES = 1024 * 1024


@dataclass(frozen=True)
class SpecVerdict:
    valid: bool
    message: str
    path: str
    family: Literal["openapi", "asyncapi"]
    version: str
    digest: str
    channels: tuple[str, ...] = ()


def validate_spec(raw: bytes, media_type: str, protocol: Literal["HTTP", "MQTT"]) -> SpecVerdict:
    family: Literal["openapi", "asyncapi"] = "openapi" if protocol == "HTTP" else "asyncapi"
    digest = hashlib.sha256(raw).hexdigest()

    def invalid(message: str, path: str = "") -> SpecVerdict:
        return SpecVerdict(False, message, path, family, "", digest)

    if len(raw) > MAX_SPEC_BYTES:
        return invalid(f"the document is larger than {MAX_SPEC_BYTES} bytes")
    try:
        document: Any = json.loads(raw) if raw.lstrip()[:1] == b"{" else yaml.safe_load(raw)
    except (ValueError, yaml.YAMLError) as error:
        return invalid(f"not JSON or YAML: {str(error)[:200]}")
    if not isinstance(document, dict):
        return invalid("the document is not an object")
    version = str(document.get(family, ""))
    wanted = ("3.0.", "3.1.") if family == "openapi" else ("2.", "3.0.")
    if not version.startswith(wanted):
        return invalid(
            f"{family} must be one of {', '.join(w + 'x' for w in wanted)}", f"/{family}"
        )
    channels = document.get("channels") or {}
    addresses = tuple(
        str(value.get("address", key)) if isinstance(value, dict) else str(key)
        for key, value in channels.items()
    )
    return SpecVerdict(
        True, "", "", family, version, digest, addresses if family == "asyncapi" else ()
    )
