"""Raw PLC data to values and back: Modbus registers in any byte and word order, S7 bytes.

The Modbus and S7 drivers call these on every read and write; they are pure and unit-tested for
every type. Modbus sends each register big-endian and leaves the order of the registers of a
multi-register value to the device, hence `word_order`; some devices also swap the bytes of
each register, hence `byte_order`. S7 is big-endian throughout.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Literal

from spine_runtime.gateway.addresses import ValueType

Order = Literal["big", "little"]
RawValue = bool | int | float


def registers_to_bytes(registers: Sequence[int], byte_order: Order, word_order: Order) -> bytes:
    """The big-endian byte string the registers stand for, most significant word first."""
    ordered = list(registers) if word_order == "big" else list(reversed(registers))
    data = bytearray()
    for register in ordered:
        high, low = (register >> 8) & 0xFF, register & 0xFF
        data += bytes((high, low)) if byte_order == "big" else bytes((low, high))
    return bytes(data)


def bytes_to_registers(data: bytes, byte_order: Order, word_order: Order) -> list[int]:
    registers = []
    for index in range(0, len(data), 2):
        first, second = data[index], data[index + 1]
        registers.append((first << 8 | second) if byte_order == "big" else (second << 8 | first))
    return registers if word_order == "big" else list(reversed(registers))


def decode_registers(
    registers: Sequence[int],
    value_type: ValueType,
    byte_order: Order = "big",
    word_order: Order = "big",
    bit: int | None = None,
) -> RawValue:
    if value_type.is_bool:
        if bit is None:
            raise ValueError("a bool from a register needs a bit")
        word = registers_to_bytes(registers[:1], byte_order, "big")
        return bool((int.from_bytes(word, "big") >> bit) & 1)
    data = registers_to_bytes(registers[: value_type.size], byte_order, word_order)
    value: RawValue = struct.unpack(">" + value_type.struct_format, data)[0]
    return value


def encode_registers(
    value: RawValue,
    value_type: ValueType,
    byte_order: Order = "big",
    word_order: Order = "big",
) -> list[int]:
    """Registers for a value already checked against the type's range (see values.py)."""
    data = struct.pack(">" + value_type.struct_format, value)
    return bytes_to_registers(data, byte_order, word_order)


def decode_s7(data: bytes, value_type: ValueType, bit: int | None = None) -> RawValue:
    if value_type.is_bool:
        if bit is None:
            raise ValueError("an S7 BOOL needs a bit")
        return bool((data[0] >> bit) & 1)
    value: RawValue = struct.unpack(">" + value_type.struct_format, data[: value_type.size])[0]
    return value


def encode_s7(value: RawValue, value_type: ValueType) -> bytes:
    """Bytes for a non-BOOL value (a BOOL is written as a single bit, see the S7 driver)."""
    return struct.pack(">" + value_type.struct_format, value)
