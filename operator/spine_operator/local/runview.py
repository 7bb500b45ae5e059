"""What the long-lived `spine up` knows of a rendered run, written down by the renderer.

`spine up` renders in a short-lived child (`prepare.py`: the API models, builders, jinja2 and
the spec validators, some 50 MiB it would otherwise hold for as long as the run lasts), which
writes a run description: per namespace a `RunView` (addresses, things, the broker's admin
login and the logins to create, the workloads with their commands and probes) and the host or
issuer workload. `spine up` reads it back here, with no builder imported.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spine_operator.desired.logins import Login
from spine_operator.local.probes import probe_of
from spine_operator.local.supervisor import Workload

DEMO_USERNAME = "spine-demo"
# In every directory spine up makes: only a directory holding it is ever written or removed.
OWN_MARKER = ".made-by-spine-up"
# Where the development issuer keeps its keys: beside the namespaces, shared by them.
ISSUER_DIR = "dev-issuer"
DESCRIPTION_FILE = "run.json"


@dataclass
class RunView:
    """One namespace of the run, as the supervisor, the screen and processes.json see it."""

    namespace: str
    twin_url: str
    twin_namespace: str
    things: list[str]
    properties: list[tuple[str, str]]  # (name, unit) of every model property, in order
    writable: tuple[str, int | float] | None  # a writable property and a value for the PUT line
    broker_port: int
    admin_username: str
    admin_password: str
    demo_password: str
    state_dir: Path
    write_token_file: Path
    demo_password_file: Path
    logins: list[tuple[Login, str]] = field(default_factory=list)
    workloads: list[Workload] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def thing_ids(self) -> list[str]:
        return [f"{self.twin_namespace}:{name}" for name in self.things]


@dataclass
class RunDescription:
    runs: list[RunView]
    issuer_workload: Workload | None = None
    host: Workload | None = None  # the Python runtimes' one process, started last


def workload_document(workload: Workload) -> dict[str, Any]:
    probe = workload.probe
    return {
        "name": workload.name,
        "role": workload.role,
        "argv": workload.argv,
        "logPath": str(workload.log_path),
        "probe": probe.spec(),  # type: ignore[attr-defined]
        "address": workload.address,
        "namespace": workload.namespace,
        "env": workload.env,
        "startTimeout": workload.start_timeout,
        "extra": workload.extra,
        "members": [workload_document(member) for member in workload.members],
    }


def workload_of(document: dict[str, Any]) -> Workload:
    workload = Workload(
        name=document["name"],
        role=document["role"],
        argv=list(document["argv"]),
        log_path=Path(document["logPath"]),
        probe=lambda: _unset(),
        address=document["address"],
        namespace=document["namespace"],
        env=document["env"],
        start_timeout=float(document["startTimeout"]),
        extra=dict(document["extra"]),
        members=[workload_of(member) for member in document["members"]],
    )
    workload.probe = probe_of(document["probe"], workload)
    return workload


async def _unset() -> bool:  # pragma: no cover - replaced at once
    return False


def login_document(login: Login) -> dict[str, Any]:
    return dataclasses.asdict(login)


def login_of(document: dict[str, Any]) -> Login:
    values: dict[str, Any] = {
        key: tuple(value) if isinstance(value, list) else value for key, value in document.items()
    }
    return Login(**values)


def run_document(run: RunView) -> dict[str, Any]:
    return {
        **{f.name: getattr(run, f.name) for f in dataclasses.fields(run)},
        "state_dir": str(run.state_dir),
        "write_token_file": str(run.write_token_file),
        "demo_password_file": str(run.demo_password_file),
        "logins": [[login_document(login), password] for login, password in run.logins],
        "workloads": [workload_document(workload) for workload in run.workloads],
    }


def run_of(document: dict[str, Any]) -> RunView:
    return RunView(
        **{
            **document,
            "properties": [(name, unit) for name, unit in document["properties"]],
            "writable": tuple(document["writable"]) if document["writable"] else None,
            "state_dir": Path(document["state_dir"]),
            "write_token_file": Path(document["write_token_file"]),
            "demo_password_file": Path(document["demo_password_file"]),
            "logins": [(login_of(login), password) for login, password in document["logins"]],
            "workloads": [workload_of(workload) for workload in document["workloads"]],
        }
    )


def write_description(path: Path, description: RunDescription) -> None:
    """Readable by the owner only: it holds the broker's admin password and the logins'."""
    document = {
        "runs": [run_document(run) for run in description.runs],
        "issuerWorkload": workload_document(description.issuer_workload)
        if description.issuer_workload is not None
        else None,
        "host": workload_document(description.host) if description.host is not None else None,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(document, file)


def read_description(path: Path) -> RunDescription:
    document = json.loads(path.read_text())
    issuer, host = document.get("issuerWorkload"), document.get("host")
    return RunDescription(
        [run_of(run) for run in document["runs"]],
        workload_of(issuer) if issuer else None,
        workload_of(host) if host else None,
    )
