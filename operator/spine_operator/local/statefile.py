"""`<state dir>/processes.json`: what a running `spine up` started, for people, tests and itself.

`spine up` rewrites it (atomically) whenever a process starts, restarts or stops, with each
process's PID, command, log and address, and where each namespace's endpoints and credential
files are. The e2e tests find the broker's PID there to freeze or kill it. At start, `spine up`
reads a file left behind: if the `spine up` that wrote it still runs, it refuses to start a
second one on the same state directory; if it died (SIGKILL), it stops the children it left,
each by its recorded PID, only when that PID still runs the recorded command.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

FILE_NAME = "processes.json"


class StateDirInUse(RuntimeError):
    """Another `spine up` runs on this state directory."""


def write_state(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(document, indent=1, sort_keys=True))
    temporary.replace(path)


def read_state(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def command_line(pid: int) -> list[str] | None:
    """The argv a live process runs (Linux /proc), None if it is gone (or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part] or None


def exec_argv(argv: list[str]) -> list[str]:
    """The argv a process shows once a launcher that execs (stdbuf OPTIONS COMMAND) has run."""
    if argv and Path(argv[0]).name == "stdbuf":
        rest = argv[1:]
        while rest and rest[0].startswith("-"):
            rest = rest[1:]
        return rest
    return argv


def _same_command(pid: int, argv: list[str]) -> bool:
    running = command_line(pid)
    return running is not None and running in (argv, exec_argv(argv))


def stop_leftovers(path: Path, timeout: float = 10.0) -> list[str]:
    """Stop what a dead `spine up` left running; StateDirInUse if it still runs.

    Returns a line per process stopped."""
    document = read_state(path)
    if document is None:
        return []
    owner = int(document.get("pid") or 0)
    if owner and owner != os.getpid() and _same_command(owner, document.get("argv") or []):
        raise StateDirInUse(
            f"another spine up (pid {owner}) runs on the state directory {path.parent}: "
            "stop it with Ctrl-C first, or pass another --state-dir"
        )
    stopped = []
    leftovers = [
        entry
        for entry in document.get("processes") or []
        if entry.get("pid")
        and not entry.get("host")  # a runtime of a host process: the host's own entry stops it
        and _same_command(int(entry["pid"]), entry.get("argv") or [])
    ]
    for entry in leftovers:
        os.kill(int(entry["pid"]), signal.SIGTERM)
        os.kill(int(entry["pid"]), signal.SIGCONT)
    deadline = time.monotonic() + timeout
    for entry in leftovers:
        pid = int(entry["pid"])
        while command_line(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        if command_line(pid) is not None:
            os.kill(pid, signal.SIGKILL)
        stopped.append(f"{entry.get('name')} (pid {pid})")
    path.unlink(missing_ok=True)
    return stopped
