"""A catalog entry in LinkSmart's JSON, and the checks on a write's body, pure.

`CatalogEntry` is one service as the API shows it (owned ones from the config, external ones
from writes); `parse_service_write` turns a POST or PUT body into a `ServiceWrite` or raises
`BadServiceBody` naming the field. Every bound an authorised writer could push against (body
size, nesting, meta size, ttl) is a constant here. `store.py` and `api.py` use both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import Field, ValidationError

from spine_runtime.common.configsource import describe_validation_error
from spine_runtime.config.base import CamelModel, SafeLine
from spine_runtime.config.catalog import ServiceApi, ServiceEntry, ServiceId, ServiceType, Text

MAX_WRITE_BYTES = 64 * 1024
MAX_DOCUMENT_DEPTH = 32
MAX_META_DEPTH = 5
MAX_META_BYTES = 8 * 1024
MAX_SCHEMA_DEPTH = 24
MAX_APIS = 32

# Fields LinkSmart's own responses carry: a client that reads a service, changes it and writes
# it back sends them; they are accepted and ignored (the catalog sets them).
READ_ONLY_FIELDS = ("createdAt", "updatedAt", "expiresAt")


class BadServiceBody(ValueError):
    """A write body the catalog refuses; the message names the field."""


class ServiceWrite(CamelModel):
    """The body of `POST /` and `PUT /{id}`: a Service in LinkSmart's v3 shape."""

    id: ServiceId | None = None
    type: ServiceType
    title: Text = ""
    description: Text = ""
    meta: dict[str, Any] = Field(default_factory=dict)
    apis: list[ServiceApi] = Field(default_factory=list, max_length=MAX_APIS)
    doc: SafeLine = ""
    ttl: int | None = Field(default=None, description="Seconds; the catalog's maximum if unset.")
    created_at: Any = None
    updated_at: Any = None
    expires_at: Any = None


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, as LinkSmart's Go encoder writes a time."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass
class CatalogEntry:
    """One service as `GET /{id}` shows it, with what the catalog knows about its origin."""

    body: dict[str, Any]  # id, type, title, description, meta, apis, doc
    owner: str | None  # `ServiceRegistration/<name>` for owned entries, None for external ones
    created: datetime
    updated: datetime
    ttl: int | None = None
    expires: datetime | None = None
    _wire: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    _payload: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def id(self) -> str:
        return str(self.body["id"])

    @property
    def type(self) -> str:
        return str(self.body["type"])

    @property
    def owned(self) -> bool:
        return self.owner is not None

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and self.expires <= now

    def to_wire(self) -> dict[str, Any]:
        """The service JSON. Cached: an entry never changes (a change makes a new entry), and
        every list and filter request reads it. Callers must not modify it."""
        if self._wire is None:
            self._wire = self._build_wire()
        return self._wire

    def _build_wire(self) -> dict[str, Any]:
        wire = dict(self.body)
        if self.ttl is not None:
            wire["ttl"] = self.ttl
        wire["createdAt"] = format_time(self.created)
        wire["updatedAt"] = format_time(self.updated)
        if self.expires is not None:
            wire["expiresAt"] = format_time(self.expires)
        return wire

    def payload(self) -> bytes:
        """The service JSON as announced on MQTT (cached like `to_wire`)."""
        if self._payload is None:
            self._payload = json.dumps(self.to_wire(), separators=(",", ":")).encode()
        return self._payload


def owned_body(entry: ServiceEntry) -> dict[str, Any]:
    return entry.model_dump(
        mode="json", by_alias=True, exclude={"owner", "probe"}, exclude_none=True
    )


def external_entry(
    service_id: str,
    write: ServiceWrite,
    ttl: int,
    now: datetime,
    created: datetime | None = None,
) -> CatalogEntry:
    body = write.model_dump(
        mode="json",
        by_alias=True,
        exclude={"id", "ttl", "created_at", "updated_at", "expires_at"},
        exclude_none=True,
    )
    return CatalogEntry(
        body={"id": service_id, **body},
        owner=None,
        created=created or now,
        updated=now,
        ttl=ttl,
        expires=now + timedelta(seconds=ttl),
    )


def depth_of(value: Any) -> int:
    """How deeply objects and arrays nest in `value` (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _check_meta(field: str, meta: dict[str, Any]) -> None:
    if depth_of(meta) > MAX_META_DEPTH:
        raise BadServiceBody(f"{field}: nested deeper than {MAX_META_DEPTH} levels")
    size = len(json.dumps(meta, separators=(",", ":")))
    if size > MAX_META_BYTES:
        raise BadServiceBody(f"{field}: {size} bytes as JSON, more than {MAX_META_BYTES}")


def parse_service_write(raw: bytes, max_ttl_seconds: int) -> ServiceWrite:
    """Validate a write body: JSON object, bounded nesting, the Service model, meta, ttl."""
    if len(raw) > MAX_WRITE_BYTES:
        raise BadServiceBody(f"body: larger than {MAX_WRITE_BYTES} bytes")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise BadServiceBody(f"body: nested deeper than {MAX_DOCUMENT_DEPTH} levels") from None
    except ValueError as error:
        raise BadServiceBody(f"body: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise BadServiceBody("body: must be a JSON object (a Service)")
    if depth_of(data) > MAX_DOCUMENT_DEPTH:
        raise BadServiceBody(f"body: nested deeper than {MAX_DOCUMENT_DEPTH} levels")
    try:
        write = ServiceWrite.model_validate(data)
    except ValidationError as error:
        raise BadServiceBody(describe_validation_error(error)) from None
    _check_meta("meta", write.meta)
    for index, api in enumerate(write.apis):
        _check_meta(f"apis[{index}].meta", api.meta)
        schema = api.spec.schema_ if api.spec is not None else None
        if schema is not None and depth_of(schema) > MAX_SCHEMA_DEPTH:
            raise BadServiceBody(
                f"apis[{index}].spec.schema: nested deeper than {MAX_SCHEMA_DEPTH} levels"
            )
    if write.ttl is not None and not 1 <= write.ttl <= max_ttl_seconds:
        raise BadServiceBody(
            f"ttl: {write.ttl} is out of range: it must be between 1 and {max_ttl_seconds} seconds"
        )
    return write
