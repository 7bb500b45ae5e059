"""Fixtures of the tests against a real kube-apiserver (tests/support/apiserver.py).

One control plane and one operator per test module (each module gets fresh ones: nothing leaks
between modules), one namespace per test. The programs come from `make k8s-tools` or
KUBEBUILDER_ASSETS; without them the tests skip, except in CI, where they fail.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import pytest

from tests.support.apiserver import (
    ControlPlane,
    OperatorProcess,
    environment_ready,
    must_run,
)

pytestmark = pytest.mark.integration

_namespaces = itertools.count(1)


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    reason = environment_ready()
    if reason is not None:
        if must_run():
            pytest.fail(f"CI must run the cluster tests: {reason}")
        pytest.skip(reason)
    plane = ControlPlane(tmp_path_factory.mktemp("control-plane")).start()
    try:
        plane.install()
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    running = OperatorProcess(control_plane, tmp_path_factory.mktemp("operator")).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> str:
    """A fresh namespace named after the test."""
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t{next(_namespaces)}-{stem}"
    control_plane.api.post(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    return name


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """On a failure, show the end of the operator's and the API server's logs."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        funcargs = getattr(item, "funcargs", {})
        for name in ("operator", "control_plane"):
            value = funcargs.get(name)
            if isinstance(value, OperatorProcess):
                report.sections.append(("operator log", value.log()[-4000:]))
            elif isinstance(value, ControlPlane):
                report.sections.append(("control plane logs", value.logs()))
