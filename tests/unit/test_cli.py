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
        ("NetworkPolicy", "spine-broker"),
        ("Secret", "spine-twin-tokens"),
        ("Secret", "spine-mqtt-spine-twin"),
        ("ConfigMap", "spine-twin-config"),
        ("Service", "spine-twin"),
        ("StatefulSet", "spine-twin"),
        ("NetworkPolicy", "spine-twin"),
        # `auth` is set: the proxy and the catalog
        ("Secret", "spine-proxy-token"),
        ("Secret", "spine-catalog-token"),
        ("Secret", "spine-mqtt-spine-catalog"),
        ("ConfigMap", "spine-proxy-config"),
        ("Service", "spine-proxy"),
        ("Service", "spine-proxy-admin"),
        ("Deployment", "spine-proxy"),
        ("NetworkPolicy", "spine-proxy"),
        ("ConfigMap", "spine-catalog-config"),
        ("Service", "spine-catalog"),
        ("Deployment", "spine-catalog"),
        ("NetworkPolicy", "spine-catalog"),
    ]
    for secret in (o for o in objects if o["kind"] == "Secret"):  # no secret values
        assert "data" not in secret and "stringData" not in secret


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
    assert result.returncode == 1 and "not valid YAML" in result.stderr


GATEWAY = "apiVersion: spine.iiot.dev/v1alpha1\nkind: Gateway\n"


def test_render_and_up_refuse_what_the_api_server_would_refuse(tmp_path) -> None:
    """Names that become paths, a served version, one value per key, no traceback."""
    cases = {
        "traversal.yaml": (
            "apiVersion: spine.iiot.dev/v1alpha1\nkind: Spine\n"
            "metadata: {name: default, namespace: ../victim}\nspec: {}\n",
            "metadata.namespace '../victim': a namespace is a DNS label",
        ),
        "name.yaml": (GATEWAY + "metadata: {name: ../x}\nspec: {}\n", "metadata.name '../x'"),
        "no-name.yaml": (
            GATEWAY + "metadata: {namespace: a}\nspec: {}\n",
            "metadata.name is required",
        ),
        "version.yaml": (
            "apiVersion: spine.iiot.dev/v1\nkind: Gateway\nmetadata: {name: g}\n",
            "apiVersion spine.iiot.dev/v1 is not served; use spine.iiot.dev/v1alpha1",
        ),
        "twice.yaml": (
            "apiVersion: spine.iiot.dev/v1alpha1\nkind: Spine\nmetadata: {name: a}\n"
            "spec: {}\nspec: {broker: {}}\n",
            "key 'spec' appears twice in one mapping",
        ),
        "not-an-object.yaml": ("- just\n- a list\n", "not a Kubernetes object"),
    }
    for file_name, (text, expected) in cases.items():
        path = tmp_path / file_name
        path.write_text(text)
        for command in (["render"], ["up", "--state-dir", str(tmp_path / "state")]):
            result = spine(*command, "-f", str(path))
            assert result.returncode == 1, (file_name, command, result.stdout)
            assert expected in result.stderr, (file_name, command, result.stderr)
            assert "Traceback" not in result.stderr, (file_name, command)
    assert not (tmp_path / "victim").exists() and not (tmp_path / "state").exists()


def test_an_alias_bomb_is_refused_without_exhausting_memory(tmp_path) -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        levels.append(f"a{level}: &a{level} [{refs}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(
        "apiVersion: spine.iiot.dev/v1alpha1\nkind: Spine\nmetadata: {name: b}\nspec:\n"
        + "".join(f"  {line}\n" for line in levels)
    )
    result = spine("render", "-f", str(bomb))
    assert result.returncode == 1 and "expands to more than" in result.stderr


def test_render_crds_check_detects_drift(tmp_path) -> None:
    assert spine("render-crds", "--check").returncode == 0
    assert spine("render-crds", "--dir", str(tmp_path)).returncode == 0
    (tmp_path / "spines.spine.iiot.dev.yaml").write_text("stale")
    result = spine("render-crds", "--check", "--dir", str(tmp_path))
    assert result.returncode == 1 and "out of date" in result.stderr


def test_up_refuses_a_namespace_without_a_spine_before_starting_anything(tmp_path) -> None:
    result = spine(
        "up",
        "-f",
        str(ROOT / "examples" / "press-line" / "twinmodel.yaml"),
        "--state-dir",
        str(tmp_path / "state"),
    )
    assert result.returncode == 1 and result.stdout == ""
    assert "spine up: invalid input" in result.stderr
    assert "TwinModel/press: namespace plant-a has no Spine (SpineNotFound)" in result.stderr
    assert not (tmp_path / "state").exists()


def test_up_refuses_a_gateway_the_operator_would_refuse(tmp_path) -> None:
    example = ROOT / "examples" / "press-line"
    gateway = yaml.safe_load((example / "gateway.yaml").read_text())
    gateway["spec"]["tags"][0]["property"] = "speed"  # not a property of TwinModel press
    bad = tmp_path / "gateway.yaml"
    bad.write_text(yaml.safe_dump(gateway))
    result = spine(
        "up",
        "-f",
        str(example / "spine.yaml"),
        "-f",
        str(example / "twinmodel.yaml"),
        "-f",
        str(bad),
        "--state-dir",
        str(tmp_path / "state"),
        "--ports",
        "auto",
    )
    assert result.returncode == 1, result.stderr
    assert f"{bad} (document 1): Gateway/press-line-1: InvalidReference" in result.stderr
    assert "TwinModel press (thing press-1) has no property speed" in result.stderr


def test_up_names_a_plc_mapping_that_matches_no_connection(tmp_path) -> None:
    result = spine(
        "up",
        "-f",
        "examples/press-line",
        "--plc",
        "plc-9=127.0.0.1:5020",
        "--state-dir",
        str(tmp_path / "state"),
        "--ports",
        "auto",
    )
    assert result.returncode == 1
    assert "--plc plc-9: no Gateway has such a connection" in result.stderr


def test_up_says_what_to_install_when_mosquitto_is_missing(tmp_path, monkeypatch, capsys) -> None:
    from spine_operator.local import programs
    from spine_operator.local.up import UpOptions, up

    monkeypatch.setenv("PATH", str(tmp_path))  # no mosquitto here
    monkeypatch.setattr(programs, "MOSQUITTO_FALLBACKS", ())
    assert up(UpOptions([ROOT / "examples" / "press-line"], state_dir=tmp_path / "state")) == 1
    message = capsys.readouterr().err
    assert message.startswith("spine up: mosquitto is not installed")
    assert "sudo apt-get install mosquitto" in message
    assert not (tmp_path / "state").exists()


def test_up_never_writes_into_nor_removes_a_folder_of_the_users(tmp_path) -> None:
    """The namespace's folder under --state-dir exists and is the user's: refused, kept."""
    keep = tmp_path / "plant-a" / "keep.txt"
    keep.parent.mkdir()
    keep.write_text("mine")
    result = spine(
        "up",
        "-f",
        str(ROOT / "examples" / "press-line"),
        "--state-dir",
        str(tmp_path),
        "--ports",
        "auto",
    )
    assert result.returncode == 1
    assert "was not made by spine up; choose another --state-dir" in result.stderr
    assert keep.read_text() == "mine" and sorted(p.name for p in keep.parent.iterdir()) == [
        "keep.txt"
    ]
