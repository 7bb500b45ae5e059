"""Start real programs for tests on free 127.0.0.1 ports, wait for them, and stop them by PID.

Every server a test starts goes through `ManagedProcess`, so a failing test still stops what it
started and its log is at hand for the assertion message.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class _Deadline:
    """One wait for a condition: "not yet" until it holds, a clear failure after the deadline.

    An exception from the predicate counts as "not yet" (the thing may not exist yet), except an
    AssertionError, which fails at once; the last one is shown if the wait times out.
    """

    def __init__(self, predicate: Callable[[], object], timeout: float, what: str) -> None:
        self.predicate, self.timeout, self.what = predicate, timeout, what
        self.deadline = time.monotonic() + timeout
        self.last_error: Exception | None = None

    def check(self) -> object:
        try:
            return self.predicate()
        except AssertionError:
            raise
        except Exception as error:
            self.last_error = error
            return None

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def failure(self) -> AssertionError:
        last = f" (last error: {self.last_error!r})" if self.last_error else ""
        return AssertionError(f"timed out after {self.timeout}s waiting for {self.what}{last}")


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout` s."""
    wait = _Deadline(predicate, timeout, what)
    while not wait.expired():
        result = wait.check()
        if result:
            return result
        time.sleep(interval)
    raise wait.failure()


async def eventually(
    predicate: Callable[[], object],
    timeout: float = 5.0,
    what: str = "condition",
    interval: float = 0.05,
):
    """The async form of `wait_until`, for tests whose event loop must keep serving."""
    wait = _Deadline(predicate, timeout, what)
    while not wait.expired():
        result = wait.check()
        if result:
            return result
        await asyncio.sleep(interval)
    raise wait.failure()


class ManagedProcess:
    """A child process with its output in a log file, stopped by the PID we started."""

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(self.env or {})},
            cwd=self.cwd,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL, as a crash would, and reap it."""
        if self.running():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def wait_for_port(self, port: int, timeout: float = 10.0) -> None:
        def ready() -> bool:
            if not self.running():
                raise AssertionError(f"{self.argv[0]} exited early:\n{self.log()[-3000:]}")
            return port_open(port)

        wait_until(ready, timeout, f"{self.argv[0]} to listen on port {port}")
