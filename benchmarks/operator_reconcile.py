"""Reconcile speed, memory and writes of the operator against a real kube-apiserver.

etcd and kube-apiserver run as local processes (tests/support/apiserver.py; programs from
`make k8s-tools` or KUBEBUILDER_ASSETS), with crds/ and the RBAC of manifests/ installed; the
operator runs as its own process (`spine run`, as the operator's ServiceAccount). No kubelet
and no StatefulSet controller run: a thread here watches StatefulSets and writes each one's
status as ready as soon as it exists, as the controller would once the pods are up. Measures:
one Spine from apply to Ready; N Spines in N namespaces until all Ready; N Gateways in one
namespace until all Ready; the operator's memory after; and the writes an operator restart makes
(every resource is reconciled again, nothing changed: the target is 0). Prints the figures and
writes benchmarks/reports/operator.md.

    python -m benchmarks.operator_reconcile [--spines 200] [--gateways 200] [--profile DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from tests.support.apiserver import (
    ControlPlane,
    OperatorProcess,
    condition,
    custom_path,
    spine_manifest,
)

GROUP = "/apis/spine.iiot.dev/v1alpha1"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Watcher(threading.Thread):
    """Watches one kind cluster-wide and calls `on_event(type, object)` for each event."""

    def __init__(self, plane: ControlPlane, path: str, on_event) -> None:
        super().__init__(daemon=True)
        self.plane, self.path, self.on_event = plane, path, on_event
        self.stopping = threading.Event()
        self.started_watching = threading.Event()

    def run(self) -> None:
        """List, then watch from the list's version; list again after any break (an informer)."""
        with httpx.Client(
            base_url=self.plane.url,
            verify=self.plane.certs.admin_context(),
            timeout=httpx.Timeout(30, read=None),
        ) as client:
            while not self.stopping.is_set():
                try:
                    self.list_and_watch(client)
                except (httpx.HTTPError, ValueError, KeyError):
                    time.sleep(0.2)

    def list_and_watch(self, client: httpx.Client) -> None:
        listing = client.get(self.path)
        listing.raise_for_status()
        for item in listing.json()["items"]:
            self.on_event("ADDED", item)
        version = listing.json()["metadata"]["resourceVersion"]
        params = {"watch": "1", "resourceVersion": version}
        with client.stream("GET", self.path, params=params) as response:
            response.raise_for_status()
            self.started_watching.set()
            for line in response.iter_lines():
                if self.stopping.is_set():
                    return
                if line:
                    event = json.loads(line)
                    if event["type"] == "ERROR":
                        return  # e.g. 410 Gone: list again
                    self.on_event(event["type"], event["object"])


class StatefulSetController:
    """Writes a ready status on every StatefulSet that lacks one (one replica each)."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.api = httpx.Client(
            base_url=plane.url,
            verify=plane.certs.admin_context(),
            timeout=30,
        )
        self.pool = ThreadPoolExecutor(4)
        self.watcher = Watcher(plane, "/apis/apps/v1/statefulsets", self.seen)
        self.patches = 0

    def start(self) -> None:
        self.watcher.start()
        assert self.watcher.started_watching.wait(30)

    def seen(self, kind: str, obj: dict[str, Any]) -> None:
        if kind not in ("ADDED", "MODIFIED"):
            return
        metadata, status = obj["metadata"], obj.get("status") or {}
        replicas = obj["spec"].get("replicas", 1)
        if (
            status.get("observedGeneration") == metadata["generation"]
            and status.get("readyReplicas") == replicas
        ):
            return
        self.pool.submit(self.mark, obj)

    def mark(self, obj: dict[str, Any]) -> None:
        metadata = obj["metadata"]
        replicas = obj["spec"].get("replicas", 1)
        revision = f"{metadata['name']}-{metadata['generation']}"
        path = (
            f"/apis/apps/v1/namespaces/{metadata['namespace']}/statefulsets/"
            f"{metadata['name']}/status"
        )
        body = {
            "status": {
                "observedGeneration": metadata["generation"],
                "replicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "currentReplicas": replicas,
                "updatedReplicas": replicas,
                "currentRevision": revision,
                "updateRevision": revision,
            }
        }
        self.api.patch(
            path,
            content=json.dumps(body),
            headers={"Content-Type": "application/merge-patch+json"},
        )
        self.patches += 1


class ReadyTracker:
    """Which resources of one kind are Ready=True for their current generation."""

    def __init__(self, plane: ControlPlane, plural: str) -> None:
        self.ready: dict[tuple[str, str], float] = {}
        self.lock = threading.Lock()
        self.watcher = Watcher(plane, f"{GROUP}/{plural}", self.seen)

    def start(self) -> None:
        self.watcher.start()
        assert self.watcher.started_watching.wait(30)

    def seen(self, kind: str, obj: dict[str, Any]) -> None:
        found = condition(obj, "Ready")
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        with self.lock:
            if (
                kind != "DELETED"
                and found
                and found["status"] == "True"
                and found.get("observedGeneration") == obj["metadata"]["generation"]
            ):
                self.ready.setdefault(key, time.perf_counter())
            else:
                self.ready.pop(key, None)

    def wait(self, keys: set[tuple[str, str]], timeout: float) -> float:
        """Seconds from now until every key is Ready (raises TimeoutError)."""
        started = time.perf_counter()
        while True:
            with self.lock:
                if keys <= self.ready.keys():
                    return max(self.ready[key] for key in keys)
            if time.perf_counter() - started > timeout:
                with self.lock:
                    missing = len(keys - self.ready.keys())
                raise TimeoutError(f"{missing} of {len(keys)} not Ready after {timeout} s")
            time.sleep(0.005)


def create_namespaces(plane: ControlPlane, names: list[str]) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda name: plane.api.post(
                    "/api/v1/namespaces",
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
                ),
                names,
            )
        )


def post_all(plane: ControlPlane, objects: list[dict[str, Any]]) -> None:
    def post(obj: dict[str, Any]) -> None:
        metadata = obj["metadata"]
        plural = obj["kind"].lower() + "s"
        plane.api.post(custom_path(metadata["namespace"], plural), obj)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(post, objects))


def twin_model(namespace: str, things: int) -> dict[str, Any]:
    return {
        "apiVersion": "spine.iiot.dev/v1alpha1",
        "kind": "TwinModel",
        "metadata": {"name": "press", "namespace": namespace},
        "spec": {
            "title": "Press",
            "properties": {"temperature": {"type": "number", "unit": "degC", "readOnly": True}},
            "things": [{"name": f"press-{index}"} for index in range(things)],
        },
    }


def gateway(namespace: str, index: int) -> dict[str, Any]:
    return {
        "apiVersion": "spine.iiot.dev/v1alpha1",
        "kind": "Gateway",
        "metadata": {"name": f"gw-{index}", "namespace": namespace},
        "spec": {
            "thing": f"press-{index}",
            "connections": [{"name": "plc", "modbusTcp": {"host": f"plc-{index}", "port": 502}}],
            "tags": [
                {
                    "name": "temperature",
                    "connection": "plc",
                    "property": "temperature",
                    "address": "holding:2",
                    "type": "float32",
                }
            ],
        },
    }


def snapshot(plane: ControlPlane, namespaces: set[str]) -> dict[tuple[str, ...], str]:
    """(plural, namespace, name) -> resourceVersion of everything the operator writes."""
    found = {}
    for path in (
        f"{GROUP}/spines",
        f"{GROUP}/gateways",
        f"{GROUP}/twinmodels",
        "/apis/apps/v1/statefulsets",
        "/api/v1/services",
        "/api/v1/configmaps",
        "/api/v1/secrets",
        "/apis/networking.k8s.io/v1/networkpolicies",
    ):
        for item in plane.api.get(path)["items"]:
            metadata = item["metadata"]
            if metadata.get("namespace") in namespaces:
                key = (path.rsplit("/", 1)[1], metadata["namespace"], metadata["name"])
                found[key] = metadata["resourceVersion"]
    return found


def run(spine_count: int, gateway_count: int, profile: Path | None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as state:
        folder = Path(state)
        plane = ControlPlane(folder / "control-plane", controller_manager=False)
        started = time.perf_counter()
        plane.start()
        results["apiserver_start_s"] = time.perf_counter() - started
        operator: OperatorProcess | None = None
        try:
            plane.install()
            controller = StatefulSetController(plane)
            controller.start()
            spines, gateways = ReadyTracker(plane, "spines"), ReadyTracker(plane, "gateways")
            spines.start()
            gateways.start()
            extra = ["--verbose"] if os.environ.get("SPINE_BENCH_VERBOSE") else []
            operator = OperatorProcess(plane, folder / "operator", extra)
            operator.start()
            if profile is not None:  # py-spy samples from outside: little overhead
                profile.mkdir(parents=True, exist_ok=True)
                subprocess.Popen(
                    [
                        str(Path(sys.executable).parent / "py-spy"),
                        "record",
                        "--pid",
                        str(operator.pid),
                        "--rate",
                        "50",
                        "--nonblocking",
                        "--format",
                        "raw",
                        "-o",
                        str(profile / "operator.folded"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip; it ends when the operator does
            results["operator_rss_idle_mib"] = rss_mib(operator.pid)

            singles = []
            for index in range(5):
                namespace = f"single-{index}"
                create_namespaces(plane, [namespace])
                started = time.perf_counter()
                post_all(plane, [spine_manifest(namespace)])
                singles.append(spines.wait({(namespace, "default")}, 60) - started)
            results["one_spine_first_s"] = singles[0]
            results["one_spine_median_s"] = statistics.median(singles[1:])

            names = [f"bulk-{index}" for index in range(spine_count)]
            create_namespaces(plane, names)
            cpu_before = cpu_seconds(operator.pid)
            started = time.perf_counter()
            post_all(plane, [spine_manifest(namespace) for namespace in names])
            results["bulk_create_s"] = time.perf_counter() - started
            done = spines.wait({(namespace, "default") for namespace in names}, 600)
            results["bulk_spines"] = spine_count
            results["bulk_all_ready_s"] = done - started
            results["bulk_operator_cpu_s"] = cpu_seconds(operator.pid) - cpu_before

            namespace = "gateways"
            create_namespaces(plane, [namespace])
            post_all(plane, [spine_manifest(namespace), twin_model(namespace, gateway_count)])
            spines.wait({(namespace, "default")}, 60)
            cpu_before = cpu_seconds(operator.pid)
            started = time.perf_counter()
            post_all(plane, [gateway(namespace, index) for index in range(gateway_count)])
            done = gateways.wait({(namespace, f"gw-{i}") for i in range(gateway_count)}, 900)
            results["gateways"] = gateway_count
            results["gateways_all_ready_s"] = done - started
            results["gateways_operator_cpu_s"] = cpu_seconds(operator.pid) - cpu_before
            results["operator_rss_after_mib"] = rss_mib(operator.pid)
            results["operator_threads"] = len(list(Path(f"/proc/{operator.pid}/task").iterdir()))
            results["operator_cpu_s"] = cpu_seconds(operator.pid)
            results["apiserver_cpu_s"] = cpu_seconds(plane.apiserver.pid)  # type: ignore[union-attr]
            results["etcd_cpu_s"] = cpu_seconds(plane.etcd.pid)  # type: ignore[union-attr]

            # Writes per reconcile of unchanged resources: a restarted operator reconciles
            # every resource again (kopf's resume); nothing changed, so nothing may be written.
            ours = {f"single-{i}" for i in range(5)} | set(names) | {namespace}
            # Settle first: every Gateway's first runtime poll (a real state change) is written.
            gateway_list = f"{GROUP}/namespaces/{namespace}/gateways"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and any(
                (condition(item, "Connected") or {}).get("reason") == "AwaitingStatus"
                for item in plane.api.get(gateway_list)["items"]  # type: ignore[index]
            ):
                time.sleep(0.5)
            operator.stop()
            before = snapshot(plane, ours)
            statuses = {
                (item["metadata"]["namespace"], item["metadata"]["name"]): item.get("status")
                for plural in ("spines", "gateways")
                for item in plane.api.get(f"{GROUP}/{plural}")["items"]  # type: ignore[index]
            }
            operator = OperatorProcess(plane, folder / "operator-again", extra).start()
            expected = spine_count + 5 + 1 + gateway_count
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                done_count = operator.metric("spine_reconciliations_total", kind="Spine")
                done_count += operator.metric("spine_reconciliations_total", kind="Gateway")
                if done_count >= expected:
                    break
                time.sleep(0.2)
            results["resumed_reconciles"] = done_count
            time.sleep(3)  # the status refreshes that follow the last counted reconcile
            after = snapshot(plane, ours)
            written = sorted(key for key, version in after.items() if before.get(key) != version)
            results["writes_after_resume"] = len(written)
            results["writes_after_resume_by_kind"] = dict(Counter(key[0] for key in written))
            for plural, ns, name in written[:3]:  # what changed, for the report
                if plural in ("spines", "gateways"):
                    now = plane.api.get(custom_path(ns, plural, name)) or {}
                    was = {
                        c["type"]: c for c in (statuses.get((ns, name)) or {}).get("conditions", [])
                    }
                    for found in (now.get("status") or {}).get("conditions", []):
                        if was.get(found["type"]) != found:
                            print("changed", plural, ns, name, was.get(found["type"]), "->", found)
            results["writes_per_unchanged_reconcile"] = len(written) / max(done_count, 1)
            results["marker_patches"] = controller.patches
        finally:
            if operator is not None:
                operator.stop()
                if os.environ.get("SPINE_BENCH_LOG"):
                    print(operator.log()[-int(os.environ["SPINE_BENCH_LOG"]) :])
            plane.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spines", type=int, default=200)
    parser.add_argument("--gateways", type=int, default=200)
    parser.add_argument("--profile", type=Path, help="py-spy samples of the operator go here")
    parser.add_argument("--no-report", action="store_true", help="print only")
    args = parser.parse_args()
    load_before = os.getloadavg()
    results = run(args.spines, args.gateways, args.profile)
    load = os.getloadavg()
    print(json.dumps(results, indent=1))
    lines = [
        "# Operator reconcile benchmark (real kube-apiserver)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, shared and busy (other engineers' builds and tests ran "
        f"meanwhile): load average {load_before[0]:.2f} at the start, {load[0]:.2f} at the "
        "end. etcd and kube-apiserver run as local processes, the operator in its own "
        "(`spine run`, as its ServiceAccount); a thread of the benchmark marks each "
        "StatefulSet ready as soon as it exists. `python -m benchmarks.operator_reconcile`.",
        "",
        "| measure | value | target |",
        "| --- | --- | --- |",
        f"| one Spine, apply to Ready (first) | {results['one_spine_first_s'] * 1000:.0f} ms "
        "| < 1 s |",
        f"| one Spine, apply to Ready (median of the next 4) | "
        f"{results['one_spine_median_s'] * 1000:.0f} ms | < 1 s |",
        f"| {results['bulk_spines']} Spines in {results['bulk_spines']} namespaces, created at "
        f"once, until all Ready | {results['bulk_all_ready_s']:.1f} s | < 60 s |",
        f"| {results['gateways']} Gateways in one namespace, until all Ready | "
        f"{results['gateways_all_ready_s']:.1f} s | < 60 s |",
        f"| operator resident memory, idle / after all of it | "
        f"{results['operator_rss_idle_mib']:.0f} MiB / {results['operator_rss_after_mib']:.0f} "
        "MiB | < 150 MB |",
        f"| writes per reconcile of an unchanged resource (operator restarted: "
        f"{results['resumed_reconciles']:.0f} reconciles, {results['writes_after_resume']} "
        f"objects written: {results['writes_after_resume_by_kind']}) | "
        f"{results['writes_per_unchanged_reconcile']:.2f} | 0 |",
        f"| operator threads after all of it | {results['operator_threads']} | |",
        f"| CPU seconds: operator (Spines / Gateways / all) | "
        f"{results['bulk_operator_cpu_s']:.1f} / {results['gateways_operator_cpu_s']:.1f} / "
        f"{results['operator_cpu_s']:.1f} s | |",
        f"| CPU seconds: kube-apiserver / etcd | {results['apiserver_cpu_s']:.1f} / "
        f"{results['etcd_cpu_s']:.1f} s | |",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if not args.no_report:
        path = Path(__file__).parent.joinpath("reports", "operator.md")
        # The hand-written analysis under "## Notes" (profiles, causes) is kept across runs.
        previous = path.read_text() if path.exists() else ""
        notes = previous[previous.index("\n## Notes") :] if "\n## Notes" in previous else ""
        path.write_text(report + notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
