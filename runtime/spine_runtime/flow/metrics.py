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
The runners count in plain integers and add them here once per batch: a labelled counter per
message would cost more than the rest of a simple flow.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


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
        self.latency = Histogram(
            "spine_flow_latency_seconds",
            "Source message received until every sink accepted it",
            ["flow"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
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
