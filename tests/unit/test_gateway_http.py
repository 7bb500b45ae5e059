"""The runtime HTTP servers against clients that misbehave: slow heads, oversized request lines,
malformed requests, huge or slow pushes. Each test runs against both servers: common/server.py
(aiohttp, which the gateway and the twin run) and common/leanserver.py (h11, the flow engine's).

A real server on 127.0.0.1 in the test's loop, real sockets; the deadlines are shortened for the
test (issue 10, item 8).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from pathlib import Path

import pytest

from spine_runtime.common import endpoints as endpoints_module
from spine_runtime.common.configsource import ConfigSource
from spine_runtime.common.leanserver import LeanServer
from spine_runtime.common.server import RuntimeServer
from spine_runtime.config.base import HttpSettings
from spine_runtime.config.gateway import GatewayConfig
from spine_runtime.gateway.metrics import GatewayMetrics
from tests.support.processes import free_port

MINIMAL = {
    "name": "line-1",
    "twinNamespace": "plant_a",
    "mqtt": {
        "host": "127.0.0.1",
        "port": 1883,
        "username": "u",
        "passwordFile": "/nonexistent",
        "clientId": "c",
    },
    "buffer": {"path": "/nonexistent"},
}


@pytest.fixture(params=[RuntimeServer, LeanServer], ids=["aiohttp", "lean"])
async def server(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(endpoints_module, "HEAD_TIMEOUT_SECONDS", 0.5)
    monkeypatch.setattr(endpoints_module, "BODY_TIMEOUT_SECONDS", 0.5)
    monkeypatch.setattr(endpoints_module, "client_warning", endpoints_module.RateLimitedWarning(60))
    token = tmp_path / "token"
    token.write_text("secret")
    config = tmp_path / "gateway.json"
    config.write_text(json.dumps(MINIMAL))
    applied: list[GatewayConfig] = []

    async def apply(new: GatewayConfig) -> None:
        applied.append(new)

    running = request.param(
        HttpSettings(host="127.0.0.1", port=free_port(), adminTokenFile=token),
        GatewayMetrics().registry,
        lambda: {"ok": True},
        config_source=ConfigSource(GatewayConfig, config, apply),
    )
    await running.start()
    yield running
    await running.stop()


async def exchange(port: int, request: bytes, wait: float = 5.0) -> bytes:
    """Send `request`; read one whole response, or until the server closes (`wait` at most)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        with contextlib.suppress(ConnectionError):  # the server may stop reading and close
            writer.write(request)
            await writer.drain()
        received = b""
        async with asyncio.timeout(wait):
            while chunk := await reader.read(65536):
                received += chunk
                head, found, body = received.partition(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: (\d+)", head)
                if found and length and len(body) >= int(length.group(1)):
                    break
        return received
    finally:
        writer.close()


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


async def test_a_head_sent_too_slowly_is_cut_off(server: RuntimeServer | LeanServer) -> None:
    assert server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    started = time.monotonic()
    writer.write(b"GET /status HTTP/1.1\r\nHost: x\r\n")
    closed_at = None
    try:
        for _ in range(40):  # one more header byte every 0.1 s, for up to 4 s
            await asyncio.sleep(0.1)
            writer.write(b"X")
            try:
                async with asyncio.timeout(0.01):
                    if await reader.read(100) == b"":
                        closed_at = time.monotonic()
                        break
            except TimeoutError:
                continue
            except ConnectionError:
                closed_at = time.monotonic()
                break
    finally:
        writer.close()
    assert closed_at is not None, "the server kept a dripping request head open"
    assert closed_at - started < 2


async def test_an_idle_connection_without_a_request_is_closed(
    server: RuntimeServer | LeanServer,
) -> None:
    assert server.port is not None
    started = time.monotonic()
    assert await exchange(server.port, b"", wait=3) == b""
    assert time.monotonic() - started < 2


async def test_an_oversized_request_line_gets_the_json_error_and_one_log_line(
    server: RuntimeServer | LeanServer, caplog: pytest.LogCaptureFixture
) -> None:
    assert server.port is not None
    caplog.set_level(logging.DEBUG)
    raw = await exchange(server.port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = split_response(raw)
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    document = json.loads(body)
    assert document["status"] == 400 and document["error"].startswith("malformed request")
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(problems) == 1
    assert problems[0].levelno == logging.WARNING and problems[0].exc_info is None
    assert "Traceback" not in caplog.text


async def test_a_flood_of_malformed_requests_logs_one_line(
    server: RuntimeServer | LeanServer, caplog: pytest.LogCaptureFixture
) -> None:
    assert server.port is not None
    caplog.set_level(logging.DEBUG)
    for _ in range(20):
        raw = await exchange(server.port, b"GET /status HTTP/1.1\r\nNo colon here\r\n\r\n")
        status, _, body = split_response(raw)
        assert status == 400 and json.loads(body)["status"] == 400
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(problems) == 1, [r.getMessage() for r in problems]
    assert "Traceback" not in caplog.text


async def test_a_push_over_one_mebibyte_is_refused_with_413(
    server: RuntimeServer | LeanServer,
) -> None:
    assert server.port is not None
    big = json.dumps({**MINIMAL, "padding": "x" * (2 * 1024 * 1024)}).encode()
    head = (
        f"PUT /admin/config HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\n"
        f"Content-Length: {len(big)}\r\n\r\n"
    ).encode()
    status, _, body = split_response(await exchange(server.port, head + big))
    assert status == 413
    assert "at most 1048576 bytes" in json.loads(body)["detail"]
    # the same without a length (chunked): counted as it arrives
    chunked = b"".join(
        b"%x\r\n%s\r\n" % (len(part), part)
        for part in (big[i : i + 65536] for i in range(0, len(big), 65536))
    )
    head = (
        b"PUT /admin/config HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    status, _, body = split_response(await exchange(server.port, head + chunked + b"0\r\n\r\n"))
    assert status == 413


async def test_a_push_body_sent_too_slowly_is_refused(server: RuntimeServer | LeanServer) -> None:
    assert server.port is not None
    head = (
        b"PUT /admin/config HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    status, _, body = split_response(await exchange(server.port, head, wait=5))
    assert status == 408
    assert "not sent within" in json.loads(body)["error"]


async def test_a_header_line_over_8_kb_gets_the_json_error(
    server: RuntimeServer | LeanServer,
) -> None:
    assert server.port is not None
    request = b"GET /status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    status, headers, body = split_response(await exchange(server.port, request))
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"].startswith("malformed request")


async def test_a_push_with_a_wrong_token_is_refused_and_a_good_one_applied(
    server: RuntimeServer | LeanServer,
) -> None:
    assert server.port is not None
    body = json.dumps({**MINIMAL, "name": "line-2"}).encode()
    for token, expected in (("wrong", 401), ("secret", 200)):
        head = (
            f"PUT /admin/config HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        status, _, answer = split_response(await exchange(server.port, head + body))
        assert status == expected, answer
    assert json.loads(answer)["applied"] is True
