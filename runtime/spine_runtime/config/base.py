"""Shared pieces of every config model: camelCase JSON, strict fields, MQTT and HTTP settings.

The operator's API models (`spine_operator.api`) derive from `CamelModel` too, so a field is
spelled the same in a CRD, in a rendered config file and in Python.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

SAFE_LINE_PATTERN = r"^[^\x00-\x1f\x7f]*$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

# A value that may reach a line-oriented config file: no control characters at all, so no
# newline, carriage return or NUL can start a new directive.
SafeLine = Annotated[str, StringConstraints(pattern=SAFE_LINE_PATTERN, max_length=1024)]

# RFC 1123 DNS label, as Kubernetes names Services and Secrets.
DnsLabel = Annotated[str, StringConstraints(pattern=DNS_LABEL_PATTERN, max_length=63)]

# What a person should read instead of a regular expression when a value does not match.
PATTERN_HINTS: dict[str, str] = {
    SAFE_LINE_PATTERN: "must not contain control characters such as a newline or NUL",
    DNS_LABEL_PATTERN: "must be a DNS label: lowercase letters, digits and '-', "
    "starting and ending with a letter or digit",
}

Port = Annotated[int, Field(ge=1, le=65535)]


class CamelModel(BaseModel):
    """Base of every spec and config model: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=False,
    )

    def to_wire(self) -> dict:
        """The JSON-ready dict with camelCase keys and unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class MqttSettings(CamelModel):
    """How a runtime reaches its namespace's broker. The password comes from a mounted file."""

    host: SafeLine = Field(description="Broker host name or address.")
    port: Port = 1883
    username: SafeLine
    password_file: Path = Field(description="File holding the password (a mounted Secret key).")
    client_id: SafeLine
    tls_ca_file: Path | None = Field(
        default=None,
        description="CA bundle to verify the broker's TLS certificate; plain TCP if unset.",
    )

    def password(self) -> str:
        return self.password_file.read_text().strip()


class HttpSettings(CamelModel):
    """Where a runtime serves /healthz, /metrics, /status and its own API."""

    host: SafeLine = "0.0.0.0"
    port: Port = 8080
    admin_token_file: Path | None = Field(
        default=None,
        description="File holding the bearer token the operator uses to push config; "
        "push is off if unset.",
    )
