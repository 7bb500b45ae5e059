"""`spine-runtime twin --config FILE`: run the twin service until SIGTERM.

Wires the config source (file watch plus the operator's push), the service, the runtime server
with the /api/2 routes, and stops in order: SSE streams, HTTP, the last commit, the broker.
Exit codes: 0 after a signal, 1 when storage failed, 2 for an unusable config.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from spine_runtime.common.configsource import ConfigError, ConfigSource
from spine_runtime.common.entrypoint import stop_event
from spine_runtime.common.hosting import LOG_FORMAT
from spine_runtime.common.server import RuntimeServer
from spine_runtime.config.twin import TwinConfig
from spine_runtime.twin.api import add_routes
from spine_runtime.twin.service import TwinService
from spine_runtime.twin.store import StorageError

log = logging.getLogger("spine_runtime.twin")

# The mounted file is polled this often, so a changed model applies within a second even when
# the operator's push was missed.
CONFIG_POLL_SECONDS = 0.25


async def run(config_path: Path, stop: asyncio.Event) -> int:
    source = ConfigSource(TwinConfig, config_path)
    config = source.current
    service = TwinService(config, config_digest=lambda: source.digest)
    source.on_change = service.apply_config
    server = RuntimeServer(
        config.http,
        service.metrics.registry,
        status=service.status,
        healthy=service.healthy,
        config_source=source,
    )
    add_routes(server.app, service)

    await service.start()
    await server.start()
    watcher = asyncio.create_task(source.watch(CONFIG_POLL_SECONDS), name="twin-config-watch")
    stopped = asyncio.create_task(service.stopped.wait())
    signalled = asyncio.create_task(stop.wait())
    await asyncio.wait([stopped, signalled], return_when=asyncio.FIRST_COMPLETED)
    log.info("Stopping the twin")
    for task in (watcher, stopped, signalled):
        task.cancel()
    service.hub.close_all()
    await server.stop()
    await service.stop()
    return 1 if service.fatal is not None else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="spine-runtime twin", description="Run the twin service.")
    parser.add_argument("--config", required=True, type=Path, help="the twin's config file")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format=LOG_FORMAT)

    async def until_signalled() -> int:
        return await run(args.config, stop_event())

    try:
        return asyncio.run(until_signalled())
    except ConfigError as error:
        log.error("Cannot use the config %s: %s", args.config, error)
        return 2
    except OSError as error:
        log.error("Cannot start the twin: %s", error)
        return 2
    except StorageError as error:
        log.error("Cannot start the twin: %s", error)
        return 1
