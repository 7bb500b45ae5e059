"""The twin service's Prometheus metrics, one registry per process (served on /metrics).

- `spine_twin_updates_total{result}`: updates by result: accepted, rejected, duplicate, stale,
  and unknown_gateway (on the topic of a gateway the twin does not track: not applied, not
  acknowledged; the gateway sends it again).
- `spine_twin_source_time_ahead_total`: updates whose spine-source-time was further ahead of the
  twin's clock than allowed; their receive time was used instead.
- `spine_twin_update_latency_seconds`: from an update's arrival to its commit (and ack).
- `spine_twin_commits_total`, `spine_twin_commit_seconds`, `spine_twin_commit_updates`:
  transactions, their duration and how many updates each stored.
- `spine_twin_things`, `spine_twin_desired_pending`, `spine_twin_desired_failed`: gauges.
- `spine_twin_errors_suppressed_total`: rejections counted but not published (rate limits per
  thing and overall).
- `spine_twin_mqtt_connected`, `spine_twin_sse_clients`: gauges.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

RESULTS = ("accepted", "rejected", "duplicate", "stale", "unknown_gateway")


class TwinMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.updates = Counter(
            "spine_twin_updates",
            "Updates received, by result.",
            ["result"],
            registry=self.registry,
        )
        # Bound children: the labelled lookup costs more than the increment on the hot path.
        self.accepted = self.updates.labels("accepted")
        self.rejected = self.updates.labels("rejected")
        self.duplicate = self.updates.labels("duplicate")
        self.stale = self.updates.labels("stale")
        self.unknown_gateway = self.updates.labels("unknown_gateway")
        self.source_time_ahead = Counter(
            "spine_twin_source_time_ahead",
            "Updates whose source time was too far ahead; the receive time was used instead.",
            registry=self.registry,
        )
        self.update_latency = Histogram(
            "spine_twin_update_latency_seconds",
            "Time from an update's arrival to its commit.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.commits = Counter(
            "spine_twin_commits", "Transactions committed.", registry=self.registry
        )
        self.commit_seconds = Histogram(
            "spine_twin_commit_seconds",
            "Duration of a commit.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.commit_updates = Histogram(
            "spine_twin_commit_updates",
            "Updates stored per commit.",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
            registry=self.registry,
        )
        self.things = Gauge("spine_twin_things", "Things served.", registry=self.registry)
        self.desired_pending = Gauge(
            "spine_twin_desired_pending",
            "Desired values waiting for a matching reported value.",
            registry=self.registry,
        )
        self.desired_failed = Gauge(
            "spine_twin_desired_failed",
            "Desired values not reached within the timeout.",
            registry=self.registry,
        )
        self.errors_suppressed = Counter(
            "spine_twin_errors_suppressed",
            "Rejections not published on the errors topic because of its rate limit.",
            registry=self.registry,
        )
        self.mqtt_connected = Gauge(
            "spine_twin_mqtt_connected", "1 while connected to the broker.", registry=self.registry
        )
        self.sse_clients = Gauge(
            "spine_twin_sse_clients", "Open SSE change streams.", registry=self.registry
        )

    def bind_gauges(
        self,
        things: Callable[[], float],
        pending: Callable[[], float],
        failed: Callable[[], float],
        connected: Callable[[], float],
        sse_clients: Callable[[], float],
    ) -> None:
        """Gauges read live state when scraped rather than being kept up to date."""
        self.things.set_function(things)
        self.desired_pending.set_function(pending)
        self.desired_failed.set_function(failed)
        self.mqtt_connected.set_function(connected)
        self.sse_clients.set_function(sse_clients)
