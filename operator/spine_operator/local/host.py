"""One `spine-runtime host` process for every Python runtime of a local run (`spine up`'s default).

A process per runtime, as in a cluster, costs each one an interpreter with asyncio, aiohttp,
pydantic and the config models (about 50 MiB of RSS each: benchmarks/reports/demo.md). So
`spine up` runs the twins, flow engines, gateways, catalogs, proxy supervisors and the
development issuer of all namespaces in one host process, each exactly as its pod's command
would run it (its own port, config, registry and log file), unless `--process-per-runtime`.
The broker, HAProxy and the PLC simulators stay processes of their own: the tests freeze and
kill the simulator and the broker. The host is one `Workload` whose `members` are the runtimes'
workloads: healthy when all are, shown and recorded with the host's pid.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from spine_operator.local.probes import EveryMemberHealthy
from spine_operator.local.stack import runtime_env
from spine_operator.local.supervisor import Workload

# The roles of the workloads a host runs (a runtime with `run(config_path, stop)`).
HOSTED_ROLES = frozenset({"issuer", "twin", "flow", "gateway", "catalog", "proxy"})
HOST_NAME = "runtimes"


def hosted_run(workload: Workload) -> tuple[str, str]:
    """(KIND, CONFIG) of a workload whose command is `spine-runtime KIND --config CONFIG`."""
    prefix = [sys.executable, "-m", "spine_runtime.cli"]
    argv = workload.argv
    if argv[:3] != prefix or len(argv) != 6 or argv[4] != "--config":
        raise ValueError(f"{workload.name}: not a `spine-runtime KIND --config FILE` command")
    return argv[3], argv[5]


def own_environment(workload: Workload) -> dict[str, str]:
    """What its pod's `env:` adds for this runtime alone (the proxy's backend token)."""
    shared = runtime_env()
    return {name: value for name, value in (workload.env or {}).items() if name not in shared}


def write_env_file(path: Path, environment: dict[str, str]) -> Path:
    """NAME=VALUE lines, readable by the owner only: it holds a Secret's value."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.writelines(f"{name}={value}\n" for name, value in sorted(environment.items()))
    return path


def host_workload(workloads: list[Workload], log_dir: Path, state_root: Path) -> Workload:
    """The host process running `workloads` (each `hosted_run`-able), in their order."""
    argv = [sys.executable, "-m", "spine_runtime.cli", "host"]
    for workload in workloads:
        kind, config = hosted_run(workload)
        argv += ["--run", f"{kind}={config}", "--name", workload.name]
        argv += ["--log", str(workload.log_path)]
        environment = own_environment(workload)
        if environment:
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", workload.name)
            path = state_root / workload.namespace / "host-env" / f"{slug}.env"
            argv += ["--env-file", str(write_env_file(path, environment))]
    host = Workload(
        name=HOST_NAME,
        role="host",
        argv=argv,
        log_path=log_dir / "runtimes.log",
        probe=lambda: asyncio.sleep(0, False),  # replaced below: it needs the workload
        address=f"{len(workloads)} runtimes in one process",
        env=runtime_env(),
        start_timeout=max(workload.start_timeout for workload in workloads),
        members=list(workloads),
    )
    host.probe = EveryMemberHealthy(host)
    return host
