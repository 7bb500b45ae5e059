"""What every `spine-runtime <name> --config FILE` command does around its own `run`.

Parses `--config`, sets logging from SPINE_LOG_LEVEL, runs the runtime's coroutine, and turns an
unusable config or a port it cannot bind into exit code 2 with one log line (kubelet and
`spine up` show it); `stop_event` is set by SIGTERM or SIGINT. Used by the catalog and the proxy
supervisor.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from spine_runtime.common.configsource import ConfigError


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
    run: Callable[[Path], Awaitable[int]],
    log: logging.Logger,
) -> int:
    parser = argparse.ArgumentParser(prog=f"spine-runtime {name}", description=description)
    parser.add_argument("--config", required=True, type=Path, help=f"the {name}'s config file")
    args = parser.parse_args(argv)
    level = os.environ.get("SPINE_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(run(args.config))  # type: ignore[arg-type]
    except ConfigError as error:
        log.error("Cannot use the config %s: %s", args.config, error)
        return 2
    except OSError as error:
        log.error("Cannot start the %s: %s", name, error)
        return 2
