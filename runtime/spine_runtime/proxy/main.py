"""`spine-runtime proxy --config FILE`: the namespace proxy's supervisor, which runs HAProxy.

Why a supervisor from our image rather than the third-party haproxy image alone: the proxy's
config arrives like every runtime's (pushed by the operator and applied within a second, with
the mounted file as a fallback), is checked with `haproxy -c` before HAProxy is reloaded (a
config HAProxy refuses leaves the running one serving and is reported), and the operator reads
/status (per-route health from HAProxy's stats) and /metrics (ours, then HAProxy's exporter)
the same way as from the other runtimes. Exit codes: 0 after SIGTERM or SIGINT, 2 for an
unusable config file.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from spine_runtime.common.configsource import ConfigError, ConfigSource
from spine_runtime.common.entrypoint import runtime_main
from spine_runtime.common.server import RuntimeServer
from spine_runtime.config.proxy import ProxyConfig
from spine_runtime.proxy.haproxy import HaproxySupervisor
from spine_runtime.proxy.metrics import ProxyMetrics

log = logging.getLogger("spine_runtime.proxy")

CONFIG_POLL_SECONDS = 0.5
STATS_POLL_SECONDS = 2.0
EXPORTER_TIMEOUT_SECONDS = 3.0


class ProxyServer(RuntimeServer):
    """The runtime server whose /metrics appends HAProxy's exporter to the supervisor's own."""

    def __init__(self, *args: object, exporter_url: str, metrics: ProxyMetrics, **kwargs: object):
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.exporter_url = exporter_url
        self.proxy_metrics = metrics

    async def _metrics(self, request: web.Request) -> web.Response:
        exporter_text = b""
        try:
            timeout = aiohttp.ClientTimeout(total=EXPORTER_TIMEOUT_SECONDS)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(self.exporter_url) as response,
            ):
                if response.status == 200:
                    exporter_text = await response.read()
            self.proxy_metrics.exporter_up.set(1 if exporter_text else 0)
        except (aiohttp.ClientError, TimeoutError):
            self.proxy_metrics.exporter_up.set(0)
        body = generate_latest(self.registry) + exporter_text
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def run(config_path: Path, stop: asyncio.Event) -> int:
    source = ConfigSource(ProxyConfig, config_path)
    metrics = ProxyMetrics()
    supervisor = HaproxySupervisor(metrics)
    server = ProxyServer(
        source.current.http,
        metrics.registry,
        status=supervisor.status,
        # Unhealthy only when HAProxy died and could not be started again: a restart of the pod
        # would not fix a config HAProxy refuses, and that is reported in /status instead.
        healthy=lambda: supervisor.config is None or supervisor.ready(),
        config_source=source,
        exporter_url=source.current.haproxy.exporter_url,
        metrics=metrics,
    )
    try:
        await supervisor.apply(source.current)
    except ConfigError as error:
        # Nothing serves until a config HAProxy accepts arrives (push or file): fail-closed.
        log.error("HAProxy not started: %s", error)
    source.on_change = supervisor.apply
    await server.start()
    await supervisor.refresh_routes()
    tasks = [
        asyncio.create_task(source.watch(CONFIG_POLL_SECONDS), name="proxy-config-watch"),
        asyncio.create_task(supervisor.watch(STATS_POLL_SECONDS), name="proxy-haproxy-watch"),
    ]
    await stop.wait()
    log.info("Stopping the proxy")
    for task in tasks:
        task.cancel()
    await supervisor.stop()
    await server.stop()
    return 0


def main(argv: list[str]) -> int:
    return runtime_main(
        argv, name="proxy", description="Run HAProxy with the operator's config.", run=run, log=log
    )
