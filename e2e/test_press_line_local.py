"""The press line end to end on this machine: `spine up -f examples/press-line`, as a user runs it.

One `spine up` (a subprocess, free ports, its own state directory) serves the whole module: the
real mosquitto, twin, gateway and press simulator, rendered from the example by the operator's
builders. The tests follow the user's story, then break the broker twice (frozen for 20 s with
SIGSTOP, then SIGKILLed and restarted by `spine up`) and count at both ends that no update is
lost: every update the gateway numbered (its /status) is a stored revision of the thing in the
twin, seen one by one on the twin's SSE stream, with the press's stroke counter rising in order.
The last test stops it all with Ctrl-C.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.support.processes import wait_until

from e2e.story import (
    ChangeStream,
    PressLine,
    a_desired_speed_reaches_the_plc,
    a_plc_value_shows_in_the_twin,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "press-line"
THING = "press-1"

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


@dataclass
class SpineUp:
    """The running `spine up` and what its processes.json says."""

    process: subprocess.Popen[bytes]
    state_dir: Path
    output: Path

    @property
    def state_file(self) -> Path:
        return self.state_dir / "processes.json"

    def state(self) -> dict[str, Any]:
        return dict(json.loads(self.state_file.read_text()))

    def entry(self, role: str) -> dict[str, Any]:
        return next(p for p in self.state()["processes"] if p["role"] == role)

    def pid(self, role: str) -> int:
        return int(self.entry(role)["pid"])

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def check_running(self) -> None:
        assert self.process.poll() is None, f"spine up exited:\n{self.log()[-4000:]}"

    def press_line(self) -> PressLine:
        namespace = self.state()["namespaces"]["plant-a"]
        twin = namespace["twin"]
        return PressLine(
            twin_url=twin["url"],
            thing_id=f"{twin['thingNamespace']}:{THING}",
            write_token=Path(twin["writeTokenFile"]).read_text().strip(),
            sim_url=namespace["simulators"][THING]["http"],
            gateway_url=namespace["gateways"]["press-line-1"]["url"],
        )


def kill_leftovers(state_file: Path) -> None:
    """If spine up died, stop its children by their recorded PIDs (what it would do)."""
    from spine_operator.local.statefile import stop_leftovers

    stop_leftovers(state_file)


@pytest.fixture(scope="module")
def spine_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpineUp]:
    workdir = tmp_path_factory.mktemp("spine-up")
    state_dir = workdir / ".state"
    output = workdir / "spine-up.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "spine_operator.cli", "up", "-f", str(EXAMPLE)),
                *("--ports", "auto", "--state-dir", str(state_dir)),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    running = SpineUp(process, state_dir, output)
    try:

        def ready() -> bool:
            running.check_running()
            return bool(running.state_file.exists() and running.state()["ready"])

        wait_until(ready, 120, "spine up to report every process healthy")
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        kill_leftovers(running.state_file)


@pytest.fixture(scope="module")
def line(spine_up: SpineUp) -> PressLine:
    return spine_up.press_line()


@pytest.fixture(scope="module")
def changes(line: PressLine) -> Iterator[ChangeStream]:
    stream = ChangeStream(line.twin_url, line.thing_id).start()
    yield stream
    stream.close()


def test_the_screen_says_where_everything_is(spine_up: SpineUp, line: PressLine) -> None:
    screen = spine_up.log()
    assert "Spine is up on 127.0.0.1: everything healthy after" in screen
    assert f"curl -s {line.twin_url}/api/2/things/{line.thing_id}" in screen
    assert "simulated press-1" in screen and "Try" in screen
    assert "\x1b[" not in screen  # not a terminal: plain lines, no cursor movement
    processes = spine_up.state()["processes"]
    roles = sorted(p["role"] for p in processes)
    assert roles == [
        *("broker", "catalog", "flow", "gateway", "host", "issuer", "proxy", "sim", "twin")
    ]
    # The Python runtimes share one host process; the broker and the PLC simulator do not.
    host = spine_up.entry("host")
    hosted = [p for p in processes if p.get("host") == host["name"]]
    assert sorted(p["role"] for p in hosted) == [
        "catalog",
        "flow",
        "gateway",
        "issuer",
        "proxy",
        "twin",
    ]
    assert {p["pid"] for p in hosted} == {host["pid"]}
    assert len({host["pid"], spine_up.pid("broker"), spine_up.pid("sim")}) == 3
    assert f"(in pid {host['pid']}, {line.twin_url})" in screen
    assert "TOKEN=$(spine token " in screen and "development only" in screen


def spine_token(spine_up: SpineUp, *roles: str) -> str:
    """A token from `spine token`, as the screen tells the user to get one."""
    command = [sys.executable, "-m", "spine_operator.cli", "token", "--state-dir"]
    command += [str(spine_up.state_dir), "--user", "alice"]
    for role in roles:
        command += ["--role", role]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def test_the_twin_and_the_catalog_answer_through_the_proxy_to_a_development_token(
    spine_up: SpineUp, line: PressLine
) -> None:
    """The README's demo: the twin API through the proxy with a token from the development
    issuer; refused without one or without the role; the catalog lists the registration."""
    import httpx

    proxy = spine_up.state()["namespaces"]["plant-a"]["proxy"]
    thing = f"{proxy['twin']}/api/2/things/{line.thing_id}"
    reader = spine_token(spine_up, "spine:twin:read")
    answer = httpx.get(thing, headers={"Authorization": f"Bearer {reader}"}, timeout=5)
    assert answer.status_code == 200, answer.text
    assert answer.json()["thingId"] == line.thing_id

    refused = httpx.get(thing, timeout=5)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert refused.json()["code"] == 401

    stranger = spine_token(spine_up, "spine:twin:reader")  # only looks like the right role
    answer = httpx.get(thing, headers={"Authorization": f"Bearer {stranger}"}, timeout=5)
    assert answer.status_code == 403

    put = httpx.put(
        f"{thing}/features/targetSpeed/desiredProperties/value",
        json=30,
        headers={"Authorization": f"Bearer {reader}"},
        timeout=5,
    )
    assert put.status_code == 403  # writes need spine:twin:write

    listing = httpx.get(
        proxy["catalog"],
        params={"page": 1, "per_page": 50},
        headers={"Authorization": f"Bearer {reader}"},
        timeout=5,
    )
    assert listing.status_code == 200, listing.text
    ids = {service["id"] for service in listing.json()["services"]}
    assert "maintenance" in ids, ids


def test_the_flows_run_on_twin_changes_with_their_own_logins(spine_up: SpineUp) -> None:
    """The example's flows run on the real engine, fed by the real twin through the broker
    under each flow's own login: the press flows see the presses' changes and make no error."""
    import httpx

    url = spine_up.state()["namespaces"]["plant-a"]["flowEngine"]["url"]

    def flows() -> dict[str, Any]:
        return dict(httpx.get(f"{url}/status", timeout=5).json()["flows"])

    assert sorted(flows()) == [
        "alarm-enrich",
        "legacy-press",
        "press-alarms",
        "press-kpi",
        "work-orders",
    ]
    wait_until(
        lambda: all(flows()[name]["received"] > 0 for name in ("press-alarms", "press-kpi")),
        60,
        "twin change events reaching the press flows",
    )
    for name, flow in flows().items():
        assert flow["running"] and flow["connected"], name
        assert flow["lastError"] is None and flow["brokerError"] is None, (name, flow)
    kpi = flows()["press-kpi"]["steps"]
    wait_until(lambda: flows()["press-kpi"]["steps"]["both-values"]["out"] > 0, 60, "KPI input")
    assert kpi["values"]["errors"] == 0


def test_a_work_order_posted_through_the_proxy_reaches_its_press_topic(
    spine_up: SpineUp,
) -> None:
    """The example's exposed flow source: the MES posts an order through the proxy with its
    token; the order is checked and published on the press's topic, where the demo login reads
    it. Without the role: 403; an order that fails the check: 422, and nothing is published."""
    import httpx
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    namespace = spine_up.state()["namespaces"]["plant-a"]
    url = f"{namespace['proxy']['url']}/flows/work-orders/orders"
    broker = namespace["broker"]
    received: list[tuple[str, Any]] = []
    subscribed = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=broker["demoUsername"], protocol=mqtt.MQTTv5
    )
    client.username_pw_set(
        broker["demoUsername"], Path(broker["demoPasswordFile"]).read_text().strip()
    )
    client.on_message = lambda c, u, m: received.append((m.topic, json.loads(m.payload)))
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_connect = lambda c, *args: c.subscribe("spine/flows/work-orders/out/#", qos=1)
    client.connect(broker["host"], broker["port"])
    client.loop_start()
    try:
        wait_until(subscribed.is_set, 10, "the demo login's subscription")
        mes = {"Authorization": f"Bearer {spine_token(spine_up, 'mes:orders:write')}"}
        order = {"order": "WO-1", "press": "press-1", "quantity": 40}
        answer = httpx.post(url, json=order, headers=mes, timeout=10)
        assert answer.status_code == 202, answer.text
        wait_until(lambda: received, 10, "the order on its press's topic")
        assert received == [("spine/flows/work-orders/out/press-1", order)]
        bad = httpx.post(url, json={"order": "WO-2", "press": "press-1"}, headers=mes, timeout=10)
        assert bad.status_code == 422, bad.text
        reader = {"Authorization": f"Bearer {spine_token(spine_up, 'spine:twin:read')}"}
        assert httpx.post(url, json=order, headers=reader, timeout=10).status_code == 403
        assert len(received) == 1
        # The catalog tells a client where to post what: the route, its roles and the schema
        # of the flow's first (validate) step.
        entry = httpx.get(
            f"{namespace['proxy']['catalog']}flow:work-orders", headers=reader, timeout=10
        )
        assert entry.status_code == 200, entry.text
        api = entry.json()["apis"][0]
        assert api["url"] == url and api["meta"]["roles"] == ["mes:orders:write"]
        assert api["spec"]["schema"]["required"] == ["order", "press", "quantity"]
    finally:
        client.disconnect()
        client.loop_stop()


def test_a_value_changed_at_the_plc_shows_in_the_twin(line: PressLine) -> None:
    a_plc_value_shows_in_the_twin(line)


def test_a_desired_target_speed_reaches_the_plc_and_is_reported_back(line: PressLine) -> None:
    # slower than the example's 30 spm: one stroke per 2.5 s, so the gateway's 1 s poll of the
    # stroke counter sees every stroke in the tests below
    a_desired_speed_reaches_the_plc(line, 24)


@dataclass(frozen=True)
class Counts:
    epoch: str
    last_seq: int
    dropped: int
    revision: int
    updates: dict[str, int]


def settled_counts(spine_up: SpineUp, line: PressLine) -> Counts:
    """Both ends at a standstill: the PLC frozen (SIGSTOP), the gateway's queue empty and
    acknowledged, nothing new for a while; then the PLC goes on."""
    plc = spine_up.pid("sim")
    os.kill(plc, signal.SIGSTOP)
    try:
        seen: list[tuple[int, int]] = []

        def settled() -> bool:
            spine_up.check_running()
            publish = line.gateway_status()["publish"]
            seen.append((publish["lastSeq"], publish["ackedSeq"]))
            recent = seen[-6:]  # 6 looks 0.25 s apart: 1.5 s without a new update
            return len(recent) == 6 and len(set(recent)) == 1 and recent[0][0] == recent[0][1]

        wait_until(settled, 30, "the gateway's updates to be stored and acked", interval=0.25)
        status = line.gateway_status()
        return Counts(
            epoch=status["publish"]["epoch"],
            last_seq=status["publish"]["lastSeq"],
            dropped=status["buffer"]["dropped"],
            revision=line.revision(),
            updates=dict(line.twin_status()["updates"]),
        )
    finally:
        os.kill(plc, signal.SIGCONT)


def check_nothing_lost(before: Counts, after: Counts, changes: ChangeStream) -> int:
    """Counts at both ends agree: every update the gateway numbered is one stored revision of
    the thing, each seen on the SSE stream, in order. Returns how many."""
    assert after.epoch == before.epoch and after.dropped == before.dropped == 0
    numbered = after.last_seq - before.last_seq
    stored = after.revision - before.revision
    assert stored == numbered, f"the gateway numbered {numbered} updates, the twin stored {stored}"
    for result in ("rejected", "stale"):
        assert after.updates.get(result, 0) == before.updates.get(result, 0), after.updates
    events = changes.between(before.revision, after.revision)
    revisions = [int(event["_revision"]) for event in events]
    assert revisions == list(range(before.revision + 1, after.revision + 1))
    strokes = [
        event["features"]["cycleCount"]["properties"]["value"]
        for event in events
        if "cycleCount" in event["features"]
    ]
    assert strokes, "no stroke counted while the broker was away"
    assert all(b == a + 1 for a, b in itertools.pairwise(strokes)), (
        f"a stroke is missing: {strokes}"
    )
    for feature in ("pressure", "temperature", "cycleCount"):
        times = [
            event["features"][feature]["properties"]["sourceTime"]
            for event in events
            if feature in event["features"]
        ]
        assert times == sorted(times), f"{feature} values were stored out of order"
    return numbered


def log_tails(spine_up: SpineUp) -> list[str]:
    """Each process's log since its last start: its beginning and its end."""
    tails = []
    for process in spine_up.state()["processes"]:
        text = Path(process["log"]).read_text(errors="replace")
        text = text[text.rfind("--- spine up: start") :]
        shown = text if len(text) < 3000 else f"{text[:1500]}\n[...]\n{text[-1500:]}"
        tails.append(f"--- {process['name']} ({process['log']}):\n{shown}\n")
    dynsec = spine_up.state_dir / "plant-a" / "broker" / "data" / "dynamic-security.json"
    if dynsec.exists():
        tails.append(f"--- {dynsec}: {dynsec.stat().st_size} bytes\n")
    return tails


def updates_flow(spine_up: SpineUp, line: PressLine, more: int, timeout: float) -> None:
    start = line.gateway_status()["publish"]["ackedSeq"]

    def acked_more() -> bool:
        spine_up.check_running()
        return line.gateway_status()["publish"]["ackedSeq"] >= start + more

    try:
        wait_until(acked_more, timeout, f"{more} more updates stored in the twin", interval=0.2)
    except AssertionError as error:
        raise AssertionError(
            f"{error}\ngateway: {line.gateway_status()}\ntwin: {line.twin_status()}\n"
            + "".join(log_tails(spine_up))
        ) from None


def test_a_broker_frozen_for_20_seconds_loses_no_update(
    spine_up: SpineUp, line: PressLine, changes: ChangeStream
) -> None:
    before = settled_counts(spine_up, line)
    updates_flow(spine_up, line, 5, 30)
    broker = spine_up.pid("broker")
    os.kill(broker, signal.SIGSTOP)
    frozen_at = time.monotonic()
    backlog = []
    try:
        # the 20 s the story asks for; meanwhile the gateway keeps reading into its disk queue
        while time.monotonic() - frozen_at < 20:
            backlog.append(line.gateway_status()["buffer"]["messages"])
            time.sleep(0.5)
    finally:
        os.kill(broker, signal.SIGCONT)
    assert max(backlog) >= 20, (
        f"the gateway queued too little while the broker was frozen: {backlog}"
    )
    assert spine_up.pid("broker") == broker  # a frozen broker is not "exited": no restart
    updates_flow(spine_up, line, max(backlog) + 5, 60)
    after = settled_counts(spine_up, line)
    assert check_nothing_lost(before, after, changes) >= max(backlog)


def test_a_killed_broker_is_restarted_and_loses_no_update(
    spine_up: SpineUp, line: PressLine, changes: ChangeStream
) -> None:
    before = settled_counts(spine_up, line)
    updates_flow(spine_up, line, 5, 30)
    broker = spine_up.pid("broker")
    os.kill(broker, signal.SIGKILL)

    def restarted() -> bool:
        spine_up.check_running()
        entry = spine_up.entry("broker")
        return entry["pid"] != broker and entry["state"] == "running" and entry["restarts"] == 1

    wait_until(restarted, 30, "spine up to restart the broker")
    assert "broker killed by SIGKILL; restarting it in 1 s" in spine_up.log()
    updates_flow(spine_up, line, 10, 60)
    after = settled_counts(spine_up, line)
    check_nothing_lost(before, after, changes)


def test_ctrl_c_stops_everything_and_removes_what_spine_up_wrote(spine_up: SpineUp) -> None:
    pids = [int(p["pid"]) for p in spine_up.state()["processes"]]
    spine_up.process.send_signal(signal.SIGINT)
    assert spine_up.process.wait(timeout=30) == 0, spine_up.log()[-3000:]
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/cmdline").read_bytes() == b""
    assert not spine_up.state_dir.exists(), sorted(spine_up.state_dir.rglob("*"))
    assert spine_up.log().rstrip().endswith("Stopped, and removed what spine up wrote.")
