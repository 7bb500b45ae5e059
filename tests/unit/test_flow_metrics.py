"""The flow engine's latency histogram, kept as plain counts per flow: what Prometheus reads
must be what a prometheus_client Histogram with the same buckets would expose."""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from spine_runtime.flow.metrics import LATENCY_BUCKETS, FlowMetrics


def samples(text: bytes) -> set[str]:
    return {
        line
        for line in text.decode().splitlines()
        if line.startswith("spine_flow_latency_seconds_") and "_created" not in line
    }


def test_the_latency_histogram_reads_as_a_prometheus_histogram() -> None:
    metrics = FlowMetrics()
    reference_registry = CollectorRegistry()
    reference = Histogram(
        "spine_flow_latency_seconds",
        "Source message received until every sink accepted it",
        ["flow"],
        buckets=LATENCY_BUCKETS,
        registry=reference_registry,
    )
    for flow, observed in (("a", [0.0001, 0.001, 0.0015, 0.3, 20.0]), ("b", [0.002])):
        counts = metrics.latency.labels(flow)
        for seconds in observed:
            counts.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
            counts.total += seconds
            reference.labels(flow).observe(seconds)
    ours = samples(generate_latest(metrics.registry))
    assert ours == samples(generate_latest(reference_registry))
    assert 'spine_flow_latency_seconds_bucket{flow="a",le="0.001"} 2.0' in ours
    metrics.forget("a")
    assert not any('flow="a"' in line for line in samples(generate_latest(metrics.registry)))
