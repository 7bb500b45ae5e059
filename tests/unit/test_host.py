"""`spine-runtime host`: several runtimes in one process, each as its own command would run it.

The process tests run the real command with two development issuers (they need no broker): each
serves /healthz on its own port and logs to its own file, SIGTERM stops both, and a config one
of them cannot use stops the host with exit code 2 and a line naming that one. The in-process
tests run `run_all` with stand-in runtimes to show what each runtime's code sees: its own log
file (from its tasks and its threads too) and its own environment variables.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from spine_runtime.common.hosting import environment
from spine_runtime.host.main import (
    HostedRuntime,
    UsageError,
    configure_logging,
    parse_arguments,
    run_all,
    threads_inherit_context,
)
from tests.support.processes import ManagedProcess, free_port, wait_until

RUNTIME_FOLDER = Path(__file__).resolve().parents[2] / "runtime"


def issuer_config(tmp_path: Path, name: str, port: int) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"stateDir": str(tmp_path / name), "port": port}))
    return path


def start_host(tmp_path: Path, *runs: str) -> ManagedProcess:
    path = os.pathsep.join(filter(None, [str(RUNTIME_FOLDER), os.environ.get("PYTHONPATH")]))
    return ManagedProcess(
        [sys.executable, "-m", "spine_runtime.cli", "host", *runs],
        tmp_path / "host.log",
        env={"PYTHONPATH": path},
    ).start()


def healthy(port: int) -> bool:
    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200


def test_two_runtimes_serve_on_their_own_ports_and_log_to_their_own_files(tmp_path: Path) -> None:
    one_port, two_port = free_port(), free_port()
    host = start_host(
        tmp_path,
        *("--run", f"dev-issuer={issuer_config(tmp_path, 'one', one_port)}"),
        *("--name", "one", "--log", str(tmp_path / "one.log")),
        *("--run", f"dev-issuer={issuer_config(tmp_path, 'two', two_port)}"),
        *("--name", "two", "--log", str(tmp_path / "two.log")),
    )
    try:
        wait_until(lambda: healthy(one_port) and healthy(two_port), 20, "both to serve /healthz")
        one, two = (tmp_path / "one.log").read_text(), (tmp_path / "two.log").read_text()
        assert f"serving on 127.0.0.1:{one_port}" in one and str(two_port) not in one
        assert f"serving on 127.0.0.1:{two_port}" in two and str(one_port) not in two
        assert "Running one, two in one process" in host.log()
        host.signal(signal.SIGTERM)
        assert host.proc is not None and host.proc.wait(timeout=20) == 0, host.log()
        assert "Stopped" in (tmp_path / "one.log").read_text()
        assert "Stopped" in (tmp_path / "two.log").read_text()
    finally:
        host.stop()


def test_a_config_one_runtime_cannot_use_stops_the_host_with_code_2_naming_it(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"port": free_port()}))  # no stateDir
    host = start_host(
        tmp_path,
        *("--run", f"dev-issuer={issuer_config(tmp_path, 'good', free_port())}", "--name", "good"),
        *("--run", f"dev-issuer={bad}", "--name", "broken", "--log", str(tmp_path / "b.log")),
    )
    try:
        assert host.proc is not None and host.proc.wait(timeout=20) == 2, host.log()
        assert "Runtime broken (dev-issuer) cannot use its config: stateDir" in host.log()
        assert "stateDir: a directory is required" in (tmp_path / "b.log").read_text()
    finally:
        host.stop()


def test_a_port_already_taken_stops_the_host_with_code_2(tmp_path: Path) -> None:
    port = free_port()
    host = start_host(
        tmp_path,
        *("--run", f"dev-issuer={issuer_config(tmp_path, 'first', port)}", "--name", "first"),
        *("--run", f"dev-issuer={issuer_config(tmp_path, 'second', port)}", "--name", "second"),
    )
    try:
        assert host.proc is not None and host.proc.wait(timeout=20) == 2, host.log()
        assert "cannot start" in host.log()
    finally:
        host.stop()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "nothing to run"),
        (["--name", "x"], "applies to the --run before it"),
        (["--run", "sim=a.yaml"], "expected KIND=CONFIG"),
        (["--run", "twin=a", "--run", "twin=b"], "two runtimes have one name"),
        (["--run", "twin=a", "--bogus"], "unknown argument"),
    ],
)
def test_a_command_line_the_host_cannot_run_is_refused(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_arguments(argv)


def stand_in(seen: dict[str, dict[str, str]], fail: bool = False) -> ModuleType:
    """A runtime module whose `run` logs from its task and from a thread of its own, records
    the environment a child program of it would get, then waits to be stopped."""
    module = ModuleType("stand_in")
    module.log = logging.getLogger("stand_in")  # type: ignore[attr-defined]

    async def run(config_path: Path, stop: asyncio.Event) -> int:
        module.log.info("task of %s", config_path.name)  # type: ignore[attr-defined]
        thread = threading.Thread(
            target=lambda: module.log.info("thread of %s", config_path.name)  # type: ignore[attr-defined]
        )
        thread.start()
        await asyncio.to_thread(thread.join)
        seen[config_path.name] = environment()
        if fail:
            raise RuntimeError("the stand-in broke")
        await stop.wait()
        return 0

    module.run = run  # type: ignore[attr-defined]
    return module


@pytest.fixture
def restore_logging():
    """The host's logging and thread start, undone for the tests after this one."""
    root = logging.getLogger()
    handlers, level, start = list(root.handlers), root.level, threading.Thread.start
    yield
    threading.Thread.start = start  # type: ignore[method-assign]
    for handler in root.handlers[len(handlers) :]:
        handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_each_runtime_logs_to_its_file_and_sees_only_its_own_environment(
    tmp_path: Path, restore_logging: None
) -> None:
    (tmp_path / "a.env").write_text("SPINE_TWIN_WRITE_TOKEN=token-of-a\n# a comment\n")
    (tmp_path / "b.env").write_text("SPINE_TWIN_WRITE_TOKEN=token-of-b\n")
    runtimes = [
        HostedRuntime("twin", Path("a"), "a", tmp_path / "a.log", tmp_path / "a.env"),
        HostedRuntime("twin", Path("b"), "b", tmp_path / "b.log", tmp_path / "b.env"),
        HostedRuntime("twin", Path("c"), "c", tmp_path / "c.log"),
    ]
    seen: dict[str, dict[str, str]] = {}
    modules = {runtime.name: stand_in(seen, fail=runtime.name == "c") for runtime in runtimes}
    configure_logging(runtimes, modules)
    threads_inherit_context()

    assert await asyncio.wait_for(run_all(runtimes, modules, asyncio.Event()), 20) == 1

    assert seen["a"]["SPINE_TWIN_WRITE_TOKEN"] == "token-of-a"
    assert seen["b"]["SPINE_TWIN_WRITE_TOKEN"] == "token-of-b"
    assert "SPINE_TWIN_WRITE_TOKEN" not in seen["c"] and "SPINE_TWIN_WRITE_TOKEN" not in os.environ
    for name in ("a", "b", "c"):
        text = (tmp_path / f"{name}.log").read_text()
        others = {"a", "b", "c"} - {name}
        assert f"task of {name}" in text and f"thread of {name}" in text, text
        assert not any(f"of {other}" in text for other in others), text
    assert "the stand-in broke" in (tmp_path / "c.log").read_text()
