"""`spine-runtime catalog --config FILE`: run the service catalog until SIGTERM or SIGINT.

Wires the config source (file watch plus the operator's push), the catalog service and the
runtime server with /healthz, /metrics, /status and the catalog API, and stops in order: HTTP,
then probes and the broker connection. Exit codes: 0 after a signal, 2 for an unusable config.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from spine_runtime.catalog.api import add_routes
from spine_runtime.catalog.service import CatalogService
from spine_runtime.common.configsource import ConfigSource
from spine_runtime.common.entrypoint import runtime_main
from spine_runtime.common.server import RuntimeServer
from spine_runtime.config.catalog import CatalogConfig

log = logging.getLogger("spine_runtime.catalog")

# The mounted file is polled this often, so a new registration shows within a second even when
# the operator's push was missed.
CONFIG_POLL_SECONDS = 0.25


async def run(config_path: Path, stop: asyncio.Event) -> int:
    source = ConfigSource(CatalogConfig, config_path)
    service = CatalogService(source.current, config_digest=lambda: source.digest)
    source.on_change = service.apply_config
    server = RuntimeServer(
        source.current.http,
        service.metrics.registry,
        status=service.status,
        healthy=service.healthy,
        config_source=source,
    )
    add_routes(server.app, service)

    await service.start()
    await server.start()
    watcher = asyncio.create_task(source.watch(CONFIG_POLL_SECONDS), name="catalog-config-watch")
    await stop.wait()
    log.info("Stopping the catalog")
    watcher.cancel()
    await server.stop()
    await service.stop()
    return 0


def main(argv: list[str]) -> int:
    return runtime_main(
        argv, name="catalog", description="Run the service catalog.", run=run, log=log
    )
