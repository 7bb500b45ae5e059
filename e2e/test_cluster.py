"""The press line's story on a real cluster: the operator from manifests/, the example by kubectl.

Runs when KUBECONFIG is set and its current context is a throwaway cluster (kind-*, k3d-*,
minikube, or any cluster with SPINE_E2E_CLUSTER=1), and is skipped with the reason otherwise:
it installs the operator and deletes namespace plant-a. `.github/workflows/e2e-kind.yaml` runs
it on kind with the image built from this checkout. The PLC is the press simulator behind the
Service the example names (e2e/cluster/press-1-plc.yaml); the example's S7 connection names a
plant address (10.20.0.15), which the test points at the same simulator with `kubectl patch`,
as a user points a Gateway at their own PLC. Values are read through `kubectl port-forward`.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.processes import ManagedProcess, free_port, port_open, wait_until

from e2e.story import PressLine, a_desired_speed_reaches_the_plc, a_plc_value_shows_in_the_twin

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "plant-a"
THROWAWAY_CONTEXTS = ("kind-", "k3d-", "minikube")


def skip_reason() -> str | None:
    if not os.environ.get("KUBECONFIG"):
        return "KUBECONFIG is not set: this test needs a real cluster (kind, k3d, k3s)"
    if shutil.which("kubectl") is None:
        return "kubectl is not on PATH"
    context = subprocess.run(
        ["kubectl", "config", "current-context"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout.strip()
    if not context.startswith(THROWAWAY_CONTEXTS) and os.environ.get("SPINE_E2E_CLUSTER") != "1":
        return (
            f"context {context!r} does not look like a throwaway cluster and the test installs "
            "the operator and deletes namespace plant-a: set SPINE_E2E_CLUSTER=1 to run it"
        )
    return None


pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
    pytest.mark.timeout(1200),
]


def kubectl(*args: str, input: str | None = None, timeout: float = 120) -> str:
    result = subprocess.run(
        ["kubectl", *args],
        capture_output=True,
        text=True,
        input=input,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"kubectl {' '.join(args)}:\n{result.stderr}{result.stdout}"
    return result.stdout


def wait_ready(resource: str, timeout: int = 300) -> None:
    kubectl(
        "-n",
        NAMESPACE,
        "wait",
        resource,
        "--for=condition=Ready",
        f"--timeout={timeout}s",
        timeout=timeout + 30,
    )


class PortForward:
    """`kubectl port-forward` to a Service on a free local port, stopped by its PID."""

    def __init__(self, service: str, port: int, log_dir: Path) -> None:
        self.local = free_port()
        self.process = ManagedProcess(
            ["kubectl", "-n", NAMESPACE, "port-forward", f"svc/{service}", f"{self.local}:{port}"],
            log_dir / f"port-forward-{service}.log",
        ).start()

        def listening() -> bool:
            assert self.process.running(), self.process.log()
            return port_open(self.local)

        wait_until(listening, 60, f"port-forward to {service}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local}"

    def stop(self) -> None:
        self.process.stop()


@pytest.fixture(scope="module")
def cluster_line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PressLine]:
    logs = tmp_path_factory.mktemp("cluster")
    kubectl("apply", "-k", str(ROOT / "manifests"), "--server-side", timeout=180)
    kubectl(
        "-n",
        "spine-system",
        "rollout",
        "status",
        "deploy/spine-operator",
        "--timeout=300s",
        timeout=330,
    )
    forwards: list[PortForward] = []
    try:
        kubectl("apply", "-f", str(ROOT / "examples" / "press-line" / "spine.yaml"))
        kubectl("apply", "-f", str(ROOT / "e2e" / "cluster" / "press-1-plc.yaml"))
        kubectl("apply", "-f", str(ROOT / "examples" / "press-line"))
        connections = json.loads(
            kubectl(
                "-n",
                NAMESPACE,
                "get",
                "gateways.spine.iiot.dev",
                "press-line-1",
                "-o",
                "jsonpath={.spec.connections}",
            )
        )
        s7 = next(index for index, c in enumerate(connections) if "s7" in c)
        patch = [
            {
                "op": "replace",
                "path": f"/spec/connections/{s7}/s7/host",
                "value": f"press-1-plc.{NAMESPACE}.svc",
            },
        ]
        kubectl(
            "-n",
            NAMESPACE,
            "patch",
            "gateways.spine.iiot.dev",
            "press-line-1",
            "--type=json",
            "-p",
            json.dumps(patch),
        )
        kubectl(
            "-n",
            NAMESPACE,
            "rollout",
            "status",
            "deploy/press-1-plc",
            "--timeout=180s",
            timeout=210,
        )
        wait_ready("spines.spine.iiot.dev/default")
        wait_ready("twinmodels.spine.iiot.dev/press")
        wait_ready("gateways.spine.iiot.dev/press-line-1")
        token = base64.b64decode(
            kubectl(
                "-n",
                NAMESPACE,
                "get",
                "secret",
                "spine-twin-tokens",
                "-o",
                "jsonpath={.data.write}",
            )
        ).decode()
        twin = PortForward("spine-twin", 8080, logs)
        forwards.append(twin)
        plc = PortForward("press-1-plc", 8090, logs)
        forwards.append(plc)
        gateway = PortForward("spine-gateway-press-line-1", 8080, logs)
        forwards.append(gateway)
        yield PressLine(twin.url, "plant_a:press-1", token, plc.url, gateway.url)
    finally:
        for forward in forwards:
            forward.stop()
        subprocess.run(
            ["kubectl", "delete", "namespace", NAMESPACE, "--wait=false"],
            capture_output=True,
            timeout=60,
            check=False,
        )


def test_a_value_changed_at_the_plc_shows_in_the_twin(cluster_line: PressLine) -> None:
    a_plc_value_shows_in_the_twin(cluster_line, timeout=60)


def test_a_desired_target_speed_reaches_the_plc_and_is_reported_back(
    cluster_line: PressLine,
) -> None:
    a_desired_speed_reaches_the_plc(cluster_line, 24, timeout=90)


def test_a_deleted_broker_pod_comes_back_and_updates_flow_again(cluster_line: PressLine) -> None:
    before = cluster_line.gateway_status()["publish"]["ackedSeq"]
    kubectl("-n", NAMESPACE, "delete", "pod", "spine-broker-0", "--wait=false")
    wait_ready("spines.spine.iiot.dev/default", timeout=300)
    wait_until(
        lambda: cluster_line.gateway_status()["publish"]["ackedSeq"] >= before + 20,
        300,
        "20 more updates stored in the twin after the broker pod came back",
    )
    status = cluster_line.gateway_status()
    assert status["buffer"]["dropped"] == 0
