"""`spine-runtime sim`: run the simulated press until SIGTERM or SIGINT.

Called by `spine_runtime.cli`; `make demo`, the gateway's integration tests and the benchmarks
start it as a child process, with a config file (`--config`) or with flags alone. Flags
override the file. Exit codes: 0 after a clean stop, 1 if a server cannot start, 2 for a bad
config or bad flags.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from spine_runtime.common.configsource import ConfigError, describe_validation_error, parse_config
from spine_runtime.sim.app import SimApp
from spine_runtime.sim.config import SimConfig

log = logging.getLogger("spine_runtime.sim")

PROTOCOLS = ("modbus", "opcua", "s7")
# A stop must finish well within the 2 s a supervisor (or a test) allows after SIGTERM.
STOP_DEADLINE_SECONDS = 1.8

# Libraries that log every request or connection at INFO; their warnings still show.
CHATTY_LOGGERS = {"asyncua": logging.WARNING, "pymodbus": logging.WARNING, "snap7": logging.WARNING}
# asyncua warns at start that a server without security cannot verify certificates: true, and
# intended for a local test instrument.
QUIET_LOGGERS = {"asyncua.server.server": logging.ERROR}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spine-runtime sim",
        description="A simulated hydraulic press served over Modbus TCP, OPC UA and S7.",
    )
    parser.add_argument("--config", type=Path, help="YAML or JSON config file (SimConfig)")
    parser.add_argument("--host", help="IPv4 address every server listens on")
    parser.add_argument("--modbus-port", type=int)
    parser.add_argument("--opcua-port", type=int)
    parser.add_argument("--s7-port", type=int)
    parser.add_argument("--http-port", type=int)
    parser.add_argument(
        "--protocols", help="comma-separated protocols to serve, e.g. modbus,opcua (default: all)"
    )
    parser.add_argument("--seed", type=int)
    parser.add_argument("--bench-registers", type=int)
    parser.add_argument("--tick-interval-ms", type=int)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    return parser


def load_config(args: argparse.Namespace) -> SimConfig:
    """The config file (or the defaults) with the flags applied, validated as one document."""
    base = parse_config(SimConfig, args.config.read_bytes()) if args.config else SimConfig()
    data: dict[str, Any] = base.model_dump()
    if args.host is not None:
        for section in (*PROTOCOLS, "http"):
            data[section]["host"] = args.host
    for section, port in (
        ("modbus", args.modbus_port),
        ("opcua", args.opcua_port),
        ("s7", args.s7_port),
        ("http", args.http_port),
    ):
        if port is not None:
            data[section]["port"] = port
    if args.protocols is not None:
        wanted = {name.strip() for name in args.protocols.split(",") if name.strip()}
        unknown = wanted - set(PROTOCOLS)
        if unknown:
            raise ConfigError(f"--protocols: unknown {', '.join(sorted(unknown))}")
        for protocol in PROTOCOLS:
            data[protocol]["enabled"] = protocol in wanted
    for field, value in (
        ("seed", args.seed),
        ("bench_registers", args.bench_registers),
        ("tick_interval_ms", args.tick_interval_ms),
    ):
        if value is not None:
            data[field] = value
    try:
        return SimConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error)) from None


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name, library_level in {**CHATTY_LOGGERS, **QUIET_LOGGERS}.items():
        logging.getLogger(name).setLevel(max(library_level, logging.getLevelName(level)))


async def serve(config: SimConfig) -> int:
    app = SimApp(config)
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    try:
        await app.start()
    except OSError as error:
        log.error("Cannot start the press simulator: %s", error)
        await app.stop()
        return 1
    log.info("Press simulator running (%s)", ", ".join(config.enabled_protocols()) or "HTTP only")
    await stop_requested.wait()
    log.info("Stopping")
    try:
        await asyncio.wait_for(app.stop(), STOP_DEADLINE_SECONDS)
    except TimeoutError:
        log.warning("Servers did not stop within %ss; exiting anyway", STOP_DEADLINE_SECONDS)
    log.info("Stopped")
    return 0


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        config = load_config(args)
    except (ConfigError, OSError) as error:
        log.error("Invalid simulator config: %s", error)
        return 2
    return asyncio.run(serve(config))
