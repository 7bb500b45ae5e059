"""The catalog's config: the entries the namespace's ServiceRegistrations own, and its settings.

The catalog (spine_runtime.catalog) serves a LinkSmart Service Catalog compatible API through the
proxy. Entries in this document belong to ServiceRegistrations (and the twin API): the API reads
them but never replaces or deletes them. Services outside the cluster register through the API's
writes, with a ttl. The operator renders and pushes this document like every runtime's config.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StringConstraints

from spine_runtime.config.base import CamelModel, HttpSettings, MqttSettings, SafeLine

# A service id: also an MQTT topic level (sc/v3/announcement/<type>/<id>/alive) and a URL path
# segment, so no '/', '+', '#', whitespace or control character.
SERVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$"
SERVICE_TYPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"
ServiceId = Annotated[str, StringConstraints(pattern=SERVICE_ID_PATTERN)]
ServiceType = Annotated[str, StringConstraints(pattern=SERVICE_TYPE_PATTERN)]
Text = Annotated[str, StringConstraints(max_length=4096)]


class ApiSpec(CamelModel):
    media_type: SafeLine
    url: SafeLine | None = Field(default=None, description="Where the spec document is served.")
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")


class ServiceApi(CamelModel):
    """One API of a service, in LinkSmart's shape."""

    id: ServiceId
    title: Text = ""
    description: Text = ""
    protocol: SafeLine = Field(description="HTTP or MQTT, as in the registration.")
    url: SafeLine = Field(description="How a client reaches it: the proxy route or the broker.")
    spec: ApiSpec | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


class Probe(CamelModel):
    """A health check the catalog makes; its result is the entry's `Reachable` in /status."""

    url: SafeLine = Field(description="http:// URL inside the namespace.")
    interval_seconds: int = Field(default=30, ge=5, le=3600)
    timeout_seconds: float = Field(default=3.0, gt=0, le=30)


class ServiceEntry(CamelModel):
    """An entry a ServiceRegistration (or the Spine, for the twin API) owns."""

    id: ServiceId
    type: ServiceType
    title: Text = ""
    description: Text = ""
    meta: dict[str, Any] = Field(default_factory=dict)
    apis: list[ServiceApi] = Field(default_factory=list, max_length=32)
    doc: SafeLine = ""
    owner: SafeLine = Field(description="`ServiceRegistration/<name>`: /status reports by it.")
    probe: Probe | None = None


class CatalogConfig(CamelModel):
    http: HttpSettings = Field(default_factory=HttpSettings)
    catalog_id: SafeLine = Field(description="The `id` of `GET /`.")
    description: Text = "Spine service catalog"
    mqtt: MqttSettings | None = Field(
        default=None, description="Where announcements go; none are sent if unset."
    )
    announce_prefix: SafeLine = "sc/v3/announcement"
    # Writes (POST, PUT, DELETE) need this role in the X-Spine-Roles header the proxy sets
    # from a verified token (the proxy strips the header from every client request).
    write_role: SafeLine = "spine:catalog:write"
    max_external_entries: int = Field(default=1000, ge=0, le=100_000)
    max_ttl_seconds: int = Field(default=86_400, ge=1)
    store_file: SafeLine | None = Field(
        default=None, description="Where external entries survive a restart of the process."
    )
    entries: list[ServiceEntry] = Field(default_factory=list, max_length=5000)
