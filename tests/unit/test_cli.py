"""`spine render` and `spine render-crds` as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def spine(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spine_operator.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_render_prints_every_child_of_the_example() -> None:
    result = spine("render", "-f", "examples/spine.yaml")
    assert result.returncode == 0, result.stderr
    objects = list(yaml.safe_load_all(result.stdout))
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("Secret", "spine-broker-admin"),
        ("ConfigMap", "spine-broker-config"),
        ("Service", "spine-broker"),
        ("Service", "spine-broker-headless"),
        ("StatefulSet", "spine-broker"),
    ]
    assert "data" not in objects[0] and "stringData" not in objects[0]  # no secret values


def test_render_refuses_invalid_input_naming_file_and_field(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: spine.iiot.dev/v1alpha1\nkind: Spine\nmetadata: {name: x}\n"
        "spec: {broker: {limits: {maxQueuedMessages: lots}}}\n"
    )
    result = spine("render", "-f", str(bad))
    assert result.returncode == 1 and result.stdout == ""
    assert str(bad) in result.stderr and "Spine/x" in result.stderr
    assert "spec.broker.limits.maxQueuedMessages" in result.stderr


def test_render_refuses_unknown_kinds_and_broken_yaml(tmp_path) -> None:
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("apiVersion: spine.iiot.dev/v1alpha1\nkind: Spline\nmetadata: {name: x}\n")
    assert "unknown kind 'Spline'" in spine("render", "-f", str(unknown)).stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: [unclosed\n")
    result = spine("render", "-f", str(broken))
    assert result.returncode == 1 and "cannot read YAML" in result.stderr


def test_render_crds_check_detects_drift(tmp_path) -> None:
    assert spine("render-crds", "--check").returncode == 0
    assert spine("render-crds", "--dir", str(tmp_path)).returncode == 0
    (tmp_path / "spines.spine.iiot.dev.yaml").write_text("stale")
    result = spine("render-crds", "--check", "--dir", str(tmp_path))
    assert result.returncode == 1 and "out of date" in result.stderr
