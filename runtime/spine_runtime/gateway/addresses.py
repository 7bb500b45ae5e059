"""Tag addresses and value types of each protocol: parsing and checking, no I/O.

The gateway config model calls `parse_tag_address` to reject a bad tag with a message that
says what to fix; the drivers call it again for the parsed form. README.md ("Addresses")
documents the syntax. Standard library only: the operator imports this through the config model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class AddressError(ValueError):
    """An address or type that cannot be used; the message says why and what would work."""


class Protocol(StrEnum):
    MODBUS_TCP = "modbusTcp"
    OPCUA = "opcua"
    S7 = "s7"


class ModbusTable(StrEnum):
    COIL = "coil"
    DISCRETE = "discrete"
    INPUT = "input"
    HOLDING = "holding"

    @property
    def holds_bits(self) -> bool:
        return self in (ModbusTable.COIL, ModbusTable.DISCRETE)


class S7Area(StrEnum):
    DB = "DB"
    M = "M"
    I = "I"  # noqa: E741 - Siemens' own name for the process-input image
    Q = "Q"


@dataclass(frozen=True)
class ValueType:
    """One value type: its size, the JSON type it is published as, and its integer range."""

    name: str
    size: int  # Modbus: registers (bits for bool on a coil); S7: bytes; OPC UA: 0 (typed)
    json_type: str  # JSON Schema type name: boolean, integer, number, string
    minimum: int | None = None
    maximum: int | None = None
    struct_format: str = ""  # big-endian struct code, "" for bool and string

    @property
    def is_integer(self) -> bool:
        return self.json_type == "integer"

    @property
    def is_bool(self) -> bool:
        return self.json_type == "boolean"


def _int(name: str, size: int, bits: int, signed: bool, fmt: str) -> ValueType:
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return ValueType(name, size, "integer", low, high, fmt)


MODBUS_TYPES: dict[str, ValueType] = {
    t.name: t
    for t in (
        ValueType("bool", 1, "boolean"),
        _int("int16", 1, 16, True, "h"),
        _int("uint16", 1, 16, False, "H"),
        _int("int32", 2, 32, True, "i"),
        _int("uint32", 2, 32, False, "I"),
        _int("int64", 4, 64, True, "q"),
        _int("uint64", 4, 64, False, "Q"),
        ValueType("float32", 2, "number", struct_format="f"),
        ValueType("float64", 4, "number", struct_format="d"),
    )
}

S7_TYPES: dict[str, ValueType] = {
    t.name: t
    for t in (
        ValueType("BOOL", 1, "boolean"),
        _int("BYTE", 1, 8, False, "B"),
        _int("USINT", 1, 8, False, "B"),
        _int("SINT", 1, 8, True, "b"),
        _int("WORD", 2, 16, False, "H"),
        _int("UINT", 2, 16, False, "H"),
        _int("INT", 2, 16, True, "h"),
        _int("DWORD", 4, 32, False, "I"),
        _int("UDINT", 4, 32, False, "I"),
        _int("DINT", 4, 32, True, "i"),
        _int("LWORD", 8, 64, False, "Q"),
        _int("ULINT", 8, 64, False, "Q"),
        _int("LINT", 8, 64, True, "q"),
        ValueType("REAL", 4, "number", struct_format="f"),
        ValueType("LREAL", 8, "number", struct_format="d"),
    )
}

OPCUA_TYPES: dict[str, ValueType] = {
    t.name: t
    for t in (
        ValueType("Boolean", 0, "boolean"),
        _int("SByte", 0, 8, True, ""),
        _int("Byte", 0, 8, False, ""),
        _int("Int16", 0, 16, True, ""),
        _int("UInt16", 0, 16, False, ""),
        _int("Int32", 0, 32, True, ""),
        _int("UInt32", 0, 32, False, ""),
        _int("Int64", 0, 64, True, ""),
        _int("UInt64", 0, 64, False, ""),
        ValueType("Float", 0, "number"),
        ValueType("Double", 0, "number"),
        ValueType("String", 0, "string"),
    )
}

TYPES_BY_PROTOCOL = {
    Protocol.MODBUS_TCP: MODBUS_TYPES,
    Protocol.S7: S7_TYPES,
    Protocol.OPCUA: OPCUA_TYPES,
}

PROTOCOL_TITLES = {Protocol.MODBUS_TCP: "Modbus", Protocol.S7: "S7", Protocol.OPCUA: "OPC UA"}


@dataclass(frozen=True)
class ModbusAddress:
    table: ModbusTable
    offset: int  # 0-based protocol address, as it goes on the wire
    bit: int | None = None  # a bool taken from one bit of an input or holding register

    def __str__(self) -> str:
        return f"{self.table}:{self.offset}" + (f".{self.bit}" if self.bit is not None else "")


@dataclass(frozen=True)
class S7Address:
    area: S7Area
    db_number: int  # 0 outside the DB area
    byte_offset: int
    bit: int | None = None

    def __str__(self) -> str:
        prefix = f"DB{self.db_number}." if self.area is S7Area.DB else self.area.value
        return prefix + f"{self.byte_offset}" + (f".{self.bit}" if self.bit is not None else "")


@dataclass(frozen=True)
class OpcUaAddress:
    node_id: str

    def __str__(self) -> str:
        return self.node_id


@dataclass(frozen=True)
class TagAddress:
    """A parsed, checked address with its value type (None: OPC UA, typed by the server)."""

    protocol: Protocol
    location: ModbusAddress | S7Address | OpcUaAddress
    value_type: ValueType | None

    @property
    def json_type(self) -> str | None:
        return self.value_type.json_type if self.value_type else None


def canonical_type(protocol: Protocol, name: str | None) -> ValueType | None:
    """The value type `name` names for `protocol`, case-insensitively."""
    types = TYPES_BY_PROTOCOL[protocol]
    if name is None:
        if protocol is Protocol.OPCUA:
            return None
        raise AddressError(
            f"a {PROTOCOL_TITLES[protocol]} tag needs a type: one of {', '.join(types)}"
        )
    for known in types.values():
        if known.name.lower() == name.strip().lower():
            return known
    raise AddressError(
        f"unknown {PROTOCOL_TITLES[protocol]} type {name!r}: use one of {', '.join(types)}"
    )


_MODBUS_ADDRESS = re.compile(r"^(coil|discrete|input|holding):(\d{1,6})(?:\.(\d{1,2}))?$", re.I)
MODBUS_MAX_OFFSET = 65535


def parse_modbus_address(text: str, value_type: ValueType) -> ModbusAddress:
    match = _MODBUS_ADDRESS.match(text.strip())
    if match is None:
        raise AddressError(
            f"Modbus address {text!r} must be <table>:<offset> with table coil, discrete, "
            "input or holding and a 0-based offset, e.g. holding:100 (a bool from one bit of a "
            "register: holding:100.3)"
        )
    table = ModbusTable(match.group(1).lower())
    offset = int(match.group(2))
    bit = int(match.group(3)) if match.group(3) is not None else None
    if offset > MODBUS_MAX_OFFSET:
        raise AddressError(f"Modbus offset {offset} is out of range 0..{MODBUS_MAX_OFFSET}")
    if table.holds_bits:
        if not value_type.is_bool:
            raise AddressError(
                f"a {table} holds single bits: its type must be bool, not {value_type.name}"
            )
        if bit is not None:
            raise AddressError(f"a {table} is a single bit already: drop .{bit}")
        return ModbusAddress(table, offset)
    if bit is not None:
        if not value_type.is_bool:
            raise AddressError(f"a register bit (.{bit}) is a bool: set type bool")
        if bit > 15:
            raise AddressError(f"register bit {bit} is out of range 0..15")
    elif value_type.is_bool:
        raise AddressError(f"a bool in a {table} register needs a bit: {table}:{offset}.<0-15>")
    last = offset + register_count(value_type) - 1
    if last > MODBUS_MAX_OFFSET:
        raise AddressError(
            f"a {value_type.name} at offset {offset} needs registers up to {last}, "
            f"beyond {MODBUS_MAX_OFFSET}"
        )
    return ModbusAddress(table, offset, bit)


def register_count(value_type: ValueType) -> int:
    """Registers (or bits, for a bool) a Modbus value occupies."""
    return 1 if value_type.is_bool else value_type.size


_S7_DB_ADDRESS = re.compile(r"^%?DB(\d{1,5})\.(?:DB([XBWD]))?(\d{1,7})(?:\.(\d{1,2}))?$", re.I)
_S7_AREA_ADDRESS = re.compile(r"^%?([MIQ])([XBWD])?(\d{1,7})(?:\.(\d{1,2}))?$", re.I)
S7_MAX_BYTE = 65535
_SIZE_LETTERS = {"B": 1, "W": 2, "D": 4}


def parse_s7_address(text: str, value_type: ValueType) -> S7Address:
    cleaned = text.strip()
    db_match = _S7_DB_ADDRESS.match(cleaned)
    area_match = None if db_match else _S7_AREA_ADDRESS.match(cleaned)
    if db_match is not None:
        area, db_number = S7Area.DB, int(db_match.group(1))
        letter, byte_text, bit_text = db_match.group(2), db_match.group(3), db_match.group(4)
        if not 1 <= db_number <= 65535:
            raise AddressError(f"S7 DB number {db_number} is out of range 1..65535")
    elif area_match is not None:
        area, db_number = S7Area(area_match.group(1).upper()), 0
        letter, byte_text, bit_text = area_match.group(2), area_match.group(3), area_match.group(4)
    else:
        raise AddressError(
            f"S7 address {text!r} must be DB<n>.<byte>[.<bit>] (or DB<n>.DBX<byte>.<bit>, "
            "DB<n>.DBW<byte>...) or M, I, Q with <byte>[.<bit>] (or MW<byte>, QX<byte>.<bit>...), "
            "e.g. DB1.4, DB1.0.3, M10.0"
        )
    byte_offset = int(byte_text)
    bit = int(bit_text) if bit_text is not None else None
    letter = letter.upper() if letter else None
    if byte_offset > S7_MAX_BYTE:
        raise AddressError(f"S7 byte offset {byte_offset} is out of range 0..{S7_MAX_BYTE}")
    if bit is not None and bit > 7:
        raise AddressError(f"S7 bit {bit} is out of range 0..7")
    if value_type.is_bool:
        if bit is None:
            raise AddressError(
                f"an S7 BOOL needs a bit: {text}.<0-7> (byte.bit, e.g. DB1.4.2 or M10.0)"
            )
        if letter not in (None, "X"):
            raise AddressError(f"an S7 BOOL is addressed with X, not {letter}")
    else:
        if bit is not None:
            raise AddressError(f"only a BOOL has a bit: drop .{bit} or set type BOOL")
        if letter == "X":
            raise AddressError(f"X addresses a BOOL, not a {value_type.name}")
        if letter is not None and _SIZE_LETTERS[letter] != value_type.size:
            raise AddressError(
                f"{letter} addresses {_SIZE_LETTERS[letter]} byte(s) but a {value_type.name} "
                f"has {value_type.size}"
            )
        last = byte_offset + value_type.size - 1
        if last > S7_MAX_BYTE:
            raise AddressError(
                f"a {value_type.name} at byte {byte_offset} ends at byte {last}, "
                f"beyond {S7_MAX_BYTE}"
            )
    return S7Address(area, db_number, byte_offset, bit)


_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_NODE_ID = re.compile(
    r"^(?:(?:ns=(?P<ns>\d{1,5})|nsu=(?P<nsu>[^;\x00-\x1f]+));)?"
    rf"(?:i=(?P<i>\d{{1,10}})|s=(?P<s>[^\x00-\x1f]+)|g=(?P<g>{_GUID})|b=(?P<b>[A-Za-z0-9+/]+=*))$"
)


def parse_node_id(text: str) -> OpcUaAddress:
    match = _NODE_ID.match(text.strip())
    if match is None:
        raise AddressError(
            f"OPC UA NodeId {text!r} must be [ns=<index>;]<i|s|g|b>=<identifier>, "
            "e.g. ns=2;s=Press.Temperature or ns=3;i=1001"
        )
    if match.group("ns") is not None and int(match.group("ns")) > 65535:
        raise AddressError(f"OPC UA namespace index {match.group('ns')} is out of range 0..65535")
    if match.group("i") is not None and int(match.group("i")) > 2**32 - 1:
        raise AddressError(f"OPC UA numeric identifier {match.group('i')} exceeds 32 bits")
    return OpcUaAddress(text.strip())


def parse_tag_address(protocol: Protocol, address: str, type_name: str | None) -> TagAddress:
    """Parse and check a tag's address and type together; raises AddressError."""
    value_type = canonical_type(protocol, type_name)
    location: ModbusAddress | S7Address | OpcUaAddress
    if protocol is Protocol.MODBUS_TCP:
        assert value_type is not None
        location = parse_modbus_address(address, value_type)
    elif protocol is Protocol.S7:
        assert value_type is not None
        location = parse_s7_address(address, value_type)
    else:
        location = parse_node_id(address)
    return TagAddress(protocol, location, value_type)


def writable_problem(parsed: TagAddress) -> str | None:
    """Why this address cannot be written, or None if it can."""
    location = parsed.location
    if isinstance(location, ModbusAddress):
        if location.table in (ModbusTable.INPUT, ModbusTable.DISCRETE):
            return (
                f"a Modbus {location.table} is read-only: only coils and holding registers "
                "can be writable"
            )
        if location.bit is not None:
            return (
                "one bit of a register cannot be written on its own (a read-modify-write could "
                "undo a change the PLC makes meanwhile): map the whole register"
            )
    if isinstance(location, S7Address) and location.area is S7Area.I:
        return "the S7 input image (I) is overwritten by the inputs every scan: it is read-only"
    return None
