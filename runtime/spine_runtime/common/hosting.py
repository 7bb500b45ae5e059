"""What a runtime needs to know when it shares its process with others (`spine-runtime host`).

The host runs each runtime in its own asyncio task with `RUNTIME_NAME` and `RUNTIME_ENVIRONMENT`
set; every task, callback and thread started from there inherits them (contextvars; threads
through `threads_inherit_context`, as Python 3.14 can make them), so `RuntimeLogRouter` writes a
runtime's log records to that runtime's own log file, and `environment()` gives a child program
(HAProxy) the variables meant for its runtime only, never another namespace's. Outside the host
both are unset and nothing changes.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from collections.abc import Mapping

# The name the host gave the runtime whose code runs now; None outside a hosted runtime.
RUNTIME_NAME: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "spine_runtime_name", default=None
)
# Environment variables of that runtime only (a pod's `env:`), on top of the process's.
RUNTIME_ENVIRONMENT: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "spine_runtime_environment"
)

# Where a child program of that runtime writes its output (a file descriptor of its log file);
# None: the process's own stdout and stderr.
RUNTIME_OUTPUT: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "spine_runtime_output", default=None
)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def hosted() -> bool:
    """Whether this code runs inside `spine-runtime host`, beside other runtimes."""
    return RUNTIME_NAME.get() is not None


def environment() -> dict[str, str]:
    """The environment a child program of this runtime gets: the process's, then its own."""
    return {**os.environ, **RUNTIME_ENVIRONMENT.get({})}


def threads_inherit_context() -> None:
    """Make every thread started from now on run in a copy of its starter's context.

    Python before 3.14 starts a thread in an empty context, so a runtime's database thread
    (`run_in_executor` on its own executor) or its MQTT client's network thread (paho's
    `loop_start`) would log as nobody's. The host calls this once, before any runtime starts;
    a single-runtime process does not need it."""
    if getattr(threading.Thread.start, "inherits_context", False):
        return
    original_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        context = contextvars.copy_context()
        run = self.run
        self.run = lambda: context.run(run)  # type: ignore[method-assign]
        original_start(self)

    start.inherits_context = True  # type: ignore[attr-defined]
    threading.Thread.start = start  # type: ignore[method-assign]


def child_output() -> int | None:
    """stdout and stderr for a child program of this runtime (HAProxy's own log lines): the
    runtime's log file in the host, else inherited (None)."""
    return RUNTIME_OUTPUT.get()


class RuntimeLogRouter(logging.Handler):
    """Sends each record to the handler of the runtime it was logged from (by RUNTIME_NAME),
    and a record logged outside any runtime (the host's own) to `fallback`."""

    def __init__(self, fallback: logging.Handler) -> None:
        super().__init__()
        self.fallback = fallback
        self.handlers: dict[str, logging.Handler] = {}

    def add(self, name: str, handler: logging.Handler) -> None:
        self.handlers[name] = handler

    def emit(self, record: logging.LogRecord) -> None:
        name = RUNTIME_NAME.get()
        handler = self.handlers.get(name, self.fallback) if name is not None else self.fallback
        if record.levelno >= handler.level:
            handler.handle(record)

    def setFormatter(self, fmt: logging.Formatter | None) -> None:
        super().setFormatter(fmt)
        for handler in (self.fallback, *self.handlers.values()):
            handler.setFormatter(fmt)

    def close(self) -> None:
        for handler in (self.fallback, *self.handlers.values()):
            handler.close()
        super().close()
