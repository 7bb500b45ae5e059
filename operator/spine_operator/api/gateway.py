"""The `Gateway` kind: one edge gateway pod that reads PLC tags into twin properties.

Connections, tags, publish and buffer limits are the gateway runtime's own config types
(`spine_runtime.config.gateway`), so what the API server accepts, what the operator checks and
what the gateway validates are one definition. What Kubernetes adds: OPC UA logins and
certificates come from Secrets instead of file paths, a tag's thing defaults to `spec.thing`,
the buffer names its volume, and placement settings put the pod on the PLC network.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from spine_operator.api.common import (
    CamelModel,
    Condition,
    DnsSubdomain,
    ImageRef,
    Quantity,
    ResourceList,
    ResourceRequirements,
    parse_quantity,
)
from spine_runtime.config.gateway import (
    BufferSettings,
    Connection,
    GatewayConfig,
    OpcUaSettings,
    PublishSettings,
    SecurityPolicy,
    SubscriptionDefaults,
    Tag,
    ThingName,
    check_tag_list,
)

SecurityMode = Literal["None", "Sign", "SignAndEncrypt"]
# Label keys and values as Kubernetes allows them: [prefix/]name, a name of up to 63 characters.
LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY.pattern, max_length=316)]
LabelValue = Annotated[
    str, StringConstraints(pattern=r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
]

# Keys the operator reads from each referenced Secret, and where the spec names the Secret.
CREDENTIALS_KEYS = ("username", "password")
CERTIFICATE_KEYS = ("tls.crt", "tls.key")
SERVER_CERTIFICATE_KEY = "ca.crt"


def runtime_field(model: type[BaseModel], name: str) -> Any:
    """A field of a runtime config model (constraints, default, description), to declare the
    same field in a spec model without a second definition."""
    return model.model_fields[name]


class OpcUaConnection(CamelModel):
    """An OPC UA server; the login and certificates come from Secrets in the namespace."""

    endpoint: str = runtime_field(OpcUaSettings, "endpoint")
    security_policy: SecurityPolicy = runtime_field(OpcUaSettings, "security_policy")
    security_mode: SecurityMode = runtime_field(OpcUaSettings, "security_mode")
    timeout: float = runtime_field(OpcUaSettings, "timeout")
    subscription: SubscriptionDefaults = runtime_field(OpcUaSettings, "subscription")
    credentials_secret_name: DnsSubdomain | None = Field(
        default=None,
        description="A Secret with keys username and password: the OPC UA user login. "
        "Anonymous if unset.",
    )
    certificate_secret_name: DnsSubdomain | None = Field(
        default=None,
        description="A kubernetes.io/tls Secret (keys tls.crt, tls.key): the gateway's client "
        "certificate, needed with a securityPolicy other than None.",
    )
    server_certificate_secret_name: DnsSubdomain | None = Field(
        default=None,
        description="A Secret whose key ca.crt holds the server's own certificate to trust "
        "(PEM or DER), e.g. `kubectl create secret generic plc-1-server "
        "--from-file=ca.crt=server.der`.",
    )

    @model_validator(mode="after")
    def _security_is_complete(self) -> OpcUaConnection:
        if (self.security_policy == "None") != (self.security_mode == "None"):
            raise PydanticCustomError(
                "opcua_security",
                "securityPolicy and securityMode must both be None or both be set "
                "(e.g. Basic256Sha256 with SignAndEncrypt)",
            )
        if self.security_policy != "None" and self.certificate_secret_name is None:
            raise PydanticCustomError(
                "opcua_security",
                "securityPolicy {policy} needs certificateSecretName (a kubernetes.io/tls "
                "Secret with the gateway's client certificate)",
                {"policy": self.security_policy},
            )
        return self

    def secret_names(self) -> list[str]:
        names = (
            self.credentials_secret_name,
            self.certificate_secret_name,
            self.server_certificate_secret_name,
        )
        return [name for name in names if name is not None]


class GatewayConnection(Connection):
    """One PLC connection: exactly one of modbusTcp, opcua and s7."""

    # The API server enforces the union too (a structural schema allows oneOf of required).
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [{"required": ["modbusTcp"]}, {"required": ["opcua"]}, {"required": ["s7"]}]
        }
    )

    # The runtime reads OPC UA secrets from files; a Gateway names Secrets instead.
    opcua: OpcUaConnection | None = None  # type: ignore[assignment]


class GatewayTag(Tag):
    """One PLC value, mapped onto a property of a thing (spec.thing unless it names one)."""

    thing: ThingName | None = Field(  # type: ignore[assignment]
        default=None,
        description="Thing name (without the twin namespace); spec.thing if unset.",
    )


class BufferStorage(CamelModel):
    """The volume of the store-and-forward buffer."""

    type: Literal["pvc", "emptyDir"] = Field(
        default="pvc",
        description="pvc keeps buffered updates across pod restarts and rescheduling (a "
        "PVC from the StatefulSet's claim template); emptyDir loses them with the pod.",
    )
    size: Quantity = Field(
        default="1Gi",
        description="PVC size, or the emptyDir's size limit. A larger PVC size expands the PVC "
        "where the storage class allows it; a smaller one is refused.",
    )
    storage_class_name: DnsSubdomain | None = Field(
        default=None, description="Storage class of the PVC; the cluster default if unset."
    )
    retain_on_delete: bool = Field(
        default=True,
        description="Keep the PVC (and updates not yet delivered) when the Gateway is deleted.",
    )

    @field_validator("size")
    @classmethod
    def _size_is_positive(cls, size: str) -> str:
        if parse_quantity(size) < 1024 * 1024:
            raise ValueError("must be at least 1Mi")
        return size


class GatewayBuffer(CamelModel):
    """The durable store-and-forward queue: updates wait here until the twin stored them."""

    max_messages: int = runtime_field(BufferSettings, "max_messages")
    max_bytes: int = runtime_field(BufferSettings, "max_bytes")
    fsync: bool = runtime_field(BufferSettings, "fsync")
    storage: BufferStorage = Field(default_factory=BufferStorage)

    @model_validator(mode="after")
    def _fits_its_volume(self) -> GatewayBuffer:
        if self.max_bytes > parse_quantity(self.storage.size):
            raise PydanticCustomError(
                "buffer_size",
                "maxBytes ({max_bytes}) is larger than storage.size ({size}): the volume would "
                "fill up before the buffer's own bound; lower maxBytes or grow the volume "
                "(leave some room for the queue's journal)",
                {"max_bytes": self.max_bytes, "size": self.storage.size},
            )
        return self


class Toleration(CamelModel):
    """A toleration of the gateway pod, as in a Pod spec."""

    key: LabelKey | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: LabelValue | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, ge=0)


class GatewaySpec(CamelModel):
    """An edge gateway: PLC connections, tags mapped onto twin properties, buffering, placement."""

    # The operator checks every tag against the TwinModel of its thing (the property exists, its
    # type fits, a writable tag's property is not readOnly) before it applies the gateway.

    thing: ThingName | None = Field(
        default=None, description="The thing of every tag that names none, e.g. press-1."
    )
    connections: list[GatewayConnection] = Field(
        min_length=1, max_length=64, description="PLC connections the tags refer to by name."
    )
    tags: list[GatewayTag] = Field(
        default_factory=list,
        max_length=4000,
        description="PLC values, each mapped onto a property of a twin thing.",
    )
    publish: PublishSettings = Field(
        default_factory=PublishSettings, description="How updates go out to the broker."
    )
    buffer: GatewayBuffer = Field(default_factory=GatewayBuffer)
    node_selector: dict[str, LabelValue] = Field(
        default_factory=dict,
        description="Run the gateway on nodes with these labels (e.g. the ones on the PLC "
        "network).",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Tolerations of the gateway pod."
    )
    host_network: bool = Field(
        default=False,
        description="Use the node's network, for PLCs only reachable from the node's own "
        "interfaces. The gateway's HTTP port is then open on the node too.",
    )
    resources: ResourceRequirements = Field(
        default_factory=lambda: ResourceRequirements(
            requests=ResourceList(cpu="50m", memory="96Mi"),
            limits=ResourceList(cpu="1", memory="512Mi"),
        ),
        description="Compute resources of the gateway container.",
    )
    image: ImageRef | None = Field(
        default=None, description="Override the gateway image (the operator's runtime image)."
    )

    @field_validator("connections")
    @classmethod
    def _unique_connection_names(
        cls, connections: list[GatewayConnection]
    ) -> list[GatewayConnection]:
        GatewayConfig._unique_connection_names(list(connections))
        return connections

    @field_validator("node_selector")
    @classmethod
    def _label_keys(cls, selector: dict[str, str]) -> dict[str, str]:
        for key in selector:
            if len(key) > 316 or not LABEL_KEY.match(key):
                raise ValueError(f"{key[:80]!r} is not a label key such as kubernetes.io/hostname")
        return selector

    @field_validator("tags")
    @classmethod
    def _tags_fit_their_connections(
        cls, tags: list[GatewayTag], info: ValidationInfo
    ) -> list[GatewayTag]:
        """The runtime's own checks (GatewayConfig), with spec.thing as the default thing."""
        connections = info.data.get("connections")
        if connections is None:  # invalid themselves; that error is reported
            return tags
        check_tag_list(
            tags,
            {connection.name: connection for connection in connections},
            default_thing=info.data.get("thing"),
            thing_is_known="thing" in info.data,
        )
        return tags

    def runtime_tags(self) -> list[Tag]:
        """The tags as the gateway runtime reads them, each with its thing filled in."""
        return [
            Tag.model_validate({**tag.to_wire(), "thing": tag.thing or self.thing})
            for tag in self.tags
        ]

    def secret_names(self) -> list[str]:
        """Every Secret the spec refers to (OPC UA logins and certificates), sorted."""
        return sorted(
            {name for c in self.connections if c.opcua for name in c.opcua.secret_names()}
        )


class ConnectionStatus(CamelModel):
    name: str
    protocol: str | None = None
    state: str | None = Field(
        default=None, description="connected, disconnected, error or stalled."
    )
    last_success: str | None = None
    last_error: str | None = None


class TagCounts(CamelModel):
    total: int = 0
    ok: int = Field(default=0, description="Tags whose last read succeeded.")
    waiting: int = Field(default=0, description="Tags not read yet.")
    failing: int = Field(default=0, description="Tags whose last read failed.")


class GatewayStatus(CamelModel):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    connections: list[ConnectionStatus] | None = Field(
        default=None, description="Each PLC connection as the gateway reported it last."
    )
    tags: TagCounts | None = None
    buffered: int | None = Field(
        default=None, description="Updates on disk that the twin has not confirmed yet."
    )
    oldest_buffered_seconds: float | None = Field(
        default=None, description="Age of the oldest unconfirmed update."
    )
    publish_rate: float | None = Field(default=None, description="Updates published per second.")
