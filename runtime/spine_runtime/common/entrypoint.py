"""What every `spine-runtime <name> --config FILE` command does around its own `run`.

Parses `--config`, sets logging from SPINE_LOG_LEVEL, runs the runtime's coroutine, and turns an
unusable config or a port it cannot bind into exit code 2 with one log line (kubelet and
`spine up` show it). A runtime's `run(config_path, stop)` returns once `stop` is set: here by
SIGTERM or SIGINT (`stop_event`), in `spine-runtime host` by the host. Used by the catalog, the
proxy supervisor and the twin.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from spine_runtime.common.errors import ConfigError
from spine_runtime.common.hosting import LOG_FORMAT


def stop_event() -> asyncio.Event:
    """An event SIGTERM (kubelet) or SIGINT (Ctrl-C) sets; call from the running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


def runtime_main(
    argv: list[str],
    *,
    name: str,
    description: str,
    run: Callable[[Path, asyncio.Event], Awaitable[int]],
    log: logging.Logger,
    quiet_loggers: dict[str, int] | None = None,
) -> int:
    parser = argparse.ArgumentParser(prog=f"spine-runtime {name}", description=description)
    parser.add_argument("--config", required=True, type=Path, help=f"the {name}'s config file")
    args = parser.parse_args(argv)
    level = os.environ.get("SPINE_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format=LOG_FORMAT)
    for logger, quiet in (quiet_loggers or {}).items():
        logging.getLogger(logger).setLevel(quiet)

    async def until_signalled() -> int:
        return await run(args.config, stop_event())

    try:
        return asyncio.run(until_signalled())
    except ConfigError as error:
        log.error("Cannot use the config %s: %s", args.config, error)
        return 2
    except OSError as error:
        log.error("Cannot start the %s: %s", name, error)
        return 2


def run_on_fastest_loop(main: Coroutine[Any, Any, int]) -> int:
    """uvloop where it is installed (a dependency; not on every platform), else asyncio's: the
    flow engine and `spine-runtime host` run on it. With SPINE_FLOW_PROFILE=<file>, the run is
    profiled (cProfile) into that file: how the flow benchmark report says where the time goes."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(main)
    profile_path = os.environ.get("SPINE_FLOW_PROFILE")
    if not profile_path:
        return int(uvloop.run(main))
    import cProfile

    profiler = cProfile.Profile()
    try:
        return int(profiler.runcall(uvloop.run, main))
    finally:
        profiler.dump_stats(profile_path)
