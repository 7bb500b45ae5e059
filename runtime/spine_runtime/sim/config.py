"""The press simulator's config file (`spine-runtime sim --config FILE`, YAML or JSON).

Read by `spine_runtime.sim.main`; `make demo` and the tests write it, or pass flags instead.
Every server listens on 127.0.0.1 unless the config says otherwise: a simulated PLC that
accepts writes has no business on a shared network by accident.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Annotated

from pydantic import AfterValidator, Field

from spine_runtime.config.base import CamelModel, HttpSettings, Port, SafeLine
from spine_runtime.sim.physics import TARGET_SPEED_MAX, TARGET_SPEED_MIN

LOOPBACK = "127.0.0.1"


def _check_ipv4(value: str) -> str:
    IPv4Address(value)  # raises ValueError with a readable message
    return value


# snap7's server binds IPv4 only, so every listener takes a dotted IPv4 address.
ListenHost = Annotated[
    str,
    AfterValidator(_check_ipv4),
    Field(description="IPv4 address to listen on; 0.0.0.0 for all."),
]


class ModbusSettings(CamelModel):
    """Modbus TCP server."""

    enabled: bool = True
    host: ListenHost = LOOPBACK
    port: Port = 5020
    unit_id: int = Field(
        default=1, ge=0, le=247, description="Unit id served; 0 answers every unit id."
    )


class OpcUaSettings(CamelModel):
    """OPC UA server (no security: a local test instrument)."""

    enabled: bool = True
    host: ListenHost = LOOPBACK
    port: Port = 4840


class S7Settings(CamelModel):
    """S7 (ISO-on-TCP) server; a real PLC listens on 102, which needs root."""

    enabled: bool = True
    host: ListenHost = LOOPBACK
    port: Port = 1102


class SimHttpSettings(HttpSettings):
    """The test API and /healthz, /metrics, /status; loopback unless configured otherwise."""

    host: SafeLine = LOOPBACK
    port: Port = 8090


class SimConfig(CamelModel):
    """One simulated press served over every enabled protocol."""

    tick_interval_ms: int = Field(
        default=100, ge=10, le=10_000, description="PLC scan time: physics step and updates."
    )
    seed: int = Field(default=0, description="Seed of the measurement noise.")
    bench_registers: int = Field(
        default=100,
        ge=0,
        le=2000,
        description="Contiguous registers that change every tick, for gateway benchmarks.",
    )
    initial_target_speed: int = Field(default=30, ge=TARGET_SPEED_MIN, le=TARGET_SPEED_MAX)
    start_running: bool = True
    modbus: ModbusSettings = Field(default_factory=ModbusSettings)
    opcua: OpcUaSettings = Field(default_factory=OpcUaSettings)
    s7: S7Settings = Field(default_factory=S7Settings)
    http: SimHttpSettings = Field(default_factory=SimHttpSettings)

    def enabled_protocols(self) -> list[str]:
        settings: dict[str, ModbusSettings | OpcUaSettings | S7Settings] = {
            "modbus": self.modbus,
            "opcua": self.opcua,
            "s7": self.s7,
        }
        return [name for name, protocol in settings.items() if protocol.enabled]
