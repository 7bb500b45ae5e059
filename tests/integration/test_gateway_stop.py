"""A connection that will not stop cannot freeze the gateway (issue 10, item 2).

The gateway runs in the test's process (to give it a driver that swallows every cancel, as a
library can under Python 3.11), with the real mosquitto, its real HTTP server and its real
config file watch: a push still applies within the stop deadline, the file watch still applies
the next change, /status and /healthz say what happened, and stopping (SIGTERM's path) ends.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from spine_operator.desired.logins import gateway_login
from spine_runtime.config.gateway import Connection, GatewayConfig
from spine_runtime.gateway.app import Gateway
from spine_runtime.gateway.drivers.base import BoundTag, Driver
from spine_runtime.gateway.metrics import GatewayMetrics
from tests.support.gateway import (
    DeafDriver,
    ScriptedDriver,
    ensure_broker_login,
    gateway_config,
    modbus_connection,
    tag,
)
from tests.support.mosquitto import LocalBroker
from tests.support.processes import eventually, free_port

pytestmark = pytest.mark.integration


async def test_a_connection_that_swallows_its_cancel_does_not_freeze_config_or_shutdown(
    tmp_path, broker: LocalBroker
) -> None:
    login = gateway_login("line-1", ["press-1"], [])
    password_file = tmp_path / "mqtt-password"
    password_file.write_text(await ensure_broker_login(broker, login))
    token_file = tmp_path / "admin-token"
    token_file.write_text("push-token")
    count = tag("count", "plc", "press-1", "counter", "holding:8", type="uint32", interval=20)
    document: dict[str, Any] = gateway_config(
        name="line-1",
        broker=broker,
        username=login.username,
        password_file=password_file,
        buffer_dir=tmp_path / "buffer",
        http_port=free_port(),
        connections=[modbus_connection("plc", free_port())],
        tags=[count],
        http={"adminTokenFile": str(token_file)},
    )
    config_path = tmp_path / "gateway.json"
    config_path.write_text(json.dumps(document))
    drivers: list[Driver] = []

    def factory(connection: Connection, tags: list[BoundTag], metrics: GatewayMetrics) -> Driver:
        # the first session swallows every cancel; the ones after behave
        kind = DeafDriver if not drivers else ScriptedDriver
        drivers.append(kind(connection, tags, metrics))
        return drivers[-1]

    gateway = Gateway(GatewayConfig.model_validate(document), config_path, factory)
    gateway.connection_stop_seconds = 1.0
    await gateway.start()
    url = f"http://127.0.0.1:{document['http']['port']}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            await eventually(lambda: drivers and drivers[0].polls, 5, "the first read")
            pushed = {**document, "tags": [{**count, "interval": 30}]}
            started = time.monotonic()
            response = await http.put(
                "/admin/config",
                content=json.dumps(pushed),
                headers={"Authorization": "Bearer push-token"},
            )
            assert response.status_code == 200, response.text
            assert response.json()["applied"] is True
            assert time.monotonic() - started < 5
            status = (await http.get("/status")).json()
            assert [item["name"] for item in status["abandonedConnections"]] == ["plc"]
            assert (await http.get("/healthz")).status_code == 503  # a restart frees it
            assert gateway.metrics.stop_timeouts.labels("plc")._value.get() == 1
            # the new config runs on a new session
            await eventually(lambda: len(drivers) == 2 and drivers[1].polls, 5, "a new session")

            # the file watch is not locked out: the next change of the mounted file applies
            config_path.write_text(json.dumps({**document, "tags": [{**count, "interval": 40}]}))

            await eventually(
                lambda: gateway.config.tags[0].interval == 40, 10, "the file's config to apply"
            )
    finally:
        started = time.monotonic()
        await asyncio.wait_for(gateway.stop(), 15)
        assert time.monotonic() - started < 10
