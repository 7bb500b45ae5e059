"""What every handler shares in one operator process: API adapter, environment, metrics.

`spine run` fills it from the process environment at startup; tests replace pieces (an
environment pointing at a local broker) before they start kopf.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from spine_operator.brokeraccess import BrokerAccess
from spine_operator.environment import Environment, operator_environment
from spine_operator.k8s import Kubernetes
from spine_operator.keyrefresh import KeyRefresher
from spine_operator.metrics import METRICS, OperatorMetrics


@dataclass
class OperatorContext:
    k8s: Kubernetes = field(default_factory=lambda: Kubernetes(checked=True))
    environment: Environment = field(default_factory=operator_environment)
    metrics: OperatorMetrics = METRICS
    retry_delay: float = 30.0  # seconds before a retry when a dependency is missing
    keys: KeyRefresher = field(default_factory=KeyRefresher)  # each namespace's OIDC keys
    _broker_access: BrokerAccess | None = None

    @property
    def broker_access(self) -> BrokerAccess:
        """Logins on each namespace's broker; one admin connection per namespace."""
        if self._broker_access is None:
            self._broker_access = BrokerAccess(self.k8s, self.environment)
        return self._broker_access

    async def close(self) -> None:
        if self._broker_access is not None:
            await self._broker_access.close()
            self._broker_access = None


CONTEXT = OperatorContext()
