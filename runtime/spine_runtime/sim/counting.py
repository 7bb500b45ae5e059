"""Request counts per protocol and kind: the simulator as a test instrument.

The protocol servers call `RequestCounts.count` from their hooks (the S7 server from its own
threads, hence the lock). Tests read the counts since the last reset from `/status` or reset
them with `POST /reset-counters`; Prometheus gets never-reset totals as
`spine_sim_requests_total{protocol, kind}`, because a counter that goes down confuses `rate()`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class RequestCounts:
    """Thread-safe counts of requests served, since the last reset and since start."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._window: dict[tuple[str, str], int] = {}
        self._totals: dict[tuple[str, str], int] = {}
        self._window_started = time.monotonic()

    def count(self, protocol: str, kind: str, amount: int = 1) -> None:
        key = (protocol, kind)
        with self._lock:
            self._window[key] = self._window.get(key, 0) + amount
            self._totals[key] = self._totals.get(key, 0) + amount

    def window(self) -> dict[str, dict[str, int]]:
        """Counts since the last reset, as `{protocol: {kind: count}}`."""
        with self._lock:
            return _nest(self._window)

    def window_seconds(self) -> float:
        with self._lock:
            return time.monotonic() - self._window_started

    def reset(self) -> tuple[dict[str, dict[str, int]], float]:
        """Start a new window; returns the closed window's counts and its length in seconds,
        read and reset at once so no request falls between two windows."""
        with self._lock:
            counts = _nest(self._window)
            now = time.monotonic()
            seconds = now - self._window_started
            self._window = {}
            self._window_started = now
        return counts, seconds

    def totals(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._totals)


def _nest(flat: dict[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    nested: dict[str, dict[str, int]] = {}
    for (protocol, kind), value in sorted(flat.items()):
        nested.setdefault(protocol, {})[kind] = value
    return nested


class RequestCountsCollector(Collector):
    """Exposes `RequestCounts` totals as `spine_sim_requests_total{protocol, kind}`."""

    def __init__(self, counts: RequestCounts) -> None:
        self.counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "spine_sim_requests",
            "Requests the press simulator served, by protocol and kind.",
            labels=["protocol", "kind"],
        )
        for (protocol, kind), value in sorted(self.counts.totals().items()):
            family.add_metric([protocol, kind], value)
        yield family
