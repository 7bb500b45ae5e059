"""Every Prometheus metric of the flow engine, on its own registry (served at /metrics).

spine_flow_messages_total{flow,step,result}   messages per step: in, out, filtered, error;
                                              step "source" counts in (received) and error
                                              (undecodable); a sink "sink:<name>" counts out
                                              (accepted) and error (refused, retried)
spine_flow_dead_letters_total{flow,step}      messages sent to the flow's dead letter topic
spine_flow_dropped_total{flow,step}           failed messages dropped (onError: drop)
spine_flow_latency_seconds{flow}              source message received -> every sink accepted
spine_flow_queue_depth{flow}                  received, not yet processed
spine_flow_in_flight{flow}                    processed, not yet accepted by every sink
spine_flow_running{flow}                      1 while the flow runs
spine_flow_broker_connected{flow}             1 while the flow's broker login is connected
The runners count in plain integers and add them here on their tick and before each scrape: a
labelled counter per message would cost more than the rest of a simple flow. The latency
histogram is plain counts per flow too (`LatencyHistograms`), read at scrape time: a
Histogram.observe per message (a lock and a Python loop over the buckets) was ~3% of a relay
flow's CPU at 2,000 msg/s.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class LatencyCounts:
    """One flow's latency histogram: `counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1` and
    `total += seconds` per message (the last count is the +Inf bucket)."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0


class LatencyHistograms:
    """spine_flow_latency_seconds{flow}, a collector over the flows' plain counts. They live
    here, not in a runner, so a restarted flow's histogram goes on counting."""

    NAME = "spine_flow_latency_seconds"
    DOCUMENTATION = "Source message received until every sink accepted it"

    def __init__(self) -> None:
        self.flows: dict[str, LatencyCounts] = {}

    def labels(self, flow: str) -> LatencyCounts:
        return self.flows.setdefault(flow, LatencyCounts())

    def remove(self, flow: str) -> None:
        del self.flows[flow]

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.NAME, self.DOCUMENTATION, labels=["flow"])

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.NAME, self.DOCUMENTATION, labels=["flow"])
        bounds = [*(floatToGoString(bound) for bound in LATENCY_BUCKETS), "+Inf"]
        for flow, histogram in sorted(self.flows.items()):
            cumulative = list(itertools.accumulate(histogram.counts))
            family.add_metric([flow], list(zip(bounds, cumulative, strict=True)), histogram.total)
        yield family


class FlowMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "spine_flow_messages",
            "Messages per flow, step and result",
            ["flow", "step", "result"],
            registry=r,
        )
        self.dead_letters = Counter(
            "spine_flow_dead_letters",
            "Messages sent to the dead letter topic",
            ["flow", "step"],
            registry=r,
        )
        self.dropped = Counter(
            "spine_flow_dropped",
            "Failed messages dropped (onError: drop)",
            ["flow", "step"],
            registry=r,
        )
        self.latency = LatencyHistograms()
        r.register(self.latency)
        self.queue_depth = Gauge(
            "spine_flow_queue_depth",
            "Messages received and not yet processed",
            ["flow"],
            registry=r,
        )
        self.in_flight = Gauge(
            "spine_flow_in_flight",
            "Messages processed and not yet accepted by every sink",
            ["flow"],
            registry=r,
        )
        self.running = Gauge("spine_flow_running", "1 while the flow runs", ["flow"], registry=r)
        self.connected = Gauge(
            "spine_flow_broker_connected",
            "1 while the flow's broker login is connected",
            ["flow"],
            registry=r,
        )

    def forget(self, flow: str) -> None:
        """Remove a deleted flow's series."""
        for metric in (
            self.latency,
            self.queue_depth,
            self.in_flight,
            self.running,
            self.connected,
        ):
            with contextlib.suppress(KeyError):
                metric.remove(flow)
