"""The patterns of the names the twin, the gateways and the flows share: twin namespaces, thing
names, feature names and TwinModel names.

Apart from `spine_runtime.config.twin` so that a process that only needs to check names (the
gateway, the flow engine) does not load the twin's value validation (RE2, jsonschema) with them.
"""

from __future__ import annotations

from spine_runtime.config.base import PATTERN_HINTS

# Ditto: a namespace is dot-separated parts, each starting with a letter (Java package style).
TWIN_NAMESPACE_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*$"
# Ditto allows any printable character but '/' in a thing name; the name is also one level of an
# MQTT topic (`spine/things/<name>/twin`), so '+' and '#' are out too, and so is whitespace.
THING_NAME_PATTERN = r'^[!"$-*,-.0-~]+$'
# A feature (model property) name is a path segment in HTTP URLs, RQL paths and JSON pointers.
FEATURE_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_-]*$"
# The TwinModel resource name: a Kubernetes object name (RFC 1123 subdomain).
MODEL_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

PATTERN_HINTS.update(
    {
        TWIN_NAMESPACE_PATTERN: "must be a Ditto namespace: dot-separated parts of letters, digits "
        "and '_', each starting with a letter, such as plant_a",
        THING_NAME_PATTERN: "must be a Ditto thing name without whitespace, '/', '+' or '#'",
        FEATURE_NAME_PATTERN: "must be letters, digits, '_' and '-', not starting with '-'",
        MODEL_NAME_PATTERN: "must be a Kubernetes object name: lowercase letters, digits, '-' and "
        "'.', starting and ending with a letter or digit",
    }
)
