"""The flow engine's HTTP server (common/leanserver.py) through a real HTTP client (httpx) on
127.0.0.1: the built-in endpoints, keep-alive, routing errors, a handler's exception, and bodies
(chunked, too large, too slow) of a route of its own. What misbehaving clients get is tested
against both servers in test_gateway_http.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from spine_runtime.common import endpoints as endpoints_module
from spine_runtime.common.configsource import ConfigSource
from spine_runtime.common.endpoints import Reply, json_reply
from spine_runtime.common.leanserver import LeanServer, Request
from spine_runtime.config.base import HttpSettings
from spine_runtime.config.gateway import GatewayConfig
from tests.support.processes import free_port
from tests.unit.test_gateway_http import MINIMAL, exchange, split_response


@pytest.fixture
async def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LeanServer]:
    monkeypatch.setattr(endpoints_module, "BODY_TIMEOUT_SECONDS", 0.5)
    monkeypatch.setattr(endpoints_module, "client_warning", endpoints_module.RateLimitedWarning(60))
    token = tmp_path / "token"
    token.write_text("secret\n")
    config = tmp_path / "gateway.json"
    config.write_text(json.dumps(MINIMAL))
    registry = CollectorRegistry()
    Counter("lean_test_requests", "requests", registry=registry).inc(3)

    async def apply(new: GatewayConfig) -> None:
        return None

    running = LeanServer(
        HttpSettings(host="127.0.0.1", port=free_port(), adminTokenFile=token),
        registry,
        lambda: {"ok": True},
        healthy=lambda: True,
        config_source=ConfigSource(GatewayConfig, config, apply),
    )

    async def echo(request: Request) -> Reply:
        body = await request.read(16)
        return json_reply({"method": request.method, "path": request.path, "bytes": len(body)})

    async def broken(request: Request) -> Reply:
        raise RuntimeError("a bug")

    running.add_prefix_route("/echo/", echo)
    running.add_route("GET", "/broken", broken)
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
async def client(server: LeanServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as c:
        yield c


async def test_health_metrics_and_status(client: httpx.AsyncClient) -> None:
    health = await client.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    metrics = await client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "lean_test_requests_total 3.0" in metrics.text
    status = await client.get("/status")
    assert status.json() == {"ok": True}


async def test_requests_on_one_connection_are_kept_alive(server: LeanServer) -> None:
    assert server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        for _ in range(3):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            assert json.loads(await reader.readexactly(length)) == {"status": "ok"}
    finally:
        writer.close()


async def test_unknown_paths_and_methods_get_json_errors(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nowhere")
    assert missing.status_code == 404 and missing.json()["status"] == 404
    wrong = await client.post("/healthz", content=b"{}")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET"
    assert wrong.json()["error"] == "method not allowed"


async def test_a_handlers_exception_is_a_json_500_and_logged(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    answer = await client.get("/broken")
    assert answer.status_code == 500 and answer.json() == {"status": 500, "error": "internal error"}
    assert any("a bug" in (r.exc_text or "") or r.exc_info for r in caplog.records)
    assert (await client.get("/healthz")).status_code == 200  # the server goes on


async def test_a_routes_body_plain_and_chunked(client: httpx.AsyncClient) -> None:
    plain = await client.post("/echo/a%20b", content=b"0123456789")
    assert plain.json() == {"method": "POST", "path": "/echo/a b", "bytes": 10}

    async def parts() -> AsyncIterator[bytes]:
        for part in (b"01234", b"56789"):
            yield part

    chunked = await client.put("/echo/x", content=parts())
    assert chunked.json()["bytes"] == 10
    # over the handler's limit: it sees limit + 1 bytes, the rest is not read
    long = await client.post("/echo/x", content=b"x" * 100_000)
    assert long.json()["bytes"] == 17


async def test_a_routes_body_sent_too_slowly_is_a_408(server: LeanServer) -> None:
    assert server.port is not None
    head = b"POST /echo/x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01"
    status, headers, body = split_response(await exchange(server.port, head, wait=5))
    assert status == 408 and headers["connection"] == "close"
    assert "not sent within" in json.loads(body)["error"]


async def test_a_push_through_httpx_is_applied(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    refused = await client.put("/admin/config", content=b"{}")
    assert refused.status_code == 401
    invalid = await client.put(
        "/admin/config", content=b"{}", headers={"Authorization": "Bearer secret"}
    )
    assert invalid.status_code == 400 and invalid.json()["error"] == "invalid config"
    pushed = await client.put(
        "/admin/config",
        content=json.dumps({**MINIMAL, "name": "line-9"}),
        headers={"Authorization": "Bearer secret", "Expect": "100-continue"},
    )
    assert pushed.status_code == 200 and pushed.json()["applied"] is True
