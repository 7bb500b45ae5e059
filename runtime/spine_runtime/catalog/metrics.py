"""The catalog's Prometheus metrics, one registry per process (served on /metrics).

- `spine_catalog_entries{origin}`: live entries, `owned` (from ServiceRegistrations) or
  `external` (written through the API).
- `spine_catalog_writes_total{method,result}`: POST, PUT and DELETE by result: created, updated,
  deleted, bad_request, too_large, timeout (body not sent in time), unauthorized, forbidden,
  conflict, not_found, not_saved (served, but the store file could not be written).
- `spine_catalog_expired_total`: external entries removed because their ttl ran out.
- `spine_catalog_probes_total{result}`: health probes of owned entries, `up` or `down`.
- `spine_catalog_announcements_total{kind}`: MQTT announcements sent, `alive` or `dead`.
- `spine_catalog_mqtt_connected`: 1 while connected to the broker (announcements configured).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class CatalogMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.entries = Gauge(
            "spine_catalog_entries", "Live entries by origin.", ["origin"], registry=self.registry
        )
        self.writes = Counter(
            "spine_catalog_writes",
            "Writes through the API, by method and result.",
            ["method", "result"],
            registry=self.registry,
        )
        self.expired = Counter(
            "spine_catalog_expired", "External entries whose ttl ran out.", registry=self.registry
        )
        self.probes = Counter(
            "spine_catalog_probes",
            "Health probes of owned entries, by result.",
            ["result"],
            registry=self.registry,
        )
        self.announcements = Counter(
            "spine_catalog_announcements",
            "MQTT announcements sent, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.mqtt_connected = Gauge(
            "spine_catalog_mqtt_connected",
            "1 while the catalog is connected to its broker.",
            registry=self.registry,
        )
        for origin in ("owned", "external"):
            self.entries.labels(origin).set(0)
        for result in ("up", "down"):
            self.probes.labels(result)
        for kind in ("alive", "dead"):
            self.announcements.labels(kind)
