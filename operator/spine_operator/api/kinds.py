"""Every kind of the `spine.iiot.dev` API, with the names kubectl shows and the models behind it.

The CRD generator, the handlers and `spine render` read this table. Every kind is in the
category `iiot` (`kubectl get iiot`); not `spine`, which kubectl would expand before it looks up
the kind whose singular is `spine`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from spine_operator.api.flow import FlowSpec, FlowStatus
from spine_operator.api.gateway import GatewaySpec, GatewayStatus
from spine_operator.api.serviceregistration import (
    ServiceRegistrationSpec,
    ServiceRegistrationStatus,
)
from spine_operator.api.spine import SpineSpec, SpineStatus
from spine_operator.api.twinmodel import TwinModelSpec, TwinModelStatus

GROUP = "spine.iiot.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "iiot"

READY_COLUMN = {
    "name": "Ready",
    "type": "string",
    "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    "description": "Whether the resource is reconciled and its workloads are ready.",
}
REASON_COLUMN = {
    "name": "Reason",
    "type": "string",
    "priority": 1,
    "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
    "description": "Why the resource is (not) ready.",
}
AGE_COLUMN = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


@dataclass(frozen=True)
class KindInfo:
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    description: str
    extra_columns: tuple[dict, ...] = field(default=())

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def printer_columns(self) -> list[dict]:
        return [READY_COLUMN, *self.extra_columns, REASON_COLUMN, AGE_COLUMN]


SPINE = KindInfo(
    kind="Spine",
    plural="spines",
    singular="spine",
    short_names=("spn",),
    spec_model=SpineSpec,
    status_model=SpineStatus,
    description="A namespace's Industrial-IoT spine: its MQTT broker and shared settings. "
    "One per namespace, usually named default; spec: {} is a complete default.",
    extra_columns=(
        {
            "name": "Broker",
            "type": "string",
            "jsonPath": ".status.broker.endpoint",
            "description": "The broker's address inside the cluster.",
        },
    ),
)

TWINMODEL = KindInfo(
    kind="TwinModel",
    plural="twinmodels",
    singular="twinmodel",
    short_names=("twm",),
    spec_model=TwinModelSpec,
    status_model=TwinModelStatus,
    description="A machine model in the W3C WoT Thing Model vocabulary and the things (machines) "
    "that follow it; the namespace's twin service holds each thing's reported and desired state.",
    extra_columns=(
        {
            "name": "Things",
            "type": "integer",
            "jsonPath": ".status.things",
            "description": "How many things follow this model.",
        },
        {
            "name": "Version",
            "type": "string",
            "jsonPath": ".spec.version",
            "description": "Model version.",
        },
    ),
)

GATEWAY = KindInfo(
    kind="Gateway",
    plural="gateways",
    singular="gateway",
    # `gw` and `gateway` would collide with the Gateway API's kind of the same name.
    short_names=("iiotgw",),
    spec_model=GatewaySpec,
    status_model=GatewayStatus,
    description="An edge gateway pod: reads PLC tags over Modbus TCP, OPC UA or S7, maps them "
    "onto properties of TwinModel things, and buffers updates on disk until the twin stored them.",
    extra_columns=(
        {
            "name": "Connected",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Connected")].status',
            "description": "Whether every PLC connection and the broker session are up.",
        },
        {
            "name": "Tags OK",
            "type": "integer",
            "jsonPath": ".status.tags.ok",
            "description": "Tags whose last read succeeded.",
        },
        {
            "name": "Buffered",
            "type": "integer",
            "jsonPath": ".status.buffered",
            "description": "Updates on disk that the twin has not confirmed yet.",
        },
    ),
)

FLOW = KindInfo(
    kind="Flow",
    plural="flows",
    singular="flow",
    short_names=("iiotflow",),
    spec_model=FlowSpec,
    status_model=FlowStatus,
    description="An integration flow: a source (MQTT topic, twin changes, HTTP endpoint, "
    "schedule), steps (validate, filter, transform, convert, window, call) and sinks (MQTT, "
    "HTTP, twin), run by the namespace's flow engine with its own broker login.",
    extra_columns=(
        {
            "name": "Running",
            "type": "boolean",
            "jsonPath": ".status.running",
            "description": "Whether the flow engine runs the flow.",
        },
        {
            "name": "In/s",
            "type": "number",
            "jsonPath": ".status.messagesPerSecond",
            "description": "Messages per second taken from the source, recently.",
        },
        {
            "name": "Errors",
            "type": "integer",
            "jsonPath": ".status.errors",
            "description": "Step and sink errors so far.",
        },
    ),
)

SERVICE_REGISTRATION = KindInfo(
    kind="ServiceRegistration",
    plural="serviceregistrations",
    singular="serviceregistration",
    short_names=("iiotsvc",),
    spec_model=ServiceRegistrationSpec,
    status_model=ServiceRegistrationStatus,
    description="A service in the namespace's catalog with its OpenAPI or AsyncAPI specs: each "
    "HTTP API gets a route on the namespace's proxy that admits only valid OIDC tokens with the "
    "roles it names, each MQTT API a broker login allowed exactly its channels.",
    extra_columns=(
        {
            "name": "Routes",
            "type": "integer",
            "jsonPath": ".status.routeCount",
            "description": "Routes on the namespace's proxy.",
        },
        {
            "name": "Spec",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="SpecValid")].status',
            "description": "Whether every API's spec is valid.",
        },
        {
            "name": "Reachable",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Reachable")].status',
            "description": "Whether the service answers the catalog's probe and the proxy.",
        },
    ),
)

KINDS: tuple[KindInfo, ...] = (SPINE, TWINMODEL, GATEWAY, FLOW, SERVICE_REGISTRATION)


def kind_by_name(kind: str) -> KindInfo | None:
    return next((info for info in KINDS if info.kind == kind), None)
