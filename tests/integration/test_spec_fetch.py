"""fetch_spec against a real HTTP server on 127.0.0.1: what a registration with a spec URL gets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from spine_operator.errors import DependencyUnavailable, InvalidSpec
from spine_operator.specfetch import fetch_spec
from tests.support.processes import free_port

SPEC = b"openapi: 3.1.0\ninfo: {title: Orders, version: '1'}\npaths: {}\n"
LIMIT = 64 * 1024


class SpecServer:
    """Serves a spec, and the ways a spec server can misbehave."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.requests: list[str] = []
        app = web.Application()
        app.router.add_get("/specs/openapi.yaml", self.spec)
        app.router.add_get("/specs/moved", self.moved_inside)
        app.router.add_get("/specs/leave", self.moved_outside)
        app.router.add_get("/specs/slow", self.slow)
        app.router.add_get("/specs/drip", self.drip)
        app.router.add_get("/specs/big", self.big)
        app.router.add_get("/specs/big-declared", self.big_declared)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)

    async def start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        await self.runner.cleanup()

    async def spec(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        return web.Response(body=SPEC, content_type="application/yaml")

    async def moved_inside(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/specs/openapi.yaml")

    async def moved_outside(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("http://metadata.internal.test/latest/secrets")

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(5)  # the server's own slowness, under test; the test never waits it
        return web.Response(body=SPEC)

    async def drip(self, request: web.Request) -> web.StreamResponse:
        # Each byte arrives well within a read timeout; only a deadline on the whole fetch ends it.
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(100):
            await response.write(b"#")
            await asyncio.sleep(0.05)
        return response

    async def big(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no Content-Length to trust
        await response.prepare(request)
        for _ in range(100):
            await response.write(b"x" * 4096)
        return response

    async def big_declared(self, request: web.Request) -> web.Response:
        return web.Response(body=b"x" * (LIMIT + 1))


@pytest.fixture
async def server() -> AsyncIterator[SpecServer]:
    running = SpecServer()
    await running.start()
    yield running
    await running.stop()


async def test_a_spec_from_an_allowed_host_arrives(server: SpecServer) -> None:
    raw = await fetch_spec(
        f"{server.base}/specs/openapi.yaml", allowed_hosts=["127.0.0.1"], allowed_prefixes=[]
    )
    assert raw == SPEC


async def test_a_spec_under_an_allowed_prefix_arrives_and_a_redirect_inside_is_followed(
    server: SpecServer,
) -> None:
    raw = await fetch_spec(
        f"{server.base}/specs/moved",
        allowed_hosts=["orders"],
        allowed_prefixes=[f"{server.base}/specs/"],
    )
    assert raw == SPEC
    assert server.requests == ["/specs/openapi.yaml"]


async def test_a_host_that_is_not_allowed_is_never_contacted(server: SpecServer) -> None:
    with pytest.raises(InvalidSpec) as refused:
        await fetch_spec(
            f"{server.base}/specs/openapi.yaml",
            allowed_hosts=["orders", "orders.plant-a"],
            allowed_prefixes=[f"{server.base}/other/"],
        )
    assert f"{server.base}/specs/openapi.yaml" in refused.value.message
    assert "neither a Service of this namespace nor under a prefix" in refused.value.message
    assert server.requests == []


async def test_a_redirect_to_a_host_that_is_not_allowed_is_refused(server: SpecServer) -> None:
    with pytest.raises(InvalidSpec) as refused:
        await fetch_spec(
            f"{server.base}/specs/leave", allowed_hosts=["127.0.0.1"], allowed_prefixes=[]
        )
    assert "redirects to a refused URL" in refused.value.message
    assert "metadata.internal.test" in refused.value.message


async def test_a_slow_server_times_out(server: SpecServer) -> None:
    started = time.monotonic()
    with pytest.raises(DependencyUnavailable) as unavailable:
        await fetch_spec(
            f"{server.base}/specs/slow",
            allowed_hosts=["127.0.0.1"],
            allowed_prefixes=[],
            timeout=0.3,
        )
    assert time.monotonic() - started < 1.5
    assert "did not arrive within 0.3 s" in unavailable.value.message


async def test_a_server_dripping_bytes_is_cut_off_at_the_deadline(server: SpecServer) -> None:
    started = time.monotonic()
    with pytest.raises(DependencyUnavailable, match=r"did not arrive within 0\.5 s"):
        await fetch_spec(
            f"{server.base}/specs/drip",
            allowed_hosts=["127.0.0.1"],
            allowed_prefixes=[],
            timeout=0.5,
        )
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("path", ["/specs/big", "/specs/big-declared"])
async def test_an_oversized_spec_is_refused(server: SpecServer, path: str) -> None:
    with pytest.raises(DependencyUnavailable) as unavailable:
        await fetch_spec(
            f"{server.base}{path}",
            allowed_hosts=["127.0.0.1"],
            allowed_prefixes=[],
            max_bytes=LIMIT,
        )
    assert f"larger than {LIMIT} bytes" in unavailable.value.message


async def test_a_missing_spec_names_the_url_and_the_status(server: SpecServer) -> None:
    with pytest.raises(DependencyUnavailable) as unavailable:
        await fetch_spec(
            f"{server.base}/specs/nope.yaml", allowed_hosts=["127.0.0.1"], allowed_prefixes=[]
        )
    assert (
        unavailable.value.message
        == f"Spec {server.base}/specs/nope.yaml answered HTTP 404 Not Found"
    )


async def test_nothing_listening_is_unavailable_not_invalid() -> None:
    url = f"http://127.0.0.1:{free_port()}/openapi.json"
    with pytest.raises(DependencyUnavailable) as unavailable:
        await fetch_spec(url, allowed_hosts=["127.0.0.1"], allowed_prefixes=[])
    assert unavailable.value.message == f"Spec {url} is not reachable (no connection)"
