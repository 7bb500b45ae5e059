"""The twin service's config file, and the W3C WoT Thing Model vocabulary it validates against.

The operator renders `TwinConfig` from the namespace's TwinModels (whose spec reuses `ThingModel`
and `ThingInstance`); `spine_runtime.twin` reads it. `property_json_schema` and
`thing_description` are pure helpers both halves use: the JSON Schema an update is validated
with, and the WoT Thing Description the HTTP API serves for a thing. `ValueSchemaValidator`
checks values against it with RE2 (linear time) for `pattern`; `pattern_problem` says why a
pattern is refused, for the operator's TwinModel checks.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import quote

import re2
from pydantic import (
    Field,
    JsonValue,
    StrictFloat,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from spine_runtime.config.base import PATTERN_HINTS, CamelModel, HttpSettings, MqttSettings

if TYPE_CHECKING:
    import jsonschema

# The shared name patterns live apart (the gateway and the flow engine check names without
# loading the twin's value checks); the twin's importers keep finding them here.
from spine_runtime.config.names import (
    FEATURE_NAME_PATTERN,
    MODEL_NAME_PATTERN,
    THING_NAME_PATTERN,
    TWIN_NAMESPACE_PATTERN,
)

# Keys of attributes and of nested object schemas: also path segments, '.' allowed.
KEY_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
VERSION_PATTERN = r"^[0-9A-Za-z][0-9A-Za-z.+_-]*$"
# A gateway name is one level of its topics (`spine/gateways/<gateway>/...`).
GATEWAY_NAME_PATTERN = r"^[A-Za-z0-9._-]{1,253}$"

PATTERN_HINTS.update(
    {
        KEY_PATTERN: "must be letters, digits, '_', '-' and '.', "
        "starting with a letter, digit or '_'",
        VERSION_PATTERN: "must be a version such as 1.2.0: letters, digits, '.', '+', '_', '-'",
        GATEWAY_NAME_PATTERN: "must be a gateway name: letters, digits, '.', '_' and '-'",
    }
)

TwinNamespace = Annotated[str, StringConstraints(pattern=TWIN_NAMESPACE_PATTERN, max_length=64)]
ThingName = Annotated[str, StringConstraints(pattern=THING_NAME_PATTERN, max_length=180)]
ModelName = Annotated[str, StringConstraints(pattern=MODEL_NAME_PATTERN, max_length=253)]
Version = Annotated[str, StringConstraints(pattern=VERSION_PATTERN, max_length=64)]
GatewayName = Annotated[str, StringConstraints(pattern=GATEWAY_NAME_PATTERN, max_length=253)]
Text = Annotated[str, StringConstraints(max_length=4096)]

# The JSON schema pydantic emits for these fields is what the operator's CRD generator turns into
# a structural schema, so each field states it: a plain number (not int-or-float), any JSON value
# (kept as is by the API server), and nested data schemas cut off with preserve-unknown-fields
# because a structural schema cannot be recursive. The twin validates the nesting itself.
Number = Annotated[StrictInt | StrictFloat, WithJsonSchema({"type": "number"})]
NESTED_SCHEMA = {
    "type": "object",
    "x-kubernetes-preserve-unknown-fields": True,
    "description": "A nested data schema with the same fields as a property.",
}


def _nested_schema(schema: dict[str, Any]) -> None:
    schema.clear()
    schema.update(NESTED_SCHEMA)


def _nested_schema_map(schema: dict[str, Any]) -> None:
    schema.clear()
    schema.update({"type": "object", "additionalProperties": NESTED_SCHEMA})


def _check_keys(mapping: dict[str, Any] | None, pattern: str, what: str) -> None:
    """Key constraints are checked here rather than in the type: a CRD schema cannot hold
    patternProperties, and the operator validates specs with these models anyway."""
    for key in mapping or {}:
        if len(key) > 64 or not re.match(pattern, key):
            raise ValueError(f"{what} {key[:80]!r} {PATTERN_HINTS[pattern]}")


PropertyType = Literal["number", "integer", "boolean", "string", "object", "array"]
MAX_SCHEMA_DEPTH = 8


class PropertySchema(CamelModel):
    """A WoT data schema / property affordance: a JSON Schema subset with units and readOnly."""

    type: PropertyType = Field(description="JSON type of the value.")
    title: Text | None = None
    description: Text | None = None
    unit: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="Unit of the value, e.g. degC, bar, rpm."
    )
    minimum: Number | None = None
    maximum: Number | None = None
    exclusive_minimum: Number | None = None
    exclusive_maximum: Number | None = None
    enum: (
        Annotated[
            list[JsonValue],
            WithJsonSchema(
                {
                    "type": "array",
                    "items": {"x-kubernetes-preserve-unknown-fields": True},
                }
            ),
        ]
        | None
    ) = Field(default=None, min_length=1, description="The only values allowed.")
    read_only: bool = Field(
        default=False,
        description="Reported by the machine only: no desired value can be set.",
    )
    min_length: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=0)
    pattern: Annotated[str, StringConstraints(max_length=1024)] | None = Field(
        default=None,
        description="Regular expression a string value must match (search, not "
        "full match, as in JSON Schema).",
    )
    items: PropertySchema | None = Field(
        default=None,
        description="Schema of each element of an array.",
        json_schema_extra=_nested_schema,
    )
    min_items: int | None = Field(default=None, ge=0)
    max_items: int | None = Field(default=None, ge=0)
    properties: dict[str, PropertySchema] | None = Field(
        default=None, description="Members of an object.", json_schema_extra=_nested_schema_map
    )
    required: list[str] | None = Field(default=None, description="Members an object must have.")

    @model_validator(mode="after")
    def keywords_fit_the_type(self) -> PropertySchema:
        _check_keys(self.properties, KEY_PATTERN, "member name")
        numeric = ("minimum", "maximum", "exclusive_minimum", "exclusive_maximum")
        by_type: dict[str, tuple[str, ...]] = {
            "number": numeric,
            "integer": numeric,
            "string": ("min_length", "max_length", "pattern"),
            "array": ("items", "min_items", "max_items"),
            "object": ("properties", "required"),
        }
        allowed = by_type.get(self.type, ())
        for group in by_type.values():
            for name in group:
                if name not in allowed and getattr(self, name) is not None:
                    alias = _camel(name)
                    raise ValueError(f"{alias} does not apply to type {self.type}")
        low = self.minimum if self.minimum is not None else self.exclusive_minimum
        high = self.maximum if self.maximum is not None else self.exclusive_maximum
        if low is not None and high is not None and low > high:
            raise ValueError(f"the minimum {low} is greater than the maximum {high}")
        for low_name, high_name in (("min_length", "max_length"), ("min_items", "max_items")):
            low_value, high_value = getattr(self, low_name), getattr(self, high_name)
            if low_value is not None and high_value is not None and low_value > high_value:
                raise ValueError(f"{_camel(low_name)} is greater than {_camel(high_name)}")
        if self.pattern is not None:
            problem = pattern_problem(self.pattern)
            if problem is not None:
                raise ValueError(f"pattern {self.pattern[:200]!r} {problem}")
        if self.required:
            missing = sorted(set(self.required) - set(self.properties or {}))
            if missing:
                raise ValueError(f"required names members that are not in properties: {missing}")
        if schema_depth(self) > MAX_SCHEMA_DEPTH:
            raise ValueError(f"nested more than {MAX_SCHEMA_DEPTH} levels deep")
        if self.enum is not None:
            from jsonschema.exceptions import best_match

            checker = value_schema_validator()(property_json_schema(self, with_enum=False))
            for value in self.enum:
                error = best_match(checker.iter_errors(value))
                if error is not None:
                    raise ValueError(
                        f"enum value {value!r} does not fit the schema: {error.message}"
                    )
        return self


# Patterns -----------------------------------------------------------------------------------------
#
# A JSON Schema `pattern` is evaluated on every update, and Python's `re` backtracks: `^(a+)+$`
# took 30 s on a 30-character value and blocked the twin. The twin evaluates patterns with RE2,
# whose time is linear in the value, and refuses the patterns RE2 cannot run (lookaround,
# backreferences). It also refuses nested unbounded quantifiers (star height above one), the
# shape behind catastrophic backtracking, because a pattern reaches other engines too: the
# Thing Description the twin serves carries it to clients that validate with backtracking ones.


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # a refused pattern is reported to the user, not logged to stderr
    return options


RE2_OPTIONS = _re2_options()


@functools.lru_cache(maxsize=1024)
def compiled_pattern(pattern: str) -> Any:
    """The RE2 program of a pattern (cached: models hold few); raises re2.error."""
    return re2.compile(pattern, RE2_OPTIONS)


def pattern_problem(pattern: str) -> str | None:
    """Why the twin refuses a JSON Schema `pattern`, worded to follow the pattern; None if not.

    Refused: what RE2 cannot compile (lookahead, lookbehind, backreferences, possessive
    quantifiers, over 1000 repetitions), and a quantifier without upper bound (`*`, `+`, `{n,}`)
    applied to a group that itself holds one, as in `^(a+)+$` or `(x*y)*`. The operator calls it
    through `PropertySchema`, so a TwinModel with such a pattern is refused when applied.
    """
    nested = nested_unbounded_quantifier(pattern)
    if nested is not None:
        return (
            f"repeats a group that holds an unbounded quantifier ({nested!r}): such nesting "
            "makes backtracking engines take exponential time; use one quantifier, e.g. "
            "^a+$ rather than ^(a+)+$"
        )
    try:
        re.compile(pattern)
    except re.error as error:
        return f"is not a regular expression: {error}"
    try:
        compiled_pattern(pattern)
    except re2.error as error:
        detail = error.args[0] if error.args else ""
        if isinstance(detail, bytes):
            detail = detail.decode(errors="replace")
        return (
            "uses syntax the twin's linear-time engine (RE2) does not have, such as lookaround "
            f"or backreferences{': ' + str(detail) if detail else ''}"
        )
    return None


def nested_unbounded_quantifier(pattern: str) -> str | None:
    """The first group with an unbounded quantifier inside that is itself repeated without
    bound, as written in the pattern; None if there is none. A linear scan of the text, so it
    reads Python, RE2 and ECMA-262 syntax alike."""
    # Per open group: where it started, and whether it holds an unbounded quantifier.
    groups: list[tuple[int, bool]] = [(0, False)]
    # The atom a quantifier would apply to: None, or (start, holds an unbounded quantifier).
    atom: tuple[int, bool] | None = None
    index, length = 0, len(pattern)
    while index < length:
        char = pattern[index]
        if char == "\\":
            end = index + 2
            if pattern[index + 1 : index + 2] in ("p", "P") and pattern[end : end + 1] == "{":
                close = pattern.find("}", end)
                end = length if close < 0 else close + 1
            atom, index = (index, False), end
            continue
        if char == "[":
            end = index + 1
            if pattern[end : end + 1] == "^":
                end += 1
            if pattern[end : end + 1] == "]":
                end += 1  # a leading ']' is a literal
            while end < length and pattern[end] != "]":
                end += 2 if pattern[end] == "\\" else 1
            atom, index = (index, False), end + 1
            continue
        if char == "(":
            groups.append((index, False))
            atom, index = None, index + 1
            if pattern[index : index + 1] == "?":
                index += 1  # (?:, (?P<name>, (?i): not a quantifier
            continue
        if char == ")":
            start, inner = groups.pop() if len(groups) > 1 else (0, False)
            outer_start, outer = groups[-1]
            groups[-1] = (outer_start, outer or inner)
            atom, index = (start, inner), index + 1
            continue
        unbounded, end = _quantifier_at(pattern, index)
        if end > index:
            if atom is not None and unbounded:
                if atom[1]:
                    return pattern[atom[0] : end]
                outer_start, _ = groups[-1]
                groups[-1] = (outer_start, True)
            atom, index = None, end
            if pattern[index : index + 1] in ("?", "+"):
                index += 1  # lazy or possessive form of the same quantifier
            continue
        atom = None if char == "|" else (index, False)
        index += 1
    return None


_BRACES = re.compile(r"\{(\d*)(,?)(\d*)\}")


def _quantifier_at(pattern: str, index: int) -> tuple[bool, int]:
    """(unbounded, end) of the quantifier at `index`; end == index if there is none."""
    char = pattern[index]
    if char in "*+":
        return True, index + 1
    if char == "?":
        return False, index + 1
    if char == "{":
        braces = _BRACES.match(pattern, index)
        if braces is not None and (braces.group(1) or braces.group(3)):
            return bool(braces.group(2)) and not braces.group(3), braces.end()
    return False, index


def _pattern_keyword(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    """JSON Schema's `pattern` (an unanchored search), evaluated with RE2."""
    from jsonschema import ValidationError

    if not validator.is_type(instance, "string"):
        return
    try:
        found = compiled_pattern(pattern).search(instance)
    except re2.error:
        yield ValidationError(f"pattern {pattern[:200]!r} cannot be evaluated")
        return
    if found is None:
        yield ValidationError(f"{instance[:200]!r} does not match {pattern[:200]!r}")


@functools.cache
def value_schema_validator() -> Any:
    """Draft 2020-12 with `pattern` in linear time: what every value check of the twin uses.
    Built on first use: jsonschema is ~4 MiB of memory that the flow engine and the gateway,
    which import this module for its names and patterns, mostly do not need."""
    import jsonschema.validators

    return jsonschema.validators.extend(
        jsonschema.Draft202012Validator, {"pattern": _pattern_keyword}
    )


def __getattr__(name: str) -> Any:
    if name == "ValueSchemaValidator":  # the name the twin and the tests import
        return value_schema_validator()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


def schema_depth(schema: PropertySchema) -> int:
    children = [*(schema.properties or {}).values(), *([schema.items] if schema.items else [])]
    return 1 + max((schema_depth(child) for child in children), default=0)


# Actions and events use the same data schema vocabulary.
DataSchema = PropertySchema


class ActionSchema(CamelModel):
    """A WoT action affordance: something the machine can be asked to do."""

    title: Text | None = None
    description: Text | None = None
    input: DataSchema | None = Field(default=None, json_schema_extra=_nested_schema)
    output: DataSchema | None = Field(default=None, json_schema_extra=_nested_schema)


class EventSchema(CamelModel):
    """A WoT event affordance: something the machine announces."""

    title: Text | None = None
    description: Text | None = None
    data: DataSchema | None = Field(default=None, json_schema_extra=_nested_schema)


class ThingModel(CamelModel):
    """A machine model in the W3C WoT Thing Model vocabulary; each property is a twin feature."""

    name: ModelName = Field(description="The TwinModel resource name.")
    title: Text | None = None
    version: Version = Field(default="1.0.0", description="Model version, e.g. 1.2.0.")
    description: Text | None = None
    properties: dict[str, PropertySchema] = Field(
        default_factory=dict,
        description="Properties by name (letters, digits, '_', '-'); each becomes a feature of "
        "every thing of the model.",
    )
    actions: dict[str, ActionSchema] = Field(default_factory=dict, description="Actions by name.")
    events: dict[str, EventSchema] = Field(default_factory=dict, description="Events by name.")

    @model_validator(mode="after")
    def names_are_path_segments(self) -> ThingModel:
        _check_keys(self.properties, FEATURE_NAME_PATTERN, "property name")
        _check_keys(self.actions, FEATURE_NAME_PATTERN, "action name")
        _check_keys(self.events, FEATURE_NAME_PATTERN, "event name")
        return self

    @property
    def definition(self) -> str:
        """The Ditto `definition` of a thing of this model: `<name>:<version>`."""
        return f"{self.name}:{self.version}"


class ThingInstance(CamelModel):
    """One machine of a model: its thing name and static attributes."""

    name: ThingName = Field(description="Thing name; the thing id is `<namespace>:<name>`.")
    model: ModelName = Field(description="Name of the ThingModel this thing follows.")
    title: Text | None = None
    attributes: Annotated[
        dict[str, JsonValue],
        WithJsonSchema(
            {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
            }
        ),
    ] = Field(default_factory=dict, description="Static attributes, e.g. line and serial.")

    @field_validator("attributes")
    @classmethod
    def attribute_names_are_path_segments(cls, attributes: dict[str, Any]) -> dict[str, Any]:
        _check_keys(attributes, KEY_PATTERN, "attribute name")
        return attributes


class StorageSettings(CamelModel):
    """Where and how the twin persists state: SQLite in WAL mode on the twin's PVC."""

    path: Path = Field(description="SQLite database file (created if missing).")
    commit_batch_size: int = Field(
        default=2000,
        ge=1,
        le=100_000,
        description="Most updates stored in one transaction.",
    )
    commit_interval_ms: int = Field(
        default=5,
        ge=0,
        le=10_000,
        description="How long an update may wait for others to share its commit; a commit "
        "under way batches whatever arrives meanwhile anyway.",
    )
    synchronous: Literal["full", "normal"] = Field(
        default="full",
        description="SQLite synchronous mode: full survives a power cut once an update is "
        "acknowledged; normal survives a crash of the process only.",
    )


class IngestSettings(CamelModel):
    """How the twin takes updates off the broker."""

    receive_maximum: int = Field(
        default=4000,
        ge=1,
        le=65535,
        description="Unacknowledged QoS 1 updates the broker may send at once (MQTT v5 "
        "Receive Maximum); updates are acknowledged after their commit, so this bounds a batch.",
    )
    session_expiry_seconds: int = Field(
        default=604_800,
        ge=0,
        description="How long the broker keeps the twin's session and queues updates for it "
        "while it is away.",
    )
    errors_per_second_per_thing: float = Field(
        default=50.0,
        gt=0,
        description="Rejections published on a thing's errors topic per second at most (bursts "
        "of as many); the rest are only counted, so a flood of bad input cannot flood the broker.",
    )
    errors_per_second: float = Field(
        default=200.0,
        gt=0,
        description="Rejections published on the errors topics per second at most, all things "
        "together (bursts of as many); the rest are only counted.",
    )
    max_source_time_ahead_seconds: float = Field(
        default=30.0,
        ge=0,
        le=86_400,
        description="How far a spine-source-time may be ahead of the twin's clock (clock skew "
        "allowed). A later one is replaced by the time the twin received the update and counted "
        "(spine_twin_source_time_ahead_total), so a wrong clock cannot make later values stale.",
    )


class TwinConfig(CamelModel):
    """The twin service's config file, rendered by the operator from the namespace's TwinModels.

    Changes of models, things and desiredTimeoutSeconds apply live; the other fields are read
    at start (the operator's pod checksum should cover them).
    """

    namespace: TwinNamespace = Field(description="Twin namespace: thing ids are `<ns>:<name>`.")
    mqtt: MqttSettings
    http: HttpSettings = Field(default_factory=HttpSettings)
    write_token_file: Path = Field(
        description="File holding the bearer token that HTTP writes need (a mounted Secret key)."
    )
    storage: StorageSettings
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    desired_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=86_400,
        description="How long a desired value stays pending before it is marked failed.",
    )
    models: list[ThingModel] = Field(default_factory=list)
    things: list[ThingInstance] = Field(default_factory=list)
    gateways: list[GatewayName] | None = Field(
        default=None,
        max_length=10_000,
        description="The namespace's gateways. The twin keeps sequence numbers and sends acks "
        "only for these; an update on the topic of another gateway is neither applied nor "
        "acknowledged (the gateway sends it again later). Unset: the first "
        "MAX_UNLISTED_GATEWAYS names seen are tracked.",
    )

    @field_validator("gateways")
    @classmethod
    def gateway_names_are_unique(cls, gateways: list[str] | None) -> list[str] | None:
        _no_duplicates(gateways or [], "gateway")
        return gateways

    @field_validator("models")
    @classmethod
    def model_names_are_unique(cls, models: list[ThingModel]) -> list[ThingModel]:
        _no_duplicates([model.name for model in models], "model")
        return models

    @model_validator(mode="after")
    def things_refer_to_models(self) -> TwinConfig:
        _no_duplicates([thing.name for thing in self.things], "thing")
        known = {model.name for model in self.models}
        for thing in self.things:
            if thing.model not in known:
                raise ValueError(
                    f"thing {thing.name!r} refers to model {thing.model!r}, which is not in models"
                )
        return self

    def model_of(self, thing: ThingInstance) -> ThingModel:
        return next(model for model in self.models if model.name == thing.model)


def _no_duplicates(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what} {name!r} is defined twice")
        seen.add(name)


def thing_id(namespace: str, name: str) -> str:
    """Ditto's thing id: `<twin namespace>:<thing name>`."""
    return f"{namespace}:{name}"


_JSON_SCHEMA_KEYS = {
    "type": "type",
    "title": "title",
    "description": "description",
    "minimum": "minimum",
    "maximum": "maximum",
    "exclusive_minimum": "exclusiveMinimum",
    "exclusive_maximum": "exclusiveMaximum",
    "enum": "enum",
    "read_only": "readOnly",
    "min_length": "minLength",
    "max_length": "maxLength",
    "pattern": "pattern",
    "min_items": "minItems",
    "max_items": "maxItems",
    "required": "required",
}


def property_json_schema(schema: PropertySchema, with_enum: bool = True) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) a value of this property must satisfy."""
    result: dict[str, Any] = {}
    for name, key in _JSON_SCHEMA_KEYS.items():
        value = getattr(schema, name)
        if value is None or (name == "read_only" and not value):
            continue
        if name == "enum" and not with_enum:
            continue
        result[key] = value
    if schema.items is not None:
        result["items"] = property_json_schema(schema.items)
    if schema.properties is not None:
        result["properties"] = {
            key: property_json_schema(member) for key, member in schema.properties.items()
        }
    return result


def _data_schema_td(schema: PropertySchema) -> dict[str, Any]:
    """A data schema in TD terms: the same keywords as JSON Schema, plus the unit."""
    result = property_json_schema(schema)
    if schema.unit is not None:
        result["unit"] = schema.unit
    if schema.items is not None:
        result["items"] = _data_schema_td(schema.items)
    if schema.properties is not None:
        result["properties"] = {
            key: _data_schema_td(member) for key, member in schema.properties.items()
        }
    return result


TD_CONTEXT = "https://www.w3.org/2022/wot/td/v1.1"


def thing_description(
    namespace: str, thing: ThingInstance, model: ThingModel, base_url: str
) -> dict[str, Any]:
    """The W3C WoT Thing Description (TD 1.1) of one thing, with forms on the twin's HTTP API.

    `base_url` is the API's origin, e.g. `http://twin:8080`. Reading a property reads its reported
    value; writing one sets its desired value (a command for the machine), so read-only
    properties have no write form. Actions and events are left out: the twin offers no endpoint
    for them yet, and a TD affordance needs at least one form.
    """
    identifier = thing_id(namespace, thing.name)
    quoted = quote(identifier, safe=":@!$&'()*,;=-._~")
    base = f"{base_url.rstrip('/')}/api/2/things/{quoted}/"
    properties: dict[str, Any] = {}
    for name, schema in model.properties.items():
        affordance = _data_schema_td(schema)
        affordance["observable"] = True
        forms: list[dict[str, Any]] = [
            {
                "href": f"features/{name}/properties/value",
                "op": ["readproperty"],
                "contentType": "application/json",
            }
        ]
        if not schema.read_only:
            forms.append(
                {
                    "href": f"features/{name}/desiredProperties/value",
                    "op": ["writeproperty"],
                    "contentType": "application/json",
                    "htv:methodName": "PUT",
                    "security": ["bearer_sc"],
                }
            )
        forms.append(
            {
                "href": f"{base_url.rstrip('/')}/api/2/things?ids={quote(identifier, safe=':')}"
                f"&fields=features/{name}",
                "op": ["observeproperty", "unobserveproperty"],
                "subprotocol": "sse",
                "contentType": "text/event-stream",
            }
        )
        affordance["forms"] = forms
        properties[name] = affordance
    description: dict[str, Any] = {
        "@context": TD_CONTEXT,
        "@type": "Thing",
        "id": f"urn:spine:thing:{quoted}",
        "title": thing.title or thing.name,
        "version": {"instance": model.version, "model": model.version},
        "base": base,
        "securityDefinitions": {
            "nosec_sc": {"scheme": "nosec"},
            "bearer_sc": {"scheme": "bearer", "in": "header", "name": "Authorization"},
        },
        "security": ["nosec_sc"],
        "properties": properties,
    }
    if model.description or model.title:
        description["description"] = model.description or model.title
    return description
