"""From a raw PLC value to a published property value, and back for writes. Pure logic.

The pipeline calls `to_published` and `TagState.should_publish` for every reading, and
`group_into_updates` once per cycle; the writer calls `to_raw` for desired values.
Policy (README.md, "Bad values"): NaN and infinities cannot be written in JSON, so such a
value is not published; the tag is reported failing with the reason and the twin keeps the
last good value, whose source time shows its age. Range checks of good values are the
twin's, against its TwinModel.
"""

from __future__ import annotations

import base64
import datetime
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from spine_runtime.gateway.addresses import ValueType

JsonValue = bool | int | float | str | None | list[Any] | dict[str, Any]


class BadValue(ValueError):
    """A value that must not be published or written; `reason` is a short metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Scale:
    factor: float = 1.0
    offset: float = 0.0

    @property
    def is_identity(self) -> bool:
        return self.factor == 1.0 and self.offset == 0.0

    @property
    def keeps_integers(self) -> bool:
        return float(self.factor).is_integer() and float(self.offset).is_integer()


def check_finite(value: float) -> float:
    if math.isnan(value):
        raise BadValue("not_finite", "the PLC sent NaN, which JSON cannot carry")
    if math.isinf(value):
        raise BadValue("not_finite", f"the PLC sent {value}, which JSON cannot carry")
    return value


def to_json_value(value: Any) -> JsonValue:
    """A JSON-ready form of a value an OPC UA server (or any driver) delivered."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return check_finite(value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        return format_time(value.timestamp())
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, list | tuple):
        return [to_json_value(item) for item in value]
    raise BadValue("unsupported_type", f"a value of type {type(value).__name__} is not supported")


def to_published(raw: Any, scale: Scale) -> JsonValue:
    """Scale (value * factor + offset) and check a raw value; raises BadValue."""
    if raw is None:
        raise BadValue("no_value", "the PLC sent no value (null)")
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        if not scale.is_identity:
            raise BadValue("unsupported_type", f"cannot scale a {type(raw).__name__}")
        return to_json_value(raw)
    if isinstance(raw, float):
        check_finite(raw)
    if scale.is_identity:
        return raw
    scaled = raw * scale.factor + scale.offset
    if isinstance(raw, int) and scale.keeps_integers:
        return int(scaled)
    if isinstance(scaled, float) and not math.isfinite(scaled):
        raise BadValue("out_of_range", f"{raw} scaled by {scale.factor} exceeds a double")
    return scaled


def to_raw(value: Any, value_type: ValueType | None, scale: Scale) -> bool | int | float | str:
    """The raw value to write for a desired property value: inverse scale, type, range."""
    if value_type is None:
        if isinstance(value, bool | int | float | str):
            if isinstance(value, int | float) and not isinstance(value, bool):
                return (value - scale.offset) / scale.factor if not scale.is_identity else value
            return value
        raise BadValue("wrong_type", f"cannot write a {type(value).__name__}")
    if value_type.is_bool:
        if not isinstance(value, bool):
            raise BadValue("wrong_type", f"{value!r} is not a boolean")
        return value
    if value_type.json_type == "string":
        if not isinstance(value, str):
            raise BadValue("wrong_type", f"{value!r} is not a string")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadValue("wrong_type", f"{value!r} is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise BadValue("not_finite", f"{value} cannot be written")
    raw: float | int = value if scale.is_identity else (value - scale.offset) / scale.factor
    if not value_type.is_integer:
        return float(raw)
    rounded = round(raw)
    if abs(raw - rounded) > 1e-9 * max(1.0, abs(raw)):
        raise BadValue(
            "out_of_range",
            f"{value} is not a whole number of {value_type.name} steps after scaling",
        )
    assert value_type.minimum is not None and value_type.maximum is not None
    if not value_type.minimum <= rounded <= value_type.maximum:
        raise BadValue(
            "out_of_range",
            f"{value} is {rounded} raw, outside {value_type.name} "
            f"({value_type.minimum}..{value_type.maximum})",
        )
    return int(rounded)


@dataclass
class TagState:
    """What the gateway last published for one tag, and whether the tag is healthy."""

    deadband: float = 0.0
    last_value: JsonValue = None
    has_value: bool = False  # a good value was read at least once
    last_published: JsonValue = None
    last_published_at: float | None = None  # monotonic seconds
    failing_reason: str | None = None
    failing_since: float | None = None  # wall-clock seconds

    def should_publish(self, value: JsonValue, now: float, heartbeat: float | None) -> bool:
        """Changed beyond the deadband since the last publish, or a heartbeat is due."""
        if self.last_published_at is None:
            return True
        if heartbeat and now - self.last_published_at >= heartbeat:
            return True
        previous = self.last_published
        if (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and isinstance(previous, int | float)
            and not isinstance(previous, bool)
        ):
            return abs(value - previous) > self.deadband
        return value != previous

    def published(self, value: JsonValue, now: float) -> None:
        self.last_published, self.last_published_at = value, now

    def heartbeat_due(self, now: float, heartbeat: float | None) -> bool:
        return bool(
            heartbeat
            and self.has_value
            and self.failing_reason is None
            and self.last_published_at is not None
            and now - self.last_published_at >= heartbeat
        )


@dataclass(frozen=True)
class Change:
    """A property value to publish: `source_time` is when it was read (Unix seconds)."""

    thing: str
    property: str
    value: JsonValue
    source_time: float


@dataclass
class UpdateDraft:
    """One merge message for one thing: several properties, one source time."""

    thing: str
    features: dict[str, JsonValue] = field(default_factory=dict)
    source_time: float = 0.0


def group_into_updates(changes: Iterable[Change]) -> list[UpdateDraft]:
    """One update per thing, in time order; a second value of a property starts a new one.

    Most cycles read every property once, so each thing gets one message. An OPC UA publish
    response may carry several queued values of one item: each goes out in order, so none is
    merged away. The message's source time is its newest value's: at that instant every value
    in it was current, since a later change of any of them would be in a later message.
    """
    updates: list[UpdateDraft] = []
    open_by_thing: dict[str, UpdateDraft] = {}
    for change in sorted(changes, key=lambda change: change.source_time):
        draft = open_by_thing.get(change.thing)
        if draft is None or change.property in draft.features:
            draft = UpdateDraft(change.thing)
            open_by_thing[change.thing] = draft
            updates.append(draft)
        draft.features[change.property] = change.value
        draft.source_time = max(draft.source_time, change.source_time)
    return updates


def format_time(unix_seconds: float) -> str:
    """RFC 3339 in UTC with milliseconds, as docs/protocol.md shows it."""
    moment = datetime.datetime.fromtimestamp(unix_seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
