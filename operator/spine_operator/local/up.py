"""`spine up -f DIR`: run the resources in the files on this machine, without a cluster.

Reads and validates the files as the operator would (`plan.py`), renders every workload's
config with the operator's builders into a state directory (`stack.py`), then starts the broker,
creates its logins through the operator's dynamic-security admin client (`BrokerAdmin`), and
starts the PLC simulators, then one host process running the twin, the flow engine, the gateways
and the API gateway's runtimes of every namespace (`host.py`; `--process-per-runtime`: a
process each, in order), each once the one before is healthy (`supervisor.py`). Then it shows
where everything is and the live values (`screen.py`), keeps the processes up, and on Ctrl-C
stops them and removes what it wrote. It installs nothing: a missing program is named with the
command that installs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from spine_operator.broker_admin import BrokerAccessError, BrokerAdmin
from spine_operator.environment import find_dynsec_plugin
from spine_operator.local.broker import MissingProgram, mosquitto_binary
from spine_operator.local.gateways import prepare_gateways
from spine_operator.local.host import HOSTED_ROLES, host_workload
from spine_operator.local.plan import LocalPlan, plan_local_run
from spine_operator.local.ports import PortInUse, Ports
from spine_operator.local.proxy import LocalIssuer, needs_proxy, prepare_issuer, prepare_proxy
from spine_operator.local.screen import Screen, ValueTable, table_lines
from spine_operator.local.stack import DEMO_USERNAME, HOST, NamespaceRun, prepare_namespace
from spine_operator.local.statefile import (
    FILE_NAME,
    StateDirInUse,
    command_line,
    stop_leftovers,
    write_state,
)
from spine_operator.local.supervisor import Supervisor, Workload, WorkloadFailed
from spine_operator.render import RenderError, load_config_maps, load_resources

ADMIN_CONNECT_SECONDS = 15.0
REFRESH_SECONDS = 1.0


@dataclass
class UpOptions:
    files: list[Path]
    state_dir: Path = Path(".state")
    auto_ports: bool = False
    keep_state: bool = False
    live: bool | None = None  # None: a live screen when stdout is a terminal
    plain_every: float = 10.0
    plcs: dict[str, str] = field(default_factory=dict)  # [gateway/]connection -> HOST:PORT
    # False: the Python runtimes share one host process (less memory); True: one each, as pods.
    process_per_runtime: bool = False


def check_programs() -> None:
    """MissingProgram naming what to install, before anything is written."""
    mosquitto_binary()
    plugin = find_dynsec_plugin()
    if not Path(plugin).exists():
        raise MissingProgram(
            f"mosquitto's dynamic-security plugin is missing ({plugin}): it comes with "
            "mosquitto 2.0 or newer; on Debian/Ubuntu run `sudo apt-get install mosquitto`"
        )


def up(options: UpOptions) -> int:
    """The `spine up` command; returns the exit code (0 after Ctrl-C, 1 on any failure)."""
    try:
        check_programs()
        plan = plan_local_run(load_resources(options.files), load_config_maps(options.files))
    except MissingProgram as error:
        print(f"spine up: {error}", file=sys.stderr)
        return 1
    except RenderError as error:
        print(f"spine up: invalid input\n{error}", file=sys.stderr)
        return 1
    state_dir = options.state_dir
    try:
        leftovers = stop_leftovers(state_dir / FILE_NAME)
    except StateDirInUse as error:
        print(f"spine up: {error}", file=sys.stderr)
        return 1
    screen = Screen(live=options.live, plain_every=options.plain_every)
    for line in plan.skipped:
        screen.line(f"Skipped {line}")
    if leftovers:
        screen.line(f"Stopped what an earlier spine up left running: {', '.join(leftovers)}")
    created_state_dir = not state_dir.exists()
    try:
        prepared = prepare(plan, options)
    except (PortInUse, MissingProgram, StateDirInUse) as error:
        print(f"spine up: {error}", file=sys.stderr)
        return 1
    except RenderError as error:
        print(f"spine up: invalid input\n{error}", file=sys.stderr)
        return 1
    local = LocalRun(prepared, plan, screen, options, created_state_dir)
    return asyncio.run(local.serve())


# In every directory spine up makes: only a directory holding it is ever written or removed.
OWN_MARKER = ".made-by-spine-up"


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


# Where the development issuer keeps its keys: beside the namespaces, shared by them.
ISSUER_DIR = "dev-issuer"


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


def shown_path(path: Path) -> str:
    """A path as short as the user can still paste it from where they are."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


class LocalRun:
    """The running `spine up`: its processes, its broker admin connections, its screen."""

    def __init__(
        self,
        prepared: Prepared,
        plan: LocalPlan,
        screen: Screen,
        options: UpOptions,
        created_state_dir: bool,
    ) -> None:
        self.runs = prepared.runs
        self.issuer = prepared.issuer
        self.issuer_workload = prepared.issuer_workload
        self.host = prepared.host
        self.plan = plan
        self.screen = screen
        self.options = options
        self.created_state_dir = created_state_dir
        self.state_file = options.state_dir / FILE_NAME
        self.supervisor = Supervisor(on_event=self._event)
        self.admins: list[BrokerAdmin] = []
        self.started = time.monotonic()
        self.ready_seconds: float | None = None
        self.ready = False
        self.failure: str | None = None
        self.stop_requested = asyncio.Event()
        self.signals = 0

    # state ----------------------------------------------------------------------------------

    def _event(self, text: str) -> None:
        self.screen.event(text)
        self.save()

    def save(self) -> None:
        write_state(self.state_file, self.state_document())

    def state_document(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "argv": command_line(os.getpid()) or [],
            "stateDir": str(self.options.state_dir.resolve()),
            "ready": self.ready and self.failure is None,
            "readySeconds": self.ready_seconds,
            "failed": self.failure,
            "namespaces": {run.namespace: namespace_document(run) for run in self.runs},
            "processes": [
                document
                for workload in self.supervisor.workloads
                for document in process_documents(workload)
            ],
        }

    # start ----------------------------------------------------------------------------------

    async def _start(self, workload: Workload) -> None:
        began = time.monotonic()
        await self.supervisor.start(workload)
        self.screen.line(
            f"  {workload.name:<24} healthy after {time.monotonic() - began:4.1f} s"
            f"  (pid {workload.pid}, {workload.address})"
        )
        for member in workload.members:
            self.screen.line(f"    {member.name:<22} (in pid {workload.pid}, {member.address})")
        self.save()

    async def start_everything(self) -> None:
        self.screen.line(f"Starting Spine locally from {', '.join(map(str, self.options.files))}")
        if self.issuer_workload is not None:
            await self._start(self.issuer_workload)
        for run in self.runs:
            broker, *others = run.workloads
            await self._start(broker)
            admin = BrokerAdmin(HOST, run.env.broker_port, run.admin_username, run.admin_password)
            self.admins.append(admin)
            await admin.start()
            await admin.wait_connected(ADMIN_CONNECT_SECONDS)
            for login, password in run.logins:
                await admin.ensure_login(login, password)
            for workload in others:
                await self._start(workload)
        if self.host is not None:
            await self._start(self.host)
        self.ready_seconds = time.monotonic() - self.started

    # run ------------------------------------------------------------------------------------

    def _on_signal(self) -> None:
        self.signals += 1
        if self.signals == 1:
            self.stop_requested.set()
        else:
            self.screen.line("Second interrupt: killing every process now")
            self.supervisor.kill_all()

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal)
        try:
            if await self._until_stopped(self.start_everything()):
                for line in header_lines(self.runs, self.ready_seconds or 0.0, self.options):
                    self.screen.line(line)
                self.ready = True  # once the user has been told where everything is
                self.save()
                display = asyncio.create_task(self.display())
                try:
                    await self._until_stopped(self.supervisor.watch())
                finally:
                    display.cancel()
        except WorkloadFailed as failure:
            self.failure = str(failure)
            self.screen.line(f"\nStopping everything: {failure.workload.name} {failure.reason}")
            tail = failure.workload.log_tail(1500).strip()
            if tail:
                self.screen.line(f"Last lines of its log ({failure.workload.log_path}):")
                self.screen.line("    " + tail.replace("\n", "\n    "))
        except (BrokerAccessError, OSError) as error:
            self.failure = str(error)
            self.screen.line(f"\nStopping everything: {error}")
        finally:
            await self.shutdown()
        return 1 if self.failure else 0

    async def _until_stopped(self, work: Any) -> bool:
        """Run `work` until it ends (True) or a stop is requested (False)."""
        task = asyncio.ensure_future(work)
        stop = asyncio.create_task(self.stop_requested.wait())
        done, _ = await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            stop.cancel()
            task.result()
            return True
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return False

    async def shutdown(self) -> None:
        self.screen.line("Stopping every process...")
        await self.supervisor.stop_all()
        for admin in self.admins:
            await admin.close()
        self.screen.close()
        if self.failure or self.options.keep_state:
            self.save()
            self.screen.line(
                f"Stopped. Logs and state are kept in {shown_path(self.options.state_dir)}"
            )
            return
        self.remove_state()
        self.screen.line("Stopped, and removed what spine up wrote.")

    def remove_state(self) -> None:
        """Remove only what this run wrote, then the state directory if it is empty now."""
        directories = [run.state_dir for run in self.runs]
        directories += [self.options.state_dir / "logs", self.options.state_dir / ISSUER_DIR]
        for directory in directories:
            if (directory / OWN_MARKER).is_file():
                shutil.rmtree(directory, ignore_errors=True)
        self.state_file.unlink(missing_ok=True)
        if self.created_state_dir:
            with contextlib.suppress(OSError):
                self.options.state_dir.rmdir()

    async def display(self) -> None:
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                table = await read_values(client, self.runs)
                self.screen.update(self.supervisor.workloads, table)
                if self.supervisor.changed.is_set():
                    self.supervisor.changed.clear()
                    self.save()
                await asyncio.sleep(REFRESH_SECONDS)


async def read_values(client: httpx.AsyncClient, runs: list[NamespaceRun]) -> ValueTable:
    """One GET per twin: the current features of every thing."""
    several = len(runs) > 1
    things: list[str] = []
    properties: dict[str, str] = {}
    values: dict[str, dict[str, Any]] = {}
    errors = []
    for run in runs:
        for _, model in run.plan.models:
            for name, schema in model.properties.items():
                properties.setdefault(name, schema.unit or "")
        ids = [f"{run.plan.twin_namespace}:{name}" for name in run.plan.thing_names()]
        if not ids:
            continue
        column = {f"{run.plan.twin_namespace}:{name}": name for name in run.plan.thing_names()}
        things += [f"{run.namespace}/{name}" if several else name for name in column.values()]
        try:
            response = await client.get(
                f"{run.twin_url}/api/2/things",
                params={"ids": ",".join(ids), "fields": "thingId,features"},
            )
            response.raise_for_status()
            for thing in response.json():
                name = column.get(thing.get("thingId"), "")
                values[f"{run.namespace}/{name}" if several else name] = thing.get("features") or {}
        except (httpx.HTTPError, ValueError) as error:
            errors.append(f"twin of {run.namespace} did not answer: {error}")
    return ValueTable(things, list(properties.items()), values, "; ".join(errors))


def namespace_document(run: NamespaceRun) -> dict[str, Any]:
    return {
        "twin": {
            "url": run.twin_url,
            "thingNamespace": run.plan.twin_namespace,
            "things": run.plan.thing_names(),
            "writeTokenFile": str(run.write_token_file.resolve()),
        },
        "broker": {
            "host": HOST,
            "port": run.env.broker_port,
            "demoUsername": DEMO_USERNAME,
            "demoPasswordFile": str(run.demo_password_file.resolve()),
        },
        **run.details,
    }


def process_documents(workload: Workload) -> list[dict[str, Any]]:
    """The workload's entry; a host's is followed by one per runtime it runs, with the host's
    pid and command (what `stop_leftovers` checks) and `host` naming it."""
    documents = [process_document(workload)]
    for member in workload.members:
        documents.append(
            {
                **process_document(member),
                "pid": workload.pid,
                "argv": workload.argv,
                "state": workload.state,
                "starts": workload.starts,
                "restarts": workload.restarts,
                "lastExit": workload.last_exit or None,
                "host": workload.name,
            }
        )
    return documents


def process_document(workload: Workload) -> dict[str, Any]:
    return {
        "name": workload.name,
        "role": workload.role,
        "namespace": workload.namespace,
        "pid": workload.pid,
        "argv": workload.argv,
        "state": workload.state,
        "starts": workload.starts,
        "restarts": workload.restarts,
        "lastExit": workload.last_exit or None,
        "log": str(workload.log_path.resolve()),
        "address": workload.address,
        **workload.extra,
    }


def header_lines(runs: list[NamespaceRun], ready_seconds: float, options: UpOptions) -> list[str]:
    lines = [
        "",
        f"Spine is up on {HOST}: everything healthy after {ready_seconds:.1f} s. "
        f"Logs: {shown_path(options.state_dir / 'logs')}/",
    ]
    for run in runs:
        things = run.plan.thing_names()
        rows = [
            ("twin API", run.twin_url, "things " + ", ".join(thing_ids(run))),
            (
                "MQTT broker",
                f"{HOST}:{run.env.broker_port}",
                f"demo login {DEMO_USERNAME}, password {run.demo_password} (reads spine/#)",
            ),
        ]
        for name, gateway in run.details.get("gateways", {}).items():
            rows.append(("gateway", name, f"{gateway['url']}/status"))
        for thing, simulator in run.details.get("simulators", {}).items():
            ports = ", ".join(f"{protocol} {port}" for protocol, port in simulator["ports"].items())
            rows.append(("PLC", f"simulated {thing}", f"{ports}; test API {simulator['http']}"))
        proxy = run.details.get("proxy")
        if proxy:
            rows.append(("proxy", proxy["url"], "routes: " + ", ".join(proxy_paths(proxy))))
            rows.append(("catalog", proxy["catalog"], "through the proxy, with a token"))
            if proxy.get("issuer"):
                rows.append(
                    ("dev issuer", proxy["issuer"], "development only: `spine token` signs")
                )
        lines += ["", f"Namespace {run.namespace}", *table_lines(rows)]
        if things:
            lines += ["", "Try", *try_lines(run, things[0])]
        if proxy and proxy.get("issuer"):
            several = sum(bool(other.details.get("proxy")) for other in runs) > 1
            lines += proxy_try_lines(run, proxy, things[0] if things else None, options, several)
    return lines


def proxy_paths(proxy: dict[str, Any]) -> list[str]:
    paths = ["/catalog/"] + (["/twin/"] if proxy.get("twin") else [])
    return paths + [f"ServiceRegistration {name}" for name in proxy["registrations"]]


def proxy_try_lines(
    run: NamespaceRun,
    proxy: dict[str, Any],
    thing: str | None,
    options: UpOptions,
    several: bool,
) -> list[str]:
    """A call the proxy admits, with a development token, and one it refuses."""
    state = "" if options.state_dir == Path(".state") else f" --state-dir {options.state_dir}"
    namespace = f" --namespace {run.namespace}" if several else ""
    path = f"/api/2/things/{run.plan.twin_namespace}:{thing}" if thing else "/api/2/things"
    twin = f"{proxy['twin']}{path}"
    return [
        "  # through the proxy, with a token from the development issuer:",
        f"  TOKEN=$(spine token{state}{namespace} --user alice --role {proxy['twinReadRole']})",
        f'  curl -s -H "Authorization: Bearer $TOKEN" {twin}',
        f"  curl -s {twin}    # no token: 401",
        f"  curl -s -H \"Authorization: Bearer $TOKEN\" '{proxy['catalog']}?page=1&per_page=50'",
    ]


def thing_ids(run: NamespaceRun) -> list[str]:
    return [f"{run.plan.twin_namespace}:{name}" for name in run.plan.thing_names()]


def try_lines(run: NamespaceRun, thing: str) -> list[str]:
    thing_id = f"{run.plan.twin_namespace}:{thing}"
    url = f"{run.twin_url}/api/2/things/{thing_id}"
    lines = [
        f"  curl -s {url}",
        f"  curl -sN -H 'Accept: text/event-stream' '{run.twin_url}/api/2/things?ids={thing_id}'",
    ]
    writable = writable_example(run)
    if writable is not None:
        prop, value = writable
        lines += [
            f"  # set {prop}, then watch the PLC follow in the table below:",
            f"  curl -s -X PUT -d {value} -H 'Content-Type: application/json' \\",
            f'    -H "Authorization: Bearer $(cat {shown_path(run.write_token_file)})" \\',
            f"    {url}/features/{prop}/desiredProperties/value",
        ]
    lines.append(
        f"  mosquitto_sub -h {HOST} -p {run.env.broker_port} -i {DEMO_USERNAME} -u {DEMO_USERNAME} "
        f"-P {run.demo_password} -t 'spine/#' -v"
    )
    return lines


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
