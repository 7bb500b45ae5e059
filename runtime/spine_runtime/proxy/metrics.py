"""The proxy supervisor's own Prometheus metrics (its /metrics appends HAProxy's exporter).

spine_proxy_reloads_total{result}    configs applied (start or reload: applied), refused by
                                     `haproxy -c` or for a missing key file (refused), or not
                                     taken by the running HAProxy (failed)
spine_proxy_config_info{digest}      1 for the digest of the config HAProxy runs
spine_proxy_haproxy_running          1 while the HAProxy master runs
spine_proxy_key_files                key files in the keys directory
spine_proxy_exporter_up              1 if the last read of HAProxy's exporter succeeded
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

RESULTS = ("applied", "refused", "failed")


class ProxyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reloads = Counter(
            "spine_proxy_reloads", "Configs by result.", ["result"], registry=self.registry
        )
        for result in RESULTS:
            self.reloads.labels(result)
        self.config_info = Gauge(
            "spine_proxy_config_info",
            "The digest of the config HAProxy runs.",
            ["digest"],
            registry=self.registry,
        )
        self.haproxy_running = Gauge(
            "spine_proxy_haproxy_running", "1 while HAProxy runs.", registry=self.registry
        )
        self.key_files = Gauge(
            "spine_proxy_key_files", "Key files in the keys directory.", registry=self.registry
        )
        self.exporter_up = Gauge(
            "spine_proxy_exporter_up",
            "1 if the last read of HAProxy's exporter succeeded.",
            registry=self.registry,
        )

    def running_config(self, digest: str) -> None:
        self.config_info.clear()
        self.config_info.labels(digest).set(1)
