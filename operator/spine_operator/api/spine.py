"""The `Spine` kind: one per namespace, owning the namespace's shared workloads.

`spec: {}` is a complete, working default: every field has a default that a factory cluster can
run with, except `auth` (an OIDC issuer has no default): without it the proxy admits only
`public` routes and the twin API is not routed.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)

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
from spine_operator.desired.haproxy import ClaimPath, Role, TokenString
from spine_runtime.config.flow import MAX_BATCH_WINDOW_MS
from spine_runtime.config.flow import MAX_REPLICAS as MAX_FLOW_ENGINE_REPLICAS
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


class FlowEngineSpec(CamelModel):
    """The namespace's flow engine: created when its first Flow appears."""

    replicas: int = Field(
        default=1,
        ge=1,
        le=MAX_FLOW_ENGINE_REPLICAS,
        description="Engine replicas (a StatefulSet). Each runs every flow under its own "
        "broker login; they split each MQTT and twin source through a shared subscription, "
        "serve HTTP sources behind one Service, and fire schedules on replica 0 only. Windows "
        "aggregate what each replica receives.",
    )

    max_in_flight: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Default of each Flow's maxInFlight (messages taken from its source but not "
        "yet accepted by every sink), for Flows that do not set their own.",
    )

    batch_window_ms: int = Field(
        default=0,
        ge=0,
        le=MAX_BATCH_WINDOW_MS,
        description="Default of each Flow's batchWindowMs (how long a flow lets source messages "
        "gather after each read, trading up to that much latency for less CPU per message), for "
        "Flows that do not set their own.",
    )

    resources: ResourceRequirements = Field(
        default_factory=lambda: ResourceRequirements(
            requests=ResourceList(cpu="100m", memory="64Mi"),
            limits=ResourceList(cpu="2", memory="512Mi"),
        ),
        description="Compute resources of the flow engine container.",
    )


# What HAProxy's jwt_verify can check: PS* (RSASSA-PSS) is refused by HAProxy 2.6 at parse time.
SUPPORTED_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512")
ALGORITHM_PATTERN = r"^(RS|ES|PS)(256|384|512)$"
ISSUER_PATTERN = r"^https?://[!$-&(-\[\]-~]{1,500}$"
PATTERN_HINTS[ALGORITHM_PATTERN] = "must be one of RS256, RS384, RS512, ES256, ES384, ES512"
PATTERN_HINTS[ISSUER_PATTERN] = (
    "must be an http:// or https:// URL without spaces, quotes, '#' or backslashes"
)
Issuer = Annotated[str, StringConstraints(pattern=ISSUER_PATTERN)]
AlgorithmName = Annotated[str, StringConstraints(pattern=ALGORITHM_PATTERN)]
# A string or a list of strings: a structural schema cannot say "one of two types", so the API
# server keeps the value as written and the operator checks it (InvalidSpec naming the field).
AUDIENCE_SCHEMA = {
    "x-kubernetes-preserve-unknown-fields": True,
    "description": "The audience (`aud`) a token must carry: one string, or a list of up to 8 "
    "of which any one admits. Printable, without spaces, quotes, '#' or backslashes.",
}


class TwinAccess(CamelModel):
    """Who reaches the twin API through the proxy with their SSO token."""

    read_roles: list[Role] = Field(
        default_factory=lambda: ["spine:twin:read", "spine:twin:write"],
        min_length=1,
        max_length=32,
        description="Any one of these roles admits GET and HEAD on /twin/.",
    )
    write_roles: list[Role] = Field(
        default_factory=lambda: ["spine:twin:write"],
        min_length=1,
        max_length=32,
        description="Any one of these roles admits writes (PUT, PATCH, POST, DELETE) on /twin/; "
        "the proxy then sends the twin's internal write token, which never leaves the cluster.",
    )


class CatalogAccess(CamelModel):
    """Who may write external entries into the catalog (reads need any valid token)."""

    write_role: Role = Field(
        default="spine:catalog:write",
        description="The role a token needs for POST, PUT and DELETE on /catalog/.",
    )


class AuthSpec(CamelModel):
    """Single sign-on: the OIDC issuer whose tokens the proxy admits, and the roles it checks."""

    issuer: Issuer = Field(
        description="The issuer URL, compared literally with a token's `iss`, e.g. "
        "https://sso.example.com/realms/plant."
    )
    audience: Annotated[list[TokenString], WithJsonSchema(AUDIENCE_SCHEMA)] = Field(
        min_length=1, max_length=8
    )
    jwks_uri: Issuer | None = Field(
        default=None,
        description="Where the issuer's signing keys (JWKS) are served; if unset, found by "
        "OIDC discovery at <issuer>/.well-known/openid-configuration.",
    )
    roles_claim: ClaimPath = Field(
        default="realm_access.roles",
        description="Where a token carries its roles: a claim path such as Keycloak's "
        "realm_access.roles (a list), or scope (space-separated).",
    )
    algorithms: list[AlgorithmName] = Field(
        default_factory=lambda: ["RS256", "ES256"],
        min_length=1,
        max_length=6,
        description="Signature algorithms admitted; each key is pinned to one. PS256, PS384 "
        "and PS512 are refused: HAProxy cannot verify them.",
    )
    refresh_seconds: int = Field(
        default=300,
        ge=30,
        le=86_400,
        description="Seconds between fetches of the issuer's keys; a rotated key works after "
        "the next fetch, and an unreachable issuer keeps the last good keys.",
    )
    twin: TwinAccess = Field(default_factory=TwinAccess)
    catalog: CatalogAccess = Field(default_factory=CatalogAccess)

    @field_validator("audience", mode="before")
    @classmethod
    def audience_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("algorithms")
    @classmethod
    def algorithms_haproxy_verifies(cls, algorithms: list[str]) -> list[str]:
        refused = [name for name in algorithms if name not in SUPPORTED_ALGORITHMS]
        if refused:
            raise ValueError(
                f"{', '.join(refused)} cannot be verified by HAProxy (it has no RSASSA-PSS); "
                f"use {', '.join(SUPPORTED_ALGORITHMS)}"
            )
        return list(dict.fromkeys(algorithms))


class ProxyTls(CamelModel):
    """TLS on the proxy's listener."""

    secret_name: DnsSubdomain = Field(
        description="A Secret of type kubernetes.io/tls (keys tls.crt and tls.key) in the "
        "Spine's namespace, e.g. issued by cert-manager. Plain HTTP if unset."
    )


class ProxySpec(CamelModel):
    """The namespace's API security gateway (HAProxy) and its catalog: created once the
    namespace has a ServiceRegistration or `auth` is set."""

    replicas: int = Field(default=1, ge=1, le=10, description="Proxy pods.")
    resources: ResourceRequirements = Field(
        default_factory=lambda: ResourceRequirements(
            requests=ResourceList(cpu="50m", memory="64Mi"),
            limits=ResourceList(cpu="2", memory="256Mi"),
        ),
        description="Compute resources of the proxy container (HAProxy and its supervisor).",
    )
    tls: ProxyTls | None = Field(default=None, description="Serve the routes over TLS.")
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        default="ClusterIP", description="Type of the proxy's Service."
    )
    spec_url_allow_list: list[Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$")]] = (
        Field(
            default_factory=list,
            max_length=32,
            description="URL prefixes outside the namespace from which a ServiceRegistration's "
            "spec.url may be fetched (the namespace's own Services always may), e.g. "
            "https://specs.example.com/. Nothing else is fetched from inside the cluster.",
        )
    )


class SpineSpec(CamelModel):
    """Settings shared by the namespace's workloads. `{}` is a complete default."""

    broker: BrokerSpec = Field(default_factory=BrokerSpec)
    twin: TwinSpec = Field(default_factory=TwinSpec)
    flow_engine: FlowEngineSpec = Field(default_factory=FlowEngineSpec)
    auth: AuthSpec | None = Field(
        default=None,
        description="OIDC single sign-on for the proxy's routes and the twin API. Setting it "
        "creates the proxy and the catalog.",
    )
    proxy: ProxySpec = Field(default_factory=ProxySpec)

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


class ProxyStatus(CamelModel):
    url: str | None = Field(default=None, description="The proxy's address inside the cluster.")
    catalog_url: str | None = Field(default=None, description="The catalog through the proxy.")
    keys: int | None = Field(default=None, description="Verification keys from the issuer.")
    keys_fetched_at: str | None = None


class SpineStatus(CamelModel):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    broker: BrokerStatus | None = None
    twin: TwinStatus | None = None
    proxy: ProxyStatus | None = None
