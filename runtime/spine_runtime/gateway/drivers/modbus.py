"""Modbus TCP driver on pymodbus: coalesced reads, single-register and coil writes.

The connection runner drives it. Each poll group's tags are planned once into the fewest reads
(planner.py); a device that refuses a read spanning unmapped registers (exception 2, illegal
data address) gets that read split at its gaps for the rest of the session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from spine_runtime.gateway.addresses import ModbusAddress, ModbusTable, register_count
from spine_runtime.gateway.codec import decode_registers, encode_registers
from spine_runtime.gateway.drivers.base import (
    BoundTag,
    ConnectionLost,
    Driver,
    PollGroup,
    Reading,
)
from spine_runtime.gateway.planner import Read, Span, plan_modbus_reads

log = logging.getLogger(__name__)

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    10: "gateway path unavailable",
    11: "gateway target did not respond",
}


def modbus_location(tag: BoundTag) -> ModbusAddress:
    location = tag.address.location
    assert isinstance(location, ModbusAddress)
    return location


class ModbusDriver(Driver):
    protocol = "modbusTcp"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = self.connection.modbus_tcp
        assert settings is not None
        self.settings = settings
        self.client: AsyncModbusTcpClient | None = None
        # One request at a time: writes and polls of several groups share the socket, and
        # small devices serve one transaction at a time anyway.
        self.lock = asyncio.Lock()

    def unit_of(self, tag: BoundTag) -> int:
        return tag.config.unit_id if tag.config.unit_id is not None else self.settings.unit_id

    def span_of(self, tag: BoundTag) -> Span:
        location = modbus_location(tag)
        assert tag.address.value_type is not None
        return Span(
            tag,
            (self.unit_of(tag), location.table),
            location.offset,
            register_count(tag.address.value_type),
        )

    def plan(self, tags: list[BoundTag]) -> list[Read]:
        return plan_modbus_reads(
            [self.span_of(tag) for tag in tags],
            max_registers=self.settings.max_registers_per_read,
            max_bits=self.settings.max_bits_per_read,
            max_gap_registers=self.settings.max_gap_registers,
            max_gap_bits=self.settings.max_gap_bits,
            bit_blocks=frozenset(
                (self.unit_of(tag), modbus_location(tag).table)
                for tag in tags
                if modbus_location(tag).table.holds_bits
            ),
        )

    async def connect(self) -> None:
        self.client = AsyncModbusTcpClient(
            self.settings.host,
            port=self.settings.port,
            timeout=self.settings.timeout,
            retries=0,
            reconnect_delay=0,  # the runner reconnects, with its own backoff and status
        )
        if not await self.client.connect():
            raise ConnectionLost(
                f"cannot reach Modbus device {self.settings.host}:{self.settings.port}"
            )
        self.groups = self.group_by_interval()
        for group in self.groups:
            group.plan = self.plan(group.tags)

    async def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    async def _request(self, table: ModbusTable, start: int, count: int, unit: int) -> Any:
        client = self.client
        if client is None:
            raise ConnectionLost("not connected")
        method = {
            ModbusTable.COIL: client.read_coils,
            ModbusTable.DISCRETE: client.read_discrete_inputs,
            ModbusTable.INPUT: client.read_input_registers,
            ModbusTable.HOLDING: client.read_holding_registers,
        }[table]
        started = time.monotonic()
        try:
            async with self.lock:
                response = await method(start, count=count, device_id=unit)
        except (TimeoutError, ModbusException, OSError) as error:
            self.record_read(False, time.monotonic() - started)
            raise ConnectionLost(
                f"read of {table} {start}..{start + count - 1} (unit {unit}) failed: {error}"
            ) from error
        self.record_read(not response.isError(), time.monotonic() - started)
        return response

    async def poll(self, group: PollGroup) -> list[Reading]:
        readings: list[Reading] = []
        plan: list[Read] = group.plan
        requests = 0
        index = 0
        while index < len(plan):
            read = plan[index]
            unit, table = cast(tuple[int, ModbusTable], read.block)
            response = await self._request(table, read.start, read.count, unit)
            requests += 1
            source_time = time.time()
            if response.isError():
                code = getattr(response, "exception_code", 0)
                runs = read.runs()
                if code == 2 and len(runs) > 1:
                    log.warning(
                        "Modbus device of connection %s refused a read across unused %s "
                        "addresses %d..%d; reading around the gaps from now on",
                        self.connection.name,
                        table,
                        read.start,
                        read.end - 1,
                    )
                    plan[index : index + 1] = runs
                    continue
                reason = EXCEPTION_NAMES.get(code, "unknown exception")
                message = (
                    f"the device answered exception {code} ({reason}) for {table} "
                    f"{read.start}..{read.end - 1} of unit {unit}"
                )
                readings += [
                    Reading(
                        span.key, error=message, reason="modbus_exception", source_time=source_time
                    )
                    for span in read.members
                ]
            else:
                data = response.bits if table.holds_bits else response.registers
                readings += [
                    self._decode(span.key, data, span.offset - read.start, source_time)
                    for span in read.members
                ]
            index += 1
        group.requests_last_cycle = requests
        return readings

    def _decode(self, tag: BoundTag, data: list[Any], at: int, source_time: float) -> Reading:
        location = modbus_location(tag)
        value_type = tag.address.value_type
        assert value_type is not None
        if location.table.holds_bits:
            return Reading(tag, bool(data[at]), source_time=source_time)
        registers = data[at : at + register_count(value_type)]
        value = decode_registers(
            registers,
            value_type,
            tag.config.byte_order or "big",
            tag.config.word_order or "big",
            location.bit,
        )
        return Reading(tag, value, source_time=source_time)

    async def write(self, tag: BoundTag, raw: Any) -> None:
        client = self.client
        if client is None:
            raise ConnectionLost("not connected")
        location = modbus_location(tag)
        value_type = tag.address.value_type
        assert value_type is not None
        unit = self.unit_of(tag)
        try:
            async with self.lock:
                if location.table is ModbusTable.COIL:
                    response = await client.write_coil(location.offset, bool(raw), device_id=unit)
                else:
                    registers = encode_registers(
                        raw,
                        value_type,
                        tag.config.byte_order or "big",
                        tag.config.word_order or "big",
                    )
                    if len(registers) == 1:
                        response = await client.write_register(
                            location.offset, registers[0], device_id=unit
                        )
                    else:
                        response = await client.write_registers(
                            location.offset, registers, device_id=unit
                        )
        except (TimeoutError, ModbusException, OSError) as error:
            raise ConnectionLost(f"write to {location} failed: {error}") from error
        if response.isError():
            code = getattr(response, "exception_code", 0)
            raise ValueError(
                f"the device refused the write to {location}: exception {code} "
                f"({EXCEPTION_NAMES.get(code, 'unknown exception')})"
            )

    async def read_back(self, tag: BoundTag) -> Reading:
        readings = await self.poll(PollGroup(0, [tag], self.plan([tag])))
        return readings[0]
