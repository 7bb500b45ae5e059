"""The press simulator as the gateway will meet it: real clients against `spine-runtime sim`.

pymodbus, asyncua and python-snap7 clients read the documented address map, write setpoints
over one protocol and see them over the others, and check the request counts the gateway's
tests rely on ("100 contiguous tags cost one request", "a subscription costs no Read call").
One simulator serves the module; tests that change its state put it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import pytest
import snap7
from asyncua import Client as OpcUaClient
from asyncua import Node, ua
from pymodbus.client import AsyncModbusTcpClient
from snap7.util import get_bool, get_int, get_real, get_udint, set_bool, set_int

from spine_runtime.sim.addressmap import (
    MODBUS_BENCH_START,
    MODBUS_FIELD_BY_NAME,
    OPCUA_NAMESPACE_URI,
    S7_ACTUAL_SPEED,
    S7_BENCH_START,
    S7_COUNTER,
    S7_CYCLE_COUNT,
    S7_DB_NUMBER,
    S7_PRESSURE,
    S7_RUNNING_BIT,
    S7_RUNNING_BYTE,
    S7_TARGET_SPEED,
    S7_TEMPERATURE,
    registers_to_float32,
    registers_to_uint32,
    s7_db_size,
)
from tests.support.processes import ManagedProcess, eventually, port_open, wait_until
from tests.support.sim import REPO_ROOT, SimHandle, SimPorts, start_sim

pytestmark = pytest.mark.integration

BENCH = 100
UNIT = 1
CHILD_ENV = {"PYTHONPATH": str(REPO_ROOT / "runtime")}
NOT_A_NUMBER_FLOAT32 = [0x7FC0, 0x0000]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimHandle]:
    with start_sim(tmp_path_factory.mktemp("sim"), benchRegisters=BENCH) as handle:
        yield handle


@pytest.fixture(autouse=True)
def restore_press(request: pytest.FixtureRequest) -> Iterator[None]:
    """Put the module's press back as it started, whatever a test changed."""
    yield
    if "sim" in request.fixturenames:
        sim: SimHandle = request.getfixturevalue("sim")
        sim.put_values(targetSpeed=30, running=True, temperature=None, pressure=None)


async def modbus_client(sim: SimHandle) -> AsyncModbusTcpClient:
    client = AsyncModbusTcpClient(sim.host, port=sim.ports.modbus, timeout=3, retries=0)
    assert await client.connect(), "cannot connect to the simulator's Modbus port"
    return client


def decode_holding(registers: Sequence[int], name: str) -> float | int:
    field = MODBUS_FIELD_BY_NAME[name]
    words = registers[field.address : field.address + field.count]
    if field.data_type == "float32":
        return registers_to_float32(words)
    if field.data_type == "uint32":
        return registers_to_uint32(words)
    if field.data_type == "int16":
        return struct.unpack(">h", struct.pack(">H", words[0]))[0]
    return words[0]


def s7_client(sim: SimHandle) -> snap7.Client:
    client = snap7.Client()
    client.connect(sim.host, 0, 1, tcp_port=sim.ports.s7)
    return client


def read_db(client: snap7.Client) -> bytearray:
    return client.db_read(S7_DB_NUMBER, 0, s7_db_size(BENCH))


def node_id(namespace: int, name: str) -> str:
    return f"ns={namespace};s=Press.{name}"


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """`eventually` for a condition that needs a client round trip to evaluate."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def test_modbus_serves_the_documented_map_and_the_counter_moves(sim: SimHandle) -> None:
    client = await modbus_client(sim)
    try:
        first = (await client.read_holding_registers(0, count=13, device_id=UNIT)).registers
        values = sim.values()
        assert decode_holding(first, "targetSpeed") == values["targetSpeed"] == 30
        assert decode_holding(first, "running") == 1
        assert decode_holding(first, "temperature") == pytest.approx(values["temperature"], abs=1)
        assert decode_holding(first, "actualSpeed") == pytest.approx(values["actualSpeed"], abs=1)
        assert 0 <= decode_holding(first, "pressure") < 230
        assert decode_holding(first, "temperatureX10") == pytest.approx(
            values["temperature"] * 10, abs=10
        )
        assert abs(decode_holding(first, "counter") - values["counter"]) <= 2

        inputs = (await client.read_input_registers(0, count=2, device_id=UNIT)).registers
        assert inputs == [30, 1]  # the input registers mirror the holding map
        assert (await client.read_coils(0, count=1, device_id=UNIT)).bits[0] is True
        assert (await client.read_discrete_inputs(0, count=1, device_id=UNIT)).bits[0] is True

        async def counter() -> int:
            registers = (await client.read_holding_registers(8, count=2, device_id=UNIT)).registers
            return registers_to_uint32(registers)

        start = await counter()

        async def counter_moved() -> bool:
            return await counter() > start

        await until(counter_moved, 5, "the Modbus counter to move")
    finally:
        client.close()


async def test_modbus_write_reaches_opcua_s7_and_values(sim: SimHandle) -> None:
    client = await modbus_client(sim)
    try:
        response = await client.write_register(0, 42, device_id=UNIT)
        assert not response.isError(), response
    finally:
        client.close()
    assert sim.values()["targetSpeed"] == 42  # a Modbus write reaches the physics at once

    async with OpcUaClient(sim.opcua_endpoint) as opcua:
        namespace = await opcua.get_namespace_index(OPCUA_NAMESPACE_URI)
        target_speed = opcua.get_node(node_id(namespace, "targetSpeed"))

        async def opcua_shows_42() -> bool:
            return bool(await target_speed.read_value() == 42)

        await until(opcua_shows_42, 3, "OPC UA targetSpeed to read 42")

    s7 = s7_client(sim)
    try:
        wait_until(lambda: get_int(read_db(s7), S7_TARGET_SPEED) == 42, 3, "DBW0 to read 42")
    finally:
        s7.disconnect()


async def test_modbus_refuses_bad_writes_and_changes_nothing(sim: SimHandle) -> None:
    client = await modbus_client(sim)
    try:
        out_of_range = await client.write_register(0, 61, device_id=UNIT)
        read_only = await client.write_register(2, 1, device_id=UNIT)
        not_a_bool = await client.write_registers(0, [40, 7], device_id=UNIT)
        other_coil = await client.write_coil(1, True, device_id=UNIT)
        other_unit = await client.read_holding_registers(0, count=1, device_id=UNIT + 1)
    finally:
        client.close()
    assert out_of_range.exception_code == 3  # illegal data value
    assert read_only.exception_code == 2  # illegal data address
    assert not_a_bool.exception_code == 3  # and targetSpeed 40 was not applied either
    assert other_coil.exception_code == 2
    assert other_unit.exception_code == 11  # gateway target device failed to respond
    values = sim.values()
    assert (values["targetSpeed"], values["running"]) == (30, True)


async def test_running_coil_and_register_stop_and_start_the_press(sim: SimHandle) -> None:
    client = await modbus_client(sim)
    try:
        assert not (await client.write_coil(0, False, device_id=UNIT)).isError()
        assert sim.values()["running"] is False
        registers = (await client.read_holding_registers(0, count=2, device_id=UNIT)).registers
        assert registers == [30, 0]
        assert not (await client.write_register(1, 1, device_id=UNIT)).isError()
        assert (await client.read_coils(0, count=1, device_id=UNIT)).bits[0] is True
    finally:
        client.close()
    assert sim.values()["running"] is True


async def test_one_read_of_the_bench_block_is_one_request(sim: SimHandle) -> None:
    client = await modbus_client(sim)
    try:
        sim.reset_counters()
        response = await client.read_holding_registers(
            MODBUS_BENCH_START, count=BENCH, device_id=UNIT
        )
        counts = sim.reset_counters()
    finally:
        client.close()
    bench = response.registers
    assert len(bench) == BENCH
    # Every register of one response comes from the same tick.
    assert all((value - bench[0]) % 65536 == index for index, value in enumerate(bench))
    assert counts == {"modbus": {"read_holding_registers": 1}}
    assert sim.requests("modbus") == {}
    metrics = sim.metrics()
    assert 'spine_sim_requests_total{kind="read_holding_registers",protocol="modbus"}' in metrics


async def test_opcua_reads_and_writes_the_press(sim: SimHandle) -> None:
    async with OpcUaClient(sim.opcua_endpoint) as opcua:
        namespace = await opcua.get_namespace_index(OPCUA_NAMESPACE_URI)

        def node(name: str) -> Node:
            return opcua.get_node(node_id(namespace, name))

        expected_types = {
            "targetSpeed": ua.VariantType.UInt16,
            "running": ua.VariantType.Boolean,
            "temperature": ua.VariantType.Double,
            "pressure": ua.VariantType.Double,
            "actualSpeed": ua.VariantType.Double,
            "cycleCount": ua.VariantType.UInt32,
            "counter": ua.VariantType.UInt32,
            "bench[99]": ua.VariantType.UInt16,
        }
        for name, variant_type in expected_types.items():
            variant = (await node(name).read_data_value()).Value
            assert variant is not None and variant.VariantType == variant_type, name
        assert await node("running").read_value() is True

        await node("targetSpeed").write_value(ua.DataValue(ua.Variant(40, ua.VariantType.UInt16)))
        assert sim.values()["targetSpeed"] == 40

        with pytest.raises(ua.uaerrors.BadOutOfRange):
            await node("targetSpeed").write_value(
                ua.DataValue(ua.Variant(61, ua.VariantType.UInt16))
            )
        with pytest.raises(ua.uaerrors.BadTypeMismatch):
            await node("targetSpeed").write_value(
                ua.DataValue(ua.Variant(41, ua.VariantType.Int32))
            )
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await node("temperature").write_value(
                ua.DataValue(ua.Variant(1.0, ua.VariantType.Double))
            )
        assert sim.values()["targetSpeed"] == 40

        await node("running").write_value(ua.DataValue(ua.Variant(False, ua.VariantType.Boolean)))
        assert sim.values()["running"] is False


async def test_opcua_subscription_costs_no_read_calls(sim: SimHandle) -> None:
    changes: list[int] = []

    class Recorder:
        def datachange_notification(self, node: object, value: int, data: object) -> None:
            changes.append(value)

    async with OpcUaClient(sim.opcua_endpoint) as opcua:
        namespace = await opcua.get_namespace_index(OPCUA_NAMESPACE_URI)  # a Read call
        counter = opcua.get_node(node_id(namespace, "counter"))
        sim.reset_counters()
        subscription = await opcua.create_subscription(50, Recorder())
        await subscription.subscribe_data_change(counter)
        await eventually(lambda: len(changes) >= 10, timeout=5, what="10 counter notifications")
        during = sim.requests("opcua")
        await subscription.delete()

        await counter.read_value()
        after_one_read = sim.requests("opcua")

    assert changes == sorted(changes) and len(set(changes)) == len(changes)
    assert during.get("read", 0) == 0, during
    assert during["create_monitored_items"] == 1
    assert after_one_read["read"] == 1 and after_one_read["read_node"] == 1


def test_s7_db1_matches_the_press_and_takes_setpoints(sim: SimHandle) -> None:
    client = s7_client(sim)
    try:
        sim.reset_counters()
        db = read_db(client)
        assert sim.reset_counters() == {"s7": {"read": 1, "read_item": 1}}
        values = sim.values()
        assert get_int(db, S7_TARGET_SPEED) == values["targetSpeed"] == 30
        assert get_bool(db, S7_RUNNING_BYTE, S7_RUNNING_BIT) is True
        assert get_real(db, S7_TEMPERATURE) == pytest.approx(values["temperature"], abs=1)
        assert 0 <= get_real(db, S7_PRESSURE) < 230
        assert get_real(db, S7_ACTUAL_SPEED) == pytest.approx(values["actualSpeed"], abs=1)
        assert get_udint(db, S7_CYCLE_COUNT) - values["cycleCount"] in (-1, 0)
        assert 0 <= values["counter"] - get_udint(db, S7_COUNTER) <= 2
        bench = struct.unpack_from(f">{BENCH}H", db, S7_BENCH_START)
        assert all((value - bench[0]) % 65536 == index for index, value in enumerate(bench))

        # A multi-variable read is one request of several items.
        far_apart = [
            {"area": snap7.Area.DB, "db_number": S7_DB_NUMBER, "start": 0, "size": 2},
            {"area": snap7.Area.DB, "db_number": S7_DB_NUMBER, "start": 200, "size": 2},
        ]
        client.read_multi_vars(far_apart)
        assert sim.reset_counters() == {"s7": {"read": 1, "read_item": 2}}

        setpoint = bytearray(2)
        set_int(setpoint, 0, 25)
        client.db_write(S7_DB_NUMBER, S7_TARGET_SPEED, setpoint)
        wait_until(lambda: sim.values()["targetSpeed"] == 25, 3, "targetSpeed 25 from DBW0")

        set_int(setpoint, 0, 500)  # a DB write cannot be refused: the PLC limits it
        client.db_write(S7_DB_NUMBER, S7_TARGET_SPEED, setpoint)
        wait_until(lambda: sim.values()["targetSpeed"] == 60, 3, "targetSpeed clamped to 60")

        running = bytearray(client.db_read(S7_DB_NUMBER, S7_RUNNING_BYTE, 1))
        set_bool(running, 0, S7_RUNNING_BIT, False)
        client.db_write(S7_DB_NUMBER, S7_RUNNING_BYTE, running)
        wait_until(lambda: sim.values()["running"] is False, 3, "running false from DBX2.0")
        assert get_int(read_db(client), S7_TARGET_SPEED) == 60
    finally:
        client.disconnect()


async def test_forced_hostile_values_are_served_everywhere_without_a_crash(sim: SimHandle) -> None:
    # Strict JSON has no NaN, so the API also takes it as a string.
    forced = sim.put_values(temperature="NaN", pressure=1e300)
    assert math.isnan(forced["temperature"]) and forced["forced"] == ["pressure", "temperature"]

    client = await modbus_client(sim)
    try:
        registers = (await client.read_holding_registers(0, count=13, device_id=UNIT)).registers
    finally:
        client.close()
    assert registers[2:4] == NOT_A_NUMBER_FLOAT32
    assert decode_holding(registers, "pressure") == math.inf  # beyond float32
    assert decode_holding(registers, "temperatureX10") == -32768

    async with OpcUaClient(sim.opcua_endpoint) as opcua:
        namespace = await opcua.get_namespace_index(OPCUA_NAMESPACE_URI)
        assert math.isnan(await opcua.get_node(node_id(namespace, "temperature")).read_value())
        assert await opcua.get_node(node_id(namespace, "pressure")).read_value() == 1e300

    s7 = s7_client(sim)
    try:
        db = read_db(s7)  # PUT /values updates every protocol before it answers
    finally:
        s7.disconnect()
    assert math.isnan(get_real(db, S7_TEMPERATURE))
    assert get_real(db, S7_PRESSURE) == math.inf

    released = sim.put_values(temperature=None, pressure=None)
    assert math.isfinite(released["temperature"]) and released["forced"] == []
    counter = sim.values()["counter"]
    wait_until(lambda: sim.values()["counter"] > counter, 3, "the press to keep ticking")
    assert sim.status()["status"] == "ok"


def test_counters_set_over_http_continue_and_wrap(sim: SimHandle) -> None:
    sim.put_values(counter=2**32 - 3, cycleCount=2**32 - 1)
    wait_until(lambda: sim.values()["counter"] < 1000, 3, "the counter to wrap past 2^32")
    # The next completed stroke wraps it: up to 2 s at 30 spm, longer while speeding up.
    wait_until(lambda: sim.values()["cycleCount"] < 10, 10, "cycleCount to wrap")


def test_put_values_refuses_what_it_cannot_apply(sim: SimHandle) -> None:
    bodies = [
        '{"targetSpeed": 61}',
        '{"cycleCount": -1}',
        '{"bogus": 1}',
        '{"running": null}',
        "[1, 2]",
        "not json",
    ]
    for body in bodies:
        response = sim.put_values_raw(body)
        assert response.status_code == 400, (body, response.text)
        assert "error" in response.json()
    assert sim.values()["targetSpeed"] == 30


def test_flags_alone_start_only_the_protocols_asked_for(tmp_path: Path) -> None:
    ports = SimPorts.free()
    modbus_port, http_port = ports.modbus, ports.http
    argv = [sys.executable, "-m", "spine_runtime.cli", "sim", "--protocols", "modbus"]
    argv += ["--modbus-port", str(modbus_port), "--http-port", str(http_port)]
    process = ManagedProcess(argv, tmp_path / "sim.log", env=CHILD_ENV).start()
    try:
        process.wait_for_port(http_port)
        modbus_listening = port_open(modbus_port)
    finally:
        exit_code = process.stop()
    log = process.log()
    assert modbus_listening and exit_code == 0, log
    assert f"Modbus TCP listening on 127.0.0.1:{modbus_port}" in log
    assert "OPC UA" not in log and "S7 listening" not in log


def test_a_bad_config_file_exits_2_with_the_reason(tmp_path: Path) -> None:
    config = tmp_path / "sim.yaml"
    config.write_text("modbus: {port: 0}\n")
    result = subprocess.run(
        [sys.executable, "-m", "spine_runtime.cli", "sim", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **CHILD_ENV},
    )
    assert result.returncode == 2
    assert "modbus.port" in result.stderr


async def test_sigterm_with_clients_connected_exits_0_within_2_seconds(tmp_path: Path) -> None:
    sim = start_sim(tmp_path)
    modbus = await modbus_client(sim)
    s7 = s7_client(sim)
    opcua = OpcUaClient(sim.opcua_endpoint)
    await opcua.connect()
    try:
        started = time.monotonic()
        exit_code = sim.stop(timeout=5)
        elapsed = time.monotonic() - started
    finally:
        modbus.close()
        with contextlib.suppress(Exception):
            s7.disconnect()
        opcua.disconnect_socket()  # the server is gone: no CloseSession to wait for
        sim.close()
    assert exit_code == 0, sim.log()[-2000:]
    assert elapsed < 2.0, f"took {elapsed:.2f}s to stop"
    assert "Stopped" in sim.log()
    for port in (sim.ports.modbus, sim.ports.opcua, sim.ports.s7, sim.ports.http):
        assert not port_open(port)
