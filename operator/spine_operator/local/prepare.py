"""`spine up`'s renderer: a short-lived child that validates the files, renders and writes every
workload's files, and describes the run for `spine up` (`runview.py`), then exits.

It holds what rendering needs (the API models, the operator's builders, jinja2, the spec
validators, the key conversion: about 50 MiB of RSS) only while it renders, so the `spine up`
that supervises the run for hours does not (benchmarks/reports/demo.md). Its output lines (what
was skipped, leftovers stopped, why the input is refused) go to `spine up`'s stdout and stderr;
exit code 1 when the run cannot start, 0 when the description is written.

    python -m spine_operator.local.prepare OPTIONS_JSON DESCRIPTION_FILE
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from spine_operator.local.gateways import prepare_gateways
from spine_operator.local.host import HOSTED_ROLES, host_workload
from spine_operator.local.plan import LocalPlan, plan_local_run
from spine_operator.local.ports import PortInUse, Ports
from spine_operator.local.programs import MissingProgram
from spine_operator.local.proxy import LocalIssuer, needs_proxy, prepare_issuer, prepare_proxy
from spine_operator.local.runview import (
    ISSUER_DIR,
    OWN_MARKER,
    RunDescription,
    RunView,
    write_description,
)
from spine_operator.local.stack import NamespaceRun, prepare_namespace
from spine_operator.local.statefile import FILE_NAME, StateDirInUse, stop_leftovers
from spine_operator.local.supervisor import Workload
from spine_operator.local.up import UpOptions, options_of
from spine_operator.render import RenderError, load_config_maps, load_resources


def claim(directory: Path) -> Path:
    """A directory spine up may write into and later remove: a new one, or one an earlier
    spine up made. A directory of the user's is refused, never written into nor deleted."""
    if directory.exists() and not (directory / OWN_MARKER).is_file():
        raise StateDirInUse(
            f"{directory} exists and was not made by spine up; choose another --state-dir "
            "(spine up writes and later removes a folder per namespace and logs/ in it)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / OWN_MARKER).touch()
    return directory


@dataclass
class Prepared:
    runs: list[NamespaceRun]
    issuer: LocalIssuer | None = None
    issuer_workload: Workload | None = None
    host: Workload | None = None  # the Python runtimes' one process, started last


def prepare(plan: LocalPlan, options: UpOptions) -> Prepared:
    """Write every workload's files; RenderError if the operator would refuse a resource."""
    ports = Ports(auto=options.auto_ports)
    several = len(plan.namespaces) > 1
    log_dir = claim(options.state_dir / "logs")
    for namespace_plan in plan.namespaces:
        claim(options.state_dir / namespace_plan.namespace)
    prepared = Prepared([])
    if any(namespace_plan.spine.auth is not None for namespace_plan in plan.namespaces):
        prepared.issuer, prepared.issuer_workload = prepare_issuer(
            claim(options.state_dir / ISSUER_DIR), ports, log_dir / "dev-issuer.log"
        )
    runs, used_plcs = prepared.runs, set()
    for namespace_plan in plan.namespaces:
        prefix = f"{namespace_plan.namespace}/" if several else ""
        run = prepare_namespace(namespace_plan, options.state_dir, log_dir, ports, prefix)
        used_plcs |= prepare_gateways(
            run, namespace_plan.gateways, ports, log_dir, options.plcs, prefix
        )
        if needs_proxy(run):
            run.workloads += prepare_proxy(run, prepared.issuer, log_dir, prefix)
        runs.append(run)
    if not options.process_per_runtime:
        hosted = [prepared.issuer_workload] if prepared.issuer_workload is not None else []
        for run in runs:
            hosted += [w for w in run.workloads if w.role in HOSTED_ROLES]
            run.workloads = [w for w in run.workloads if w.role not in HOSTED_ROLES]
        prepared.issuer_workload = None
        prepared.host = host_workload(hosted, log_dir, options.state_dir)
    unused = sorted(set(options.plcs) - used_plcs)
    if unused:
        raise RenderError(
            f"--plc {', '.join(unused)}: no Gateway has such a connection "
            "(use CONNECTION or GATEWAY/CONNECTION)"
        )
    return prepared


def writable_example(run: NamespaceRun) -> tuple[str, int | float] | None:
    """A writable numeric property and a value in its range, for the PUT example."""
    for _, model in run.plan.models:
        for name, schema in model.properties.items():
            if schema.read_only or schema.type not in ("integer", "number"):
                continue
            low = schema.minimum if schema.minimum is not None else 0
            high = schema.maximum if schema.maximum is not None else low + 100
            value = low + (high - low) * 3 / 4
            return name, round(value) if schema.type == "integer" else value
    return None


def view_of(run: NamespaceRun) -> RunView:
    properties: dict[str, str] = {}
    for _, model in run.plan.models:
        for name, schema in model.properties.items():
            properties.setdefault(name, schema.unit or "")
    return RunView(
        namespace=run.namespace,
        twin_url=run.twin_url,
        twin_namespace=run.plan.twin_namespace,
        things=run.plan.thing_names(),
        properties=list(properties.items()),
        writable=writable_example(run),
        broker_port=run.env.broker_port,
        admin_username=run.admin_username,
        admin_password=run.admin_password,
        demo_password=run.demo_password,
        state_dir=run.state_dir,
        write_token_file=run.write_token_file,
        demo_password_file=run.demo_password_file,
        logins=run.logins,
        workloads=run.workloads,
        details=run.details,
    )


def render(options: UpOptions, description_path: Path) -> int:
    """What `spine up` does before it starts anything; 1 with the reason on stderr."""
    try:
        plan = plan_local_run(load_resources(options.files), load_config_maps(options.files))
    except RenderError as error:
        print(f"spine up: invalid input\n{error}", file=sys.stderr)
        return 1
    try:
        leftovers = stop_leftovers(options.state_dir / FILE_NAME)
    except StateDirInUse as error:
        print(f"spine up: {error}", file=sys.stderr)
        return 1
    for line in plan.skipped:
        print(f"Skipped {line}")
    if leftovers:
        print(f"Stopped what an earlier spine up left running: {', '.join(leftovers)}")
    try:
        prepared = prepare(plan, options)
    except (PortInUse, MissingProgram, StateDirInUse) as error:
        print(f"spine up: {error}", file=sys.stderr)
        return 1
    except RenderError as error:
        print(f"spine up: invalid input\n{error}", file=sys.stderr)
        return 1
    write_description(
        description_path,
        RunDescription(
            [view_of(run) for run in prepared.runs], prepared.issuer_workload, prepared.host
        ),
    )
    return 0


def main(argv: list[str]) -> int:
    options_json, description_path = argv
    return render(options_of(json.loads(options_json)), Path(description_path))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
