"""Start real programs for tests on free 127.0.0.1 ports, wait for them, and stop them by PID.

Every server a test starts goes through `ManagedProcess` (the same class `spine up` runs its
children with, re-exported here), so a failing test still stops what it started and its log is
at hand for the assertion message. `wait_until` and `eventually` are the tests' waits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from spine_operator.local.processes import ManagedProcess, free_port, port_open

__all__ = ["ManagedProcess", "eventually", "free_port", "port_open", "wait_until"]


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
