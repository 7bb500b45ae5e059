"""The HTTP server every runtime runs: /healthz, /metrics, /status and the config push endpoint.

A runtime adds its own routes to `RuntimeServer.app` before `start()`. Every error leaves as a
JSON body with a 4xx status; an unexpected exception is logged and answered with a JSON 500, so
no request can crash the process.

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
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from spine_runtime.common.configsource import ConfigError, ConfigSource
from spine_runtime.config.base import HttpSettings

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_CONFIG_BYTES = 1024 * 1024  # a ConfigMap holds at most 1 MiB
MAX_LINE_BYTES = 8190  # request line and each header line (aiohttp's default, said here)
HEAD_TIMEOUT_SECONDS = 10.0
BODY_TIMEOUT_SECONDS = 10.0
KEEPALIVE_SECONDS = 75.0
WARNING_INTERVAL_SECONDS = 10.0


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"status": status, "error": message, **extra}, status=status)


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


class _RateLimitedWarning:
    """One WARNING line per interval at most; the lines held back are counted in the next."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last = -interval
        self.held_back = 0

    def __call__(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            self.held_back += 1
            return
        more = f" (and {self.held_back} more since the last such line)" if self.held_back else ""
        self.last, self.held_back = now, 0
        log.warning(message + more, *args)


_client_warning = _RateLimitedWarning(WARNING_INTERVAL_SECONDS)


def _peer(transport: asyncio.BaseTransport | None) -> str:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"


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
        self._head_timer = loop.call_later(HEAD_TIMEOUT_SECONDS, self._head_too_slow)

    def _disarm_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        _client_warning(
            "Closed a connection from %s: no complete request head within %.0f s",
            _peer(self.transport),
            HEAD_TIMEOUT_SECONDS,
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
            _client_warning("Refused a request from %s: %s", request.remote, error)
        else:
            log.error("Error handling a request from %s", request.remote, exc_info=exc)
            error = "internal error"
        if request.writer.output_size > 0:
            raise ConnectionError("a response was sent already; cannot send the error")
        response = json_error(status, error)
        response.force_close()
        return response


def bearer_token_matches(request: web.Request, expected: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), expected.encode()
    )


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
        self.registry = registry
        self.status = status
        self.healthy = healthy
        self.config_source = config_source
        self.app = web.Application(middlewares=[json_errors], client_max_size=MAX_BODY_BYTES)
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
                keepalive_timeout=KEEPALIVE_SECONDS,
                max_line_size=MAX_LINE_BYTES,
                max_field_size=MAX_LINE_BYTES,
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
        if self.healthy():
            return web.json_response({"status": "ok"})
        return json_error(503, "not healthy")

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self.status())

    async def _push_config(self, request: web.Request) -> web.Response:
        token_file = self.settings.admin_token_file
        if self.config_source is None or token_file is None:
            return json_error(404, "config push is not enabled")
        if not bearer_token_matches(request, token_file.read_text().strip()):
            return json_error(401, "a valid bearer token is required")
        if request.content_length is not None and request.content_length > MAX_CONFIG_BYTES:
            return _config_too_large()
        body = bytearray()
        try:
            async with asyncio.timeout(BODY_TIMEOUT_SECONDS):
                while chunk := await request.content.readany():
                    body += chunk
                    if len(body) > MAX_CONFIG_BYTES:
                        return _config_too_large()
        except TimeoutError:
            response = json_error(408, f"the config was not sent within {BODY_TIMEOUT_SECONDS:g} s")
            response.force_close()
            return response
        try:
            applied = await self.config_source.offer(bytes(body), "push")
        except ConfigError as error:
            return json_error(400, "invalid config", detail=str(error))
        return web.json_response({"applied": applied, "digest": self.config_source.digest})


def _config_too_large() -> web.Response:
    response = json_error(
        413,
        "config too large",
        detail=f"a config may be at most {MAX_CONFIG_BYTES} bytes (1 MiB, the size limit of the "
        "ConfigMap it comes from)",
    )
    response.force_close()  # the rest of the body is not read
    return response
