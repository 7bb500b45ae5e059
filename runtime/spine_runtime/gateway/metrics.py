"""Every Prometheus metric of the gateway, on its own registry (served at /metrics).

spine_gateway_reads_total{connection,result}        read requests to a PLC (ok, error)
spine_gateway_read_duration_seconds{connection}     latency of one read request
spine_gateway_notifications_total{connection}       OPC UA data-change notifications received
spine_gateway_tag_errors_total{connection,reason}   values not published (not_finite, ...)
spine_gateway_connection_up{connection}             1 while the PLC session is up
spine_gateway_connection_stalled{connection}        1 while a poll group finishes no cycles
spine_gateway_connection_stop_timeouts_total{connection}  connection tasks abandoned on stop
spine_gateway_tag_values_total{connection}          property values put into updates
spine_gateway_buffered_messages                     updates on disk awaiting the twin's ack
spine_gateway_buffered_bytes                        their size
spine_gateway_oldest_buffered_age_seconds           age of the oldest of them
spine_gateway_published_messages_total              updates published for the first time
spine_gateway_resent_messages_total                 updates published again (unacknowledged)
spine_gateway_acked_messages_total                  updates the twin confirmed
spine_gateway_dropped_messages_total                updates dropped because the buffer was full
spine_gateway_dead_letters_total{reason}            updates the broker refused, kept aside
spine_gateway_broker_connected                      1 while the MQTT session is up
spine_gateway_writes_total{connection,result}       desired values written (ok, rejected, error)
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.reads = Counter(
            "spine_gateway_reads", "Read requests to a PLC", ["connection", "result"], registry=r
        )
        self.read_duration = Histogram(
            "spine_gateway_read_duration_seconds",
            "Latency of one PLC read request",
            ["connection"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.notifications = Counter(
            "spine_gateway_notifications",
            "OPC UA data-change notifications received",
            ["connection"],
            registry=r,
        )
        self.tag_errors = Counter(
            "spine_gateway_tag_errors",
            "Tag values not published, by reason",
            ["connection", "reason"],
            registry=r,
        )
        self.connection_up = Gauge(
            "spine_gateway_connection_up",
            "1 while the PLC session is up",
            ["connection"],
            registry=r,
        )
        self.connection_stalled = Gauge(
            "spine_gateway_connection_stalled",
            "1 while a poll group of the connection finishes no cycles",
            ["connection"],
            registry=r,
        )
        self.stop_timeouts = Counter(
            "spine_gateway_connection_stop_timeouts",
            "Connection tasks that did not stop within the deadline and were abandoned",
            ["connection"],
            registry=r,
        )
        self.tag_values = Counter(
            "spine_gateway_tag_values",
            "Property values put into twin updates",
            ["connection"],
            registry=r,
        )
        self.buffered_messages = Gauge(
            "spine_gateway_buffered_messages",
            "Updates on disk awaiting the twin's ack",
            registry=r,
        )
        self.buffered_bytes = Gauge(
            "spine_gateway_buffered_bytes",
            "Bytes of the updates awaiting the twin's ack",
            registry=r,
        )
        self.oldest_buffered_age = Gauge(
            "spine_gateway_oldest_buffered_age_seconds",
            "Age of the oldest buffered update",
            registry=r,
        )
        self.published = Counter(
            "spine_gateway_published_messages", "Updates published for the first time", registry=r
        )
        self.publish_delay = Histogram(
            "spine_gateway_publish_delay_seconds",
            "Time from buffering an update to publishing it the first time",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30, 120, 600),
        )
        self.resent = Counter(
            "spine_gateway_resent_messages", "Updates published again after no ack", registry=r
        )
        self.acked = Counter(
            "spine_gateway_acked_messages", "Updates the twin confirmed it stored", registry=r
        )
        self.dropped = Counter(
            "spine_gateway_dropped_messages",
            "Updates dropped because the buffer was full",
            registry=r,
        )
        self.dead_letters = Counter(
            "spine_gateway_dead_letters",
            "Updates the broker refused (by MQTT reason), moved to the dead letters",
            ["reason"],
            registry=r,
        )
        self.broker_connected = Gauge(
            "spine_gateway_broker_connected", "1 while the MQTT session is up", registry=r
        )
        self.writes = Counter(
            "spine_gateway_writes",
            "Desired values written to a PLC",
            ["connection", "result"],
            registry=r,
        )
