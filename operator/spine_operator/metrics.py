"""Every metric the operator exports (prometheus-client), served by `spine run --metrics-port`.

- `spine_reconciliations_total{kind, result}`: reconciles by result (success, invalid, retry,
  error).
- `spine_reconcile_duration_seconds{kind}`: how long a reconcile took.
- `spine_resources{kind, namespace, ready}`: resources by readiness (ready is "true"/"false").
- `spine_runtime_health_polls_total{kind, result}`: the poller's reads of runtime /status
  (`poller.py`; kind Gateway so far).
No object names as labels: cardinality stays with the number of namespaces.
"""

from __future__ import annotations

import time
from collections import Counter as CountOf
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

RESULTS = ("success", "invalid", "retry", "error")


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.reconciliations = Counter(
            "spine_reconciliations_total",
            "Reconciliations by kind and result",
            ["kind", "result"],
            registry=registry,
        )
        self.reconcile_duration = Histogram(
            "spine_reconcile_duration_seconds",
            "Time spent in one reconciliation",
            ["kind"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.resources = Gauge(
            "spine_resources",
            "Resources by kind, namespace and readiness",
            ["kind", "namespace", "ready"],
            registry=registry,
        )
        self.health_polls = Counter(
            "spine_runtime_health_polls_total",
            "Runtime /status polls by result",
            ["kind", "result"],
            registry=registry,
        )
        self._readiness: dict[tuple[str, str, str], bool] = {}

    @contextmanager
    def reconciling(self, kind: str) -> Iterator[dict[str, str]]:
        """Time a reconcile; the caller sets outcome["result"] (default: error on exception)."""
        outcome = {"result": "success"}
        started = time.perf_counter()
        try:
            yield outcome
        except BaseException:
            if outcome["result"] == "success":
                outcome["result"] = "error"
            raise
        finally:
            self.reconcile_duration.labels(kind).observe(time.perf_counter() - started)
            self.reconciliations.labels(kind, outcome["result"]).inc()

    def set_ready(self, kind: str, namespace: str, name: str, ready: bool) -> None:
        self._readiness[(kind, namespace, name)] = ready
        self._publish(kind, namespace)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        self._readiness.pop((kind, namespace, name), None)
        self._publish(kind, namespace)

    def _publish(self, kind: str, namespace: str) -> None:
        counts = CountOf(
            ready for (k, ns, _), ready in self._readiness.items() if k == kind and ns == namespace
        )
        for ready in (True, False):
            self.resources.labels(kind, namespace, str(ready).lower()).set(counts.get(ready, 0))


METRICS = OperatorMetrics()
