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
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

import spine_operator
from spine_operator.broker_admin import BrokerAccessError, BrokerAdmin
from spine_operator.local.probes import HOST
from spine_operator.local.programs import MissingProgram, check_programs
from spine_operator.local.runview import (
    DEMO_USERNAME,
    DESCRIPTION_FILE,
    ISSUER_DIR,
    OWN_MARKER,
    RunDescription,
    RunView,
    read_description,
)
from spine_operator.local.screen import Screen, ValueTable, table_lines
from spine_operator.local.statefile import FILE_NAME, command_line, write_state
from spine_operator.local.supervisor import Supervisor, Workload, WorkloadFailed

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


def up(options: UpOptions) -> int:
    """The `spine up` command; returns the exit code (0 after Ctrl-C, 1 on any failure).

    Renders in a short-lived child (`prepare.py`), so this process, which lives as long as the
    run, never holds the API models, builders, jinja2 and spec validators (about 50 MiB)."""
    try:
        check_programs()
    except MissingProgram as error:
        print(f"spine up: {error}", file=sys.stderr)
        return 1
    created_state_dir = not options.state_dir.exists()
    description_path = options.state_dir / DESCRIPTION_FILE
    sys.stdout.flush()
    rendered = subprocess.run(
        [
            sys.executable,
            "-m",
            "spine_operator.local.prepare",
            json.dumps(options_document(options)),
            str(description_path),
        ],
        check=False,
        env={**os.environ, "PYTHONPATH": child_python_path()},  # the same spine_operator
    )
    if rendered.returncode != 0:
        return 1
    try:
        description = read_description(description_path)
    finally:
        description_path.unlink(missing_ok=True)
    screen = Screen(live=options.live, plain_every=options.plain_every)
    local = LocalRun(description, screen, options, created_state_dir)
    return asyncio.run(local.serve())


def options_document(options: UpOptions) -> dict[str, Any]:
    return {
        "files": [str(path) for path in options.files],
        "stateDir": str(options.state_dir),
        "autoPorts": options.auto_ports,
        "plcs": options.plcs,
        "processPerRuntime": options.process_per_runtime,
    }


def options_of(document: dict[str, Any]) -> UpOptions:
    return UpOptions(
        files=[Path(path) for path in document["files"]],
        state_dir=Path(document["stateDir"]),
        auto_ports=bool(document["autoPorts"]),
        plcs=dict(document["plcs"]),
        process_per_runtime=bool(document["processPerRuntime"]),
    )


def child_python_path() -> str:
    root = str(Path(spine_operator.__file__).resolve().parents[1])
    return os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))


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
        prepared: RunDescription,
        screen: Screen,
        options: UpOptions,
        created_state_dir: bool,
    ) -> None:
        self.runs = prepared.runs
        self.issuer_workload = prepared.issuer_workload
        self.host = prepared.host
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
            admin = BrokerAdmin(HOST, run.broker_port, run.admin_username, run.admin_password)
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


async def read_values(client: httpx.AsyncClient, runs: list[RunView]) -> ValueTable:
    """One GET per twin: the current features of every thing."""
    several = len(runs) > 1
    things: list[str] = []
    properties: dict[str, str] = {}
    values: dict[str, dict[str, Any]] = {}
    errors = []
    for run in runs:
        for name, unit in run.properties:
            properties.setdefault(name, unit)
        ids = run.thing_ids()
        if not ids:
            continue
        column = {f"{run.twin_namespace}:{name}": name for name in run.things}
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


def namespace_document(run: RunView) -> dict[str, Any]:
    return {
        "twin": {
            "url": run.twin_url,
            "thingNamespace": run.twin_namespace,
            "things": run.things,
            "writeTokenFile": str(run.write_token_file.resolve()),
        },
        "broker": {
            "host": HOST,
            "port": run.broker_port,
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


def header_lines(runs: list[RunView], ready_seconds: float, options: UpOptions) -> list[str]:
    lines = [
        "",
        f"Spine is up on {HOST}: everything healthy after {ready_seconds:.1f} s. "
        f"Logs: {shown_path(options.state_dir / 'logs')}/",
    ]
    for run in runs:
        things = run.things
        rows = [
            ("twin API", run.twin_url, "things " + ", ".join(run.thing_ids())),
            (
                "MQTT broker",
                f"{HOST}:{run.broker_port}",
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
    run: RunView,
    proxy: dict[str, Any],
    thing: str | None,
    options: UpOptions,
    several: bool,
) -> list[str]:
    """A call the proxy admits, with a development token, and one it refuses."""
    state = "" if options.state_dir == Path(".state") else f" --state-dir {options.state_dir}"
    namespace = f" --namespace {run.namespace}" if several else ""
    path = f"/api/2/things/{run.twin_namespace}:{thing}" if thing else "/api/2/things"
    twin = f"{proxy['twin']}{path}"
    return [
        "  # through the proxy, with a token from the development issuer:",
        f"  TOKEN=$(spine token{state}{namespace} --user alice --role {proxy['twinReadRole']})",
        f'  curl -s -H "Authorization: Bearer $TOKEN" {twin}',
        f"  curl -s {twin}    # no token: 401",
        f"  curl -s -H \"Authorization: Bearer $TOKEN\" '{proxy['catalog']}?page=1&per_page=50'",
    ]


def try_lines(run: RunView, thing: str) -> list[str]:
    thing_id = f"{run.twin_namespace}:{thing}"
    url = f"{run.twin_url}/api/2/things/{thing_id}"
    lines = [
        f"  curl -s {url}",
        f"  curl -sN -H 'Accept: text/event-stream' '{run.twin_url}/api/2/things?ids={thing_id}'",
    ]
    writable = run.writable
    if writable is not None:
        prop, value = writable
        lines += [
            f"  # set {prop}, then watch the PLC follow in the table below:",
            f"  curl -s -X PUT -d {value} -H 'Content-Type: application/json' \\",
            f'    -H "Authorization: Bearer $(cat {shown_path(run.write_token_file)})" \\',
            f"    {url}/features/{prop}/desiredProperties/value",
        ]
    lines.append(
        f"  mosquitto_sub -h {HOST} -p {run.broker_port} -i {DEMO_USERNAME} -u {DEMO_USERNAME} "
        f"-P {run.demo_password} -t 'spine/#' -v"
    )
    return lines
