"""The press simulator's pure parts: physics, the address map's encoders, config and flags.

The physics is stepped with a fixed `dt`, so every expectation is exact or has a stated
tolerance; the integration tests (tests/integration/test_sim.py) cover the servers.
"""

from __future__ import annotations

import math
import struct

import pytest
from snap7.util import get_bool, get_int, get_real, get_udint

from spine_runtime.common.configsource import ConfigError
from spine_runtime.sim.addressmap import (
    MODBUS_BENCH_START,
    MODBUS_FIELD_BY_NAME,
    S7_ACTUAL_SPEED,
    S7_BENCH_START,
    S7_COUNTER,
    S7_CYCLE_COUNT,
    S7_PRESSURE,
    S7_RUNNING_BIT,
    S7_RUNNING_BYTE,
    S7_TARGET_SPEED,
    S7_TEMPERATURE,
    modbus_registers,
    registers_to_float32,
    registers_to_uint32,
    s7_db_image,
    s7_setpoints,
    temperature_x10,
)
from spine_runtime.sim.config import SimConfig
from spine_runtime.sim.main import build_parser, load_config
from spine_runtime.sim.physics import (
    AMBIENT_TEMPERATURE,
    PEAK_PRESSURE_MAX,
    PEAK_PRESSURE_MIN,
    SPEED_RAMP_PER_SECOND,
    PressPhysics,
    PressValues,
)

TICK = 0.1


def run(physics: PressPhysics, seconds: float, dt: float = TICK) -> list[PressValues]:
    """Step for `seconds` and return the snapshot after every step."""
    snapshots = []
    for _ in range(round(seconds / dt)):
        physics.step(dt)
        snapshots.append(physics.snapshot())
    return snapshots


def test_temperature_rises_towards_operating_temperature_while_running() -> None:
    physics = PressPhysics(seed=1)
    start = physics.snapshot().temperature
    after_a_minute = run(physics, 60)[-1].temperature
    after_ten_minutes = run(physics, 540)[-1].temperature
    assert start == pytest.approx(AMBIENT_TEMPERATURE, abs=0.5)
    assert 55 < after_a_minute < 70  # one time constant: about 63 % of the way to 85
    assert after_ten_minutes == pytest.approx(85, abs=0.5)


def test_temperature_falls_towards_ambient_when_stopped() -> None:
    physics = PressPhysics(seed=1)
    run(physics, 600)
    physics.set_running(False)
    cooling = [values.temperature for values in run(physics, 900)]
    assert cooling[0] > 80
    assert cooling[-1] < 25
    # Noisy, but falling: each minute is cooler than the one before.
    minute_means = [sum(cooling[i : i + 600]) / 600 for i in range(0, len(cooling) - 600, 600)]
    assert minute_means == sorted(minute_means, reverse=True)


def test_measurement_noise_is_small_and_does_not_drift() -> None:
    physics = PressPhysics(seed=3, running=False)
    temperatures = [values.temperature for values in run(physics, 300)]
    assert max(temperatures) - min(temperatures) < 0.5
    assert sum(temperatures) / len(temperatures) == pytest.approx(AMBIENT_TEMPERATURE, abs=0.05)


def test_counter_moves_once_per_tick_and_wraps_at_32_bits() -> None:
    physics = PressPhysics()
    counts = [values.counter for values in run(physics, 1.0)]
    assert counts == list(range(1, 11))
    physics.set_counter(2**32 - 2)
    assert [values.counter for values in run(physics, 0.3)] == [2**32 - 1, 0, 1]


@pytest.mark.parametrize("target_speed", [12, 30, 60])
def test_cycle_count_follows_the_target_speed(target_speed: int) -> None:
    physics = PressPhysics(target_speed=target_speed)
    run(physics, 120)
    expected = target_speed * 2  # strokes per minute over two minutes
    assert abs(physics.snapshot().cycle_count - expected) <= 1


def test_cycle_count_stops_when_the_press_stops() -> None:
    physics = PressPhysics(target_speed=30)
    run(physics, 10)
    physics.set_running(False)
    run(physics, 5)  # ramp down
    stopped_at = physics.snapshot().cycle_count
    run(physics, 30)
    assert physics.snapshot().cycle_count == stopped_at
    assert physics.snapshot().actual_speed == 0.0


def test_actual_speed_ramps_to_the_target_without_overshoot() -> None:
    physics = PressPhysics(target_speed=20)
    physics.set_target_speed(60)
    speeds = [values.actual_speed for values in run(physics, 6)]
    assert speeds[9] == pytest.approx(20 + SPEED_RAMP_PER_SECOND * 1.0)
    assert speeds == sorted(speeds)
    assert max(speeds) == 60.0
    assert speeds[-1] == 60.0
    physics.set_target_speed(10)
    down = [values.actual_speed for values in run(physics, 6)]
    assert down == sorted(down, reverse=True)
    assert down[-1] == 10.0


def test_pressure_peaks_during_each_stroke_and_idles_between() -> None:
    physics = PressPhysics(seed=5, target_speed=30)
    pressures = [values.pressure for values in run(physics, 20, dt=0.01)]
    stroke = 200  # samples per stroke at 30 strokes per minute and 10 ms
    peaks = [max(pressures[i : i + stroke]) for i in range(0, len(pressures), stroke)]
    lows = [min(pressures[i : i + stroke]) for i in range(0, len(pressures), stroke)]
    assert all(PEAK_PRESSURE_MIN - 5 < peak < PEAK_PRESSURE_MAX + 5 for peak in peaks)
    assert len({round(peak) for peak in peaks}) > 1  # each stroke has its own peak
    assert all(low < 15 for low in lows)
    physics.set_running(False)
    stopped = [values.pressure for values in run(physics, 10)][-10:]
    assert all(value < 3 for value in stopped)


def test_same_seed_same_values_and_other_seed_other_noise() -> None:
    first, second, other = PressPhysics(seed=9), PressPhysics(seed=9), PressPhysics(seed=10)
    assert run(first, 5) == run(second, 5)
    assert run(first, 1)[-1].temperature != run(other, 6)[-1].temperature


@pytest.mark.parametrize("bad", [-1, 61, 1000, True, 30.5])
def test_target_speed_outside_zero_to_sixty_is_refused(bad: object) -> None:
    physics = PressPhysics()
    with pytest.raises(ValueError, match="targetSpeed"):
        physics.set_target_speed(bad)  # type: ignore[arg-type]
    assert physics.snapshot().target_speed == 30


def test_a_forced_value_is_held_until_released() -> None:
    physics = PressPhysics()
    physics.force("temperature", math.nan)
    assert all(math.isnan(values.temperature) for values in run(physics, 2))
    assert physics.snapshot().forced == ("temperature",)
    physics.release("temperature")
    assert math.isfinite(run(physics, 0.1)[-1].temperature)
    with pytest.raises(ValueError, match="cannot be forced"):
        physics.force("counter", 1.0)


def test_bench_registers_move_every_tick_and_reveal_torn_reads() -> None:
    physics = PressPhysics(bench_count=100)
    before = physics.snapshot().bench
    after = run(physics, 0.1)[-1].bench
    assert len(after) == 100
    assert all(new != old for new, old in zip(after, before, strict=True))
    assert all((value - after[0]) % 65536 == index for index, value in enumerate(after))
    no_bench = run(PressPhysics(bench_count=0), 0.1)[-1]
    assert len(modbus_registers(no_bench)) == MODBUS_BENCH_START
    assert len(s7_db_image(no_bench)) == S7_BENCH_START


def test_snapshot_is_cached_until_something_changes() -> None:
    physics = PressPhysics()
    assert physics.snapshot() is physics.snapshot()
    before = physics.snapshot()
    physics.set_target_speed(40)
    assert physics.snapshot() is not before


def sample_values(**changes: object) -> PressValues:
    values = {
        "running": True,
        "target_speed": 42,
        "actual_speed": 41.5,
        "temperature": 81.25,
        "pressure": 203.5,
        "cycle_count": 70_000,
        "counter": 2**32 - 1,
        "bench": (7, 8, 9),
    }
    return PressValues(**{**values, **changes})  # type: ignore[arg-type]


def test_modbus_registers_follow_the_documented_map() -> None:
    registers = modbus_registers(sample_values())
    field = MODBUS_FIELD_BY_NAME

    def read(name: str) -> list[int]:
        return registers[field[name].address : field[name].address + field[name].count]

    assert len(registers) == MODBUS_BENCH_START + 3
    assert read("targetSpeed") == [42]
    assert read("running") == [1]
    assert registers_to_float32(read("temperature")) == 81.25
    assert read("temperature") == [0x42A2, 0x8000]  # high word first
    assert registers_to_float32(read("pressure")) == 203.5
    assert registers_to_uint32(read("cycleCount")) == 70_000
    assert read("counter") == [0xFFFF, 0xFFFF]
    assert registers_to_float32(read("actualSpeed")) == 41.5
    assert read("temperatureX10") == [812]  # 812.5 rounds to even, as Siemens' ROUND does
    assert registers[13:MODBUS_BENCH_START] == [0] * (MODBUS_BENCH_START - 13)
    assert registers[MODBUS_BENCH_START:] == [7, 8, 9]


def test_hostile_floats_encode_without_raising() -> None:
    nan_registers = modbus_registers(sample_values(temperature=math.nan, pressure=1e300))
    assert nan_registers[2:4] == [0x7FC0, 0x0000]
    assert registers_to_float32(nan_registers[4:6]) == math.inf
    assert nan_registers[12] == 0x8000  # -32768: the usual "no valid value" of a scaled int
    assert temperature_x10(-1e9) == -32767
    assert temperature_x10(math.inf) == -32768
    db = s7_db_image(sample_values(temperature=-math.inf, pressure=-1e300))
    assert get_real(db, S7_TEMPERATURE) == -math.inf
    assert get_real(db, S7_PRESSURE) == -math.inf


def test_s7_db_follows_the_documented_layout() -> None:
    db = s7_db_image(sample_values())
    assert len(db) == S7_BENCH_START + 2 * 3
    assert get_int(db, S7_TARGET_SPEED) == 42
    assert get_bool(db, S7_RUNNING_BYTE, S7_RUNNING_BIT) is True
    assert get_real(db, S7_TEMPERATURE) == 81.25
    assert get_real(db, S7_PRESSURE) == 203.5
    assert get_udint(db, S7_CYCLE_COUNT) == 70_000
    assert get_udint(db, S7_COUNTER) == 2**32 - 1
    assert get_real(db, S7_ACTUAL_SPEED) == 41.5
    assert struct.unpack_from(">3H", db, S7_BENCH_START) == (7, 8, 9)
    assert s7_setpoints(db) == (42, True)
    db[S7_TARGET_SPEED : S7_TARGET_SPEED + 2] = struct.pack(">h", -5)
    db[S7_RUNNING_BYTE] = 0
    assert s7_setpoints(db) == (-5, False)


def test_config_defaults_listen_on_loopback_only() -> None:
    config = SimConfig()
    hosts = [config.modbus.host, config.opcua.host, config.s7.host, config.http.host]
    assert hosts == ["127.0.0.1"] * 4
    assert SimConfig.model_validate({"http": {"port": 9000}}).http.host == "127.0.0.1"
    assert SimConfig.model_validate({"s7": {"host": "0.0.0.0"}}).s7.host == "0.0.0.0"
    assert config.enabled_protocols() == ["modbus", "opcua", "s7"]


def test_config_rejects_what_a_server_could_not_use() -> None:
    with pytest.raises(ValueError, match=r"modbus\.host"):
        SimConfig.model_validate({"modbus": {"host": "localhost"}})
    with pytest.raises(ValueError, match="benchRegisters"):
        SimConfig.model_validate({"benchRegisters": 5000})
    with pytest.raises(ValueError, match="Extra inputs"):
        SimConfig.model_validate({"modbus": {"prot": 502}})


def test_flags_override_the_config_file(tmp_path) -> None:
    config_file = tmp_path / "sim.yaml"
    config_file.write_text("seed: 4\nmodbus: {port: 1502, unitId: 3}\nbenchRegisters: 10\n")
    args = build_parser().parse_args(
        [
            "--config",
            str(config_file),
            "--host",
            "0.0.0.0",
            "--modbus-port",
            "2502",
            "--protocols",
            "modbus,s7",
            "--bench-registers",
            "20",
        ]
    )
    config = load_config(args)
    assert (config.modbus.port, config.modbus.unit_id, config.seed) == (2502, 3, 4)
    assert config.bench_registers == 20
    assert config.enabled_protocols() == ["modbus", "s7"]
    assert {config.modbus.host, config.opcua.host, config.http.host} == {"0.0.0.0"}


def test_bad_flags_become_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown profinet"):
        load_config(build_parser().parse_args(["--protocols", "modbus,profinet"]))
    with pytest.raises(ConfigError, match=r"modbus\.port"):
        load_config(build_parser().parse_args(["--modbus-port", "70000"]))
