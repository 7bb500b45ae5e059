"""Keep a local run's workloads up, as kubelet keeps a pod's containers up.

`spine up` hands the Supervisor its workloads in start order. Each starts as a
`ManagedProcess` and must pass its health probe (its `/healthz`, or an open port) within its
start deadline; a failure at start stops the run at once with the reason, since retrying a
wrong config helps no one. Once everything runs, a workload that exits is restarted with
backoff (1 s doubling to 30 s, as kubelet's CrashLoopBackOff but shorter); one that exits with
code 2 (its config cannot work) or fails five times without a minute of healthy running in
between stops the run, naming it and why. Every change is reported through `on_event`.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from spine_operator.local.processes import ManagedProcess, log_tail

Probe = Callable[[], Awaitable[bool]]

# `spine-runtime` exit code for a config that cannot work: restarting would not help.
CONFIG_UNUSABLE = 2


class WorkloadFailed(RuntimeError):
    """A workload could not be started or keeps failing; the run stops."""

    def __init__(self, workload: Workload, reason: str) -> None:
        super().__init__(f"{workload.name}: {reason}")
        self.workload = workload
        self.reason = reason


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


@dataclass
class Workload:
    """One program to keep running: how to start it and how to tell it is healthy."""

    name: str  # unique, shown on screen: "broker", "twin", "gateway press-line-1"
    role: str  # broker, twin, gateway, sim
    argv: list[str]
    log_path: Path
    probe: Probe
    address: str = ""  # where it serves, for the screen
    namespace: str = ""
    env: dict[str, str] | None = None
    start_timeout: float = 30.0
    process: ManagedProcess | None = None
    state: str = "waiting"  # waiting, starting, running, restarting, stopped
    starts: int = 0
    restarts: int = 0
    failures_in_a_row: int = 0
    last_exit: str = ""
    started_at: float = 0.0
    healthy_since: float | None = None
    next_start_at: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)
    # A host process (`spine-runtime host`): the runtimes it runs, each with its own log, probe
    # and address; it is healthy when every one of them is. Empty for any other workload.
    members: list[Workload] = field(default_factory=list)
    unhealthy: list[str] = field(default_factory=list)  # members whose last probe failed

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.proc else None

    def launch(self) -> None:
        self.starts += 1
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        for workload in (self, *self.members):
            workload.log_path.parent.mkdir(parents=True, exist_ok=True)
            with workload.log_path.open("a") as log:
                log.write(f"--- spine up: start {self.starts} of {self.name} at {time.ctime()}\n")
        self.process = ManagedProcess(self.argv, self.log_path, env=self.env).start()
        self.state = "starting"
        self.started_at = time.monotonic()
        self.healthy_since = None

    def log_tail(self, characters: int = 2000) -> str:
        """Its log's end; for a host, also that of each runtime its log names as failed (or
        that did not become healthy), since the runtimes log to their own files."""
        own = log_tail(self.log_path, characters)
        if not self.members:
            return own
        tails = [own.strip()]
        latest = own[max(own.rfind("--- spine up: start"), 0) :]  # not an earlier start's
        failed = [member for member in self.members if f"Runtime {member.name} (" in latest]
        if not failed:  # still running, but not healthy in time
            failed = [member for member in self.members if member.name in self.unhealthy]
        for member in failed:
            tails.append(
                f"--- {member.name} ({member.log_path}):\n"
                + log_tail(member.log_path, characters).strip()
            )
        return "\n".join(tails)


class Supervisor:
    """Starts workloads in order, restarts those that exit, and stops them in reverse."""

    def __init__(
        self,
        on_event: Callable[[str], None] = lambda text: None,
        *,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        give_up_after: int = 5,
        stable_after: float = 60.0,
        interval: float = 0.2,
        probe_timeout: float = 2.0,
    ) -> None:
        self.on_event = on_event
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.give_up_after = give_up_after
        self.stable_after = stable_after
        self.interval = interval
        self.probe_timeout = probe_timeout
        self.workloads: list[Workload] = []
        self.changed = asyncio.Event()

    async def _probe(self, workload: Workload) -> bool:
        try:
            return bool(await asyncio.wait_for(workload.probe(), self.probe_timeout))
        except (TimeoutError, OSError, RuntimeError, ValueError):
            return False
        except Exception:  # an HTTP client error of any kind means "not yet"
            return False

    async def start(self, workload: Workload) -> None:
        """Start one workload and wait until it is healthy; WorkloadFailed otherwise."""
        self.workloads.append(workload)
        workload.launch()
        self.changed.set()
        deadline = workload.started_at + workload.start_timeout
        while True:
            assert workload.process is not None
            if not workload.process.running():
                workload.last_exit = describe_exit(workload.process.returncode)
                workload.state = "stopped"
                raise WorkloadFailed(
                    workload, f"exited at start ({workload.last_exit}); log {workload.log_path}"
                )
            if await self._probe(workload):
                workload.state = "running"
                workload.healthy_since = time.monotonic()
                self.changed.set()
                return
            if time.monotonic() >= deadline:
                which = f" ({', '.join(workload.unhealthy)} not)" if workload.unhealthy else ""
                raise WorkloadFailed(
                    workload,
                    f"not healthy within {workload.start_timeout:g} s{which}; "
                    f"log {workload.log_path}",
                )
            await asyncio.sleep(0.05)

    def _failed(self, workload: Workload, reason: str, code: int | None) -> None:
        workload.failures_in_a_row += 1
        workload.last_exit = reason
        workload.healthy_since = None
        if code == CONFIG_UNUSABLE:
            raise WorkloadFailed(
                workload, f"{reason}: its config cannot work; log {workload.log_path}"
            )
        if workload.failures_in_a_row >= self.give_up_after:
            raise WorkloadFailed(
                workload,
                f"failed {workload.failures_in_a_row} times in a row (last: {reason}); "
                f"log {workload.log_path}",
            )
        delay = min(self.backoff_initial * 2 ** (workload.failures_in_a_row - 1), self.backoff_max)
        workload.state = "restarting"
        workload.next_start_at = time.monotonic() + delay
        self.on_event(f"{workload.name} {reason}; restarting it in {delay:g} s")
        self.changed.set()

    async def check_once(self) -> None:
        """One look at every workload: restart what exited, promote what became healthy."""
        now = time.monotonic()
        for workload in self.workloads:
            process = workload.process
            if workload.state == "restarting" and now >= workload.next_start_at:
                workload.restarts += 1
                workload.launch()
                self.changed.set()
                continue
            if process is None or workload.state not in ("starting", "running"):
                continue
            if not process.running():
                code = process.returncode
                self._failed(workload, describe_exit(code), code)
                continue
            if workload.state == "starting":
                if await self._probe(workload):
                    workload.state = "running"
                    workload.healthy_since = time.monotonic()
                    self.on_event(f"{workload.name} is running again (pid {workload.pid})")
                    self.changed.set()
                elif now - workload.started_at > workload.start_timeout:
                    process.kill()
                    self._failed(workload, f"not healthy within {workload.start_timeout:g} s", None)
            elif (
                workload.healthy_since is not None
                and workload.failures_in_a_row
                and now - workload.healthy_since >= self.stable_after
            ):
                workload.failures_in_a_row = 0

    async def watch(self) -> None:
        """Keep everything up until a workload keeps failing (raises WorkloadFailed)."""
        while True:
            await self.check_once()
            await asyncio.sleep(self.interval)

    async def stop_all(self, timeout: float = 10.0) -> None:
        """Stop in reverse start order (gateways before the broker), each by its PID."""
        for workload in reversed(self.workloads):
            if workload.process is not None and workload.process.running():
                await asyncio.to_thread(workload.process.stop, timeout)
            workload.state = "stopped"
        self.changed.set()

    def kill_all(self) -> None:
        """SIGKILL everything at once (a second Ctrl-C)."""
        for workload in self.workloads:
            if workload.process is not None:
                workload.process.kill()
            workload.state = "stopped"
