"""The `TwinModel` kind: a machine model in the W3C WoT Thing Model vocabulary, and its things.

The vocabulary (properties with JSON Schema types, units, ranges, readOnly; actions; events) is
the twin service's own (`spine_runtime.config.twin`), so what the API server accepts, what the
operator checks and what the twin validates against are one definition. The resource name is
the model name; each thing listed here is an instance of it.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from spine_operator.api.common import CamelModel, Condition
from spine_runtime.config.twin import (
    ActionSchema,
    EventSchema,
    PropertySchema,
    Text,
    ThingInstance,
    ThingModel,
    ThingName,
    Version,
)


class TwinThing(CamelModel):
    """One machine of this model."""

    name: ThingName = Field(description="Thing name; its id is `<twin namespace>:<name>`.")
    title: Text | None = None
    attributes: dict = Field(
        default_factory=dict,
        description="Static attributes, e.g. line and serial.",
        json_schema_extra=lambda schema: schema.update(
            {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        ),
    )


class TwinModelSpec(CamelModel):
    """A machine model (W3C WoT Thing Model vocabulary) and the things that follow it."""

    title: Text | None = Field(default=None, description="Human-readable name of the model.")
    version: Version = Field(default="1.0.0", description="Model version, e.g. 1.2.0.")
    description: Text | None = None
    properties: dict[str, PropertySchema] = Field(
        default_factory=dict,
        description="Properties by name; each is a feature of every thing, with a reported "
        "value and (unless readOnly) a desired one.",
    )
    actions: dict[str, ActionSchema] = Field(default_factory=dict, description="Actions by name.")
    events: dict[str, EventSchema] = Field(default_factory=dict, description="Events by name.")
    things: list[TwinThing] = Field(
        default_factory=list, description="The machines of this model in the namespace."
    )

    @field_validator("things")
    @classmethod
    def thing_names_are_unique(cls, things: list[TwinThing]) -> list[TwinThing]:
        seen: set[str] = set()
        for thing in things:
            if thing.name in seen:
                raise ValueError(f"thing {thing.name!r} is listed twice")
            seen.add(thing.name)
        return things

    def thing_model(self, name: str) -> ThingModel:
        """The twin's model of this resource (named after it), validated as the twin will."""
        return ThingModel.model_validate(
            {
                "name": name,
                "title": self.title,
                "version": self.version,
                "description": self.description,
                "properties": {key: value.to_wire() for key, value in self.properties.items()},
                "actions": {key: value.to_wire() for key, value in self.actions.items()},
                "events": {key: value.to_wire() for key, value in self.events.items()},
            }
        )

    def thing_instances(self, name: str) -> list[ThingInstance]:
        return [
            ThingInstance(
                name=thing.name, model=name, title=thing.title, attributes=thing.attributes
            )
            for thing in self.things
        ]


class TwinModelStatus(CamelModel):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    things: int | None = Field(default=None, description="How many things follow this model.")
    version: str | None = None
    api: str | None = Field(default=None, description="Where the twin's HTTP API answers.")
