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
import signal
from pathlib import Path

from spine_runtime.common.configsource import ConfigError, parse_config
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
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(QUIET_LOGGERS[name])


async def serve(config: GatewayConfig, config_path: Path) -> None:
    gateway = Gateway(config, config_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await gateway.start()
    try:
        await stop.wait()
        log.info("Stopping on a signal")
    finally:
        await gateway.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spine-runtime gateway")
    parser.add_argument("--config", required=True, type=Path, help="the gateway config file")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        config = parse_config(GatewayConfig, args.config.read_bytes())
    except OSError as error:
        log.error("Cannot read config %s: %s", args.config, error)
        return 2
    except ConfigError as error:
        log.error("Invalid config %s: %s", args.config, error)
        return 2
    asyncio.run(serve(config, args.config))
    return 0
