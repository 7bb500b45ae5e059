"""What every runtime's HTTP server does, apart from the HTTP library that carries it.

The limits and deadlines of issue 10, the rate-limited warning for misbehaving clients, and the
logic of /healthz, /metrics, /status and PUT /admin/config, each answering a `Reply`. Two
servers use it: `common/server.py` (aiohttp, for the runtimes that add aiohttp routes) and
`common/leanserver.py` (h11 over asyncio, for the flow engine, which saves aiohttp's memory).
The servers read the limits from this module at call time, so a test may shorten them here.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from spine_runtime.common.configsource import ConfigError, ConfigSource
from spine_runtime.config.base import HttpSettings

log = logging.getLogger("spine_runtime.common.server")

MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_CONFIG_BYTES = 1024 * 1024  # a ConfigMap holds at most 1 MiB
MAX_LINE_BYTES = 8190  # request line and each header line (aiohttp's default, said here)
HEAD_TIMEOUT_SECONDS = 10.0
BODY_TIMEOUT_SECONDS = 10.0
KEEPALIVE_SECONDS = 75.0
WARNING_INTERVAL_SECONDS = 10.0


@dataclass(slots=True)
class Reply:
    """An answer, whichever server sends it. `close` ends the connection after it (the rest
    of a request body was not read)."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False


def json_reply(document: Any, status: int = 200, **headers: str) -> Reply:
    return Reply(status, json.dumps(document).encode(), headers=headers)


def error_reply(status: int, message: str, **extra: Any) -> Reply:
    """The JSON error body every runtime answers with: {"status", "error", ...}."""
    return json_reply({"status": status, "error": message, **extra}, status)


class RateLimitedWarning:
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


client_warning = RateLimitedWarning(WARNING_INTERVAL_SECONDS)


def warn_client(message: str, *args: object) -> None:
    """Through the module's current `client_warning` (a test may replace it)."""
    client_warning(message, *args)


def peer_of(transport: asyncio.BaseTransport | None) -> str:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"


def bearer_token_matches(authorization: str, expected: str) -> bool:
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), expected.encode()
    )


def config_too_large() -> Reply:
    reply = error_reply(
        413,
        "config too large",
        detail=f"a config may be at most {MAX_CONFIG_BYTES} bytes (1 MiB, the size limit of the "
        "ConfigMap it comes from)",
    )
    reply.close = True  # the rest of the body is not read
    return reply


def body_too_slow() -> Reply:
    reply = error_reply(408, f"the body was not sent within {BODY_TIMEOUT_SECONDS:g} s")
    reply.close = True
    return reply


class RuntimeEndpoints:
    """Health, metrics, status and config push for one runtime process."""

    def __init__(
        self,
        settings: HttpSettings,
        registry: Any,  # a prometheus_client CollectorRegistry
        status: Callable[[], dict[str, Any]],
        healthy: Callable[[], bool] = lambda: True,
        config_source: ConfigSource[Any] | None = None,
        before_scrape: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.status = status
        self.healthy = healthy
        self.config_source = config_source
        # Brings counters kept in plain integers up to date (the flow engine's runners).
        self.before_scrape = before_scrape

    def healthz(self) -> Reply:
        if self.healthy():
            return json_reply({"status": "ok"})
        return error_reply(503, "not healthy")

    def metrics(self) -> Reply:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if self.before_scrape is not None:
            self.before_scrape()
        return Reply(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)

    def runtime_status(self) -> Reply:
        return json_reply(self.status())

    async def push_config(
        self, authorization: str, content_length: int | None, chunks: AsyncIterator[bytes]
    ) -> Reply:
        """PUT /admin/config: the bearer token, then a body of at most MAX_CONFIG_BYTES read
        within BODY_TIMEOUT_SECONDS, then the config source decides."""
        token_file = self.settings.admin_token_file
        if self.config_source is None or token_file is None:
            return error_reply(404, "config push is not enabled")
        if not bearer_token_matches(authorization, token_file.read_text().strip()):
            return error_reply(401, "a valid bearer token is required")
        if content_length is not None and content_length > MAX_CONFIG_BYTES:
            return config_too_large()
        body = bytearray()
        try:
            async with asyncio.timeout(BODY_TIMEOUT_SECONDS):
                async for chunk in chunks:
                    body += chunk
                    if len(body) > MAX_CONFIG_BYTES:
                        return config_too_large()
        except TimeoutError:
            reply = error_reply(408, f"the config was not sent within {BODY_TIMEOUT_SECONDS:g} s")
            reply.close = True
            return reply
        try:
            applied = await self.config_source.offer(bytes(body), "push")
        except ConfigError as error:
            return error_reply(400, "invalid config", detail=str(error))
        return json_reply({"applied": applied, "digest": self.config_source.digest})
