"""The `Spine` kind: one per namespace, owning the namespace's shared workloads.

`spec: {}` is a complete, working default: every field has a default that a factory cluster can
run with. This issue's scope is the broker; the twin service, proxy and flow engine add their
sections here as they arrive.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints, field_validator

from spine_operator.api.common import (
    PATTERN_HINTS,
    CamelModel,
    Condition,
    DnsSubdomain,
    ImageRef,
    Quantity,
    ResourceList,
    ResourceRequirements,
    parse_quantity,
)
from spine_runtime.config.twin import TwinNamespace

# mosquitto's duration syntax for persistent_client_expiration: a number and h, d, w, m or y.
DURATION_PATTERN = r"^[1-9][0-9]{0,5}[hdwmy]$"
Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN)]
PATTERN_HINTS[DURATION_PATTERN] = "must be a number and a unit h, d, w, m or y, such as 12h or 7d"


class Persistence(CamelModel):
    """A workload's PVC: where the broker keeps retained messages, sessions and logins, and the
    twin service its state."""

    size: Quantity = Field(
        default="1Gi",
        description="Size of the broker's PVC. A larger value expands the PVC where the "
        "storage class allows it; a smaller one is refused.",
    )
    storage_class_name: DnsSubdomain | None = Field(
        default=None, description="Storage class of the PVC; the cluster default if unset."
    )
    retain_on_delete: bool = Field(
        default=True,
        description="Keep the PVC when the Spine is deleted (the default), so buffered data "
        "and logins survive a re-install. Set false to delete it with the Spine.",
    )

    @field_validator("size")
    @classmethod
    def size_is_positive(cls, size: str) -> str:
        if parse_quantity(size) < 1024 * 1024:
            raise ValueError("must be at least 1Mi")
        return size


class BrokerTls(CamelModel):
    """TLS for the broker's second listener on port 8883."""

    secret_name: DnsSubdomain = Field(
        description="A Secret of type kubernetes.io/tls (keys tls.crt and tls.key) in the "
        "Spine's namespace, e.g. issued by cert-manager. Clients still log in with a password."
    )


class BrokerLimits(CamelModel):
    """Queue and packet limits. mosquitto's default of 1000 queued messages per client drops
    QoS 1 messages under a burst to a slow consumer; these defaults do not."""

    max_queued_messages: int = Field(
        default=100_000,
        ge=0,
        le=10_000_000,
        description="QoS 1/2 messages queued per client while it is offline or slow (0: no limit).",
    )
    max_queued_bytes: int = Field(
        default=0,
        ge=0,
        le=2**40,
        description="Bytes queued per client (0: no limit, bounded by maxQueuedMessages).",
    )
    max_inflight_messages: int = Field(
        default=100,
        ge=1,
        le=65535,
        description="QoS 1/2 messages in flight per client at once.",
    )
    max_packet_size: int = Field(
        default=1_048_576,
        ge=1024,
        le=268_435_455,
        description="Largest MQTT packet the broker accepts, in bytes.",
    )
    persistent_client_expiration: Duration = Field(
        default="7d",
        description="How long the broker keeps an offline persistent session, e.g. 12h, 7d, 2w.",
    )


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError:
        raise ValueError(
            f"{value!r} is not an address block: write it as CIDR with the host bits zero, "
            "e.g. 10.20.0.0/24 or 192.168.1.10/32"
        ) from None


Cidr = Annotated[str, StringConstraints(max_length=43), AfterValidator(_cidr)]


class BrokerSpec(CamelModel):
    """The namespace's Eclipse Mosquitto broker."""

    image: ImageRef | None = Field(
        default=None, description="Override the broker image (an eclipse-mosquitto 2.0.x tag)."
    )
    admin_secret_name: DnsSubdomain | None = Field(
        default=None,
        description="Bring your own admin credentials: a Secret with keys username and password. "
        "If unset the operator generates spine-broker-admin once and never changes it.",
    )
    autosave_interval: int = Field(
        default=60,
        ge=1,
        le=86_400,
        description="Seconds between snapshots of retained messages and queued sessions to the "
        "PVC. A SIGKILL loses what changed since the last snapshot.",
    )
    persistence: Persistence = Field(default_factory=Persistence)
    tls: BrokerTls | None = Field(default=None, description="Enable the TLS listener on 8883.")
    external_clients: list[Cidr] = Field(
        default_factory=list,
        max_length=32,
        description="Address blocks (CIDR) outside the namespace that may reach the broker, "
        "e.g. the node network of hostNetwork gateways or a SCADA system on site. The "
        "namespace's own pods and the operator always may; nothing else may (NetworkPolicy).",
    )
    limits: BrokerLimits = Field(default_factory=BrokerLimits)
    resources: ResourceRequirements = Field(
        default_factory=lambda: ResourceRequirements(
            requests=ResourceList(cpu="50m", memory="64Mi"),
            limits=ResourceList(cpu="1", memory="512Mi"),
        ),
        description="Compute resources of the broker container.",
    )


class TwinSpec(CamelModel):
    """The namespace's digital-twin service (every TwinModel's things)."""

    namespace: TwinNamespace | None = Field(
        default=None,
        description="Twin namespace: thing ids are `<namespace>:<thing>`. Default: the "
        "Kubernetes namespace with '-' turned into '_' (plant-a becomes plant_a).",
    )
    desired_timeout_seconds: float = Field(
        default=30,
        gt=0,
        le=86_400,
        description="How long a desired value stays pending before it is marked failed.",
    )
    persistence: Persistence = Field(default_factory=Persistence)
    resources: ResourceRequirements = Field(
        default_factory=lambda: ResourceRequirements(
            requests=ResourceList(cpu="100m", memory="96Mi"),
            limits=ResourceList(cpu="1", memory="512Mi"),
        ),
        description="Compute resources of the twin container.",
    )


class SpineSpec(CamelModel):
    """Settings shared by the namespace's workloads. `{}` is a complete default."""

    broker: BrokerSpec = Field(default_factory=BrokerSpec)
    twin: TwinSpec = Field(default_factory=TwinSpec)

    def twin_namespace(self, kubernetes_namespace: str) -> str:
        """DESIGN.md, Thing ids: Ditto needs each namespace part to start with a letter."""
        return self.twin.namespace or kubernetes_namespace.replace("-", "_")


class BrokerStatus(CamelModel):
    endpoint: str | None = Field(
        default=None, description="host:port of the broker inside the cluster."
    )
    tls_endpoint: str | None = None
    admin_secret_name: str | None = Field(default=None, description="Secret with the admin login.")


class TwinStatus(CamelModel):
    api: str | None = Field(default=None, description="The twin's HTTP API inside the cluster.")
    namespace: str | None = Field(default=None, description="The twin namespace of thing ids.")
    write_token_secret_name: str | None = None
    things: int | None = None


class SpineStatus(CamelModel):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    broker: BrokerStatus | None = None
    twin: TwinStatus | None = None
