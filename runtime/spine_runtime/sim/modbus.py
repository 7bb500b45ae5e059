"""Modbus TCP face of the simulated press, on pymodbus's server (SimDevice datastore).

`SimApp` starts and stops it. Every request refreshes the registers it touches from the
physics, so a read always returns the current tick's values and a write of targetSpeed or
running reaches the physics before the response leaves. Requests are counted per function code
through pymodbus's `trace_pdu` hook.
"""

from __future__ import annotations

import logging

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simdevice import SimAction

from spine_runtime.sim.addressmap import (
    MODBUS_BENCH_START,
    MODBUS_COIL_RUNNING,
    MODBUS_RUNNING,
    MODBUS_TARGET_SPEED,
    MODBUS_WRITABLE,
    modbus_registers,
)
from spine_runtime.sim.config import ModbusSettings
from spine_runtime.sim.counting import RequestCounts
from spine_runtime.sim.physics import PressPhysics, check_target_speed

log = logging.getLogger(__name__)

PROTOCOL = "modbus"

FUNCTION_NAMES = {
    1: "read_coils",
    2: "read_discrete_inputs",
    3: "read_holding_registers",
    4: "read_input_registers",
    5: "write_single_coil",
    6: "write_single_register",
    15: "write_multiple_coils",
    16: "write_multiple_registers",
    22: "mask_write_register",
    23: "read_write_multiple_registers",
}
COIL_FUNCTIONS = frozenset({1, 5, 15})
DISCRETE_INPUT_FUNCTIONS = frozenset({2})
BITS_PER_BLOCK = 16


def request_kind(function_code: int) -> str:
    return FUNCTION_NAMES.get(function_code, f"function_{function_code}")


def _register_blocks(bench_count: int) -> tuple[list[SimData], list[SimData]]:
    """Holding and input register blocks: every address up to the last bench register exists
    (reserved ones read as 0), and only the setpoints accept writes."""
    writable_end = max(MODBUS_WRITABLE) + 1
    holding = [
        SimData(0, count=writable_end, values=0, datatype=DataType.REGISTERS),
        SimData(
            writable_end,
            count=MODBUS_BENCH_START - writable_end,
            values=0,
            datatype=DataType.REGISTERS,
            readonly=True,
        ),
    ]
    if bench_count:
        holding.append(
            SimData(
                MODBUS_BENCH_START,
                count=bench_count,
                values=0,
                datatype=DataType.REGISTERS,
                readonly=True,
            )
        )
    inputs = [SimData(0, count=MODBUS_BENCH_START + bench_count, datatype=DataType.REGISTERS)]
    return holding, inputs


def _bit_block() -> list[SimData]:
    return [SimData(0, values=[False] * BITS_PER_BLOCK, datatype=DataType.BITS)]


class ModbusPressServer:
    """Serves the press's register map on one TCP port."""

    def __init__(
        self, settings: ModbusSettings, physics: PressPhysics, counts: RequestCounts
    ) -> None:
        self.settings = settings
        self.physics = physics
        self.counts = counts
        self._server: ModbusTcpServer | None = None
        self._image: list[int] = []
        self._image_version = -1

    def _device(self, unit_id: int, action: SimAction) -> SimDevice:
        holding, inputs = _register_blocks(self.physics.bench_count)
        return SimDevice(
            unit_id,
            simdata=(_bit_block(), _bit_block(), holding, inputs),
            action=action,
        )

    async def start(self) -> None:
        devices = [self._device(self.settings.unit_id, self._serve)]
        if self.settings.unit_id != 0:
            # pymodbus falls back to device 0 for an unknown unit id; without one it logs a
            # traceback. A Modbus TCP gateway answers "target device failed to respond".
            devices.append(self._device(0, self._unknown_unit))
        self._server = ModbusTcpServer(
            devices,
            address=(self.settings.host, self.settings.port),
            trace_pdu=self._trace_request,
        )
        await self._server.serve_forever(background=True)
        log.info(
            "Modbus TCP listening on %s:%s (unit id %s, %s bench registers at %s)",
            self.settings.host,
            self.settings.port,
            self.settings.unit_id or "any",
            self.physics.bench_count,
            MODBUS_BENCH_START,
        )

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

    def _trace_request(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.counts.count(PROTOCOL, request_kind(pdu.function_code))
        return pdu

    def _current_image(self) -> list[int]:
        if self._image_version != self.physics.version:
            self._image = modbus_registers(self.physics.snapshot())
            self._image_version = self.physics.version
        return self._image

    async def _unknown_unit(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        return ExcCodes.GATEWAY_NO_RESPONSE

    async def _serve(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this before every access: apply writes, then refresh the block."""
        if function_code in COIL_FUNCTIONS or function_code in DISCRETE_INPUT_FUNCTIONS:
            if values is not None:
                refused = self._write_coils(address, [bool(value) for value in values])
                if refused is not None:
                    return refused
            # One 16-bit register holds the block's bits, bit 0 first.
            registers[0] = int(self.physics.running) << MODBUS_COIL_RUNNING
            return None
        if values is not None:
            refused = self._write_registers(address, [int(value) for value in values])
            if refused is not None:
                return refused
        image = self._current_image()
        registers[: len(image)] = image
        return None

    def _write_coils(self, address: int, bits: list[bool]) -> ExcCodes | None:
        written = range(address, address + len(bits))
        if any(coil != MODBUS_COIL_RUNNING for coil in written):
            return ExcCodes.ILLEGAL_ADDRESS
        self.physics.set_running(bits[MODBUS_COIL_RUNNING - address])
        return None

    def _write_registers(self, address: int, words: list[int]) -> ExcCodes | None:
        # Validate the whole request first: a refused write changes nothing.
        updates = dict(zip(range(address, address + len(words)), words, strict=True))
        target_speed = updates.get(MODBUS_TARGET_SPEED)
        running = updates.get(MODBUS_RUNNING)
        if target_speed is not None:
            try:
                check_target_speed(target_speed)
            except ValueError:
                return ExcCodes.ILLEGAL_VALUE
        if running is not None and running not in (0, 1):
            return ExcCodes.ILLEGAL_VALUE
        if target_speed is not None:
            self.physics.set_target_speed(target_speed)
        if running is not None:
            self.physics.set_running(bool(running))
        return None
