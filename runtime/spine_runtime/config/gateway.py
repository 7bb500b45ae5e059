"""The gateway's config file: PLC connections, tags mapped onto twin properties, buffering.

The operator renders it from a Gateway resource (and imports the helpers at the bottom to build
the gateway's broker login and to check tags against the TwinModel); `spine-runtime gateway`
reads it. Every problem is reported with the field it concerns. Secrets are file paths only.
Intervals follow OPC UA's unit, milliseconds; fields in seconds say so in their name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from spine_runtime.config.base import (
    PATTERN_HINTS,
    CamelModel,
    DnsLabel,
    HttpSettings,
    MqttSettings,
    Port,
    SafeLine,
)
from spine_runtime.config.names import (
    FEATURE_NAME_PATTERN,
    THING_NAME_PATTERN,
    TWIN_NAMESPACE_PATTERN,
)
from spine_runtime.gateway.addresses import (
    PROTOCOL_TITLES,
    AddressError,
    ModbusAddress,
    Protocol,
    canonical_type,
    parse_tag_address,
    register_count,
    writable_problem,
)

# Thing, property and namespace names are the twin's (one source: its config model); they also
# end up in MQTT topics, ACLs and JSON pointers, which those patterns keep safe.
TAG_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$"
HOST_PATTERN = r"^[A-Za-z0-9_.:\[\]-]{1,253}$"
OPCUA_ENDPOINT_PATTERN = r"^opc\.tcp://[^\s/]+(/[^\s]*)?$"
PATTERN_HINTS.update(
    {
        OPCUA_ENDPOINT_PATTERN: "must be an opc.tcp:// URL such as opc.tcp://plc-1:4840/server",
        TAG_NAME_PATTERN: "must be up to 128 letters, digits, '_', '.', ':' and '-', "
        "not starting with '.', ':' or '-'",
        HOST_PATTERN: "must be a host name, an IPv4 address or a bracketed IPv6 address",
    }
)

ThingName = Annotated[str, StringConstraints(pattern=THING_NAME_PATTERN, max_length=180)]
PropertyName = Annotated[str, StringConstraints(pattern=FEATURE_NAME_PATTERN, max_length=64)]
TwinNamespace = Annotated[str, StringConstraints(pattern=TWIN_NAMESPACE_PATTERN, max_length=64)]
TagName = Annotated[str, StringConstraints(pattern=TAG_NAME_PATTERN)]
HostName = Annotated[str, StringConstraints(pattern=HOST_PATTERN)]
Milliseconds = Annotated[float, Field(ge=1, le=86_400_000)]
ByteOrder = Literal["big", "little"]


class ModbusTcpSettings(CamelModel):
    """A Modbus TCP device (or a Modbus TCP to RTU gateway in front of several units)."""

    host: HostName = Field(description="Host name or address of the device.")
    port: Port = 502
    unit_id: int = Field(
        default=1, ge=0, le=255, description="Unit (slave) id of the tags that name none."
    )
    timeout: float = Field(default=2.0, gt=0, le=60, description="Seconds to wait for a response.")
    max_registers_per_read: int = Field(
        default=125,
        ge=1,
        le=125,
        description="Registers per read request (the protocol allows 125; some devices fewer).",
    )
    max_bits_per_read: int = Field(
        default=2000,
        ge=1,
        le=2000,
        description="Coils or discrete inputs per read request (the protocol allows 2000).",
    )
    max_gap_registers: int = Field(
        default=16,
        ge=0,
        le=124,
        description="Unused registers one read may span to join two tags' reads; 0 for "
        "devices that refuse reads over unmapped addresses.",
    )
    max_gap_bits: int = Field(
        default=256,
        ge=0,
        le=1999,
        description="Unused coils or discrete inputs one read may span.",
    )


SamplingMilliseconds = Annotated[float, Field(ge=0, le=86_400_000)]
PublishingMilliseconds = Annotated[float, Field(ge=10, le=3_600_000)]
QueueSize = Annotated[int, Field(ge=1, le=10_000)]


class SubscriptionDefaults(CamelModel):
    """How an OPC UA connection subscribes its tags unless a tag's `subscribe` says otherwise.

    The defaults keep a change's way to the broker under about 200 ms: a sample at least
    every 50 ms, a publish response every 100 ms.
    """

    publishing_interval: PublishingMilliseconds = Field(
        default=100,
        description="Milliseconds between notifications. It belongs to the subscription: "
        "tags with the same publishing interval share one.",
    )
    sampling_interval: SamplingMilliseconds | None = Field(
        default=None,
        description="Milliseconds between samples at the server; 0 is the fastest it can do; "
        "unset: half the publishing interval.",
    )
    queue_size: QueueSize = Field(
        default=1,
        description="Samples the server keeps per publishing interval; each one is published.",
    )


class Subscribe(CamelModel):
    """Report an OPC UA value by subscription (monitored item) instead of polling it. Unset
    fields take the connection's `opcua.subscription` defaults."""

    sampling_interval: SamplingMilliseconds | None = Field(
        default=None,
        description="Milliseconds between samples at the server; 0 is the fastest it can do; "
        "unset: the connection's default, else half the publishing interval.",
    )
    queue_size: QueueSize | None = Field(
        default=None,
        description="Samples the server keeps per publishing interval; each one is published "
        "(unset: the connection's default, 1).",
    )
    publishing_interval: PublishingMilliseconds | None = Field(
        default=None,
        description="Milliseconds between notifications (unset: the connection's default, "
        "100). Tags with the same publishing interval share one subscription.",
    )


@dataclass(frozen=True)
class EffectiveSubscription:
    """A subscribed tag's settings, its own or its connection's (milliseconds)."""

    publishing_interval: float
    sampling_interval: float
    queue_size: int


def effective_subscription(
    subscribe: Subscribe, defaults: SubscriptionDefaults
) -> EffectiveSubscription:
    publishing = (
        subscribe.publishing_interval
        if subscribe.publishing_interval is not None
        else defaults.publishing_interval
    )
    sampling = subscribe.sampling_interval
    if sampling is None:
        sampling = defaults.sampling_interval
    if sampling is None:
        sampling = publishing / 2
    queue_size = subscribe.queue_size if subscribe.queue_size is not None else defaults.queue_size
    return EffectiveSubscription(publishing, sampling, queue_size)


SecurityPolicy = Literal[
    "None",
    "Basic128Rsa15",
    "Basic256",
    "Basic256Sha256",
    "Aes128_Sha256_RsaOaep",
    "Aes256_Sha256_RsaPss",
]


class OpcUaSettings(CamelModel):
    """An OPC UA server, with optional user login and message security."""

    endpoint: str = Field(
        pattern=r"^opc\.tcp://[^\s/]+(/[^\s]*)?$",
        max_length=1024,
        description="Endpoint URL, e.g. opc.tcp://plc-1:4840/server.",
    )
    security_policy: SecurityPolicy = "None"
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    username_file: Path | None = Field(default=None, description="File holding the user name.")
    password_file: Path | None = Field(default=None, description="File holding the password.")
    certificate_file: Path | None = Field(
        default=None, description="The gateway's client certificate (PEM or DER)."
    )
    private_key_file: Path | None = Field(
        default=None, description="The client certificate's private key (PEM)."
    )
    server_certificate_file: Path | None = Field(
        default=None, description="The server's certificate to trust (PEM or DER)."
    )
    timeout: float = Field(default=4.0, gt=0, le=60, description="Seconds per request.")
    subscription: SubscriptionDefaults = Field(
        default_factory=SubscriptionDefaults,
        description="Publishing interval, sampling interval and queue size of the connection's "
        "subscribed tags, unless a tag sets its own.",
    )

    @model_validator(mode="after")
    def _security_is_complete(self) -> OpcUaSettings:
        if (self.security_policy == "None") != (self.security_mode == "None"):
            raise PydanticCustomError(
                "opcua_security",
                "securityPolicy and securityMode must both be None or both be set "
                "(e.g. Basic256Sha256 with SignAndEncrypt)",
            )
        if self.security_policy != "None" and (
            self.certificate_file is None or self.private_key_file is None
        ):
            raise PydanticCustomError(
                "opcua_security",
                "securityPolicy {policy} needs certificateFile and privateKeyFile",
                {"policy": self.security_policy},
            )
        if (self.username_file is None) != (self.password_file is None):
            raise PydanticCustomError(
                "opcua_login", "usernameFile and passwordFile go together: set both or neither"
            )
        return self


class S7Settings(CamelModel):
    """A Siemens S7 PLC over ISO-on-TCP. S7-1200/1500 need PUT/GET access (README.md)."""

    host: HostName = Field(description="Host name or address of the PLC.")
    port: Port = 102
    rack: int = Field(ge=0, le=7, description="Rack of the CPU (0 for S7-1200/1500).")
    slot: int = Field(
        ge=0, le=31, description="Slot of the CPU (1 for S7-1200/1500, usually 2 for S7-300)."
    )
    timeout: float = Field(default=3.0, gt=0, le=60, description="Seconds per request.")
    max_items_per_read: int = Field(
        default=20,
        ge=1,
        le=20,
        description="Variables per read request (S7 PLCs accept about 20).",
    )
    max_gap_bytes: int = Field(
        default=16,
        ge=0,
        le=256,
        description="Unused bytes one variable may span to join two tags of one DB or area.",
    )


class Connection(CamelModel):
    """One PLC connection: exactly one of modbusTcp, opcua and s7."""

    name: DnsLabel = Field(description="Name the tags refer to; a label on metrics.")
    modbus_tcp: ModbusTcpSettings | None = None
    opcua: OpcUaSettings | None = None
    s7: S7Settings | None = None
    reconnect_initial_seconds: float = Field(
        default=1.0, gt=0, le=60, description="First wait before reconnecting; doubles each time."
    )
    reconnect_max_seconds: float = Field(
        default=30.0, gt=0, le=600, description="Longest wait between reconnect attempts."
    )

    @model_validator(mode="after")
    def _exactly_one_protocol(self) -> Connection:
        chosen = [name for name in ("modbusTcp", "opcua", "s7") if self._settings(name)]
        if len(chosen) != 1:
            raise PydanticCustomError(
                "one_protocol",
                "a connection needs exactly one of modbusTcp, opcua and s7 (found: {found})",
                {"found": ", ".join(chosen) or "none"},
            )
        if self.reconnect_initial_seconds > self.reconnect_max_seconds:
            raise PydanticCustomError(
                "reconnect", "reconnectInitialSeconds must not exceed reconnectMaxSeconds"
            )
        return self

    def _settings(self, name: str) -> object:
        return {"modbusTcp": self.modbus_tcp, "opcua": self.opcua, "s7": self.s7}[name]

    @property
    def request_timeout(self) -> float:
        """Seconds one request to the PLC may take (the protocol settings' `timeout`)."""
        settings = self.modbus_tcp or self.opcua or self.s7
        assert settings is not None
        return settings.timeout

    @property
    def protocol(self) -> Protocol:
        if self.modbus_tcp is not None:
            return Protocol.MODBUS_TCP
        return Protocol.OPCUA if self.opcua is not None else Protocol.S7


class Scale(CamelModel):
    """Published value = raw * factor + offset; a desired value is written as the inverse."""

    factor: float = 1.0
    offset: float = 0.0

    @model_validator(mode="after")
    def _usable(self) -> Scale:
        if not math.isfinite(self.factor) or self.factor == 0:
            raise PydanticCustomError("scale", "factor must be a finite number other than 0")
        if not math.isfinite(self.offset):
            raise PydanticCustomError("scale", "offset must be a finite number")
        return self


class Tag(CamelModel):
    """One PLC value, mapped onto a property (feature) of a twin thing."""

    name: TagName
    connection: DnsLabel = Field(description="Name of the connection that reads it.")
    thing: ThingName = Field(description="Thing name (without the twin namespace).")
    property: PropertyName = Field(description="The thing's property (Ditto feature) it feeds.")
    address: SafeLine = Field(
        description="Modbus <table>:<offset>, OPC UA NodeId, or S7 DB<n>.<byte>[.<bit>] / "
        "M|I|Q<byte>[.<bit>] (README.md, Addresses)."
    )
    type: str | None = Field(
        default=None,
        max_length=32,
        description="Modbus: bool, int16, uint16, int32, uint32, int64, uint64, float32, "
        "float64. S7: BOOL, BYTE, SINT, USINT, INT, UINT, WORD, DINT, UDINT, DWORD, LINT, "
        "ULINT, LWORD, REAL, LREAL. OPC UA: optional (the server types values).",
    )
    byte_order: ByteOrder | None = Field(
        default=None, description="Modbus: order of the two bytes in a register (default big)."
    )
    word_order: ByteOrder | None = Field(
        default=None,
        description="Modbus: big puts the most significant register first (default big).",
    )
    unit_id: int | None = Field(
        default=None, ge=0, le=255, description="Modbus: unit id, if not the connection's."
    )
    scale: Scale | None = None
    deadband: float | None = Field(
        default=None,
        ge=0,
        description="Publish only changes larger than this (absolute, after scaling).",
    )
    interval: Milliseconds | None = Field(
        default=None, description="Milliseconds between polls (default 1000)."
    )
    subscribe: Subscribe | None = Field(
        default=None, description="OPC UA only: report by subscription instead of polling."
    )
    writable: bool = Field(
        default=False, description="Write desired values of the property to the PLC."
    )

    @model_validator(mode="after")
    def _poll_or_subscribe(self) -> Tag:
        if self.interval is not None and self.subscribe is not None:
            raise PydanticCustomError(
                "poll_or_subscribe", "set interval (polling) or subscribe, not both"
            )
        if self.deadband is not None and not math.isfinite(self.deadband):
            raise PydanticCustomError("deadband", "deadband must be a finite number")
        return self


DEFAULT_INTERVAL_MS = 1000.0


def poll_interval_seconds(tag: Tag) -> float:
    return (tag.interval if tag.interval is not None else DEFAULT_INTERVAL_MS) / 1000


class PublishSettings(CamelModel):
    qos: Literal[0, 1, 2] = Field(
        default=1, description="MQTT QoS of twin updates (acks from the twin guard delivery)."
    )
    heartbeat_seconds: float = Field(
        default=60,
        ge=0,
        le=86_400,
        description="Re-publish an unchanged value after this many seconds; 0 turns it off.",
    )
    max_in_flight: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Updates published but not yet confirmed by the twin; more wait on disk.",
    )


class BufferSettings(CamelModel):
    """The durable store-and-forward queue (on the gateway's PersistentVolume)."""

    path: Path = Field(description="Directory of the queue file.")
    max_messages: int = Field(
        default=1_000_000, ge=10, le=1_000_000_000, description="Most updates kept."
    )
    max_bytes: int = Field(
        default=256 * 1024 * 1024, ge=64 * 1024, le=2**40, description="Most bytes kept."
    )
    fsync: bool = Field(
        default=False,
        description="Flush every write to the device: also survives a power loss of the node, "
        "at the cost of one flush per poll cycle. Without it a killed process loses nothing.",
    )
    max_dead_letters: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="Most updates kept that the broker refused (e.g. not authorised); the "
        "oldest go first. Each is counted and shown in /status.",
    )


class GatewayConfig(CamelModel):
    """Everything one gateway process needs."""

    name: DnsLabel = Field(description="The gateway's name, as in its topics and headers.")
    twin_namespace: TwinNamespace = Field(description="Namespace part of the thing ids.")
    mqtt: MqttSettings
    http: HttpSettings = Field(default_factory=HttpSettings)
    connections: list[Connection] = Field(default_factory=list)
    tags: list[Tag] = Field(default_factory=list)
    publish: PublishSettings = Field(default_factory=PublishSettings)
    buffer: BufferSettings
    resend_timeout_seconds: float = Field(
        default=30,
        gt=0,
        le=3600,
        description="Re-send updates the twin has not confirmed after this many seconds.",
    )

    @field_validator("connections")
    @classmethod
    def _unique_connection_names(cls, connections: list[Connection]) -> list[Connection]:
        seen: set[str] = set()
        for index, connection in enumerate(connections):
            if connection.name in seen:
                raise PydanticCustomError(
                    "duplicate",
                    "connections[{index}]: name '{name}' is used twice",
                    {"index": index, "name": connection.name},
                )
            seen.add(connection.name)
        return connections

    @field_validator("tags")
    @classmethod
    def _tags_fit_their_connections(cls, tags: list[Tag], info: ValidationInfo) -> list[Tag]:
        connections = info.data.get("connections")
        if connections is None:  # connections are invalid themselves; that error is reported
            return tags
        check_tag_list(tags, {connection.name: connection for connection in connections})
        return tags

    # Helpers for the operator and the runtime ------------------------------------------

    def connection(self, name: str) -> Connection:
        return next(connection for connection in self.connections if connection.name == name)

    def things(self) -> list[str]:
        """Things this gateway publishes to (its broker login may publish their twin topic)."""
        return sorted({tag.thing for tag in self.tags})

    def writable_things(self) -> list[str]:
        """Things with a writable tag (its login may subscribe to their desired topic)."""
        return sorted({tag.thing for tag in self.tags if tag.writable})

    def published_json_type(self, tag: Tag) -> str | None:
        """JSON Schema type of the property values this tag publishes; None: whatever the
        OPC UA server sends. For the operator's check against the TwinModel."""
        parsed = parse_tag_address(self.connection(tag.connection).protocol, tag.address, tag.type)
        json_type = parsed.json_type
        if json_type == "integer" and tag.scale is not None:
            whole = float(tag.scale.factor).is_integer() and float(tag.scale.offset).is_integer()
            return "integer" if whole else "number"
        return json_type


def check_tag_list(
    tags: Sequence[Tag],
    connections: Mapping[str, Connection],
    default_thing: str | None = None,
    thing_is_known: bool = True,
) -> None:
    """Every problem of a list of tags at once, as one PydanticCustomError naming each tag:
    duplicate names, two tags feeding one property, and `tag_problems`. The Gateway spec calls
    it too, with its `thing` as the default of tags that name none (`thing_is_known` False
    when that field is itself invalid, so it is not reported twice)."""
    problems: list[str] = []
    names: dict[str, int] = {}
    targets: dict[tuple[str, str], str] = {}
    for index, tag in enumerate(tags):
        where = f"tags[{index}] ({tag.name})"
        if tag.name in names:
            problems.append(f"{where}.name: also used by tags[{names[tag.name]}]")
        names.setdefault(tag.name, index)
        thing = tag.thing or default_thing
        if thing is None:
            if thing_is_known:
                problems.append(f"{where}.thing: name the tag's thing, or set spec.thing")
        else:
            target = (thing, tag.property)
            if target in targets:
                problems.append(
                    f"{where}.property: {thing}/{tag.property} is fed by tag "
                    f"{targets[target]} already"
                )
            targets.setdefault(target, tag.name)
        problems += [f"{where}.{problem}" for problem in tag_problems(tag, connections)]
    if problems:
        shown = problems[:20] + ([f"and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise PydanticCustomError("tags", "{problems}", {"problems": "; ".join(shown)})


def tag_problems(tag: Tag, connections: Mapping[str, Connection]) -> list[str]:
    """What is wrong with one tag, each as `<field>: <reason>`."""
    connection = connections.get(tag.connection)
    if connection is None:
        known = ", ".join(sorted(connections)) or "none defined"
        return [f"connection: {tag.connection!r} is not a connection (connections: {known})"]
    protocol = connection.protocol
    title = PROTOCOL_TITLES[protocol]
    try:
        value_type = canonical_type(protocol, tag.type)
    except AddressError as error:
        return [f"type: {error}"]
    try:
        parsed = parse_tag_address(protocol, tag.address, tag.type)
    except AddressError as error:
        return [f"address: {error}"]
    problems = []
    if tag.writable and (reason := writable_problem(parsed)):
        problems.append(f"writable: {reason}")
    if protocol is not Protocol.MODBUS_TCP:
        for field, value in (
            ("byteOrder", tag.byte_order),
            ("wordOrder", tag.word_order),
            ("unitId", tag.unit_id),
        ):
            if value is not None:
                problems.append(f"{field}: only Modbus tags have one, not {title} tags")
    if tag.subscribe is not None and protocol is not Protocol.OPCUA:
        problems.append(f"subscribe: only OPC UA tags can subscribe; poll {title} with interval")
    json_type = value_type.json_type if value_type else None
    if json_type in ("boolean", "string"):
        if tag.scale is not None:
            problems.append(f"scale: a {value_type.name if value_type else ''} cannot be scaled")
        if tag.deadband is not None:
            problems.append(
                "deadband: only numbers have a deadband; other values publish on change"
            )
    modbus = connection.modbus_tcp
    if modbus is not None and value_type is not None and isinstance(parsed.location, ModbusAddress):
        needed = register_count(value_type)
        if not parsed.location.table.holds_bits and needed > modbus.max_registers_per_read:
            problems.append(
                f"type: a {value_type.name} needs {needed} registers but connection "
                f"{connection.name} reads at most {modbus.max_registers_per_read} at a time"
            )
    return problems
