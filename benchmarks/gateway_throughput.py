"""Gateway performance: Modbus tag values/s to the broker, requests per cycle, OPC UA items, RSS.

Starts its own mosquitto (the operator's rendered config), the press simulator as the PLC (it
counts the requests it serves), a stand-in twin that acks (tests/support/gateway.py) and the
real gateway process with its production broker login, for each scenario; the `twin`
scenario uses the real twin service instead of the stand-in. Prints the figures
and writes benchmarks/reports/gateway.md. Run from the repository root:

    python -m benchmarks.gateway_throughput [--scenario all|modbus|opcua|opcua-latency|twin|
                                             config-memory ...] [--seconds 20] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import statistics
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from tests.support.gateway import (
    GatewayHandle,
    StandInAcker,
    ensure_broker_login,
    modbus_connection,
    opcua_connection,
    start_gateway,
)
from tests.support.mosquitto import LocalBroker
from tests.support.processes import free_port, wait_until
from tests.support.sim import SimHandle, start_sim
from tests.support.twin import TwinHandle, start_twin

from spine_operator.desired.logins import Login

REPORT = Path(__file__).parent / "reports" / "gateway.md"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def parse_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def percentile(values: list[float], share: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@dataclass
class Window:
    """What happened between two samples, at both ends and at the PLC."""

    seconds: float
    values: int  # property values that reached the (stand-in) twin
    messages: int
    cycles: int  # poll cycles the gateway reports
    requests: int  # read requests the PLC served
    notifications: float
    gateway_cpu: float  # percent of one core
    sim_cpu: float
    gateway_rss: float
    latencies: list[float] = field(default_factory=list)  # arrival - source time, seconds


class Run:
    """One scenario's processes: broker, simulators, stand-in twin, gateway."""

    def __init__(self, sims: list[SimHandle], gateway: GatewayHandle, acker: StandInAcker) -> None:
        self.sims, self.gateway, self.acker = sims, gateway, acker

    def sim_pids(self) -> list[int]:
        return [sim.process.pid for sim in self.sims if sim.process is not None]

    def sample(self) -> dict[str, Any]:
        gateway_pid = self.gateway.process.pid  # type: ignore[union-attr]
        received = self.acker.received()
        status = self.gateway.status()
        return {
            "at": time.monotonic(),
            "updates": len(received),
            "values": sum(len(update.features) for update in received),
            "cycles": sum(c["cycles"] for c in status["connections"]),
            "notifications": self.gateway.metric("spine_gateway_notifications_total"),
            "gateway_cpu": cpu_seconds(gateway_pid),
            "sim_cpu": sum(cpu_seconds(pid) for pid in self.sim_pids()),
        }

    def measure(self, seconds: float) -> Window:
        for sim in self.sims:
            sim.reset_counters()
        start = self.sample()
        time.sleep(seconds)  # a benchmark window, not a test's wait
        served: dict[str, dict[str, int]] = {}
        for sim in self.sims:
            for protocol, kinds in sim.reset_counters().items():
                for kind, count in kinds.items():
                    served.setdefault(protocol, {})[kind] = (
                        served.get(protocol, {}).get(kind, 0) + count
                    )
        end = self.sample()
        elapsed = end["at"] - start["at"]
        window_updates = self.acker.received()[start["updates"] : end["updates"]]
        requests = sum(
            count
            for protocol in served.values()
            for kind, count in protocol.items()
            if kind.startswith("read") and not kind.endswith(("_node", "_item"))
        )
        return Window(
            seconds=elapsed,
            values=end["values"] - start["values"],
            messages=end["updates"] - start["updates"],
            cycles=end["cycles"] - start["cycles"],
            requests=requests,
            notifications=end["notifications"] - start["notifications"],
            gateway_cpu=100 * (end["gateway_cpu"] - start["gateway_cpu"]) / elapsed,
            sim_cpu=100 * (end["sim_cpu"] - start["sim_cpu"]) / elapsed,
            gateway_rss=rss_mib(self.gateway.process.pid),  # type: ignore[union-attr]
            latencies=[u.arrived_at - parse_time(u.source_time) for u in window_updates],
        )


async def start_run(
    work: Path,
    broker: LocalBroker,
    sim: SimHandle,
    connections: list[dict[str, Any]],
    tags: list[dict[str, Any]],
    extra_sims: list[SimHandle] | None = None,
) -> Run:
    acker = await StandInAcker.create(broker)
    gateway = await start_gateway(
        work, broker, connections=connections, tags=tags, publish={"maxInFlight": 5000}
    )
    return Run([sim, *(extra_sims or [])], gateway, acker)


def stop_run(run: Run) -> None:
    run.gateway.stop()
    run.acker.stop()


# Modbus ---------------------------------------------------------------------------------------


async def modbus_scenario(seconds: float, per_tag: bool) -> dict[str, Any]:
    """100 holding registers at a 10 ms poll interval; per_tag: one request per tag."""
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as directory:
        work = Path(directory)
        broker = LocalBroker(work / "broker").start()
        try:
            with start_sim(
                work, protocols=("modbus",), benchRegisters=100, tickIntervalMs=10
            ) as sim:
                settings = {"maxRegistersPerRead": 1} if per_tag else {}
                tags = [
                    {
                        "name": f"bench{i}",
                        "connection": "plc",
                        "thing": "press-1",
                        "property": f"bench{i}",
                        "address": f"holding:{100 + i}",
                        "type": "uint16",
                        "interval": 10,
                    }
                    for i in range(100)
                ]
                run = await start_run(
                    work,
                    broker,
                    sim,
                    [modbus_connection("plc", sim.ports.modbus, **settings)],
                    tags,
                )
                try:
                    wait_until(lambda: len(run.acker.received()) >= 10, 30, "first updates")
                    time.sleep(2)  # warm-up: connections, first plan, page cache
                    window = run.measure(seconds)
                    status = run.gateway.connection_status("plc")
                finally:
                    stop_run(run)
        finally:
            broker.stop()
    return {
        "scenario": "one request per tag" if per_tag else "coalesced",
        "values_per_second": window.values / window.seconds,
        "messages_per_second": window.messages / window.seconds,
        "cycles_per_second": window.cycles / window.seconds,
        "requests_per_cycle": window.requests / max(1, window.cycles),
        "planned_requests_per_cycle": status["requestsPerCycle"],
        "overruns": status["overruns"],
        "gateway_cpu": window.gateway_cpu,
        "sim_cpu": window.sim_cpu,
        "gateway_rss": window.gateway_rss,
        "latency_p50_ms": 1000 * percentile(window.latencies, 0.5),
        "latency_p99_ms": 1000 * percentile(window.latencies, 0.99),
    }


# OPC UA ---------------------------------------------------------------------------------------


SIM_MAX_NODES = 2000  # the simulator serves at most this many bench nodes


async def opcua_scenario(items: int, seconds: float) -> dict[str, Any]:
    """`items` monitored items changing once a second, 100 per thing, one subscription per
    server; above 2,000 items, several simulators (one connection each) serve them."""
    counts = [min(SIM_MAX_NODES, items - first) for first in range(0, items, SIM_MAX_NODES)]
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as directory, ExitStack() as stack:
        work = Path(directory)
        broker = LocalBroker(work / "broker").start()
        stack.callback(broker.stop)
        sims = [
            stack.enter_context(
                start_sim(
                    work,
                    protocols=("opcua",),
                    benchRegisters=count,
                    tickIntervalMs=1000,
                    timeout=120,
                )
            )
            for count in counts
        ]
        tags = [
            {
                "name": f"s{server}-bench{i}",
                "connection": f"ua{server}",
                "thing": f"press-{server}-{i // 100}",
                "property": f"bench{i % 100}",
                "address": f"ns=2;s=Press.bench[{i}]",
                "subscribe": {"publishingInterval": 1000},
            }
            for server, count in enumerate(counts)
            for i in range(count)
        ]
        connections = [
            opcua_connection(f"ua{server}", sim.opcua_endpoint, timeout=30)
            for server, sim in enumerate(sims)
        ]
        started = time.monotonic()
        run = await start_run(work, broker, sims[0], connections, tags, extra_sims=sims[1:])
        try:
            wait_until(
                lambda: run.gateway.status()["tags"]["ok"] == items,
                180,
                f"all {items} items reporting",
            )
            ready = time.monotonic() - started
            time.sleep(2)
            window = run.measure(seconds)
            status = run.gateway.status()
        finally:
            stop_run(run)
    return {
        "items": items,
        "servers": len(counts),
        "ready_seconds": ready,
        "notifications_per_second": window.notifications / window.seconds,
        "values_per_second": window.values / window.seconds,
        "messages_per_second": window.messages / window.seconds,
        "reads": window.requests,
        "failing": len(status["tags"]["failing"]),
        "gateway_cpu": window.gateway_cpu,
        "sim_cpu": window.sim_cpu,
        "gateway_rss": window.gateway_rss,
        "latency_p50_ms": 1000 * percentile(window.latencies, 0.5),
        "latency_p99_ms": 1000 * percentile(window.latencies, 0.99),
    }


async def opcua_latency_scenario(seconds: float, items: int = 100) -> dict[str, Any]:
    """`items` monitored items changing every 100 ms, subscribed with the connection's
    default settings (no publishing or sampling interval set): change to broker latency."""
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as directory, ExitStack() as stack:
        work = Path(directory)
        broker = LocalBroker(work / "broker").start()
        stack.callback(broker.stop)
        sim = stack.enter_context(
            start_sim(work, protocols=("opcua",), benchRegisters=items, tickIntervalMs=100)
        )
        tags = [
            {
                "name": f"bench{i}",
                "connection": "ua",
                "thing": f"press-{i // 100}",
                "property": f"bench{i % 100}",
                "address": f"ns=2;s=Press.bench[{i}]",
                "subscribe": {},
            }
            for i in range(items)
        ]
        connections = [opcua_connection("ua", sim.opcua_endpoint, timeout=30)]
        run = await start_run(work, broker, sim, connections, tags)
        try:
            wait_until(
                lambda: run.gateway.status()["tags"]["ok"] == items, 120, "every item reporting"
            )
            time.sleep(2)
            window = run.measure(seconds)
        finally:
            stop_run(run)
    return {
        "items": items,
        "notifications_per_second": window.notifications / window.seconds,
        "messages_per_second": window.messages / window.seconds,
        "reads": window.requests,
        "gateway_cpu": window.gateway_cpu,
        "latency_p50_ms": 1000 * percentile(window.latencies, 0.5),
        "latency_p99_ms": 1000 * percentile(window.latencies, 0.99),
    }


# Memory after config pushes -------------------------------------------------------------------


async def config_memory_scenario() -> list[dict[str, Any]]:
    """The gateway's RSS after pushes of large configs (tags on a PLC that is not there)."""
    steps: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as directory, ExitStack() as stack:
        work = Path(directory)
        broker = LocalBroker(work / "broker").start()
        stack.callback(broker.stop)
        token = work / "admin-token"
        token.write_text("bench")
        plc_port = free_port()

        def tags(count: int) -> list[dict[str, Any]]:
            return [
                {
                    "name": f"t{i}",
                    "connection": "plc",
                    "thing": f"press-{i % 50}",
                    "property": f"p{i}",
                    "address": f"holding:{i % 60000}",
                    "type": "uint16",
                }
                for i in range(count)
            ]

        gateway = await start_gateway(
            work,
            broker,
            connections=[
                {
                    **modbus_connection("plc", plc_port),
                    "reconnectInitialSeconds": 5,
                    "reconnectMaxSeconds": 30,
                }
            ],
            tags=tags(1),
            http={"adminTokenFile": str(token)},
        )
        stack.callback(gateway.stop)
        base = gateway.config
        pid = gateway.process.pid  # type: ignore[union-attr]
        time.sleep(1)
        steps.append({"step": "started, 1 tag", "bytes": 0, "status": "", "rss": rss_mib(pid)})
        for label, count in (
            ("1 MiB push: 8,000 tags", 8000),
            ("back to 1 tag", 1),
            ("3 MB push: 24,000 tags", 24000),
            ("back to 1 tag", 1),
        ):
            body = json.dumps({**base, "tags": tags(count)}).encode()
            response = httpx.put(
                f"{gateway.url}/admin/config",
                content=body,
                headers={"Authorization": "Bearer bench"},
                timeout=60,
            )
            time.sleep(2)  # let the connections restart; a benchmark pause, not a test's wait
            steps.append(
                {
                    "step": label,
                    "bytes": len(body),
                    "status": response.status_code,
                    "rss": rss_mib(pid),
                }
            )
    return steps


# End to end through the real twin ---------------------------------------------------------------


class SseLatency:
    """Reads the twin's SSE stream in a thread: arrival minus the PLC read time of each change."""

    def __init__(self, twin: TwinHandle) -> None:
        self.latencies: list[float] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(twin.url,), daemon=True)
        self.thread.start()

    def _read(self, url: str) -> None:
        timeout = httpx.Timeout(5.0, read=30.0)
        with (
            httpx.Client(timeout=timeout) as client,
            client.stream(
                "GET", f"{url}/api/2/things", headers={"Accept": "text/event-stream"}
            ) as response,
        ):
            for line in response.iter_lines():
                if self.stopping.is_set():
                    return
                if not line.startswith("data:"):
                    continue
                arrived = time.time()
                features = json.loads(line[5:]).get("features") or {}
                times = [
                    feature["properties"]["sourceTime"]
                    for feature in features.values()
                    if "sourceTime" in (feature.get("properties") or {})
                ]
                if times:
                    self.latencies.append(arrived - parse_time(min(times)))

    def stop(self) -> None:
        self.stopping.set()


class BrokerLatency:
    """An MQTT observer of the gateway's updates: arrival minus the PLC read time, i.e. the
    gateway's share of the way plus one hop through the broker."""

    def __init__(self, broker: LocalBroker, password: str) -> None:
        self.latencies: list[float] = []
        self.client = broker.client(OBSERVER.username, password)
        self.client.on_message = self._on_message
        self.client.subscribe("spine/gateways/+/things/+/twin", qos=1)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        arrived = time.time()
        headers = json.loads(message.payload).get("headers") or {}
        if "spine-source-time" in headers:
            self.latencies.append(arrived - parse_time(headers["spine-source-time"]))

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


OBSERVER = Login("bench-observer", subscribe=("spine/gateways/+/things/+/twin",))


async def twin_scenario(seconds: float, tags_count: int = 100, interval_ms: int = 10) -> dict:
    """The Modbus scenario into the real twin service instead of the stand-in: values stored
    per second, and latency from the PLC read to the change arriving at an SSE client."""
    model = {
        "name": "bench",
        "version": "1.0.0",
        "properties": {
            f"bench{i}": {"type": "integer", "minimum": 0, "maximum": 65535, "readOnly": True}
            for i in range(tags_count)
        },
    }
    tags = [
        {
            "name": f"bench{i}",
            "connection": "plc",
            "thing": "press-1",
            "property": f"bench{i}",
            "address": f"holding:{100 + i}",
            "type": "uint16",
            "interval": interval_ms,
        }
        for i in range(tags_count)
    ]
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as directory, ExitStack() as stack:
        work = Path(directory)
        broker = LocalBroker(work / "broker").start()
        stack.callback(broker.stop)
        sim = stack.enter_context(
            start_sim(
                work,
                protocols=("modbus",),
                benchRegisters=tags_count,
                tickIntervalMs=interval_ms,
            )
        )
        twin = await start_twin(work, broker, [model], [{"name": "press-1", "model": "bench"}])
        stack.callback(twin.stop)
        stream = SseLatency(twin)
        stack.callback(stream.stop)
        observer = BrokerLatency(broker, await ensure_broker_login(broker, OBSERVER))
        stack.callback(observer.stop)
        gateway = await start_gateway(
            work,
            broker,
            connections=[modbus_connection("plc", sim.ports.modbus)],
            tags=tags,
            publish={"maxInFlight": 5000},
        )
        stack.callback(gateway.stop)
        wait_until(lambda: len(stream.latencies) >= 10, 30, "first changes at the SSE client")
        time.sleep(2)  # warm-up, as in the other scenarios
        accepted = {"name": "spine_twin_updates_total", "result": "accepted"}
        first_latency, first_stored = len(stream.latencies), twin.metric(**accepted)
        first_observed = len(observer.latencies)
        started, cpu_start = time.monotonic(), cpu_seconds(twin.process.pid)
        time.sleep(seconds)  # a benchmark window, not a test's wait
        elapsed = time.monotonic() - started
        updates = twin.metric(**accepted) - first_stored
        twin_cpu = 100 * (cpu_seconds(twin.process.pid) - cpu_start) / elapsed
        window = stream.latencies[first_latency:]
        at_broker = observer.latencies[first_observed:]
        publish = gateway.status()["publish"]
        twin_rss = rss_mib(twin.process.pid)
    return {
        "tags": tags_count,
        "interval_ms": interval_ms,
        "updates_per_second": updates / elapsed,
        "values_per_second": updates * tags_count / elapsed,
        "unacknowledged": publish["lastSeq"] - publish["ackedSeq"],
        "twin_cpu": twin_cpu,
        "twin_rss": twin_rss,
        "latency_p50_ms": 1000 * percentile(window, 0.5),
        "latency_p99_ms": 1000 * percentile(window, 0.99),
        "broker_p50_ms": 1000 * percentile(at_broker, 0.5),
        "broker_p99_ms": 1000 * percentile(at_broker, 0.99),
    }


# Report ---------------------------------------------------------------------------------------


def machine() -> str:
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"{platform.node()} ({os.cpu_count()} cores, Python {platform.python_version()}); "
        f"load average at the end {load}"
    )


MODBUS_HEADING = "## Modbus TCP: 100 holding registers polled every 10 ms"
OPCUA_HEADING = "## OPC UA: monitored items changing once a second (one subscription, 1 s)"
OPCUA_LATENCY_HEADING = "## OPC UA: change to broker with the default subscription settings"
TWIN_HEADING = "## End to end: PLC to the real twin service"
MEMORY_HEADING = "## Memory after config pushes"
HEADINGS = (MODBUS_HEADING, OPCUA_HEADING, OPCUA_LATENCY_HEADING, TWIN_HEADING, MEMORY_HEADING)


# A one-minute load average below this at the start and the end: nothing else ran meanwhile.
QUIET_LOAD = 1.0


def measured_line(load_start: tuple[float, ...]) -> str:
    quiet = max(load_start[0], os.getloadavg()[0]) < QUIET_LOAD
    return (
        f"Measured {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} on {machine()}; at the "
        f"start {', '.join(f'{v:.1f}' for v in load_start)}. "
        + (
            "The machine was otherwise quiet (one-minute load below 1 at both ends)."
            if quiet
            else "Others ran tests on the same 2 cores at the same time: the figures are a "
            "busy machine's, not a quiet one's."
        )
    )


def section_lines(
    heading: str, rows: list[dict[str, Any]], load_start: tuple[float, ...]
) -> list[str]:
    lines = [heading, "", measured_line(load_start), ""]
    if heading == MODBUS_HEADING:
        lines += [
            "| reads | tag values/s at the broker | updates/s | cycles/s | requests per cycle "
            "(counted at the PLC) | overruns | gateway CPU | gateway RSS | latency p50 / p99 |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {row['scenario']} | {row['values_per_second']:,.0f} | "
            f"{row['messages_per_second']:,.0f} | {row['cycles_per_second']:.1f} | "
            f"{row['requests_per_cycle']:.2f} | {row['overruns']} | "
            f"{row['gateway_cpu']:.0f} % | {row['gateway_rss']:.0f} MiB | "
            f"{row['latency_p50_ms']:.1f} / {row['latency_p99_ms']:.1f} ms |"
            for row in rows
        ]
        lines += [
            "",
            "The simulator ticks every 10 ms, so most cycles see all 100 registers changed and "
            "publish one update carrying 100 values. A cycle slower than 10 ms (an overrun) "
            'starts the next one at once instead of bursting. "One request per tag" is the '
            "same gateway with `maxRegistersPerRead: 1`.",
        ]
    elif heading == OPCUA_HEADING:
        lines += [
            "| items (servers) | ready after | notifications/s | tag values/s at the broker "
            "| updates/s | Read calls | failing | gateway CPU | simulator CPU | gateway RSS "
            "| latency p50 / p99 |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {row['items']:,} ({row['servers']}) | {row['ready_seconds']:.1f} s | "
            f"{row['notifications_per_second']:,.0f} | {row['values_per_second']:,.0f} | "
            f"{row['messages_per_second']:.1f} | {row['reads']} | {row['failing']} | "
            f"{row['gateway_cpu']:.0f} % | {row['sim_cpu']:.0f} % | "
            f"{row['gateway_rss']:.0f} MiB | "
            f"{row['latency_p50_ms']:.0f} / {row['latency_p99_ms']:.0f} ms |"
            for row in rows
        ]
        lines += [
            "",
            "Items are spread 100 per thing, so each publish response becomes one update per "
            'thing. "Ready after" runs from starting the gateway to every item having '
            "reported. These tags set `publishingInterval: 1000`, so latency includes up to "
            "one publishing interval (1 s) of waiting at the server.",
        ]
    elif heading == OPCUA_LATENCY_HEADING:
        lines += [
            "| run | items | notifications/s | updates/s | Read calls | gateway CPU "
            "| change to broker p50 / p99 |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {number} | {row['items']} | {row['notifications_per_second']:,.0f} | "
            f"{row['messages_per_second']:.1f} | {row['reads']} | {row['gateway_cpu']:.0f} % | "
            f"{row['latency_p50_ms']:.0f} / {row['latency_p99_ms']:.0f} ms |"
            for number, row in enumerate(rows, start=1)
        ]
        lines += [
            "",
            "Tags with `subscribe: {}`: the connection's defaults (publishing every 100 ms, "
            "sampling every 50 ms, queue 1). The simulator changes every item every 100 ms. "
            "Latency is arrival at the stand-in twin minus the server's source timestamp.",
        ]
    elif heading == TWIN_HEADING:
        lines += [
            "| tags | poll interval | updates stored/s | tag values stored/s | unacknowledged "
            "at the end | twin CPU | twin RSS | PLC read to broker p50 / p99 | PLC read to SSE "
            "client p50 / p99 |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {row['tags']} | {row['interval_ms']} ms | {row['updates_per_second']:,.0f} | "
            f"{row['values_per_second']:,.0f} | {row['unacknowledged']} | "
            f"{row['twin_cpu']:.0f} % | {row['twin_rss']:.0f} MiB | "
            f"{row['broker_p50_ms']:.1f} / {row['broker_p99_ms']:.1f} ms | "
            f"{row['latency_p50_ms']:.1f} / {row['latency_p99_ms']:.1f} ms |"
            for row in rows
        ]
        lines += [
            "",
            "The Modbus set-up above, but into the real twin (`spine-runtime twin`, SQLite on "
            "local disk) with a model of 100 integer properties: each update is validated, "
            "committed, acknowledged to the gateway and announced on SSE. Latency runs from the "
            "gateway's read at the PLC (`sourceTime`) to the change arriving at an MQTT "
            "observer of the gateway's updates (the gateway's share and one broker hop) and at "
            "an SSE client of the twin (also validation and the twin's commit batch).",
        ]
    elif heading == MEMORY_HEADING:
        lines += ["| step | pushed | answer | gateway RSS after |", "| --- | ---: | ---: | ---: |"]
        lines += [
            f"| {row['step']} | {row['bytes'] / 1e6:.2f} MB | {row['status']} | "
            f"{row['rss']:.0f} MiB |"
            for row in rows
        ]
        lines += [
            "",
            "Config pushes to `PUT /admin/config` of a running gateway. A push is at most 1 MiB "
            "(a ConfigMap's limit): the 3 MB one is refused with 413. Before, a 3 MB push was "
            "applied and left the gateway at 275 MiB for good (312 MiB in issue 10).",
        ]
    return [*lines, ""]


def write_report(sections: dict[str, list[dict[str, Any]]], load_start: tuple[float, ...]) -> None:
    """Rewrite the sections measured now; keep the others as the earlier runs left them."""
    kept: dict[str, str] = {}
    if REPORT.exists():
        current: str | None = None
        for line in REPORT.read_text().splitlines():
            if line.startswith("## "):
                current = line
                kept[current] = ""
            if current is not None:
                kept[current] += line + "\n"
    lines = [
        "# Gateway benchmark",
        "",
        "Set-up: real mosquitto (the operator's rendered config), the press simulator as the PLC "
        "(`spine-runtime sim`, which counts the requests it serves), the gateway process with "
        "its production login, and a stand-in twin that acks every update (Python, paho). "
        "All on 127.0.0.1. Latency is arrival at the stand-in twin minus `spine-source-time`, "
        "unless a section says otherwise. Each section says when it was measured.",
        "",
        "Reproduce: `python -m benchmarks.gateway_throughput [--scenario ...] [--runs N]`.",
        "",
    ]
    for heading in HEADINGS:
        if heading in sections:
            lines += section_lines(heading, sections[heading], load_start)
        elif heading in kept:
            lines.append(kept[heading].rstrip("\n"))
            lines.append("")
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(lines))


SCENARIOS = ("modbus", "opcua", "opcua-latency", "twin", "config-memory")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scenario", choices=("all", *SCENARIOS), nargs="*", default=["all"])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=1, help="runs of opcua-latency and twin")
    parser.add_argument("--items", type=int, nargs="*", default=[250, 1000, 2000, 4000, 6000])
    args = parser.parse_args()
    chosen = set(SCENARIOS) if "all" in args.scenario else set(args.scenario)
    load_start = os.getloadavg()
    sections: dict[str, list[dict[str, Any]]] = {}
    if "modbus" in chosen:
        for per_tag in (False, True):
            row = await modbus_scenario(args.seconds, per_tag)
            print(
                f"modbus {row['scenario']}: {row['values_per_second']:,.0f} values/s, "
                f"{row['cycles_per_second']:.1f} cycles/s, "
                f"{row['requests_per_cycle']:.2f} requests/cycle, "
                f"gateway {row['gateway_cpu']:.0f} % CPU, {row['gateway_rss']:.0f} MiB, "
                f"latency p50 {row['latency_p50_ms']:.1f} ms",
                flush=True,
            )
            sections.setdefault(MODBUS_HEADING, []).append(row)
    if "opcua" in chosen:
        for items in args.items:
            row = await opcua_scenario(items, args.seconds)
            print(
                f"opcua {items} items: ready {row['ready_seconds']:.1f} s, "
                f"{row['notifications_per_second']:,.0f} notifications/s, "
                f"{row['values_per_second']:,.0f} values/s, {row['reads']} reads, "
                f"{row['failing']} failing, gateway {row['gateway_cpu']:.0f} % CPU, "
                f"{row['gateway_rss']:.0f} MiB",
                flush=True,
            )
            sections.setdefault(OPCUA_HEADING, []).append(row)
    if "opcua-latency" in chosen:
        for _ in range(args.runs):
            row = await opcua_latency_scenario(args.seconds)
            print(
                f"opcua defaults, {row['items']} items changing every 100 ms: change to broker "
                f"p50 {row['latency_p50_ms']:.0f} ms, p99 {row['latency_p99_ms']:.0f} ms, "
                f"{row['reads']} reads; load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
            sections.setdefault(OPCUA_LATENCY_HEADING, []).append(row)
    if "twin" in chosen:
        for interval_ms in [10] * args.runs + [100]:
            row = await twin_scenario(args.seconds, interval_ms=interval_ms)
            print(
                f"twin, 100 tags every {interval_ms} ms: {row['updates_per_second']:,.0f} "
                f"updates/s stored, PLC to SSE p50 {row['latency_p50_ms']:.1f} ms, "
                f"p99 {row['latency_p99_ms']:.1f} ms; PLC to broker p50 "
                f"{row['broker_p50_ms']:.1f} ms, p99 {row['broker_p99_ms']:.1f} ms; "
                f"load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
            sections.setdefault(TWIN_HEADING, []).append(row)
    if "config-memory" in chosen:
        for row in await config_memory_scenario():
            print(
                f"config memory, {row['step']}: {row['bytes'] / 1e6:.2f} MB -> "
                f"{row['status']}, RSS {row['rss']:.0f} MiB",
                flush=True,
            )
            sections.setdefault(MEMORY_HEADING, []).append(row)
    write_report(sections, load_start)
    print(f"wrote {REPORT}; load average {statistics.fmean(os.getloadavg()):.1f}")


if __name__ == "__main__":
    asyncio.run(main())
