"""The `ServiceRegistration` kind: a service's entry in the namespace's catalog, and its access.

An HTTP API gets a fail-closed route on the namespace's proxy (`expose`), an MQTT API a broker
login allowed exactly the channels it declares (`access`); each API's OpenAPI or AsyncAPI spec is
read and validated when applied. The shape follows the Data Spine's registry (LinkSmart Service
Catalog): id, type, meta, doc, apis[]. `desired/proxy.py` plans from it; its status comes from
the reconcile of the namespace's proxy and from the poller's reads of the proxy and catalog.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast

from pydantic import ConfigDict, Field, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

from spine_operator.api.common import PATTERN_HINTS, CamelModel, Condition, DnsLabel, DnsSubdomain
from spine_operator.desired.haproxy import Role, RoutePath
from spine_runtime.config.base import Port
from spine_runtime.config.catalog import ServiceType
from spine_runtime.config.flow import (
    HttpPath,
    RateLimitSpec,
    TopicFilter,
    Url,
    check_topic_filter,
)

MAX_SPEC_VALUE_CHARS = 1024 * 1024  # the validator's MAX_SPEC_BYTES
MEDIA_TYPE_PATTERN = r"^[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*(; ?[a-z0-9._-]+=[a-z0-9._-]+)*$"
CONFIG_MAP_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
PATTERN_HINTS.update(
    {
        MEDIA_TYPE_PATTERN: "must be a media type such as application/vnd.oai.openapi+json, "
        "application/yaml or application/json",
        CONFIG_MAP_KEY_PATTERN: "must be a ConfigMap key: letters, digits, '-', '_' and '.'",
    }
)
MediaType = Annotated[str, StringConstraints(pattern=MEDIA_TYPE_PATTERN, max_length=200)]
Text = Annotated[str, StringConstraints(max_length=4096)]
FREE_FORM: dict[str, Any] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def exactly_one(*names: str) -> dict[str, Any]:
    """A structural schema's "exactly one of these fields"."""
    return {"oneOf": [{"required": [name]} for name in names]}


class ServiceRef(CamelModel):
    """A Service in the registration's namespace."""

    name: DnsLabel = Field(description="The Service's name.")
    port: Port = Field(description="The Service port the API listens on.")


class ConfigMapKeyRef(CamelModel):
    name: DnsSubdomain = Field(description="A ConfigMap in the registration's namespace.")
    key: Annotated[str, StringConstraints(pattern=CONFIG_MAP_KEY_PATTERN, max_length=253)] = Field(
        description="The ConfigMap's key that holds the document."
    )


class ApiSpecSource(CamelModel):
    """The API's OpenAPI (HTTP) or AsyncAPI (MQTT) document: exactly one of configMapKeyRef,
    value and url. It is validated when applied; an invalid one sets SpecValid=False."""

    model_config = ConfigDict(json_schema_extra=exactly_one("configMapKeyRef", "value", "url"))

    media_type: MediaType = Field(
        description="The document's media type, e.g. application/vnd.oai.openapi+json;"
        "version=3.1, application/vnd.aai.asyncapi+yaml;version=3.0, application/yaml."
    )
    config_map_key_ref: ConfigMapKeyRef | None = Field(
        default=None, description="The document in a ConfigMap key of the namespace."
    )
    value: Annotated[str, StringConstraints(max_length=MAX_SPEC_VALUE_CHARS)] | None = Field(
        default=None, description="The document itself (JSON or YAML), at most 1 MiB."
    )
    url: Url | None = Field(
        default=None,
        description="Where to fetch the document: a Service of the namespace, or a prefix on "
        "the Spine's proxy.specUrlAllowList. Fetched with a timeout and a 1 MiB limit.",
    )

    @model_validator(mode="after")
    def one_source(self) -> ApiSpecSource:
        chosen = [
            name
            for name, value in (
                ("configMapKeyRef", self.config_map_key_ref),
                ("value", self.value),
                ("url", self.url),
            )
            if value is not None
        ]
        if len(chosen) != 1:
            raise PydanticCustomError(
                "one_of",
                "spec needs exactly one of configMapKeyRef, value and url (found: {found})",
                {"found": ", ".join(chosen) or "none"},
            )
        return self


class Expose(CamelModel):
    """An HTTP API's route on the namespace's proxy: no valid token, no access (unless public)."""

    path: RoutePath = Field(
        description="The route's path prefix on the proxy, e.g. /services/maintenance/v1; the "
        "backend sees the rest of the path. The first registration to claim a path keeps it."
    )
    roles: list[Role] = Field(
        default_factory=list,
        max_length=32,
        description="A token needs any one of these roles; empty admits any valid token.",
    )
    rate_limit: RateLimitSpec | None = Field(
        default=None,
        description="At most `requests` per `perSeconds` per token subject (per client address "
        "on a public route).",
    )
    public: bool = Field(
        default=False, description="Admit requests without a token (a public API or a spec)."
    )


class Access(CamelModel):
    """An MQTT API's broker login: allowed exactly these topic filters, nothing else."""

    publish: list[TopicFilter] = Field(
        default_factory=list, max_length=64, description="Topic filters the login may publish to."
    )
    subscribe: list[TopicFilter] = Field(
        default_factory=list, max_length=64, description="Topic filters it may subscribe to."
    )

    @model_validator(mode="after")
    def filters_are_mqtt(self) -> Access:
        for topic in (*self.publish, *self.subscribe):
            check_topic_filter(topic)
        if not self.publish and not self.subscribe:
            raise PydanticCustomError(
                "empty_access", "access needs at least one publish or subscribe topic filter"
            )
        return self


class Probe(CamelModel):
    """A health check the catalog makes against the registration's first serviceRef."""

    path: HttpPath = Field(description="Path probed with GET, e.g. /healthz.")
    interval_seconds: int = Field(default=30, ge=5, le=3600, description="Seconds between probes.")


class RegistrationApi(CamelModel):
    """One API of the service: HTTP (a proxy route) or MQTT (a broker login)."""

    id: DnsLabel = Field(
        description="Unique in the registration; part of the route's and the login's names."
    )
    title: Text | None = Field(default=None, description="The API's title in the catalog.")
    description: Text | None = Field(default=None, description="What the API offers.")
    protocol: Literal["HTTP", "MQTT"] = Field(
        description="HTTP: a route on the proxy (expose); MQTT: a broker login (access)."
    )
    service_ref: ServiceRef | None = Field(
        default=None, description="HTTP: the Service in this namespace that serves the API."
    )
    url: Url | None = Field(
        default=None, description="HTTP: the API's base URL, when it is not a Service here."
    )
    spec: ApiSpecSource
    expose: Expose | None = Field(
        default=None, description="HTTP: the route on the proxy; none: a catalog entry only."
    )
    access: Access | None = Field(
        default=None, description="MQTT: the channels the API's clients use on the broker."
    )
    meta: dict[str, Any] = Field(
        default_factory=dict,
        description="Free-form metadata of the API in the catalog.",
        json_schema_extra=cast(Any, FREE_FORM),
    )

    @model_validator(mode="after")
    def fits_its_protocol(self) -> RegistrationApi:
        if self.protocol == "HTTP":
            if (self.service_ref is None) == (self.url is None):
                raise PydanticCustomError(
                    "http_target", "an HTTP API needs exactly one of serviceRef and url"
                )
            if self.access is not None:
                raise PydanticCustomError(
                    "http_access", "access is for MQTT APIs; an HTTP API uses expose"
                )
        else:
            if self.service_ref is not None or self.url is not None or self.expose is not None:
                raise PydanticCustomError(
                    "mqtt_target",
                    "an MQTT API is served by the namespace's broker: it takes access, not "
                    "serviceRef, url or expose",
                )
            if self.access is None:
                raise PydanticCustomError("mqtt_access", "an MQTT API needs access")
        return self


class ServiceRegistrationSpec(CamelModel):
    """A service's catalog entry, its OpenAPI/AsyncAPI specs, proxy routes and broker logins."""

    type: ServiceType = Field(description="The service type, e.g. maintenance-planner.")
    title: Text | None = Field(default=None, description="The service's title in the catalog.")
    description: Text | None = Field(default=None, description="What the service does.")
    meta: dict[str, Any] = Field(
        default_factory=dict,
        description="Free-form metadata.",
        json_schema_extra=cast(Any, FREE_FORM),
    )
    doc: Url | None = Field(default=None, description="Where the service is documented.")
    apis: list[RegistrationApi] = Field(
        min_length=1, max_length=32, description="The service's APIs, HTTP or MQTT (1 to 32)."
    )
    probe: Probe | None = Field(
        default=None, description="How the catalog checks that the service answers."
    )

    @model_validator(mode="after")
    def api_ids_unique(self) -> ServiceRegistrationSpec:
        ids = [api.id for api in self.apis]
        repeated = sorted({api_id for api_id in ids if ids.count(api_id) > 1})
        if repeated:
            raise PydanticCustomError(
                "unique_ids", "apis: id {ids} is used more than once", {"ids": ", ".join(repeated)}
            )
        if self.probe is not None and not any(api.service_ref for api in self.apis):
            raise PydanticCustomError(
                "probe_target", "probe needs an HTTP API with a serviceRef to probe"
            )
        return self


class ApiStatus(CamelModel):
    id: str
    protocol: str | None = None
    route_url: str | None = Field(default=None, description="The API's URL on the proxy.")
    login_secret_name: str | None = Field(
        default=None, description="MQTT: the Secret with the API's broker login."
    )
    spec_hash: str | None = Field(default=None, description="sha256 of the spec document.")
    spec_valid: bool | None = None


class ServiceRegistrationStatus(CamelModel):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    route_count: int | None = Field(default=None, description="Routes on the proxy.")
    routes: list[str] | None = Field(default=None, description="The route URLs on the proxy.")
    login_secret_names: list[str] | None = Field(
        default=None, description="Secrets with the MQTT APIs' broker logins."
    )
    apis: list[ApiStatus] | None = None
