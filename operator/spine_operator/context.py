"""What every handler shares in one operator process: API adapter, environment, metrics.

`spine run` fills it from the process environment at startup; tests replace pieces (an
environment pointing at a local broker) before they start kopf.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from spine_operator.environment import Environment, operator_environment
from spine_operator.k8s import Kubernetes
from spine_operator.metrics import METRICS, OperatorMetrics


@dataclass
class OperatorContext:
    k8s: Kubernetes = field(default_factory=Kubernetes)
    environment: Environment = field(default_factory=operator_environment)
    metrics: OperatorMetrics = METRICS
    retry_delay: float = 30.0  # seconds before a retry when a dependency is missing


CONTEXT = OperatorContext()
