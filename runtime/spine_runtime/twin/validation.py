"""Check changes against a thing's model: known property, JSON Schema type/range/enum, readOnly.

The service builds one `ModelValidator` per ThingModel (again when the config changes) and runs
every change from MQTT or HTTP through it; a failed check is a `Rejection` naming the field and
the reason, which becomes the errors-topic message or the HTTP 400 body.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jsonschema.exceptions import best_match

from spine_runtime.config.twin import (
    PropertySchema,
    ThingModel,
    ValueSchemaValidator,
    property_json_schema,
)
from spine_runtime.twin.state import Change

MAX_REASON_CHARS = 500


class Rejection(Exception):
    """An update the twin refuses, with the field at fault and an HTTP-style status."""

    def __init__(self, reason: str, field: str | None = None, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason if len(reason) <= MAX_REASON_CHARS else reason[:MAX_REASON_CHARS] + "…"
        self.field = field
        self.status = status


class ModelValidator:
    """The compiled checks of one model's properties."""

    def __init__(self, model: ThingModel) -> None:
        self.model = model
        self.features = list(model.properties)
        self._validators = {
            # `pattern` runs on RE2, in time linear in the value (config/twin.py)
            name: ValueSchemaValidator(property_json_schema(schema))
            for name, schema in model.properties.items()
        }
        self._read_only = {name for name, schema in model.properties.items() if schema.read_only}
        self._fast = {
            name: check
            for name, schema in model.properties.items()
            if (check := fast_check(schema)) is not None
        }

    def check(self, change: Change) -> None:
        validator = self._validators.get(change.feature)
        if validator is None:
            known = ", ".join(self.features) or "none"
            raise Rejection(
                f"model {self.model.name} has no property {change.feature!r} (it has: {known})",
                field=f"/features/{change.feature}",
            )
        if change.desired and change.feature in self._read_only:
            raise Rejection(
                f"property {change.feature!r} is readOnly: it cannot have a desired value",
                field=change.path,
            )
        if change.clear:
            return
        if change.value is None:
            raise Rejection("a property value cannot be null", field=change.path)
        fast = self._fast.get(change.feature)
        if fast is not None and fast(change.value):
            return
        if not validator.is_valid(change.value):
            error = best_match(validator.iter_errors(change.value))
            suffix = "".join(f"/{part}" for part in error.absolute_path) if error else ""
            reason = error.message if error else "the value does not fit the model"
            raise Rejection(reason, field=change.path + suffix)

    def check_all(self, changes: list[Change]) -> None:
        for change in changes:
            self.check(change)

    def value_error(self, feature: str, value: Any) -> str | None:
        """The reason a value does not fit a property, or None if it does (for tools)."""
        try:
            self.check(Change(feature, value))
        except Rejection as rejection:
            return rejection.reason
        return None


def fast_check(schema: PropertySchema) -> Callable[[Any], bool] | None:
    """A quick test for the common scalar schemas that says True only for values jsonschema
    accepts too (a unit test holds it to that); anything else goes to jsonschema, which also
    words the reason. None when the schema has keywords this does not cover."""
    if schema.type in ("number", "integer") and schema.enum is None:
        low, high = schema.minimum, schema.maximum
        above, below = schema.exclusive_minimum, schema.exclusive_maximum
        integral = schema.type == "integer"

        def number(value: Any) -> bool:
            kind = value.__class__  # exactly int or float: bool is an int subclass
            if kind is float:
                if integral and not value.is_integer():
                    return False
            elif kind is not int:
                return False
            return (
                (low is None or value >= low)
                and (high is None or value <= high)
                and (above is None or value > above)
                and (below is None or value < below)
            )

        return number
    if schema.type == "boolean" and schema.enum is None:
        return lambda value: value.__class__ is bool
    if schema.type == "string" and schema.pattern is None:
        shortest, longest = schema.min_length, schema.max_length
        allowed = None
        if schema.enum is not None:
            if not all(isinstance(option, str) for option in schema.enum):
                return None
            allowed = frozenset(schema.enum)

        def string(value: Any) -> bool:
            return (
                value.__class__ is str
                and (allowed is None or value in allowed)
                and (shortest is None or len(value) >= shortest)
                and (longest is None or len(value) <= longest)
            )

        return string
    return None
