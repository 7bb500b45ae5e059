"""The HTTP server every runtime runs: /healthz, /metrics, /status and the config push endpoint.

A runtime adds its own routes to `RuntimeServer.app` before `start()`. Every error leaves as a
JSON body with a 4xx status; an unexpected exception is logged and answered with a JSON 500, so
no request can crash the process.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from spine_runtime.common.configsource import ConfigError, ConfigSource
from spine_runtime.config.base import HttpSettings

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024


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
        self.port: int | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.settings.port
        log.info("Serving on %s:%s", self.settings.host, self.port)

    async def stop(self) -> None:
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
        try:
            applied = await self.config_source.offer(await request.read(), "push")
        except ConfigError as error:
            return json_error(400, "invalid config", detail=str(error))
        return web.json_response({"applied": applied, "digest": self.config_source.digest})
