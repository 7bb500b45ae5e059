"""The simulated press's address map over Modbus TCP, OPC UA and S7, and its encoders.

The protocol servers (`modbus.py`, `opcua.py`, `s7.py`) encode `PressValues` with these
functions; the gateway's tests and benchmarks import the same constants so they read the press
where it is. The map is stable: add entries, never move one. README.md in this folder has the
same tables.

Modbus TCP (unit id 1 by default; 0 in the config answers every unit id). Holding registers
(FC 3 read, FC 6/16 write); input registers (FC 4) mirror the same layout read-only. 32-bit
values are big-endian with the high word first (ABCD). Reserved addresses 13-99 read as 0;
writes to anything but 0 and 1 are refused with exception 02 (illegal address), a value out
of range with exception 03 (illegal data value).

    0        targetSpeed    uint16   rw   0..60 strokes per minute
    1        running        uint16   rw   0 or 1
    2-3      temperature    float32  r    degrees Celsius
    4-5      pressure       float32  r    bar
    6-7      cycleCount     uint32   r    +1 per completed stroke, wraps at 2^32
    8-9      counter        uint32   r    +1 per tick, wraps at 2^32
    10-11    actualSpeed    float32  r    strokes per minute, ramps towards targetSpeed
    12       temperatureX10 int16    r    0.1 degrees Celsius; -32768 when not a number
    100+i    bench[i]       uint16   r    i = 0..N-1; (counter + i) mod 65536, every tick
    coil 0 / discrete input 0: running (coil writable)

OPC UA: object `Press` under Objects, namespace `urn:spine:sim:press` (index 2 as served, but
resolve it by URI), string node ids `ns=2;s=Press.<name>`: targetSpeed UInt16 (writable,
0..60, BadOutOfRange otherwise), running Boolean (writable), temperature, pressure, actualSpeed
Double, cycleCount, counter UInt32, bench[i] UInt16 (`ns=2;s=Press.bench[0]`...).

S7 (rack 0, slot 1 or any: the server ignores them): DB1, big-endian as S7 is.

    DBW0     targetSpeed INT    rw   a written value is clamped to 0..60
    DBX2.0   running     BOOL   rw
    DBD4     temperature REAL   r
    DBD8     pressure    REAL   r
    DBD12    cycleCount  UDINT  r    (DWORD on an S7-300)
    DBD16    counter     UDINT  r
    DBD20    actualSpeed REAL   r
    DBW100+2i bench[i]   WORD   r    DB length 100 + 2N bytes
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from spine_runtime.sim.physics import PressValues

ModbusType = Literal["uint16", "int16", "uint32", "float32"]

MODBUS_BENCH_START = 100
MODBUS_COIL_RUNNING = 0
MODBUS_DISCRETE_INPUT_RUNNING = 0
# Raw scaled integers are how many Modbus devices report analog values; a gateway's scaling
# (factor 0.1) is tested against this register.
TEMPERATURE_X10_NOT_A_NUMBER = -32768


@dataclass(frozen=True)
class ModbusField:
    """One named value in the holding (and input) register map."""

    name: str
    address: int
    data_type: ModbusType
    writable: bool = False

    @property
    def count(self) -> int:
        return 2 if self.data_type in ("uint32", "float32") else 1


MODBUS_FIELDS: tuple[ModbusField, ...] = (
    ModbusField("targetSpeed", 0, "uint16", writable=True),
    ModbusField("running", 1, "uint16", writable=True),
    ModbusField("temperature", 2, "float32"),
    ModbusField("pressure", 4, "float32"),
    ModbusField("cycleCount", 6, "uint32"),
    ModbusField("counter", 8, "uint32"),
    ModbusField("actualSpeed", 10, "float32"),
    ModbusField("temperatureX10", 12, "int16"),
)
MODBUS_FIELD_BY_NAME = {field.name: field for field in MODBUS_FIELDS}
MODBUS_TARGET_SPEED = MODBUS_FIELD_BY_NAME["targetSpeed"].address
MODBUS_RUNNING = MODBUS_FIELD_BY_NAME["running"].address
MODBUS_WRITABLE = frozenset(field.address for field in MODBUS_FIELDS if field.writable)


def float32_bytes(value: float) -> bytes:
    """IEEE 754 single precision, big-endian; a double beyond its range becomes +-infinity,
    as a C cast in a PLC would make it, instead of an exception."""
    try:
        return struct.pack(">f", value)
    except OverflowError:
        return struct.pack(">f", math.copysign(math.inf, value))


def float32_registers(value: float) -> list[int]:
    high, low = struct.unpack(">HH", float32_bytes(value))
    return [high, low]


def uint32_registers(value: int) -> list[int]:
    return [(value >> 16) & 0xFFFF, value & 0xFFFF]


def registers_to_float32(registers: Sequence[int]) -> float:
    return float(struct.unpack(">f", struct.pack(">HH", registers[0], registers[1]))[0])


def registers_to_uint32(registers: Sequence[int]) -> int:
    return (registers[0] << 16) | registers[1]


def temperature_x10(temperature: float) -> int:
    if not math.isfinite(temperature):
        return TEMPERATURE_X10_NOT_A_NUMBER
    return max(-32767, min(32767, round(temperature * 10)))


def modbus_registers(values: PressValues) -> list[int]:
    """The holding register image from address 0 to the last bench register."""
    registers = [0] * (MODBUS_BENCH_START + len(values.bench))
    registers[0] = values.target_speed
    registers[1] = int(values.running)
    registers[2:4] = float32_registers(values.temperature)
    registers[4:6] = float32_registers(values.pressure)
    registers[6:8] = uint32_registers(values.cycle_count)
    registers[8:10] = uint32_registers(values.counter)
    registers[10:12] = float32_registers(values.actual_speed)
    registers[12] = temperature_x10(values.temperature) & 0xFFFF
    registers[MODBUS_BENCH_START:] = values.bench
    return registers


S7_DB_NUMBER = 1
S7_TARGET_SPEED = 0
S7_RUNNING_BYTE, S7_RUNNING_BIT = 2, 0
S7_TEMPERATURE = 4
S7_PRESSURE = 8
S7_CYCLE_COUNT = 12
S7_COUNTER = 16
S7_ACTUAL_SPEED = 20
S7_BENCH_START = 100


def s7_db_size(bench_count: int) -> int:
    return S7_BENCH_START + 2 * bench_count


def s7_db_image(values: PressValues) -> bytearray:
    """DB1 as the PLC holds it."""
    data = bytearray(s7_db_size(len(values.bench)))
    struct.pack_into(">h", data, S7_TARGET_SPEED, values.target_speed)
    data[S7_RUNNING_BYTE] = int(values.running) << S7_RUNNING_BIT
    data[S7_TEMPERATURE : S7_TEMPERATURE + 4] = float32_bytes(values.temperature)
    data[S7_PRESSURE : S7_PRESSURE + 4] = float32_bytes(values.pressure)
    struct.pack_into(">II", data, S7_CYCLE_COUNT, values.cycle_count, values.counter)
    data[S7_ACTUAL_SPEED : S7_ACTUAL_SPEED + 4] = float32_bytes(values.actual_speed)
    struct.pack_into(f">{len(values.bench)}H", data, S7_BENCH_START, *values.bench)
    return data


def s7_setpoints(data: bytes | bytearray) -> tuple[int, bool]:
    """targetSpeed (signed, as a client may have written it) and running from a DB image."""
    (target_speed,) = struct.unpack_from(">h", data, S7_TARGET_SPEED)
    running = bool(data[S7_RUNNING_BYTE] >> S7_RUNNING_BIT & 1)
    return target_speed, running


OpcUaType = Literal["Boolean", "UInt16", "UInt32", "Double"]

OPCUA_NAMESPACE_URI = "urn:spine:sim:press"
OPCUA_OBJECT_NAME = "Press"


@dataclass(frozen=True)
class OpcUaVariable:
    """One variable under the `Press` object; its node id is `ns=<ns>;s=Press.<name>`."""

    name: str
    data_type: OpcUaType
    writable: bool = False

    @property
    def node_id(self) -> str:
        return f"{OPCUA_OBJECT_NAME}.{self.name}"


OPCUA_VARIABLES: tuple[OpcUaVariable, ...] = (
    OpcUaVariable("targetSpeed", "UInt16", writable=True),
    OpcUaVariable("running", "Boolean", writable=True),
    OpcUaVariable("temperature", "Double"),
    OpcUaVariable("pressure", "Double"),
    OpcUaVariable("cycleCount", "UInt32"),
    OpcUaVariable("counter", "UInt32"),
    OpcUaVariable("actualSpeed", "Double"),
)


def opcua_bench_variable(index: int) -> OpcUaVariable:
    return OpcUaVariable(f"bench[{index}]", "UInt16")


def opcua_values(values: PressValues) -> dict[str, bool | int | float]:
    """Variable name to value, bench included, in the order the variables are declared."""
    named: dict[str, bool | int | float] = {
        "targetSpeed": values.target_speed,
        "running": values.running,
        "temperature": values.temperature,
        "pressure": values.pressure,
        "cycleCount": values.cycle_count,
        "counter": values.counter,
        "actualSpeed": values.actual_speed,
    }
    for index, value in enumerate(values.bench):
        named[opcua_bench_variable(index).name] = value
    return named
