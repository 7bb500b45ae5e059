"""`spine-runtime flow --config FILE`: run the flow engine until SIGTERM or SIGINT.

Wires the config source (file watch plus the operator's push), the engine, and the runtime
server with /healthz, /metrics, /status and the HTTP sources (the lean one, without aiohttp:
benchmarks/reports/flow.md); runs on uvloop where installed
(it cut the engine's CPU per message by about a third here). Exit codes: 0 after a signal,
2 for an unusable config.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
from pathlib import Path

from spine_runtime.common.configsource import ConfigError, ConfigSource
from spine_runtime.common.entrypoint import run_on_fastest_loop, stop_event
from spine_runtime.common.hosting import LOG_FORMAT, hosted
from spine_runtime.common.leanserver import LeanServer
from spine_runtime.config.flow import FlowEngineConfig
from spine_runtime.flow.engine import FlowEngine

log = logging.getLogger("spine_runtime.flow")

CONFIG_POLL_SECONDS = 0.25
QUIET_LOGGERS = {"gmqtt": logging.ERROR}


async def run(config_path: Path, stop: asyncio.Event) -> int:
    source = ConfigSource(FlowEngineConfig, config_path)
    engine = FlowEngine(source.current)
    source.on_change = engine.apply
    server = LeanServer(
        source.current.http,
        engine.metrics.registry,
        status=lambda: {**engine.status(), "configDigest": source.digest},
        healthy=engine.healthy,
        config_source=source,
        before_scrape=engine.push_counts,
    )
    engine.add_routes(server)

    await server.start()
    await engine.start()
    # What is loaded by now (the config models, aiohttp, gmqtt, jlens: some 50,000 objects)
    # lives as long as the process; a full collection visiting it all stalled every flow for
    # about 30 ms, the largest part of the p99 at 2,000 msg/s (benchmarks/reports/flow.md).
    # Not in `spine-runtime host`: it would freeze the other runtimes' objects at whatever point
    # their start had reached; the host's local run is not where that p99 matters.
    if not hosted():
        gc.collect()
        gc.freeze()
    watcher = asyncio.create_task(source.watch(CONFIG_POLL_SECONDS), name="flow-config-watch")
    await stop.wait()
    log.info("Stopping the flow engine")
    watcher.cancel()
    await engine.stop()
    await server.stop()
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="spine-runtime flow", description="Run the flow engine.")
    parser.add_argument("--config", required=True, type=Path, help="the engine's config file")
    args = parser.parse_args(argv)
    level = os.environ.get("SPINE_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format=LOG_FORMAT)
    for name, quiet in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(quiet)

    async def until_signalled() -> int:
        return await run(args.config, stop_event())

    try:
        return run_on_fastest_loop(until_signalled())
    except ConfigError as error:
        log.error("Cannot use the config %s: %s", args.config, error)
        return 2
    except OSError as error:
        log.error("Cannot start the flow engine: %s", error)
        return 2
