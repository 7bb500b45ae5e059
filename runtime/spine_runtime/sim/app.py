"""The press simulator process: physics on a tick, three protocol servers, and its HTTP API.

`main.py` builds a `SimApp` from the config and runs it until a signal. Besides the runtime
endpoints (/healthz, /metrics, /status) it serves the test instrument's API: `GET /values`,
`PUT /values` (set setpoints and counters, force or release measured values) and
`POST /reset-counters` (read and restart the request-count window).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from pydantic import Field, ValidationError

from spine_runtime.common.configsource import describe_validation_error
from spine_runtime.common.server import RuntimeServer, json_error
from spine_runtime.config.base import CamelModel
from spine_runtime.sim.addressmap import OPCUA_NAMESPACE_URI, S7_DB_NUMBER
from spine_runtime.sim.config import SimConfig
from spine_runtime.sim.counting import RequestCounts, RequestCountsCollector
from spine_runtime.sim.physics import (
    TARGET_SPEED_MAX,
    TARGET_SPEED_MIN,
    UINT32_MODULUS,
    PressPhysics,
)

if TYPE_CHECKING:
    from spine_runtime.sim.modbus import ModbusPressServer
    from spine_runtime.sim.opcua import OpcUaPressServer
    from spine_runtime.sim.s7 import S7PressServer

log = logging.getLogger(__name__)

# Behind by more than this, the tick loop starts afresh instead of bursting to catch up.
MAX_TICK_LAG_SECONDS = 1.0


class ValuesUpdate(CamelModel):
    """Body of `PUT /values`. Setpoints act as a client write would; counters continue from
    the value set; a measured value is forced (held, NaN and infinities included, also as the
    strings "NaN", "Infinity", "-Infinity") until it is set to null, which releases it."""

    running: bool | None = None
    target_speed: int | None = Field(default=None, ge=TARGET_SPEED_MIN, le=TARGET_SPEED_MAX)
    cycle_count: int | None = Field(default=None, ge=0, lt=UINT32_MODULUS)
    counter: int | None = Field(default=None, ge=0, lt=UINT32_MODULUS)
    temperature: float | None = None
    pressure: float | None = None
    actual_speed: float | None = None


FORCEABLE_FIELDS = {
    "temperature": "temperature",
    "pressure": "pressure",
    "actual_speed": "actualSpeed",
}


@contextlib.asynccontextmanager
async def _naming(server: str, host: str, port: int) -> AsyncIterator[None]:
    """Turn a failed start into an OSError that says which server and address failed."""
    try:
        yield
    except (OSError, RuntimeError) as error:
        raise OSError(f"{server} cannot listen on {host}:{port}: {error}") from error


class SimApp:
    """One simulated press and every server that shows it."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.physics = PressPhysics(
            seed=config.seed,
            bench_count=config.bench_registers,
            target_speed=config.initial_target_speed,
            running=config.start_running,
        )
        self.counts = RequestCounts()
        self.registry = CollectorRegistry()
        self.registry.register(RequestCountsCollector(self.counts))
        self.ticks = Counter(
            "spine_sim_ticks", "Physics ticks the press simulator ran.", registry=self.registry
        )
        # Protocol libraries are imported only when served: asyncua alone costs 20 MB and
        # 0.3 s, which a gateway test that needs Modbus only should not pay.
        self.modbus: ModbusPressServer | None = None
        self.opcua: OpcUaPressServer | None = None
        self.s7: S7PressServer | None = None
        if config.modbus.enabled:
            from spine_runtime.sim.modbus import ModbusPressServer

            self.modbus = ModbusPressServer(config.modbus, self.physics, self.counts)
        if config.opcua.enabled:
            from spine_runtime.sim.opcua import OpcUaPressServer

            self.opcua = OpcUaPressServer(config.opcua, self.physics, self.counts)
        if config.s7.enabled:
            from spine_runtime.sim.s7 import S7PressServer

            self.s7 = S7PressServer(config.s7, self.physics, self.counts)
        self.http = RuntimeServer(config.http, self.registry, self.status, healthy=self.healthy)
        self.http.app.router.add_get("/values", self._get_values)
        self.http.app.router.add_put("/values", self._put_values)
        self.http.app.router.add_post("/reset-counters", self._reset_counters)
        self._tick_task: asyncio.Task[None] | None = None
        self._tick_count = 0
        self._started = time.monotonic()

    async def start(self) -> None:
        """Start every server; HTTP last, so a healthy /healthz means every port listens.

        Raises OSError naming the server and address that could not listen.
        """
        config = self.config
        if self.modbus is not None:
            async with _naming("Modbus TCP", config.modbus.host, config.modbus.port):
                await self.modbus.start()
        if self.opcua is not None:
            async with _naming("OPC UA", config.opcua.host, config.opcua.port):
                await self.opcua.start()
        if self.s7 is not None:
            async with _naming("S7", config.s7.host, config.s7.port):
                self.s7.start()
        # asyncua's types and address space are over a hundred thousand objects: a full
        # collection of them stalls a tick. They live as long as the process, so the
        # collector may as well stop visiting them.
        gc.collect()
        gc.freeze()
        self._tick_task = asyncio.create_task(self._run_ticks(), name="sim-ticks")
        async with _naming("HTTP", config.http.host, config.http.port):
            await self.http.start()

    async def stop(self) -> None:
        if self._tick_task is not None:
            self._tick_task.cancel()
            await asyncio.gather(self._tick_task, return_exceptions=True)
            self._tick_task = None
        stopping = [self.http.stop()]
        if self.modbus is not None:
            stopping.append(self.modbus.stop())
        if self.opcua is not None:
            stopping.append(self.opcua.stop())
        if self.s7 is not None:
            stopping.append(self.s7.stop())
        for outcome in await asyncio.gather(*stopping, return_exceptions=True):
            if isinstance(outcome, BaseException):
                log.warning("Error while stopping a server: %r", outcome)

    def healthy(self) -> bool:
        return self._tick_task is not None and not self._tick_task.done()

    async def _run_ticks(self) -> None:
        interval = self.config.tick_interval_ms / 1000.0
        loop = asyncio.get_running_loop()
        last = loop.time()
        next_tick = last + interval
        while True:
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            now = loop.time()
            try:
                await self.tick(now - last)
            except Exception:
                # A value a protocol library chokes on must not stop the press.
                log.exception("Tick failed; the next tick tries again")
            last = now
            next_tick += interval
            if now - next_tick > MAX_TICK_LAG_SECONDS:
                next_tick = now + interval

    async def tick(self, elapsed_seconds: float) -> None:
        self.physics.step(elapsed_seconds)
        self._tick_count += 1
        self.ticks.inc()
        await self._publish()

    async def _publish(self) -> None:
        """Bring the servers that hold their own copy (S7's DB, OPC UA's nodes) up to date;
        Modbus reads the physics on every request."""
        if self.s7 is not None:
            self.s7.sync()
        if self.opcua is not None:
            await self.opcua.publish(self.physics.snapshot())

    def status(self) -> dict[str, Any]:
        values = self.physics.snapshot().to_json()
        values.pop("bench")
        protocols: dict[str, Any] = {}
        if self.modbus is not None:
            protocols["modbus"] = {
                "host": self.config.modbus.host,
                "port": self.config.modbus.port,
                "unitId": self.config.modbus.unit_id,
            }
        if self.opcua is not None:
            protocols["opcua"] = {
                "endpoint": self.opcua.endpoint,
                "namespaceUri": OPCUA_NAMESPACE_URI,
            }
        if self.s7 is not None:
            protocols["s7"] = {
                "host": self.config.s7.host,
                "port": self.config.s7.port,
                "db": S7_DB_NUMBER,
            }
        return {
            "status": "ok" if self.healthy() else "degraded",
            "ticks": self._tick_count,
            "tickIntervalMs": self.config.tick_interval_ms,
            "benchRegisters": self.config.bench_registers,
            "uptimeSeconds": round(time.monotonic() - self._started, 3),
            "protocols": protocols,
            "requests": self.counts.window(),
            "requestsWindowSeconds": round(self.counts.window_seconds(), 3),
            "values": values,
        }

    async def _get_values(self, request: web.Request) -> web.Response:
        return web.json_response(self.physics.snapshot().to_json())

    async def _put_values(self, request: web.Request) -> web.Response:
        try:
            # json.loads reads NaN and Infinity literals, which strict JSON cannot carry.
            body = json.loads(await request.text())
        except ValueError as error:
            return json_error(400, "the body must be a JSON object", detail=str(error))
        if not isinstance(body, dict):
            return json_error(400, "the body must be a JSON object")
        try:
            update = ValuesUpdate.model_validate(body)
        except ValidationError as error:
            return json_error(400, "invalid values", detail=describe_validation_error(error))
        explicitly_null = [
            name
            for name in update.model_fields_set - FORCEABLE_FIELDS.keys()
            if getattr(update, name) is None
        ]
        if explicitly_null:
            return json_error(
                400, "only measured values can be null (released)", fields=sorted(explicitly_null)
            )
        self._apply(update)
        await self._publish()
        return web.json_response(self.physics.snapshot().to_json())

    def _apply(self, update: ValuesUpdate) -> None:
        if update.running is not None:
            self.physics.set_running(update.running)
        if update.target_speed is not None:
            self.physics.set_target_speed(update.target_speed)
        if update.cycle_count is not None:
            self.physics.set_cycle_count(update.cycle_count)
        if update.counter is not None:
            self.physics.set_counter(update.counter)
        for field_name, value_name in FORCEABLE_FIELDS.items():
            if field_name not in update.model_fields_set:
                continue
            value = getattr(update, field_name)
            if value is None:
                self.physics.release(value_name)
                log.info("Released %s", value_name)
            else:
                self.physics.force(value_name, value)
                log.info("Forced %s to %r", value_name, value)

    async def _reset_counters(self, request: web.Request) -> web.Response:
        counts, seconds = self.counts.reset()
        return web.json_response({"requests": counts, "windowSeconds": round(seconds, 3)})
