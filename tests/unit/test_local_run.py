"""The parts of `spine up` that need no broker: supervision, leftovers, the plan, the screen.

The supervisor runs tiny Python children (a sleep, an exit) so restarts, backoff and giving up
are real process behaviour; e2e/test_press_line_local.py runs the whole thing.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from spine_operator.local.plan import plan_local_run
from spine_operator.local.processes import ManagedProcess
from spine_operator.local.screen import Screen, ValueTable
from spine_operator.local.statefile import (
    StateDirInUse,
    command_line,
    stop_leftovers,
    write_state,
)
from spine_operator.local.supervisor import Supervisor, Workload, WorkloadFailed
from spine_operator.render import RenderError, Resource
from tests.support.processes import wait_until

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def started(process: ManagedProcess) -> ManagedProcess:
    """Until /proc shows the new command (it is empty for a moment after exec)."""
    wait_until(lambda: command_line(process.pid) == process.argv, 5, "the child to exec")
    return process


def workload(tmp_path: Path, argv: list[str], name: str = "worker") -> Workload:
    async def running() -> bool:
        return True

    return Workload(name, "test", argv, tmp_path / f"{name}.log", running, start_timeout=5)


async def watch_until(supervisor: Supervisor, condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await supervisor.check_once()
        await asyncio.sleep(0.02)


async def test_a_killed_workload_is_restarted_and_the_event_says_so(tmp_path: Path) -> None:
    events: list[str] = []
    supervisor = Supervisor(events.append, backoff_initial=0.1)
    worker = workload(tmp_path, SLEEPER)
    try:
        await supervisor.start(worker)
        first_pid = worker.pid
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        await watch_until(
            supervisor, lambda: worker.state == "running" and worker.pid != first_pid, 10
        )
        assert worker.restarts == 1 and worker.starts == 2
        assert events[0] == "worker killed by SIGKILL; restarting it in 0.1 s"
        assert events[1].startswith("worker is running again (pid ")
        assert "start 2 of worker" in worker.log_path.read_text()
    finally:
        await supervisor.stop_all()
    assert worker.state == "stopped" and not worker.process.running()


async def test_a_workload_that_keeps_failing_stops_the_run_with_the_reason(tmp_path: Path) -> None:
    supervisor = Supervisor(backoff_initial=0.05, give_up_after=3)
    crasher = [sys.executable, "-c", "import sys, time; time.sleep(0.3); sys.exit(1)"]
    worker = workload(tmp_path, crasher)
    await supervisor.start(worker)
    with pytest.raises(WorkloadFailed) as failure:
        await asyncio.wait_for(supervisor.watch(), 20)
    assert failure.value.workload is worker
    assert "failed 3 times in a row (last: exit code 1)" in str(failure.value)
    assert worker.restarts == 2


async def test_exit_code_2_means_the_config_cannot_work_and_is_not_retried(tmp_path: Path) -> None:
    supervisor = Supervisor(backoff_initial=0.05)
    worker = workload(tmp_path, [sys.executable, "-c", "import time; time.sleep(0.3); exit(2)"])
    await supervisor.start(worker)
    with pytest.raises(WorkloadFailed, match="exit code 2: its config cannot work"):
        await asyncio.wait_for(supervisor.watch(), 10)
    assert worker.restarts == 0


async def test_a_workload_that_dies_at_start_fails_at_once(tmp_path: Path) -> None:
    supervisor = Supervisor()
    worker = workload(tmp_path, [sys.executable, "-c", "print('no port for me'); exit(1)"])

    async def never() -> bool:
        return False

    worker.probe = never
    with pytest.raises(WorkloadFailed, match="exited at start \\(exit code 1\\)"):
        await supervisor.start(worker)
    assert "no port for me" in worker.log_tail()


def test_leftovers_of_a_dead_spine_up_are_stopped_by_their_recorded_pid(tmp_path: Path) -> None:
    child = started(ManagedProcess(SLEEPER, tmp_path / "child.log").start())
    unrelated = started(ManagedProcess(SLEEPER, tmp_path / "other.log").start())
    try:
        state = tmp_path / "processes.json"
        write_state(
            state,
            {
                "pid": 0,  # the spine up that wrote it is gone
                "argv": [],
                "processes": [
                    {"name": "twin", "pid": child.pid, "argv": SLEEPER},
                    # a PID that now runs something else is left alone
                    {"name": "gateway", "pid": unrelated.pid, "argv": ["mosquitto"]},
                ],
            },
        )
        assert stop_leftovers(state) == [f"twin (pid {child.pid})"]
        child.proc.wait(timeout=5)
        assert not child.running() and unrelated.running()
        assert not state.exists()
    finally:
        child.stop()
        unrelated.stop()


def test_a_running_spine_up_keeps_its_state_dir(tmp_path: Path) -> None:
    owner = started(ManagedProcess(SLEEPER, tmp_path / "owner.log").start())
    try:
        state = tmp_path / "processes.json"
        write_state(state, {"pid": owner.pid, "argv": SLEEPER, "processes": []})
        with pytest.raises(StateDirInUse, match=f"another spine up \\(pid {owner.pid}\\)"):
            stop_leftovers(state)
        assert state.exists()
    finally:
        owner.stop()


def resource(kind: str, name: str, namespace: str = "plant-a", spec: dict | None = None):
    return Resource(
        f"{kind.lower()}.yaml (document 1)",
        {
            "apiVersion": "spine.iiot.dev/v1alpha1",
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec or {},
        },
    )


def test_the_plan_needs_a_spine_per_namespace_as_the_operator_does() -> None:
    with pytest.raises(RenderError, match="namespace plant-a has no Spine \\(SpineNotFound\\)"):
        plan_local_run([resource("TwinModel", "press")])
    with pytest.raises(RenderError, match="DuplicateSpine"):
        plan_local_run([resource("Spine", "default"), resource("Spine", "second")])


def test_the_plan_reports_every_invalid_resource_with_its_field() -> None:
    with pytest.raises(RenderError) as error:
        plan_local_run(
            [
                resource("Spine", "default", spec={"broker": {"autosaveInterval": "often"}}),
                resource("Spine", "default", namespace="plant-b"),
                resource("TwinModel", "press", "plant-b", {"properties": {"x": {"type": "y"}}}),
                resource("Spline", "x"),
            ]
        )
    message = str(error.value)
    assert "spine.yaml (document 1): Spine/default: spec.broker.autosaveInterval" in message
    assert "TwinModel/press: InvalidSpec" in message and "properties.x.type" in message
    assert "unknown kind 'Spline'" in message


def test_the_plan_groups_models_and_things_by_namespace() -> None:
    model = {"properties": {"speed": {"type": "integer"}}, "things": [{"name": "press-1"}]}
    plan = plan_local_run(
        [resource("Spine", "default"), resource("TwinModel", "press", spec=model)]
    )
    [namespace] = plan.namespaces
    assert (namespace.namespace, namespace.spine_name, namespace.twin_namespace) == (
        "plant-a",
        "default",
        "plant_a",
    )
    assert namespace.thing_names() == ["press-1"]


def table() -> ValueTable:
    values = {
        "press-1": {
            "temperature": {"properties": {"value": 81.46}},
            "targetSpeed": {
                "properties": {"value": 30},
                "desiredProperties": {"value": 45, "status": "pending"},
            },
            "running": {"properties": {"value": True}},
        }
    }
    properties = [("temperature", "degC"), ("targetSpeed", "spm"), ("running", "")]
    return ValueTable(["press-1", "press-2"], properties, values)


def test_the_live_screen_redraws_in_place() -> None:
    stream = io.StringIO()
    screen = Screen(stream, live=True)
    screen.update([], table())
    first = stream.getvalue()
    assert "  temperature (°C)   81.5     -\n" in first
    assert "  targetSpeed (spm)  30 → 45  -\n" in first
    assert "\x1b[" not in first  # nothing to move over yet
    drawn = first.count("\n")
    screen.update([], table())
    second = stream.getvalue()[len(first) :]
    # back up over the previous frame and clear it, then the same frame again
    assert second.startswith(f"\x1b[{drawn}F\x1b[J") and second.endswith(first)


def test_the_plain_screen_prints_lines_only_when_values_change() -> None:
    stream = io.StringIO()
    screen = Screen(stream, live=False, plain_every=0)
    screen.update([], table())
    screen.update([], table())
    screen.event("broker killed by SIGKILL; restarting it in 1 s")
    output = stream.getvalue()
    assert "\x1b" not in output
    assert output.count("press-1: temperature=81.5 targetSpeed=30→45 running=yes") == 1
    assert output.count("press-2: temperature=- targetSpeed=- running=-") == 1
    assert output.rstrip().endswith("broker killed by SIGKILL; restarting it in 1 s")


def test_each_thing_gets_one_simulator_serving_the_protocols_that_feed_it(tmp_path) -> None:
    import yaml

    from spine_operator.api.gateway import GatewaySpec
    from spine_operator.local.gateways import SimulatedPlc, localize
    from spine_operator.local.ports import Ports

    example = Path(__file__).resolve().parents[2] / "examples" / "press-line" / "gateway.yaml"
    spec = GatewaySpec.model_validate(yaml.safe_load(example.read_text())["spec"])
    run = type("Run", (), {"namespace": "plant-a"})()
    simulators: dict[str, SimulatedPlc] = {}
    used: set[str] = set()
    local = localize(run, "press-line-1", spec, Ports(auto=True), {}, simulators, used)  # type: ignore[arg-type]
    [simulator] = simulators.values()
    assert simulator.thing == "press-1" and set(simulator.ports) == {"modbus", "opcua", "s7"}
    modbus, opcua, s7 = local.connections
    assert (modbus.modbus_tcp.host, modbus.modbus_tcp.port) == (
        "127.0.0.1",
        simulator.ports["modbus"],
    )
    assert modbus.modbus_tcp.unit_id == 1 and simulator.config()["modbus"]["unitId"] == 0
    assert opcua.opcua.endpoint == f"opc.tcp://127.0.0.1:{simulator.ports['opcua']}"
    assert (s7.s7.host, s7.s7.port, s7.s7.rack, s7.s7.slot) == (
        "127.0.0.1",
        simulator.ports["s7"],
        0,
        1,
    )
    assert simulator.serves[2] == "press-line-1/plc-s7 (10.20.0.15:102)"
    # --plc points one connection elsewhere, and that connection gets no simulator
    simulators.clear()
    plcs = {"press-line-1/plc-modbus": "127.0.0.1:5020"}
    local = localize(run, "press-line-1", spec, Ports(auto=True), plcs, simulators, used)  # type: ignore[arg-type]
    assert local.connections[0].modbus_tcp.port == 5020 and used == {"press-line-1/plc-modbus"}
    assert set(simulators["press-1"].ports) == {"opcua", "s7"}


def test_a_broker_started_through_stdbuf_is_still_recognised_as_a_leftover() -> None:
    from spine_operator.local.statefile import exec_argv

    argv = ["/usr/bin/stdbuf", "-oL", "-eL", "/usr/sbin/mosquitto", "-c", "/s/mosquitto.conf"]
    assert exec_argv(argv) == ["/usr/sbin/mosquitto", "-c", "/s/mosquitto.conf"]
    assert exec_argv(["/usr/sbin/mosquitto", "-c", "x"]) == ["/usr/sbin/mosquitto", "-c", "x"]


def issuer_workload(tmp_path: Path, name: str, document: dict[str, object]) -> Workload:
    """A development issuer as `spine up` describes it: `spine-runtime dev-issuer --config`."""
    import json

    from spine_operator.local.probes import HttpProbe
    from spine_operator.local.stack import runtime_argv, runtime_env

    config = tmp_path / f"{name}.json"
    config.write_text(json.dumps(document))
    url = f"http://127.0.0.1:{document.get('port')}"
    return Workload(
        name,
        "issuer",
        runtime_argv(["spine-runtime", "dev-issuer", "--config", str(config)]),
        tmp_path / "logs" / f"{name}.log",
        HttpProbe(f"{url}/healthz"),
        address=url,
        env=runtime_env(),
        start_timeout=20,
    )


async def test_the_host_process_is_healthy_when_every_runtime_is_and_names_the_one_that_fails(
    tmp_path: Path,
) -> None:
    from spine_operator.local.host import host_workload
    from spine_operator.local.processes import free_ports

    ports = free_ports(2)
    good = [
        issuer_workload(tmp_path, f"issuer {n}", {"stateDir": str(tmp_path / str(n)), "port": p})
        for n, p in enumerate(ports)
    ]
    supervisor = Supervisor()
    host = host_workload(good, tmp_path / "logs", tmp_path)
    try:
        await supervisor.start(host)
        assert host.state == "running" and not host.unhealthy
        await asyncio.wait_for(supervisor.stop_all(), 30)
        assert host.process is not None and host.process.returncode == 0, host.log_tail()
    finally:
        await supervisor.stop_all()

    broken = issuer_workload(tmp_path, "broken issuer", {"port": ports[0]})  # no stateDir
    host = host_workload([good[1], broken], tmp_path / "logs", tmp_path)
    with pytest.raises(WorkloadFailed, match=r"exited at start \(exit code 2\)") as failure:
        await Supervisor().start(host)
    tail = failure.value.workload.log_tail()
    assert "Runtime broken issuer (dev-issuer) cannot use its config" in tail
    assert "--- broken issuer (" in tail and "stateDir: a directory is required" in tail
    assert "--- issuer 1 (" not in tail  # only the failing runtime's log


def test_the_screen_lists_a_hosts_runtimes_with_the_pid_they_share(tmp_path: Path) -> None:
    from spine_operator.local.screen import process_lines

    broker = workload(tmp_path, SLEEPER, "broker")
    host = workload(tmp_path, SLEEPER, "runtimes")
    host.members = [workload(tmp_path, SLEEPER, "twin"), workload(tmp_path, SLEEPER, "proxy")]
    host.members[0].address = "http://127.0.0.1:18080"
    try:
        for process in (broker, host):
            process.launch()
        host.state = "running"
        lines = process_lines([broker, host])
    finally:
        for process in (broker, host):
            assert process.process is not None
            process.process.stop()
    rows = [line.split() for line in lines]
    assert rows[2][:3] == ["runtimes", "running", str(host.pid)]
    assert rows[3] == ["twin", "in", "runtimes", str(host.pid), "http://127.0.0.1:18080"]
    assert rows[4] == ["proxy", "in", "runtimes", str(host.pid)]
    assert str(broker.pid) != str(host.pid)
