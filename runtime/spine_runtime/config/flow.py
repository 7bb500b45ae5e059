"""The flow engine's config file: every flow of a namespace, each with its own broker login.

`FlowSpec` (source, steps, sinks, error handling) is the part a user writes; the operator's
`Flow` kind reuses these types as its spec, the way the Gateway reuses `config.gateway`. Unions
are optional sibling fields with an exactly-one rule (a `oneOf` of `required` in the JSON
schema, so the CRD generator's structural schema keeps it and the API server enforces it).
Every expression is compiled here, when the document is validated: the operator refuses a Flow
with a bad one (naming the step and the position) and the engine never starts a flow it cannot
run. Every value a user writes has a bound; topics reach MQTT, never a config file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from spine_runtime.config.base import (
    PATTERN_HINTS,
    CamelModel,
    DnsLabel,
    HttpSettings,
    Port,
    SafeLine,
)
from spine_runtime.config.names import (
    FEATURE_NAME_PATTERN,
    MODEL_NAME_PATTERN,
    THING_NAME_PATTERN,
    TWIN_NAMESPACE_PATTERN,
)
from spine_runtime.config.proxy import Role
from spine_runtime.flow.expressions import (
    MAX_EXPRESSION_CHARS,
    Expression,
    ExpressionError,
    compile_expression,
)
from spine_runtime.flow.units import UNITS, conversion_problem

# A field of a message: dot-separated names, as JSONata paths and topic placeholders spell them.
FIELD_PATH_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*){0,15}$"
# An MQTT topic filter a flow subscribes to: printable, no NUL or newline; wildcards are checked
# level by level below. `$` topics (broker internals, shared-subscription syntax) are refused.
TOPIC_FILTER_PATTERN = r"^[^\x00-\x1f\x7f$][^\x00-\x1f\x7f]*$"
# A topic a sink publishes to, with `{field.path}` placeholders: no wildcard, no control
# character; each placeholder fills (part of) one level.
TOPIC_TEMPLATE_PATTERN = r"^[^\x00-\x1f\x7f$+#][^\x00-\x1f\x7f+#]*$"
HTTP_PATH_PATTERN = r"^/[A-Za-z0-9._~/-]{0,200}$"
URL_PATTERN = r"^https?://[^\s/?#]+(/[^\s]*)?$"
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
PATTERN_HINTS.update(
    {
        FIELD_PATH_PATTERN: "must be a field path such as value.temperature: up to 16 names of "
        "letters, digits, '_' and '-' joined by '.', each starting with a letter or '_'",
        TOPIC_FILTER_PATTERN: "must be an MQTT topic filter without control characters, not "
        "starting with '$'",
        TOPIC_TEMPLATE_PATTERN: "must be an MQTT topic without wildcards ('+', '#') or control "
        "characters, not starting with '$'; {field} placeholders fill in message fields",
        HTTP_PATH_PATTERN: "must be a URL path such as /orders: '/', letters, digits, '.', '_', "
        "'~' and '-'",
        URL_PATTERN: "must be an http:// or https:// URL",
    }
)

MAX_TOPIC_CHARS = 256
FieldPath = Annotated[str, StringConstraints(pattern=FIELD_PATH_PATTERN, max_length=256)]
TopicFilter = Annotated[
    str, StringConstraints(pattern=TOPIC_FILTER_PATTERN, min_length=1, max_length=MAX_TOPIC_CHARS)
]
TopicTemplate = Annotated[
    str,
    StringConstraints(pattern=TOPIC_TEMPLATE_PATTERN, min_length=1, max_length=MAX_TOPIC_CHARS),
]
ExpressionText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_EXPRESSION_CHARS)]
ThingName = Annotated[str, StringConstraints(pattern=THING_NAME_PATTERN, max_length=180)]
PropertyName = Annotated[str, StringConstraints(pattern=FEATURE_NAME_PATTERN, max_length=64)]
ModelName = Annotated[str, StringConstraints(pattern=MODEL_NAME_PATTERN, max_length=253)]
TwinNamespace = Annotated[str, StringConstraints(pattern=TWIN_NAMESPACE_PATTERN, max_length=64)]
Url = Annotated[str, StringConstraints(pattern=URL_PATTERN, max_length=2048)]
HttpPath = Annotated[str, StringConstraints(pattern=HTTP_PATH_PATTERN)]
UnitName = Annotated[str, StringConstraints(max_length=16)]
Seconds = Annotated[float, Field(gt=0, le=86_400)]

ErrorAction = Literal["deadLetter", "drop"]


def exactly_one(*names: str) -> ConfigDict:
    """A model config whose JSON schema says "exactly one of these fields" (structural schemas
    allow a oneOf of required lists)."""
    return ConfigDict(json_schema_extra={"oneOf": [{"required": [name]} for name in names]})


def _chosen(model: CamelModel, names: tuple[str, ...]) -> list[str]:
    return [name for name in names if getattr(model, name) is not None]


def _one_of(model: CamelModel, names: tuple[str, ...], what: str) -> str:
    chosen = _chosen(model, names)
    if len(chosen) != 1:
        wire = ", ".join(_camel(name) for name in names)
        found = ", ".join(_camel(name) for name in chosen) or "none"
        raise PydanticCustomError(
            "one_of",
            "{what} needs exactly one of {names} (found: {found})",
            {"what": what, "names": wire, "found": found},
        )
    return chosen[0]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def check_topic_filter(topic: str) -> str:
    """MQTT rules for a subscription filter: '#' only as the whole last level, '+' a whole level."""
    levels = topic.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise PydanticCustomError(
                "topic_filter",
                "'#' must be a whole topic level and the last one: '{topic}'",
                {"topic": topic},
            )
        if "+" in level and level != "+":
            raise PydanticCustomError(
                "topic_filter", "'+' must be a whole topic level: '{topic}'", {"topic": topic}
            )
    return topic


def template_fields(template: str) -> list[str]:
    """The field paths of a topic template's `{...}` placeholders, checked."""
    rest = PLACEHOLDER.sub("", template)
    if "{" in rest or "}" in rest:
        raise PydanticCustomError(
            "topic_template", "unbalanced brace in topic '{topic}'", {"topic": template}
        )
    fields = PLACEHOLDER.findall(template)
    for field in fields:
        if not re.fullmatch(FIELD_PATH_PATTERN, field):
            raise PydanticCustomError(
                "topic_template",
                "placeholder '{field}' in topic '{topic}' is not a field path such as value.thing",
                {"field": field, "topic": template},
            )
    return fields


def check_field_paths(keys: Any, where: str) -> None:
    """Map keys that are field paths. (A key pattern would become patternProperties or
    propertyNames in the JSON schema, which a CRD's structural schema does not allow.)"""
    for key in keys:
        if len(key) > 256 or not re.fullmatch(FIELD_PATH_PATTERN, key):
            raise PydanticCustomError(
                "field_path",
                "{where}: '{key}' is not a field path such as value.temperature (names of "
                "letters, digits, '_' and '-' joined by '.')",
                {"where": where, "key": key[:80]},
            )


def acl_pattern(template: str) -> str:
    """The topic an ACL must allow for a template: each level holding a placeholder becomes '+'
    (a rendered placeholder may not contain '/', so it stays within its level)."""
    return "/".join("+" if "{" in level else level for level in template.split("/"))


MAX_BATCH_WINDOW_MS = 50  # a flow's batch window, at most

# Sources -------------------------------------------------------------------------------------


class MqttSource(CamelModel):
    """Messages on an MQTT topic filter of the namespace's broker."""

    topic: TopicFilter = Field(description="Topic filter to subscribe to, e.g. plant/+/press.")
    qos: Literal[0, 1] = Field(
        default=1,
        description="1: at least once (a message is acknowledged to the broker after every "
        "sink accepted it); 0: at most once, fastest.",
    )

    @field_validator("topic")
    @classmethod
    def _topic_rules(cls, topic: str) -> str:
        return check_topic_filter(topic)


TwinChange = Literal["reported", "desired"]


class TwinSource(CamelModel):
    """Change events of twin things: listed things, or every thing of a TwinModel."""

    things: list[ThingName] | None = Field(
        default=None, max_length=1000, description="Thing names (without the twin namespace)."
    )
    model: ModelName | None = Field(
        default=None, description="A TwinModel: every thing it defines."
    )
    changes: list[TwinChange] = Field(
        default_factory=lambda: ["reported"],  # type: ignore[arg-type]
        min_length=1,
        max_length=2,
        description="Which changes start the flow: reported values, desired values, or both.",
    )

    @model_validator(mode="after")
    def _things_or_model(self) -> TwinSource:
        if not self.things and self.model is None:
            raise PydanticCustomError("twin_source", "a twin source needs things or model")
        return self


class RateLimitSpec(CamelModel):
    """At most `requests` per `perSeconds` per token subject (per client address on a public
    route), counted by the proxy; more get 429 with Retry-After."""

    requests: int = Field(ge=1, le=1_000_000, description="Requests admitted per window.")
    per_seconds: int = Field(ge=1, le=3600, description="The window, in seconds.")


class HttpSourceExpose(CamelModel):
    """The source's route on the namespace's proxy, fail-closed like a registration's: only a
    valid token of the Spine's issuer (`auth`) that holds one of `roles` gets through."""

    roles: list[Role] = Field(
        min_length=1,
        max_length=32,
        description="A token needs any one of these roles (a write into the plant's data "
        "always names who may make it).",
    )
    rate_limit: RateLimitSpec | None = Field(
        default=None,
        description="At most `requests` per `perSeconds` per token subject; more get 429 from "
        "the proxy before they reach the engine.",
    )


class HttpSource(CamelModel):
    """Requests to an endpoint of the flow engine: /flows/<flow><path>."""

    path: HttpPath = Field(default="/", description="Path below /flows/<flow>.")
    methods: list[Literal["POST", "PUT"]] = Field(
        default_factory=lambda: ["POST"],  # type: ignore[arg-type]
        min_length=1,
        max_length=2,
    )
    expose: HttpSourceExpose | None = Field(
        default=None,
        description="Route /flows/<flow><path> on the namespace's proxy to this source, for "
        "tokens with one of the roles. Unset: only the namespace's own pods reach it, on the "
        "engine's Service.",
    )


class ScheduleSource(CamelModel):
    """A message every so often: {"time": "<RFC 3339>"} merged into `payload`."""

    every: float = Field(ge=0.1, le=86_400, description="Seconds between messages.")
    payload: dict[str, Any] | None = Field(
        default=None,
        description="A JSON object to send (the time is added as `time`).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


SOURCE_KINDS = ("mqtt", "twin", "http", "schedule")


class FlowSource(CamelModel):
    """Where a flow's messages come from: exactly one of mqtt, twin, http and schedule."""

    model_config = exactly_one(*SOURCE_KINDS)

    mqtt: MqttSource | None = None
    twin: TwinSource | None = None
    http: HttpSource | None = None
    schedule: ScheduleSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> FlowSource:
        _one_of(self, SOURCE_KINDS, "source")
        return self

    @property
    def kind(self) -> str:
        return _chosen(self, SOURCE_KINDS)[0]


# Steps ---------------------------------------------------------------------------------------


class ValidateStep(CamelModel):
    """Check each message against a JSON Schema (inline, or a TwinModel's properties, which the
    operator turns into one)."""

    json_schema: dict[str, Any] | None = Field(
        default=None,
        alias="schema",
        description="An inline JSON Schema (draft 2020-12).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    model: ModelName | None = Field(
        default=None, description="A TwinModel whose properties the message must fit."
    )

    @model_validator(mode="after")
    def _schema_or_model(self) -> ValidateStep:
        # Both may be set: the operator resolves model into the schema the engine runs.
        if self.json_schema is None and self.model is None:
            raise PydanticCustomError("validate", "validate needs schema or model")
        if self.json_schema is not None:
            import jsonschema  # only with a validate step (see flow/steps.py)

            try:
                jsonschema.Draft202012Validator.check_schema(self.json_schema)
            except jsonschema.SchemaError as error:
                raise PydanticCustomError(
                    "validate",
                    "schema is not a valid JSON Schema: {reason}",
                    {"reason": error.message[:200]},
                ) from None
        return self


class ExpressionStep(CamelModel):
    expression: ExpressionText = Field(description="A JSONata expression.")


class ConvertStep(CamelModel):
    """Convert a numeric field from one unit to another (the table is in the README)."""

    field: FieldPath
    from_unit: UnitName = Field(alias="from", description="Unit of the value, e.g. degF.")
    to_unit: UnitName = Field(alias="to", description="Unit to convert it to, e.g. degC.")

    @model_validator(mode="after")
    def _known_units(self) -> ConvertStep:
        problem = conversion_problem(self.from_unit, self.to_unit)
        if problem is not None:
            raise PydanticCustomError("convert", "{problem}", {"problem": problem})
        return self


Aggregate = Literal["avg", "min", "max", "sum", "count", "first", "last"]


class WindowAggregate(CamelModel):
    op: Aggregate
    expression: ExpressionText | None = Field(
        default=None,
        description="The value to aggregate, a JSONata expression per message (not needed "
        "for count).",
    )


class WindowStep(CamelModel):
    """Collect messages into tumbling windows (by time or count), per group, and emit one
    message per window and group when it closes:
    {"group", "start", "end", "count", <aggregates>}."""

    every: float | None = Field(default=None, ge=0.1, le=86_400, description="Seconds per window.")
    count: int | None = Field(default=None, ge=1, le=100_000, description="Messages per window.")
    group_by: ExpressionText | None = Field(
        default=None, description="A JSONata expression whose value names the group."
    )
    aggregates: dict[str, WindowAggregate] = Field(
        min_length=1, max_length=64, description="Output field -> aggregate."
    )
    max_groups: int = Field(
        default=10_000, ge=1, le=1_000_000, description="Open groups at most; more go to onError."
    )

    @field_validator("aggregates")
    @classmethod
    def _output_fields(cls, aggregates: dict[str, WindowAggregate]) -> dict[str, WindowAggregate]:
        check_field_paths(aggregates, "aggregates")
        return aggregates

    @model_validator(mode="after")
    def _every_or_count(self) -> WindowStep:
        if (self.every is None) == (self.count is None):
            raise PydanticCustomError("window", "a window needs exactly one of every and count")
        for name, aggregate in self.aggregates.items():
            if aggregate.op != "count" and aggregate.expression is None:
                raise PydanticCustomError(
                    "window",
                    "aggregate {name} ({op}) needs an expression",
                    {"name": name, "op": aggregate.op},
                )
        return self


class ServiceRef(CamelModel):
    """An HTTP API of a ServiceRegistration in the flow's namespace. The operator resolves it
    to the API's backend (its Service inside the namespace, or its url) plus `path`; the
    engine calls the backend directly, not through the proxy (it holds no OIDC token)."""

    name: DnsLabel = Field(description="The ServiceRegistration's name.")
    api: DnsLabel | None = Field(
        default=None,
        description="The id of one of its HTTP APIs; may be left out when it has exactly one.",
    )
    path: HttpPath = Field(
        default="/", description="Path below the API's base URL, e.g. /contacts."
    )


def _url_xor_service_ref(model: CallStep | HttpSink, what: str) -> None:
    if (model.url is None) == (model.service_ref is None):
        raise PydanticCustomError(
            "url_or_service_ref", "{what} needs exactly one of url and serviceRef", {"what": what}
        )


class CallStep(CamelModel):
    """Call an HTTP service to enrich a message: the body is an expression of the message,
    the result an expression of the message with the response bound to $response."""

    model_config = exactly_one("url", "serviceRef")

    url: Url | None = None
    service_ref: ServiceRef | None = Field(
        default=None,
        description="An HTTP API of a ServiceRegistration; the operator resolves it to url.",
    )
    method: Literal["GET", "POST", "PUT"] = "POST"
    body: ExpressionText | None = Field(
        default=None, description="Request body (JSON) as an expression; the message if unset."
    )
    result: ExpressionText = Field(
        default="$merge([$, $response])",
        description="The message after the call; $response is the response's JSON.",
    )
    timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    retries: int = Field(default=2, ge=0, le=10, description="Retries after a failed attempt.")
    backoff_seconds: float = Field(
        default=0.5, gt=0, le=60, description="First wait between attempts; doubles each time."
    )

    @model_validator(mode="after")
    def _url_or_service(self) -> CallStep:
        _url_xor_service_ref(self, "call")
        return self


STEP_KINDS = (
    "validate",
    "filter",
    "transform",
    "set",
    "rename",
    "remove",
    "convert",
    "window",
    "call",
)
# `validate` would shadow pydantic's BaseModel.validate: the attribute is validate_.
STEP_FIELDS = tuple(kind + "_" if kind == "validate" else kind for kind in STEP_KINDS)


class Step(CamelModel):
    """One step: a name and exactly one of the step kinds."""

    model_config = exactly_one(*STEP_KINDS)

    name: DnsLabel = Field(description="Names the step in status, metrics and dead letters.")
    validate_: ValidateStep | None = Field(default=None, alias="validate")
    filter: ExpressionStep | None = Field(
        default=None, description="Keep messages for which the expression is true."
    )
    transform: ExpressionStep | None = Field(
        default=None, description="Replace the message with the expression's value."
    )
    set: dict[str, ExpressionText] | None = Field(
        default=None, max_length=64, description="Field -> JSONata expression of the message."
    )
    rename: dict[str, FieldPath] | None = Field(
        default=None, max_length=64, description="Old field -> new field."
    )
    remove: list[FieldPath] | None = Field(default=None, max_length=64)
    convert: ConvertStep | None = None
    window: WindowStep | None = None
    call: CallStep | None = None
    key: ExpressionText | None = Field(
        default=None,
        description="Keep state per key (a JSONata expression such as thing): the step's "
        "expressions see $previous, the message this step last passed on for the same key. "
        "For hysteresis and change detection (filter, transform, set).",
    )
    max_keys: int = Field(
        default=10_000, ge=1, le=1_000_000, description="Keys remembered at most (oldest go)."
    )
    on_error: ErrorAction | None = Field(
        default=None,
        description="What happens to a message this step fails on: deadLetter (to "
        "spine/flows/<flow>/deadletter) or drop (counted). The flow's onError if unset.",
    )

    _expressions: dict[str, Expression] = PrivateAttr(default_factory=dict)

    @field_validator("set", "rename")
    @classmethod
    def _field_keys(cls, fields: dict[str, Any] | None, info: ValidationInfo) -> Any:
        check_field_paths(fields or {}, str(info.field_name))
        return fields

    @model_validator(mode="after")
    def _one_kind_and_compiled(self) -> Step:
        kind = _one_of(self, STEP_FIELDS, f"step {self.name}").rstrip("_")
        if self.key is not None and kind not in ("filter", "transform", "set"):
            raise PydanticCustomError(
                "key",
                "step {step}: key (state per key) is for filter, transform and set steps",
                {"step": self.name},
            )
        self._expressions = {}
        for where, source in self.expression_sources():
            try:
                self._expressions[where] = compile_expression(source)
            except ExpressionError as error:
                raise PydanticCustomError(
                    "expression",
                    "step {step} ({kind}): {where} does not compile: {reason}",
                    {"step": self.name, "kind": kind, "where": where, "reason": str(error)},
                ) from None
        return self

    @property
    def kind(self) -> str:
        return _chosen(self, STEP_FIELDS)[0].rstrip("_")

    def expression_sources(self) -> list[tuple[str, str]]:
        """(where, source) of every expression of the step; `where` names it in errors."""
        found: list[tuple[str, str]] = []
        if self.key is not None:
            found.append(("key", self.key))
        if self.filter is not None:
            found.append(("expression", self.filter.expression))
        if self.transform is not None:
            found.append(("expression", self.transform.expression))
        for field, source in (self.set or {}).items():
            found.append((f"set.{field}", source))
        if self.window is not None:
            if self.window.group_by is not None:
                found.append(("groupBy", self.window.group_by))
            for name, aggregate in self.window.aggregates.items():
                if aggregate.expression is not None:
                    found.append((f"aggregates.{name}", aggregate.expression))
        if self.call is not None:
            if self.call.body is not None:
                found.append(("body", self.call.body))
            found.append(("result", self.call.result))
        return found

    def expression(self, where: str) -> Expression:
        return self._expressions[where]


# Sinks ---------------------------------------------------------------------------------------


class MqttSink(CamelModel):
    """Publish each message to a topic; `{field.path}` placeholders fill in message fields."""

    topic: TopicTemplate = Field(
        description="Topic, e.g. spine/flows/press-alarms/out/{thing}. A placeholder's value "
        "must not contain '/', '+', '#' or control characters."
    )
    qos: Literal[0, 1] = 1
    retain: bool = False

    @field_validator("topic")
    @classmethod
    def _placeholders(cls, topic: str) -> str:
        template_fields(topic)
        return topic


class HttpSink(CamelModel):
    """Send each message as JSON to an HTTP endpoint; a 2xx answer accepts it."""

    model_config = exactly_one("url", "serviceRef")

    url: Url | None = None
    service_ref: ServiceRef | None = Field(
        default=None,
        description="An HTTP API of a ServiceRegistration; the operator resolves it to url.",
    )
    method: Literal["POST", "PUT"] = "POST"
    timeout_seconds: float = Field(default=5.0, gt=0, le=120)

    @model_validator(mode="after")
    def _url_or_service(self) -> HttpSink:
        _url_xor_service_ref(self, "an http sink")
        return self


class TwinSink(CamelModel):
    """Write a property of a twin thing, acknowledged end to end by the twin (docs/protocol.md)."""

    thing: ExpressionText = Field(description="JSONata expression giving the thing name.")
    property: PropertyName = Field(description="The property (feature) to write.")
    value: ExpressionText = Field(
        default="$", description="The value to write; the message if unset."
    )

    _expressions: dict[str, Expression] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _compiled(self) -> TwinSink:
        self._expressions = {}
        for where, source in (("thing", self.thing), ("value", self.value)):
            try:
                self._expressions[where] = compile_expression(source)
            except ExpressionError as error:
                raise PydanticCustomError(
                    "expression",
                    "twin sink: {where} does not compile: {reason}",
                    {"where": where, "reason": str(error)},
                ) from None
        return self

    def expression(self, where: str) -> Expression:
        return self._expressions[where]


SINK_KINDS = ("mqtt", "http", "twin")


class Sink(CamelModel):
    """Where messages go: exactly one of mqtt, http and twin."""

    model_config = exactly_one(*SINK_KINDS)

    name: DnsLabel | None = Field(default=None, description="Names the sink in metrics.")
    mqtt: MqttSink | None = None
    http: HttpSink | None = None
    twin: TwinSink | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Sink:
        _one_of(self, SINK_KINDS, "sink")
        return self

    @property
    def kind(self) -> str:
        return _chosen(self, SINK_KINDS)[0]


class FlowSpec(CamelModel):
    """A flow: a source, steps in order, and sinks that each get every resulting message."""

    source: FlowSource
    steps: list[Step] = Field(default_factory=list, max_length=64)
    sinks: list[Sink] = Field(min_length=1, max_length=16)
    on_error: ErrorAction = Field(
        default="deadLetter",
        description="Default of each step's onError: deadLetter or drop.",
    )
    max_in_flight: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Messages taken from the source but not yet accepted by every sink.",
    )
    expression_timeout_ms: int = Field(
        default=250, ge=1, le=5_000, description="Longest one expression may run per message."
    )
    batch_window_ms: int = Field(
        default=0,
        ge=0,
        le=MAX_BATCH_WINDOW_MS,
        description="After each read of its MQTT connection, the flow reads nothing more for "
        "this long, so what arrives meanwhile runs as one batch: less CPU per message at a few "
        "thousand messages a second, for up to this much more latency. 0 reads at once.",
    )

    @field_validator("steps")
    @classmethod
    def _unique_step_names(cls, steps: list[Step]) -> list[Step]:
        seen: dict[str, int] = {}
        for index, step in enumerate(steps):
            if step.name in seen:
                raise PydanticCustomError(
                    "duplicate",
                    "steps[{index}]: name '{name}' is used by steps[{first}] too",
                    {"index": index, "name": step.name, "first": seen[step.name]},
                )
            seen[step.name] = index
        return steps

    @model_validator(mode="after")
    def _sink_names(self) -> FlowSpec:
        names = [sink.name for sink in self.sinks if sink.name is not None]
        if len(names) != len(set(names)):
            raise PydanticCustomError("duplicate", "two sinks have the same name")
        return self

    # What the operator needs to build the flow's broker login and check references ----------

    def subscribe_topics(
        self, twin_ack_topic: str | None = None, shared_group: str | None = None
    ) -> list[str]:
        """Topic filters the flow's login must be allowed to subscribe to. With shared
        subscriptions the login needs `$share/<group>/<filter>` itself: mosquitto 2.0 checks
        the whole string against the ACL (the plain filter alone was refused, reason 135)."""
        topics: list[str] = []
        for topic in self.source_filters():
            topics.append(topic)
            if shared_group is not None:
                topics.append(shared_subscription(shared_group, topic))
        if twin_ack_topic is not None and any(sink.twin is not None for sink in self.sinks):
            topics.append(twin_ack_topic)
        return topics

    def source_filters(self) -> list[str]:
        """The topic filters the flow's input arrives on (an MQTT or a twin source)."""
        source = self.source
        if source.mqtt is not None:
            return [source.mqtt.topic]
        if source.twin is not None:
            return [f"spine/things/{thing}/events" for thing in source.twin.things or ["+"]]
        return []

    def publish_topics(self, flow: str, twin_update_topic: str | None = None) -> list[str]:
        """Topics the flow's login must be allowed to publish to (sinks and dead letters)."""
        topics = [acl_pattern(sink.mqtt.topic) for sink in self.sinks if sink.mqtt is not None]
        if twin_update_topic is not None and any(sink.twin is not None for sink in self.sinks):
            topics.append(twin_update_topic)
        topics.append(dead_letter_topic(flow))
        return sorted(set(topics))

    def service_refs(self) -> list[str]:
        """The ServiceRegistrations the flow names (by name)."""
        return sorted({ref.name for _, ref in self.service_ref_sites()})

    def service_ref_sites(self) -> list[tuple[str, ServiceRef]]:
        """(where, reference) of every serviceRef: `steps[i].call`, `sinks[i].http`."""
        sites = [
            (f"steps[{index}].call", step.call.service_ref)
            for index, step in enumerate(self.steps)
            if step.call is not None and step.call.service_ref is not None
        ]
        sites += [
            (f"sinks[{index}].http", sink.http.service_ref)
            for index, sink in enumerate(self.sinks)
            if sink.http is not None and sink.http.service_ref is not None
        ]
        return sites

    def model_refs(self) -> list[str]:
        refs = [
            step.validate_.model for step in self.steps if step.validate_ and step.validate_.model
        ]
        if self.source.twin is not None and self.source.twin.model is not None:
            refs.append(self.source.twin.model)
        return sorted(set(refs))


def dead_letter_topic(flow: str) -> str:
    return f"spine/flows/{flow}/deadletter"


def shared_group(flow: str) -> str:
    """The shared-subscription group of a flow: the engine's replicas split its input."""
    return f"flow-{flow}"


def shared_subscription(group: str, topic: str) -> str:
    return f"$share/{group}/{topic}"


MAX_REPLICAS = 16
ORDINAL_VARIABLE = "SPINE_FLOW_ORDINAL"
POD_NAME_VARIABLE = "SPINE_POD_NAME"


def replica_suffix(ordinal: int) -> str:
    """What a replica adds to the names it runs each flow under: nothing for ordinal 0 (the
    names a one-replica engine always had, so its persistent sessions and the twin's sequence
    numbers carry over), `.<ordinal>` otherwise. A Kubernetes name has no '.' in a DNS label,
    so `flow-a.1` can never be the name of another flow's first replica."""
    return "" if ordinal == 0 else f".{ordinal}"


def ordinal_from_environment(environ: dict[str, str]) -> int | None:
    """This replica's ordinal: SPINE_FLOW_ORDINAL (local runs, tests), else the trailing number
    of SPINE_POD_NAME (a StatefulSet's pod `<set>-<ordinal>`, from the downward API)."""
    explicit = environ.get(ORDINAL_VARIABLE, "").strip()
    if explicit:
        if not explicit.isdigit():
            raise ValueError(f"{ORDINAL_VARIABLE}={explicit!r} is not a replica ordinal")
        return int(explicit)
    pod = environ.get(POD_NAME_VARIABLE, "").strip()
    found = re.search(r"-([0-9]+)$", pod)
    if pod and found is None:
        raise ValueError(f"{POD_NAME_VARIABLE}={pod!r} does not end in -<ordinal>")
    return int(found.group(1)) if found else None


# The engine's config file ------------------------------------------------------------------


class FlowLogin(CamelModel):
    """The flow's own broker login (the operator creates it, allowed exactly its topics)."""

    username: SafeLine
    password_file: Path = Field(description="File holding the password (a mounted Secret key).")
    client_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,128}$")] | None = Field(
        default=None,
        description="The one client id the broker lets this login use (the operator binds "
        "each flow's login to `flow-<flow>`); the engine connects with exactly it. Unset: "
        "`flow-<flow>-<instance>`, for a login bound to no client id.",
    )

    def password(self) -> str:
        return self.password_file.read_text().strip()


class FlowConfig(FlowSpec):
    """One flow as the engine runs it: the spec with references resolved, and its logins."""

    name: DnsLabel
    login: FlowLogin = Field(description="The login replica 0 runs the flow under.")
    replica_logins: list[FlowLogin] = Field(
        default_factory=list,
        max_length=MAX_REPLICAS - 1,
        description="The logins of replicas 1, 2, ... in order: each bound to its own client "
        "id, so no replica can take another's session over.",
    )

    def login_of(self, ordinal: int) -> FlowLogin:
        """The login replica `ordinal` runs this flow under."""
        return self.login if ordinal == 0 else self.replica_logins[ordinal - 1]

    @model_validator(mode="after")
    def _resolved(self) -> FlowConfig:
        # The operator turns a TwinModel or ServiceRegistration reference into what the engine
        # runs (things, a JSON Schema, a URL); an unresolved one cannot run.
        problems = []
        if self.source.twin is not None and not self.source.twin.things:
            problems.append("source.twin: things must be listed (the operator resolves model)")
        for step in self.steps:
            if step.validate_ is not None and step.validate_.json_schema is None:
                problems.append(f"step {step.name}: validate needs schema (model unresolved)")
            if step.call is not None and step.call.url is None:
                problems.append(f"step {step.name}: call needs url (serviceRef unresolved)")
        for index, sink in enumerate(self.sinks):
            if sink.http is not None and sink.http.url is None:
                problems.append(f"sinks[{index}]: http needs url (serviceRef unresolved)")
        if problems:
            raise PydanticCustomError("unresolved", "{problems}", {"problems": "; ".join(problems)})
        return self


class FlowBrokerSettings(CamelModel):
    """How the engine reaches the namespace's broker; each flow logs in with its own login."""

    host: SafeLine
    port: Port = 1883
    tls_ca_file: Path | None = None
    session_expiry_seconds: int = Field(
        default=3600,
        ge=0,
        le=7 * 86_400,
        description="How long the broker keeps a QoS 1 flow's session (and queues its messages) "
        "while the engine is away.",
    )
    keepalive_seconds: int = Field(default=30, ge=5, le=3600)


class FlowEngineConfig(CamelModel):
    """Everything one flow engine process needs."""

    broker: FlowBrokerSettings
    http: HttpSettings = Field(default_factory=HttpSettings)
    twin_namespace: TwinNamespace = Field(description="Namespace part of thing ids.")
    instance: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,63}$")] | None = Field(
        default=None,
        description="This engine's part of its MQTT client ids (the host name if unset): stable "
        "across restarts, so a restarted engine resumes its persistent sessions.",
    )
    shared_subscriptions: bool = Field(
        default=True,
        description="Subscribe MQTT and twin sources as $share/flow-<flow>/<topic>, so "
        "replicas split each flow's input (always, so scaling never changes a persistent "
        "session's subscriptions).",
    )
    replicas: int = Field(
        default=1,
        ge=1,
        le=MAX_REPLICAS,
        description="How many engine replicas run every flow; each flow lists a login per "
        "replica. A schedule source fires on replica 0 only.",
    )
    ordinal: int | None = Field(
        default=None,
        ge=0,
        lt=MAX_REPLICAS,
        description="This replica's ordinal. Unset (the shared ConfigMap of a StatefulSet): "
        "SPINE_FLOW_ORDINAL, else the number ending SPINE_POD_NAME, else 0.",
    )
    max_message_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Larger source messages go to the dead letter topic.",
    )
    twin_ack_timeout_seconds: float = Field(
        default=30,
        gt=0,
        le=3600,
        description="Re-send twin updates the twin has not confirmed after this long.",
    )
    flows: list[FlowConfig] = Field(default_factory=list, max_length=500)

    @field_validator("flows")
    @classmethod
    def _unique_flows(cls, flows: list[FlowConfig]) -> list[FlowConfig]:
        names: set[str] = set()
        for flow in flows:
            if flow.name in names:
                raise PydanticCustomError(
                    "duplicate", "flow '{name}' is listed twice", {"name": flow.name}
                )
            names.add(flow.name)
        return flows

    @model_validator(mode="after")
    def _a_login_per_replica(self) -> FlowEngineConfig:
        for flow in self.flows:
            if len(flow.replica_logins) != self.replicas - 1:
                raise PydanticCustomError(
                    "replica_logins",
                    "flow '{name}': {replicas} replicas need {wanted} replicaLogins, not {found}",
                    {
                        "name": flow.name,
                        "replicas": self.replicas,
                        "wanted": self.replicas - 1,
                        "found": len(flow.replica_logins),
                    },
                )
        return self

    def replica_ordinal(self, environ: dict[str, str] | None = None) -> int:
        """This replica's ordinal (see `ordinal`); ValueError if the environment names none
        that makes sense."""
        if self.ordinal is not None:
            return self.ordinal
        found = ordinal_from_environment(dict(os.environ) if environ is None else environ)
        return 0 if found is None else found


__all__ = [
    "MAX_REPLICAS",
    "UNITS",
    "FlowConfig",
    "FlowEngineConfig",
    "FlowSpec",
    "Sink",
    "Step",
]
