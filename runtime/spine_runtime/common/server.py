"""The HTTP server most runtimes run (aiohttp): /healthz, /metrics, /status and the config push.

A runtime adds its own routes to `RuntimeServer.app` before `start()`. Every error leaves as a
JSON body with a 4xx status; an unexpected exception is logged and answered with a JSON 500, so
no request can crash the process. The flow engine, which has no aiohttp routes, runs the same
endpoints on `common/leanserver.py` instead; the limits and the endpoints' logic are shared
(`common/endpoints.py`).

What a client that is not a well-behaved one gets (issue 10): a connection must complete each
request head within `HEAD_TIMEOUT_SECONDS` (so slowly dripped headers cannot hold connections
open), idles at most `KEEPALIVE_SECONDS`, and a request that cannot be parsed (a request line
or header over 8 KB, a bad method...) is answered with the JSON error body and logged as one
WARNING line without a traceback, at most one line per `WARNING_INTERVAL_SECONDS` (so it
cannot flood the log). A pushed config is read within `BODY_TIMEOUT_SECONDS` and may be at most
`MAX_CONFIG_BYTES`, the size limit of the ConfigMap it comes from; more gets a 413.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from prometheus_client import CollectorRegistry

from spine_runtime.common import endpoints
from spine_runtime.common.configsource import ConfigSource
from spine_runtime.common.endpoints import Reply, RuntimeEndpoints, peer_of, warn_client
from spine_runtime.config.base import HttpSettings

log = logging.getLogger(__name__)


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"status": status, "error": message, **extra}, status=status)


def to_response(reply: Reply) -> web.Response:
    response = web.Response(
        status=reply.status,
        body=reply.body,
        headers={"Content-Type": reply.content_type, **reply.headers},
    )
    if reply.close:
        response.force_close()
    return response


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.content_type == "application/json" or error.status < 400:
            raise
        return json_error(
            error.status, error.reason, **({"detail": error.text} if error.text else {})
        )
    except Exception:
        log.exception("Unhandled error serving %s %s", request.method, request.path)
        return json_error(500, "internal error")


class _GuardedRequestHandler(RequestHandler):
    """aiohttp's connection handler with a deadline for each request head and client errors
    answered in JSON and logged in one line."""

    _head_timer: asyncio.TimerHandle | None = None
    _last_body: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count > before:
            self._disarm_head_deadline()
            self._last_body = self._messages[-1][1] if self._messages else None
        elif self._head_timer is None and (self._last_body is None or self._last_body.is_eof()):
            # bytes of a new request head (the previous request's body is complete)
            self._arm_head_deadline()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        loop = asyncio.get_running_loop()
        self._head_timer = loop.call_later(endpoints.HEAD_TIMEOUT_SECONDS, self._head_too_slow)

    def _disarm_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        warn_client(
            "Closed a connection from %s: no complete request head within %.0f s",
            peer_of(self.transport),
            endpoints.HEAD_TIMEOUT_SECONDS,
        )
        self.force_close()
        if self.transport is not None:
            self.transport.close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, HttpProcessingError):
            error = f"malformed request: {exc.message or type(exc).__name__}"[:200]
            warn_client("Refused a request from %s: %s", request.remote, error)
        else:
            log.error("Error handling a request from %s", request.remote, exc_info=exc)
            error = "internal error"
        if request.writer.output_size > 0:
            raise ConnectionError("a response was sent already; cannot send the error")
        response = json_error(status, error)
        response.force_close()
        return response


class RuntimeServer:
    """Health, metrics, status and config push for one runtime process."""

    def __init__(
        self,
        settings: HttpSettings,
        registry: CollectorRegistry,
        status: Callable[[], dict[str, Any]],
        healthy: Callable[[], bool] = lambda: True,
        config_source: ConfigSource[Any] | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry  # a subclass may serve its own /metrics (the proxy's)
        self.endpoints = RuntimeEndpoints(settings, registry, status, healthy, config_source)
        self.app = web.Application(
            middlewares=[json_errors], client_max_size=endpoints.MAX_BODY_BYTES
        )
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/status", self._status)
        self.app.router.add_put("/admin/config", self._push_config)
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self.port: int | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        manager = self._runner.server
        assert manager is not None
        loop = asyncio.get_running_loop()

        def connection() -> _GuardedRequestHandler:
            return _GuardedRequestHandler(
                manager,
                loop=loop,
                access_log=None,  # type: ignore[arg-type]  # None turns it off
                keepalive_timeout=endpoints.KEEPALIVE_SECONDS,
                max_line_size=endpoints.MAX_LINE_BYTES,
                max_field_size=endpoints.MAX_LINE_BYTES,
            )

        self._listener = await loop.create_server(
            connection, self.settings.host, self.settings.port, reuse_address=True
        )
        sockets = list(self._listener.sockets or [])
        self.port = sockets[0].getsockname()[1] if sockets else self.settings.port
        log.info("Serving on %s:%s", self.settings.host, self.port)

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        return to_response(self.endpoints.healthz())

    async def _metrics(self, request: web.Request) -> web.Response:
        return to_response(self.endpoints.metrics())

    async def _status(self, request: web.Request) -> web.Response:
        return to_response(self.endpoints.runtime_status())

    async def _push_config(self, request: web.Request) -> web.Response:
        reply = await self.endpoints.push_config(
            request.headers.get("Authorization", ""),
            request.content_length,
            request.content.iter_any(),
        )
        return to_response(reply)
