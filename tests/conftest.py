"""Shared fixtures: a real mosquitto on the operator's config, a stand-in twin for gateway tests,
and the kopf-on-kmock harness."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.gateway import StandInAcker
from tests.support.mosquitto import LocalBroker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A running mosquitto with the rendered default config and a seeded admin login."""
    local = LocalBroker(tmp_path / "state").start()
    yield local
    local.stop()


@pytest.fixture
async def acker(broker: LocalBroker) -> AsyncIterator[StandInAcker]:
    """A stand-in twin that acknowledges gateway updates and records each one (gateway tests)."""
    stand_in = await StandInAcker.create(broker)
    yield stand_in
    stand_in.stop()


@pytest.fixture
async def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The emulated API server, with the operator's clients pointed at it."""
    from tests.support.operator import emulated_cluster, point_clients_at, write_kubeconfig

    async with emulated_cluster() as emulator:
        point_clients_at(write_kubeconfig(str(emulator.url), tmp_path / "kubeconfig"), monkeypatch)
        yield emulator


@pytest.fixture
async def operator(cluster):
    """The real kopf runtime with Spine's handlers, running against `cluster`."""
    from spine_operator.context import CONTEXT
    from spine_operator.reconcile import kinds
    from tests.support.operator import RunningOperator

    kinds.reset()
    saved_delay = CONTEXT.retry_delay
    CONTEXT.retry_delay = 0.5
    running = RunningOperator()
    await running.start()
    yield running
    await running.stop()
    CONTEXT.retry_delay = saved_delay
