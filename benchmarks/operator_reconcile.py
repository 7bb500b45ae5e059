"""Reconcile speed and memory of the operator: one Spine, then 200 Spines in 200 namespaces.

The operator runs as its own process (`spine run`, the real kopf runtime) against kmock's
emulated API server in this process, so its resident memory is the operator's alone. A Spine
counts as reconciled when every child is applied and its status carries the outcome (Ready with
reason Progressing: no StatefulSet controller runs here). Prints the figures and writes
benchmarks/reports/operator.md.

    python -m benchmarks.operator_reconcile [--spines 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.support.operator import emulated_cluster, write_kubeconfig
from tests.support.processes import ManagedProcess, free_port

from spine_operator.api.kinds import API_VERSION
from spine_operator.k8s import Kubernetes, reset_api_client

CHILDREN = [
    ("apps/v1/statefulsets", "spine-broker"),
    ("v1/services", "spine-broker"),
    ("v1/services", "spine-broker-headless"),
    ("v1/configmaps", "spine-broker-config"),
    ("v1/secrets", "spine-broker-admin"),
]


def reconciled(cluster, namespace: str) -> bool:
    try:
        for resource, name in CHILDREN:
            if cluster.objects[resource, namespace, name].deleted:
                return False
        spine = cluster.objects["spine.iiot.dev/v1alpha1/spines", namespace, "default"].raw
    except KeyError:
        return False
    conditions = (spine.get("status") or {}).get("conditions") or []
    return any(c["type"] == "BrokerReady" for c in conditions)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_for(predicate, timeout: float, interval: float = 0.005) -> float:
    started = time.perf_counter()
    while not predicate():
        if time.perf_counter() - started > timeout:
            raise TimeoutError("not reconciled in time")
        await asyncio.sleep(interval)
    return time.perf_counter() - started


def all_reconciled(cluster, namespaces: set[str]):
    """A predicate that checks each namespace until it is done, then never again."""
    pending = set(namespaces)

    def check() -> bool:
        for namespace in list(pending):
            if reconciled(cluster, namespace):
                pending.discard(namespace)
        return not pending

    return check


async def run(spine_count: int) -> dict[str, float]:
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as state:
        async with emulated_cluster() as cluster:
            kubeconfig = write_kubeconfig(str(cluster.url), Path(state) / "kubeconfig")
            os.environ["KUBECONFIG"] = str(kubeconfig)
            reset_api_client()
            import kubernetes

            kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(kubeconfig)
            operator = ManagedProcess(
                [
                    sys.executable,
                    "-m",
                    "spine_operator.cli",
                    "run",
                    "--all-namespaces",
                    "--health-port",
                    str(free_port()),
                    "--metrics-port",
                    str(free_port()),
                ],
                Path(state) / "operator.log",
                env={"KUBECONFIG": str(kubeconfig)},
            ).start()
            try:
                k8s = Kubernetes()
                await asyncio.sleep(0)  # the emulator serves from this loop
                await wait_for(
                    lambda: any(
                        r.action is not None and str(r.action).endswith("WATCH")
                        for r in list(cluster)
                    ),
                    30,
                )
                results["operator_rss_idle_mib"] = rss_mib(operator.pid)

                singles = []
                for index in range(5):
                    namespace = f"single-{index}"
                    started = time.perf_counter()
                    await k8s.create(
                        {
                            "apiVersion": API_VERSION,
                            "kind": "Spine",
                            "metadata": {"name": "default", "namespace": namespace},
                            "spec": {},
                        }
                    )
                    await wait_for(lambda ns=namespace: reconciled(cluster, ns), 30)
                    singles.append(time.perf_counter() - started)
                results["one_spine_first_s"] = singles[0]
                results["one_spine_median_s"] = statistics.median(singles[1:])

                started = time.perf_counter()
                await asyncio.gather(
                    *[
                        k8s.create(
                            {
                                "apiVersion": API_VERSION,
                                "kind": "Spine",
                                "metadata": {"name": "default", "namespace": f"bulk-{i}"},
                                "spec": {},
                            }
                        )
                        for i in range(spine_count)
                    ]
                )
                created = time.perf_counter() - started
                await wait_for(
                    all_reconciled(cluster, {f"bulk-{i}" for i in range(spine_count)}),
                    600,
                    interval=0.05,
                )
                results["bulk_spines"] = spine_count
                results["bulk_create_s"] = created
                results["bulk_all_reconciled_s"] = time.perf_counter() - started
                results["operator_rss_after_bulk_mib"] = rss_mib(operator.pid)
                results["operator_cpu_s"] = cpu_seconds(operator.pid)
                results["emulator_cpu_s"] = cpu_seconds(os.getpid())
            finally:
                await asyncio.to_thread(operator.stop)  # this loop serves the emulator
                if os.environ.get("SPINE_BENCH_LOG"):
                    print(operator.log()[-int(os.environ["SPINE_BENCH_LOG"]) :])
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spines", type=int, default=200)
    args = parser.parse_args()
    results = asyncio.run(run(args.spines))
    load = os.getloadavg()
    lines = [
        "# Operator reconcile benchmark",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; load average at the end {load[0]:.2f}. The emulated API "
        "server runs in the benchmark process, the operator in its own (`spine run`).",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| one Spine, apply to all children applied and status written (first) | "
        f"{results['one_spine_first_s'] * 1000:.0f} ms |",
        f"| one Spine, the same (median of the next 4) | "
        f"{results['one_spine_median_s'] * 1000:.0f} ms |",
        f"| {results['bulk_spines']:.0f} Spines in {results['bulk_spines']:.0f} namespaces, "
        f"created at once, until all reconciled | {results['bulk_all_reconciled_s']:.1f} s |",
        f"| CPU seconds used in all: operator / emulated API server | "
        f"{results['operator_cpu_s']:.1f} s / {results['emulator_cpu_s']:.1f} s |",
        f"| operator resident memory, idle | {results['operator_rss_idle_mib']:.0f} MiB |",
        f"| operator resident memory after the {results['bulk_spines']:.0f} | "
        f"{results['operator_rss_after_bulk_mib']:.0f} MiB |",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    Path(__file__).parent.joinpath("reports", "operator.md").write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
