"""Raw PLC data to values and back, for every type and byte and word order."""

from __future__ import annotations

import math
import struct

import pytest

from spine_runtime.gateway.addresses import MODBUS_TYPES, S7_TYPES
from spine_runtime.gateway.codec import (
    decode_registers,
    decode_s7,
    encode_registers,
    encode_s7,
    registers_to_bytes,
)

# float32 1.5 is 0x3FC00000: bytes A=3F B=C0 C=00 D=00
ORDERS = {
    ("big", "big"): [0x3FC0, 0x0000],  # ABCD, the Modbus convention
    ("big", "little"): [0x0000, 0x3FC0],  # CDAB, word swap
    ("little", "big"): [0xC03F, 0x0000],  # BADC, byte swap
    ("little", "little"): [0x0000, 0xC03F],  # DCBA
}


@pytest.mark.parametrize(("orders", "registers"), ORDERS.items())
def test_float32_in_every_byte_and_word_order(orders, registers) -> None:
    byte_order, word_order = orders
    value_type = MODBUS_TYPES["float32"]
    assert decode_registers(registers, value_type, byte_order, word_order) == 1.5
    assert encode_registers(1.5, value_type, byte_order, word_order) == registers


@pytest.mark.parametrize(
    ("name", "value", "registers"),
    [
        ("int16", -2, [0xFFFE]),
        ("uint16", 65535, [0xFFFF]),
        ("int32", -2, [0xFFFF, 0xFFFE]),
        ("uint32", 0x12345678, [0x1234, 0x5678]),
        ("int64", -(2**40), [0xFFFF, 0xFF00, 0x0000, 0x0000]),
        ("uint64", 2**64 - 1, [0xFFFF] * 4),
        ("float32", -0.25, [0xBE80, 0x0000]),
        ("float64", 1.0, [0x3FF0, 0, 0, 0]),
    ],
)
def test_every_modbus_type_round_trips(name: str, value: float, registers: list[int]) -> None:
    value_type = MODBUS_TYPES[name]
    assert decode_registers(registers, value_type) == value
    assert encode_registers(value, value_type) == registers
    # little word order reverses the registers, little byte order swaps within each
    swapped = [((r & 0xFF) << 8) | (r >> 8) for r in reversed(registers)]
    assert decode_registers(swapped, value_type, "little", "little") == value


def test_int32_word_order_little() -> None:
    assert decode_registers([0x5678, 0x1234], MODBUS_TYPES["uint32"], "big", "little") == (
        0x12345678
    )


def test_a_bool_is_one_bit_of_a_register() -> None:
    bool_type = MODBUS_TYPES["bool"]
    assert decode_registers([0b1000], bool_type, bit=3) is True
    assert decode_registers([0b1000], bool_type, bit=2) is False
    assert decode_registers([0x0100], bool_type, bit=8) is True
    # byte order applies before the bit is taken
    assert decode_registers([0x0100], bool_type, "little", bit=0) is True
    with pytest.raises(ValueError):
        decode_registers([1], bool_type)


def test_not_a_number_decodes_as_nan_not_an_error() -> None:
    assert math.isnan(decode_registers([0x7FC0, 0x0000], MODBUS_TYPES["float32"]))
    assert decode_registers([0x7F80, 0x0000], MODBUS_TYPES["float32"]) == math.inf


def test_registers_to_bytes_is_big_endian_by_default() -> None:
    assert registers_to_bytes([0x0102, 0x0304], "big", "big") == b"\x01\x02\x03\x04"


@pytest.mark.parametrize(
    ("name", "value", "data"),
    [
        ("BYTE", 255, b"\xff"),
        ("SINT", -1, b"\xff"),
        ("USINT", 7, b"\x07"),
        ("INT", -2, b"\xff\xfe"),
        ("UINT", 65535, b"\xff\xff"),
        ("WORD", 0x1234, b"\x12\x34"),
        ("DINT", -2, b"\xff\xff\xff\xfe"),
        ("UDINT", 0x12345678, b"\x12\x34\x56\x78"),
        ("DWORD", 1, b"\x00\x00\x00\x01"),
        ("LINT", -1, b"\xff" * 8),
        ("ULINT", 2**64 - 1, b"\xff" * 8),
        ("LWORD", 1, b"\x00" * 7 + b"\x01"),
        ("REAL", 1.5, struct.pack(">f", 1.5)),
        ("LREAL", -2.5, struct.pack(">d", -2.5)),
    ],
)
def test_every_s7_type_round_trips(name: str, value: float, data: bytes) -> None:
    assert decode_s7(data + b"\x99", S7_TYPES[name]) == value  # trailing bytes are ignored
    assert encode_s7(value, S7_TYPES[name]) == data


def test_an_s7_bool_is_one_bit_of_a_byte() -> None:
    assert decode_s7(b"\x04", S7_TYPES["BOOL"], bit=2) is True
    assert decode_s7(b"\x04", S7_TYPES["BOOL"], bit=1) is False
    with pytest.raises(ValueError):
        decode_s7(b"\x04", S7_TYPES["BOOL"])
