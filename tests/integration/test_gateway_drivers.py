"""The protocol drivers against real servers started here, without the gateway process.

A pymodbus server with holes in its register map (a device that refuses reads over unmapped
addresses) and a python-snap7 server with one DB missing: the cases the press simulator does
not have. Each server runs on a free 127.0.0.1 port and is stopped by the test.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import snap7
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from spine_runtime.config.gateway import Connection, Tag
from spine_runtime.gateway.drivers.base import BoundTag, ConnectionLost, PollGroup
from spine_runtime.gateway.drivers.modbus import ModbusDriver
from spine_runtime.gateway.drivers.s7 import S7Driver
from spine_runtime.gateway.metrics import GatewayMetrics
from tests.support.processes import free_port

pytestmark = pytest.mark.integration


def bind(connection: Connection, **fields: Any) -> BoundTag:
    tag = Tag.model_validate(
        {"connection": connection.name, "thing": "press-1", "property": fields["name"], **fields}
    )
    return BoundTag.bind(tag, connection)


class CountingModbusServer:
    """A device with registers 0-9 and 20-29 only: a read across 10-19 gets exception 2."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[tuple[int, int, int]] = []  # function code, address, count
        registers = list(range(100, 110)) + list(range(200, 210))
        self.device = SimDevice(
            1,
            simdata=(
                [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                [
                    SimData(0, values=registers[:10], datatype=DataType.REGISTERS),
                    SimData(20, values=registers[10:], datatype=DataType.REGISTERS),
                ],
                [SimData(0, count=30, values=0, datatype=DataType.REGISTERS)],
            ),
        )
        self.server = ModbusTcpServer(
            self.device, address=("127.0.0.1", self.port), trace_pdu=self._trace
        )

    def _trace(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.requests.append((pdu.function_code, pdu.address, pdu.count))
        return pdu


@pytest.fixture
async def modbus_device() -> AsyncIterator[CountingModbusServer]:
    device = CountingModbusServer()
    await device.server.serve_forever(background=True)
    yield device
    await device.server.shutdown()


async def test_modbus_reads_around_gaps_a_device_refuses(modbus_device) -> None:
    connection = Connection.model_validate(
        {
            "name": "plc",
            "modbusTcp": {
                "host": "127.0.0.1",
                "port": modbus_device.port,
                "timeout": 1,
                "maxGapRegisters": 16,
            },
        }
    )
    tags = [
        bind(connection, name="a", address="holding:0", type="uint16"),
        bind(connection, name="b", address="holding:8", type="uint32"),
        bind(connection, name="c", address="holding:20", type="int16"),
        bind(connection, name="d", address="holding:29", type="uint16"),
    ]
    driver = ModbusDriver(connection, tags, GatewayMetrics())
    await driver.connect()
    try:
        (group,) = driver.groups
        assert [(r.start, r.count) for r in group.plan] == [(0, 30)]  # one read planned
        readings = await driver.poll(group)
        assert {r.tag.name: r.value for r in readings} == {
            "a": 100,
            "b": (108 << 16) | 109,
            "c": 200,
            "d": 209,
        }
        # the refused read, then one read per gap-free run; from then on only those
        runs = [(3, 0, 1), (3, 8, 2), (3, 20, 1), (3, 29, 1)]
        assert modbus_device.requests == [(3, 0, 30), *runs]
        modbus_device.requests.clear()
        await driver.poll(group)
        assert modbus_device.requests == runs
        assert group.requests_last_cycle == 4
    finally:
        await driver.close()


async def test_modbus_exception_fails_only_the_tags_of_that_read(modbus_device) -> None:
    connection = Connection.model_validate(
        {
            "name": "plc",
            "modbusTcp": {
                "host": "127.0.0.1",
                "port": modbus_device.port,
                "timeout": 1,
                "maxGapRegisters": 0,
            },
        }
    )
    tags = [
        bind(connection, name="good", address="holding:1", type="uint16"),
        bind(connection, name="missing", address="holding:15", type="uint16"),
    ]
    driver = ModbusDriver(connection, tags, GatewayMetrics())
    await driver.connect()
    try:
        readings = {r.tag.name: r for r in await driver.poll(driver.groups[0])}
        assert readings["good"].value == 101 and readings["good"].error is None
        assert readings["missing"].error is not None
        assert "exception 2 (illegal data address) for holding 15..15" in readings["missing"].error
    finally:
        await driver.close()


async def test_an_unreachable_modbus_device_is_a_clear_connection_error() -> None:
    port = free_port()
    connection = Connection.model_validate(
        {"name": "plc", "modbusTcp": {"host": "127.0.0.1", "port": port, "timeout": 0.5}}
    )
    driver = ModbusDriver(connection, [], GatewayMetrics())
    with pytest.raises(ConnectionLost, match=f"cannot reach Modbus device 127.0.0.1:{port}"):
        await driver.connect()
    await driver.close()


@pytest.fixture
def s7_server() -> Iterator[tuple[snap7.Server, int, bytearray]]:
    server = snap7.Server(log=False)
    db1 = bytearray(64)
    struct.pack_into(">hf", db1, 0, -7, 81.5)
    db1[10] = 0b0000_0100
    server.register_area(snap7.SrvArea.DB, 1, db1)
    port = free_port()
    server.start(tcp_port=port)
    yield server, port, db1
    server.stop()
    server.destroy()


async def test_s7_reads_many_tags_in_one_request_and_a_missing_db_fails_alone(s7_server) -> None:
    _, port, db1 = s7_server
    connection = Connection.model_validate(
        {"name": "s7", "s7": {"host": "127.0.0.1", "port": port, "rack": 0, "slot": 1}}
    )
    tags = [
        bind(connection, name="speed", address="DB1.DBW0", type="INT"),
        bind(connection, name="temperature", address="DB1.2", type="REAL"),
        bind(connection, name="flag", address="DB1.DBX10.2", type="BOOL"),
        bind(connection, name="other", address="DB2.0", type="DINT"),
        bind(connection, name="m", address="MW0", type="WORD"),
    ]
    driver = S7Driver(connection, tags, GatewayMetrics())
    await driver.connect()
    try:
        (group,) = driver.groups
        assert len(group.plan) == 1 and len(group.plan[0].items) == 3  # DB1, DB2, M
        readings = {r.tag.name: r for r in await driver.poll(group)}
        assert readings["speed"].value == -7
        assert readings["temperature"].value == 81.5
        assert readings["flag"].value is True
        assert readings["other"].error and "object does not exist" in readings["other"].error
        assert readings["m"].error and "the PLC refused M bytes 0..1" in readings["m"].error
        # writes: a value, and a bool written as one bit (the other bits of the byte kept)
        await driver.write(tags[0], 1234)
        assert struct.unpack_from(">h", db1, 0)[0] == 1234
        assert (await driver.read_back(tags[0])).value == 1234
    finally:
        await driver.close()


async def test_an_s7_plc_that_does_not_answer_is_a_clear_connection_error() -> None:
    port = free_port()
    connection = Connection.model_validate(
        {
            "name": "s7",
            "s7": {"host": "127.0.0.1", "port": port, "rack": 0, "slot": 1, "timeout": 0.5},
        }
    )
    driver = S7Driver(connection, [], GatewayMetrics())
    with pytest.raises(ConnectionLost, match=f"cannot open an S7 session with 127.0.0.1:{port}"):
        await driver.connect()
    await driver.close()


async def test_poll_group_planning_is_per_interval() -> None:
    connection = Connection.model_validate({"name": "plc", "modbusTcp": {"host": "h"}})
    tags = [
        bind(connection, name="fast", address="holding:0", type="uint16", interval=10),
        bind(connection, name="slow", address="holding:1", type="uint16", interval=1000),
        bind(connection, name="default", address="holding:2", type="uint16"),
    ]
    driver = ModbusDriver(connection, tags, GatewayMetrics())
    groups = driver.group_by_interval()
    assert [(g.interval, [t.name for t in g.tags]) for g in groups] == [
        (0.01, ["fast"]),
        (1.0, ["slow", "default"]),
    ]
    assert isinstance(groups[0], PollGroup)
    await asyncio.sleep(0)
