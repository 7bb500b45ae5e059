"""Read one figure from a process's Prometheus `/metrics`, as a test or a benchmark would.

Every runtime (twin, gateway, simulator) serves the text format; `scrape_metric` sums the
samples of one metric whose labels include the ones given, so a test asserts what an operator
would see in Prometheus.
"""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def scrape_metric(base_url: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples at `<base_url>/metrics` whose labels include `labels`
    (0 when there is none). Counters are named as exposed, with `_total`."""
    text = httpx.get(f"{base_url}/metrics", timeout=5).text
    return sum(
        float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )
