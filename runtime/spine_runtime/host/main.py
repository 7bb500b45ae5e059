"""`spine-runtime host --run KIND=CONFIG [--run ...]`: several runtimes in one Python process.

Each runtime runs as its own `spine-runtime KIND --config CONFIG` would: its own port and
server, config source (file watch and push), Prometheus registry and health, in its own asyncio
task. What they share is what costs memory: one interpreter with asyncio, aiohttp, pydantic and
the config models loaded once (about 50 MiB per process saved: benchmarks/reports/demo.md).
`spine up` runs its Python runtimes this way; a cluster runs one per pod.

Options after a `--run` apply to that runtime: `--name NAME` (default: its kind; in log lines
and messages), `--log FILE` (its log records go there, through `common.hosting`), `--env-file
FILE` (NAME=VALUE lines: environment variables of that runtime alone, as a pod's `env:`).
SIGTERM or SIGINT stops them all. One that cannot use its config, or cannot bind its port,
stops the host with exit code 2 and a log line naming it; one that fails otherwise, or stops on
its own, stops the host with code 1 (`spine up` restarts the host as it restarts any process).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from spine_runtime.common.entrypoint import run_on_fastest_loop
from spine_runtime.common.errors import ConfigError
from spine_runtime.common.hosting import (
    LOG_FORMAT,
    RUNTIME_ENVIRONMENT,
    RUNTIME_NAME,
    RUNTIME_OUTPUT,
    RuntimeLogRouter,
    threads_inherit_context,
)

log = logging.getLogger("spine_runtime.host")

# The runtimes a host can run: each module's `run(config_path, stop)`. Not the simulator (a
# stand-in for a PLC: tests freeze and kill it as one) nor the one-shot broker seed.
HOSTABLE = {
    "twin": "spine_runtime.twin.main",
    "flow": "spine_runtime.flow.main",
    "gateway": "spine_runtime.gateway.main",
    "catalog": "spine_runtime.catalog.main",
    "proxy": "spine_runtime.proxy.main",
    "dev-issuer": "spine_runtime.devissuer.main",
}
CONFIG_UNUSABLE = 2
# How long the others get to stop in order once one failed, before they are cancelled.
STOP_TIMEOUT_SECONDS = 20.0

USAGE = (
    "usage: spine-runtime host --run KIND=CONFIG [--name NAME] [--log FILE] [--env-file FILE]"
    f" [--run ...]\n  KIND: {', '.join(sorted(HOSTABLE))}"
)


class UsageError(ValueError):
    """The command line cannot be run; the message says why."""


@dataclass
class HostedRuntime:
    """One runtime of the host and where its log and its own environment come from."""

    kind: str
    config: Path
    name: str
    log_path: Path | None = None
    env_file: Path | None = None
    environment: dict[str, str] = field(default_factory=dict)


def parse_arguments(argv: list[str]) -> list[HostedRuntime]:
    runtimes: list[HostedRuntime] = []
    arguments = iter(argv)
    for option in arguments:
        name, equals, inline = option.partition("=")
        if name not in ("--run", "--name", "--log", "--env-file"):
            raise UsageError(f"unknown argument {option!r}")
        value = inline if equals else next(arguments, None)
        if value is None:
            raise UsageError(f"{name} needs a value")
        if name == "--run":
            kind, _, config = value.partition("=")
            if kind not in HOSTABLE or not config:
                raise UsageError(f"--run {value!r}: expected KIND=CONFIG with KIND one of the list")
            runtimes.append(HostedRuntime(kind, Path(config), kind))
            continue
        if not runtimes:
            raise UsageError(f"{name} applies to the --run before it, and there is none")
        if name == "--name":
            runtimes[-1].name = value
        elif name == "--log":
            runtimes[-1].log_path = Path(value)
        else:
            runtimes[-1].env_file = Path(value)
    if not runtimes:
        raise UsageError("nothing to run: give at least one --run KIND=CONFIG")
    names = [runtime.name for runtime in runtimes]
    if len(set(names)) != len(names):
        raise UsageError(f"two runtimes have one name: {', '.join(names)} (set --name)")
    return runtimes


def read_env_file(path: Path) -> dict[str, str]:
    """NAME=VALUE lines (blank lines and # comments skipped); OSError, or ConfigError."""
    environment = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, equals, value = line.partition("=")
        if not equals or not name.strip():
            raise ConfigError(f"{path} line {number}: expected NAME=VALUE")
        environment[name.strip()] = value
    return environment


# Each runtime's log file, open for appending, for its child programs' output.
_outputs: dict[str, int] = {}


def output_of(name: str) -> int | None:
    return _outputs.get(name)


def configure_logging(runtimes: list[HostedRuntime], modules: dict[str, ModuleType]) -> None:
    """The host's own records to stderr; each runtime's to its --log file (or to stderr marked
    with its name); the quiet library loggers of every runtime's kind, as its own main sets."""
    level = os.environ.get("SPINE_LOG_LEVEL", "INFO").upper()
    formatter = logging.Formatter(LOG_FORMAT)
    fallback = logging.StreamHandler(sys.stderr)
    fallback.setFormatter(formatter)
    router = RuntimeLogRouter(fallback)
    for runtime in runtimes:
        handler: logging.Handler
        if runtime.log_path is not None:
            runtime.log_path.parent.mkdir(parents=True, exist_ok=True)
            file_handler = logging.FileHandler(runtime.log_path, encoding="utf-8")
            file_handler.setFormatter(formatter)
            assert file_handler.stream is not None  # opened at once (delay=False)
            _outputs[runtime.name] = file_handler.stream.fileno()
            handler = file_handler
        else:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(
                logging.Formatter(LOG_FORMAT.replace("%(name)s", f"[{runtime.name}] %(name)s"))
            )
        router.add(runtime.name, handler)
    root = logging.getLogger()
    root.setLevel(level)
    root.addHandler(router)
    for module in modules.values():
        for name, quiet in getattr(module, "QUIET_LOGGERS", {}).items():
            logging.getLogger(name).setLevel(quiet)


Runner = Callable[[Path, asyncio.Event], Awaitable[int]]


class RuntimeFailed(Exception):
    """A hosted runtime could not start or failed: which one, the exit code it means, why."""

    def __init__(self, runtime: HostedRuntime, code: int, reason: str) -> None:
        super().__init__(f"{runtime.name}: {reason}")
        self.runtime, self.code, self.reason = runtime, code, reason


async def run_one(runtime: HostedRuntime, module: ModuleType, stop: asyncio.Event) -> int:
    """One runtime in its own task, whose context every record and child program sees."""
    RUNTIME_NAME.set(runtime.name)
    RUNTIME_OUTPUT.set(output_of(runtime.name))
    own_log = getattr(module, "log", log)
    try:
        if runtime.env_file is not None:
            runtime.environment = read_env_file(runtime.env_file)
        RUNTIME_ENVIRONMENT.set(runtime.environment)
        runner: Runner = module.run
        return await runner(runtime.config, stop)
    except ConfigError as error:
        own_log.error("Cannot use the config %s: %s", runtime.config, error)
        raise RuntimeFailed(runtime, CONFIG_UNUSABLE, f"cannot use its config: {error}") from None
    except OSError as error:
        own_log.error("Cannot start the %s: %s", runtime.kind, error)
        raise RuntimeFailed(runtime, CONFIG_UNUSABLE, f"cannot start: {error}") from None
    except asyncio.CancelledError:
        raise
    except Exception as error:
        own_log.exception("The %s failed", runtime.kind)
        raise RuntimeFailed(runtime, 1, f"failed: {error!r}") from None


async def host(runtimes: list[HostedRuntime], modules: dict[str, ModuleType]) -> int:
    """Run every runtime until SIGTERM/SIGINT, or until one of them fails (its code)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        return await run_all(runtimes, modules, stop)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


async def run_all(
    runtimes: list[HostedRuntime], modules: dict[str, ModuleType], stop: asyncio.Event
) -> int:
    tasks = {
        asyncio.create_task(
            run_one(runtime, modules[runtime.name], stop), name=f"host-{runtime.name}"
        ): runtime
        for runtime in runtimes
    }
    log.info("Running %s in one process (pid %s)", ", ".join(names(runtimes)), os.getpid())
    signalled = asyncio.create_task(stop.wait())
    first, _ = await asyncio.wait([*tasks, signalled], return_when=asyncio.FIRST_COMPLETED)
    by_signal = signalled in first
    log.info("Stopping every runtime %s", "on a signal" if by_signal else "as one stopped")
    stop.set()
    finished, hanging = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_SECONDS)
    for task in hanging:
        log.error("%s did not stop within %g s", tasks[task].name, STOP_TIMEOUT_SECONDS)
        task.cancel()
    await asyncio.gather(*hanging, return_exceptions=True)
    failures = [RuntimeFailed(tasks[task], 1, "did not stop in time") for task in hanging]
    for task in finished:
        runtime, error = tasks[task], task.exception()
        if isinstance(error, RuntimeFailed):
            failures.append(error)
        elif error is not None:  # pragma: no cover - run_one wraps every exception
            failures.append(RuntimeFailed(runtime, 1, f"failed: {error!r}"))
        elif task in first and not by_signal:
            returned = int(task.result() or 0)
            failures.append(
                RuntimeFailed(runtime, returned or 1, f"stopped on its own ({returned})")
            )
        elif task.result():
            failures.append(RuntimeFailed(runtime, int(task.result()), "stopped with an error"))
    for failure in failures:
        # The line `spine up` shows from the host's log: which runtime, and why.
        log.error(
            "Runtime %s (%s) %s: exit code %s",
            failure.runtime.name,
            failure.runtime.kind,
            failure.reason,
            failure.code,
        )
    if any(failure.code == CONFIG_UNUSABLE for failure in failures):
        return CONFIG_UNUSABLE
    return max((failure.code for failure in failures), default=0)


def names(runtimes: list[HostedRuntime]) -> list[str]:
    return [runtime.name for runtime in runtimes]


def main(argv: list[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        print(USAGE)
        return 0
    try:
        runtimes = parse_arguments(argv)
    except UsageError as error:
        print(f"spine-runtime host: {error}\n{USAGE}", file=sys.stderr)
        return 2
    modules = {
        runtime.name: importlib.import_module(HOSTABLE[runtime.kind]) for runtime in runtimes
    }
    configure_logging(runtimes, modules)
    threads_inherit_context()
    return run_on_fastest_loop(host(runtimes, modules))
