"""The `Flow` kind: an integration flow on the namespace's flow engine.

The spec is the flow engine's own type (`spine_runtime.config.flow.FlowSpec`), so what the API
server accepts, what the operator checks (every JSONata expression compiled, naming the step
and the position) and what the engine runs are one definition. The status comes from the
engine's /status through the operator's poller.
"""

from __future__ import annotations

from pydantic import Field

from spine_operator.api.common import CamelModel, Condition
from spine_runtime.config.flow import FlowSpec

__all__ = ["FlowSpec", "FlowStatus", "FlowStepStatus"]


class FlowStepStatus(CamelModel):
    name: str
    kind: str | None = None
    messages_in: int | None = Field(default=None, description="Messages the step received.")
    messages_out: int | None = Field(default=None, description="Messages it passed on.")
    filtered: int | None = None
    errors: int | None = None


class FlowStatus(CamelModel):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    running: bool | None = Field(default=None, description="Whether the engine runs the flow.")
    messages_in: int | None = Field(default=None, description="Messages taken from the source.")
    messages_per_second: float | None = Field(default=None, description="Recent input rate.")
    errors: int | None = Field(default=None, description="Step and sink errors so far.")
    dead_letters: int | None = None
    in_flight: int | None = Field(
        default=None, description="Messages taken but not yet accepted by every sink."
    )
    last_message_time: str | None = None
    last_error: str | None = None
    steps: list[FlowStepStatus] | None = None
    login_secret_name: str | None = Field(
        default=None, description="The Secret with the flow's own broker login."
    )
    route_url: str | None = Field(
        default=None,
        description="Where the namespace's proxy exposes the flow's http source "
        "(source.http.expose).",
    )
