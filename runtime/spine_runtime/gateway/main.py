"""`spine-runtime gateway --config FILE`: run one gateway until SIGTERM or SIGINT.

The CLI (`spine_runtime.cli`) calls `main(argv)`; the container runs it with the config file
the operator mounts, the tests and `spine up` as a child process. Exit code 2: the config is
unusable (the log says which field); 0: stopped on a signal.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path

from spine_runtime.common.configsource import ConfigError, parse_config
from spine_runtime.common.entrypoint import stop_event
from spine_runtime.common.hosting import LOG_FORMAT
from spine_runtime.config.gateway import GatewayConfig
from spine_runtime.gateway.app import Gateway

log = logging.getLogger("spine_runtime.gateway")

# Libraries that log every retry or every publish response, or warn about what the gateway
# reports itself (a refused connection, a closed channel): our own log says it once.
QUIET_LOGGERS = {
    "asyncua": logging.ERROR,
    "pymodbus": logging.CRITICAL,
    "snap7": logging.WARNING,
    "s7": logging.WARNING,
}


def configure_logging() -> None:
    level = os.environ.get("SPINE_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format=LOG_FORMAT)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(QUIET_LOGGERS[name])


def read_config(config_path: Path) -> GatewayConfig:
    """The gateway's config; OSError or ConfigError (the log says which field) otherwise."""
    return parse_config(GatewayConfig, config_path.read_bytes())


async def run(config_path: Path, stop: asyncio.Event) -> int:
    gateway = Gateway(read_config(config_path), config_path)
    await gateway.start()
    try:
        await stop.wait()
        log.info("Stopping on a signal")
    finally:
        await gateway.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spine-runtime gateway")
    parser.add_argument("--config", required=True, type=Path, help="the gateway config file")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        read_config(args.config)
    except OSError as error:
        log.error("Cannot read config %s: %s", args.config, error)
        return 2
    except ConfigError as error:
        log.error("Invalid config %s: %s", args.config, error)
        return 2

    async def until_signalled() -> int:
        return await run(args.config, stop_event())

    return asyncio.run(until_signalled())
