"""The simulated hydraulic press: pure, deterministic process physics driven by `step(dt)`.

`SimApp` calls `step` once per tick with the elapsed time and the protocol servers read
`snapshot()`; unit tests drive it with a fixed `dt` and a seed, so the same inputs always give
the same values. No I/O and no clock of its own.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

AMBIENT_TEMPERATURE = 20.0
OPERATING_TEMPERATURE = 85.0
# Hydraulic oil heats up and cools down slowly; with a 60 s time constant the demo shows a
# visible rise within a minute without taking an afternoon to reach operating temperature.
HEATING_TIME_CONSTANT = 60.0
COOLING_TIME_CONSTANT = 90.0

TARGET_SPEED_MIN = 0
TARGET_SPEED_MAX = 60  # strokes per minute
SPEED_RAMP_PER_SECOND = 10.0  # strokes per minute gained or lost per second

PEAK_PRESSURE_MIN = 180.0
PEAK_PRESSURE_MAX = 220.0
STANDBY_PRESSURE = 8.0  # the pump idles against the relief valve between strokes
# The ram presses during this part of each stroke (phase 0..1): a sine-shaped pressure peak.
PRESS_WINDOW_START = 0.4
PRESS_WINDOW_END = 0.6

TEMPERATURE_NOISE = 0.05
PRESSURE_NOISE = 0.3

UINT32_MODULUS = 1 << 32
UINT16_MODULUS = 1 << 16

# Measured values a test may force (hold at a value, NaN and infinities included) until released.
FORCEABLE = ("temperature", "pressure", "actualSpeed")


@dataclass(frozen=True)
class PressValues:
    """The press's process image at one instant, as every protocol serves it."""

    running: bool
    target_speed: int
    actual_speed: float
    temperature: float
    pressure: float
    cycle_count: int
    counter: int
    bench: tuple[int, ...]
    forced: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "running": self.running,
            "targetSpeed": self.target_speed,
            "actualSpeed": self.actual_speed,
            "temperature": self.temperature,
            "pressure": self.pressure,
            "cycleCount": self.cycle_count,
            "counter": self.counter,
            "bench": list(self.bench),
            "forced": list(self.forced),
        }


def bench_value(counter: int, index: int) -> int:
    """Bench register `index`: all registers move every tick and `bench[i] - bench[0] == i`
    (mod 65536) holds within one tick, so a reader can tell a torn read of the block."""
    return (counter + index) % UINT16_MODULUS


def check_target_speed(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"targetSpeed must be an integer, got {value!r}")
    if not TARGET_SPEED_MIN <= value <= TARGET_SPEED_MAX:
        raise ValueError(
            f"targetSpeed must be between {TARGET_SPEED_MIN} and {TARGET_SPEED_MAX} "
            f"strokes per minute, got {value}"
        )
    return value


def clamp_target_speed(value: int) -> int:
    """What a PLC program's LIMIT block makes of a setpoint it cannot refuse (an S7 DB write)."""
    return max(TARGET_SPEED_MIN, min(TARGET_SPEED_MAX, value))


class PressPhysics:
    """A hydraulic press cycling at `target_speed` strokes per minute while `running`."""

    def __init__(
        self,
        seed: int = 0,
        bench_count: int = 100,
        target_speed: int = 30,
        running: bool = True,
    ) -> None:
        self._random = random.Random(seed)
        self.bench_count = bench_count
        self.running = running
        self.target_speed = check_target_speed(target_speed)
        # Start at speed when running, so a freshly started simulator strokes at once.
        self.actual_speed = float(target_speed) if running else 0.0
        self.cycle_count = 0
        self.counter = 0
        self.phase = 0.0
        self._oil_temperature = AMBIENT_TEMPERATURE
        self._peak_pressure = self._next_peak_pressure()
        self.temperature = AMBIENT_TEMPERATURE
        self.pressure = self._pressure_now()
        self.forced: dict[str, float] = {}
        # Bumped on every change, so encoders can cache the process image between changes.
        self.version = 0
        self._snapshot: PressValues | None = None
        self._snapshot_version = -1

    def _next_peak_pressure(self) -> float:
        return self._random.uniform(PEAK_PRESSURE_MIN, PEAK_PRESSURE_MAX)

    def _pressure_now(self) -> float:
        if self.actual_speed <= 0.0:
            base = STANDBY_PRESSURE if self.running else 0.0
            return max(0.0, base + self._random.gauss(0.0, PRESSURE_NOISE))
        pressure = STANDBY_PRESSURE
        if PRESS_WINDOW_START <= self.phase < PRESS_WINDOW_END:
            window = PRESS_WINDOW_END - PRESS_WINDOW_START
            shape = math.sin(math.pi * (self.phase - PRESS_WINDOW_START) / window)
            pressure += (self._peak_pressure - STANDBY_PRESSURE) * shape
        return max(0.0, pressure + self._random.gauss(0.0, PRESSURE_NOISE))

    def step(self, dt: float) -> None:
        """Advance the press by `dt` seconds (one PLC scan: the counter moves by one)."""
        dt = max(0.0, dt)
        self.counter = (self.counter + 1) % UINT32_MODULUS

        wanted = float(self.target_speed) if self.running else 0.0
        ramp = SPEED_RAMP_PER_SECOND * dt
        if self.actual_speed < wanted:
            self.actual_speed = min(wanted, self.actual_speed + ramp)
        else:
            self.actual_speed = max(wanted, self.actual_speed - ramp)

        self.phase += self.actual_speed / 60.0 * dt
        if self.phase >= 1.0:
            completed = int(self.phase)
            self.phase -= completed
            self.cycle_count = (self.cycle_count + completed) % UINT32_MODULUS
            self._peak_pressure = self._next_peak_pressure()

        if self.running:
            target, time_constant = OPERATING_TEMPERATURE, HEATING_TIME_CONSTANT
        else:
            target, time_constant = AMBIENT_TEMPERATURE, COOLING_TIME_CONSTANT
        self._oil_temperature += (target - self._oil_temperature) * (
            1.0 - math.exp(-dt / time_constant)
        )
        # Noise is added to the measurement, not the state, so it never random-walks.
        self.temperature = self._oil_temperature + self._random.gauss(0.0, TEMPERATURE_NOISE)
        self.pressure = self._pressure_now()
        self.version += 1

    def set_target_speed(self, value: int) -> None:
        self.target_speed = check_target_speed(value)
        self.version += 1

    def set_running(self, running: bool) -> None:
        self.running = bool(running)
        self.version += 1

    def set_counter(self, value: int) -> None:
        self.counter = _check_uint32("counter", value)
        self.version += 1

    def set_cycle_count(self, value: int) -> None:
        self.cycle_count = _check_uint32("cycleCount", value)
        self.version += 1

    def force(self, name: str, value: float) -> None:
        """Hold a measured value (any float: NaN and infinities too) until `release(name)`."""
        if name not in FORCEABLE:
            raise ValueError(f"{name} cannot be forced; forceable values: {', '.join(FORCEABLE)}")
        self.forced[name] = float(value)
        self.version += 1

    def release(self, name: str) -> None:
        if self.forced.pop(name, None) is not None:
            self.version += 1

    def snapshot(self) -> PressValues:
        if self._snapshot is None or self._snapshot_version != self.version:
            self._snapshot = self._take_snapshot()
            self._snapshot_version = self.version
        return self._snapshot

    def _take_snapshot(self) -> PressValues:
        return PressValues(
            running=self.running,
            target_speed=self.target_speed,
            actual_speed=self.forced.get("actualSpeed", self.actual_speed),
            temperature=self.forced.get("temperature", self.temperature),
            pressure=self.forced.get("pressure", self.pressure),
            cycle_count=self.cycle_count,
            counter=self.counter,
            bench=tuple(bench_value(self.counter, index) for index in range(self.bench_count)),
            forced=tuple(sorted(self.forced)),
        )


def _check_uint32(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < UINT32_MODULUS:
        raise ValueError(f"{name} must be an integer between 0 and {UINT32_MODULUS - 1}")
    return value
