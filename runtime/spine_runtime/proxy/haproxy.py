"""HAProxy master-worker under the supervisor: key files, `haproxy -c`, hitless reloads, stats.

`HaproxySupervisor.apply` is the config source's `on_change`: it writes the key files
(content-addressed, never overwritten), checks the new haproxy.cfg with `haproxy -c` (the
config's `zero-warning` makes any warning a refusal), swaps the file in and starts HAProxy or
reloads it through the master CLI socket. A refused config raises ConfigError and leaves the
running HAProxy and its files as they were; the pushed document is then answered with a 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import ctypes
import hashlib
import logging
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

from spine_runtime.common.configsource import ConfigError, digest_of
from spine_runtime.common.hosting import child_output, environment
from spine_runtime.config.proxy import KEY_FILE_PATTERN, ROUTE_BACKEND_PREFIX, ProxyConfig
from spine_runtime.proxy.metrics import ProxyMetrics

log = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 30.0
RELOAD_TIMEOUT_SECONDS = 10.0
START_TIMEOUT_SECONDS = 10.0
SOFT_STOP_SECONDS = 8.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h
MASTER_CLI_TIMEOUT_SECONDS = 5.0
RESTART_DELAY_SECONDS = 1.0
KEY_FILE = re.compile(KEY_FILE_PATTERN)
KEY_REFERENCE = re.compile(r'jwt_verify\([A-Z0-9]+,"([^"]+)"\)')


def _terminate_with_parent() -> None:
    """In the child before exec: Linux sends HAProxy's master SIGTERM if the supervisor dies
    (SIGKILL, OOM), so no HAProxy outlives it holding the ports."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class MasterCliError(RuntimeError):
    """The master CLI socket did not answer."""


async def master_cli(socket_path: Path, command: str) -> str:
    """One command on HAProxy's master CLI (`@1 <cmd>` reaches the current worker)."""
    try:
        async with asyncio.timeout(MASTER_CLI_TIMEOUT_SECONDS):
            reader, writer = await asyncio.open_unix_connection(str(socket_path))
            try:
                writer.write(command.encode() + b"\n")
                await writer.drain()
                # End of input: the master answers and closes (without it, it waits for more).
                writer.write_eof()
                return (await reader.read()).decode(errors="replace")
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError) as error:
        raise MasterCliError(
            f"{command!r} on {socket_path}: {error or type(error).__name__}"
        ) from None


def current_worker_pids(show_proc: str) -> list[int]:
    """The PIDs under `# workers` in `show proc` (not the old workers still finishing)."""
    pids, section = [], ""
    for line in show_proc.splitlines():
        if line.startswith("#"):
            section = line.strip("# ").lower()
            continue
        fields = line.split()
        if section == "workers" and len(fields) >= 2 and fields[1] == "worker":
            pids.append(int(fields[0]))
    return pids


def route_health(show_stat: str, routes: list[Any]) -> list[dict[str, Any]]:
    """Each route's server row from `show stat` CSV: up True/False, or None without checks."""
    header, *rows = show_stat.lstrip("# ").splitlines() or [""]
    servers = {
        (row.get("pxname"), row.get("svname")): row
        for row in csv.DictReader([header, *rows])
        if row.get("pxname")
    }
    health = []
    for route in routes:
        row = servers.get((ROUTE_BACKEND_PREFIX + route.name, route.name))
        entry: dict[str, Any] = {"name": route.name, "path": route.path, "owner": route.owner}
        if row is None:
            entry.update(up=None, detail="not in HAProxy's stats")
        else:
            status = (row.get("status") or "").strip()
            check = (row.get("check_status") or "").strip().lstrip("* ")
            description = (row.get("last_chk") or "").strip()
            if status.startswith("UP"):
                entry["up"] = True
            elif status.startswith(("DOWN", "MAINT", "NOLB")):
                entry["up"] = False
            else:
                entry["up"] = None
            entry["detail"] = ", ".join(p for p in (status, check, description) if p)
        health.append(entry)
    return health


class HaproxySupervisor:
    """One HAProxy master process and the config it runs."""

    def __init__(self, metrics: ProxyMetrics) -> None:
        self.metrics = metrics
        self.config: ProxyConfig | None = None  # what HAProxy runs
        self.digest: str | None = None
        self.last_error: str | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.routes: list[dict[str, Any]] = []
        self._lock = asyncio.Lock()
        self._stopping = False

    # ---- applying a config -------------------------------------------------------------------

    async def apply(self, config: ProxyConfig) -> None:
        """Write keys, check, swap in and (re)load; ConfigError if HAProxy refuses the config."""
        async with self._lock:
            try:
                await self._apply(config)
            except ConfigError as error:
                self.last_error = str(error)
                self.metrics.reloads.labels("refused").inc()
                log.error("Kept the running config: %s", error)
                raise
            except (OSError, MasterCliError, RuntimeError) as error:
                self.last_error = f"HAProxy did not take the new config: {error}"
                self.metrics.reloads.labels("failed").inc()
                log.error("%s", self.last_error)
                raise ConfigError(self.last_error) from None
            self.config, self.digest, self.last_error = config, digest_of(config), None
            self.metrics.reloads.labels("applied").inc()
            self.metrics.running_config(self.digest)
            self._prune_key_files(config)

    async def _apply(self, config: ProxyConfig) -> None:
        settings = config.haproxy
        settings.keys_dir.mkdir(parents=True, exist_ok=True)
        self._write_key_files(config)
        expected = {str(settings.keys_dir / name) for name in config.key_files}
        for referenced in KEY_REFERENCE.findall(config.haproxy_cfg):
            # HAProxy accepts a config whose key file is missing and then refuses every token.
            if referenced not in expected or not Path(referenced).is_file():
                raise ConfigError(f"haproxyCfg: the key file {referenced} is not among keyFiles")
        target = settings.config_file
        target.parent.mkdir(parents=True, exist_ok=True)
        candidate = target.with_name(target.name + ".new")
        candidate.write_text(config.haproxy_cfg)
        try:
            await self._check(config, candidate)
        except BaseException:
            candidate.unlink(missing_ok=True)
            raise
        previous = target.read_text() if target.exists() else None
        os.replace(candidate, target)
        try:
            if self.process is None or self.process.returncode is not None:
                await self._start(config)
            else:
                await self._reload(config)
        except BaseException:
            # The file on disk stays what HAProxy runs, so a later reload does not pick up this one.
            if previous is not None:
                target.write_text(previous)
            raise

    def _write_key_files(self, config: ProxyConfig) -> None:
        keys_dir = config.haproxy.keys_dir
        for name, pem in config.key_files.items():
            if hashlib.sha256(pem.encode()).hexdigest()[:32] + ".pem" != name:
                raise ConfigError(f"keyFiles.{name}: the name is not the digest of its content")
            path = keys_dir / name
            if path.exists():
                continue  # content-addressed: same name, same content; a worker may read it
            temporary = path.with_name(f".{name}.tmp")
            temporary.write_text(pem)
            os.replace(temporary, path)
        self.metrics.key_files.set(sum(1 for p in keys_dir.iterdir() if KEY_FILE.match(p.name)))

    def _prune_key_files(self, config: ProxyConfig) -> None:
        """After a successful (re)load: a key no config names any more is deleted. Old workers
        read their keys at start, so removing the file does not affect them."""
        keys_dir = config.haproxy.keys_dir
        for path in keys_dir.iterdir():
            if KEY_FILE.match(path.name) and path.name not in config.key_files:
                path.unlink(missing_ok=True)
                log.info("Removed the key file %s, no longer used", path.name)
        self.metrics.key_files.set(len(config.key_files))

    async def _check(self, config: ProxyConfig, candidate: Path) -> None:
        process = await asyncio.create_subprocess_exec(
            str(config.haproxy.binary),
            "-c",
            "-f",
            str(candidate),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=environment(),  # as HAProxy will run it
        )
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                output, _ = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise ConfigError("haproxy -c did not finish in time") from None
        text = output.decode(errors="replace")
        problems = [
            line.split(" : ", 1)[-1].strip()
            for line in text.splitlines()
            if "[ALERT]" in line or "[WARNING]" in line
        ]
        if process.returncode != 0 or any("[WARNING]" in line for line in text.splitlines()):
            detail = "; ".join(problems) or text.strip()[-500:]
            raise ConfigError(f"haproxy -c refused the config: {detail}"[:2000])

    async def _start(self, config: ProxyConfig) -> None:
        settings = config.haproxy
        settings.master_socket.unlink(missing_ok=True)
        # HAProxy gets the supervisor's environment: `"${VAR}"` in haproxy.cfg (a backend token)
        # is expanded from it. In `spine-runtime host`, that of this proxy's runtime only: two
        # namespaces' proxies in one process must not see each other's tokens.
        self.process = await asyncio.create_subprocess_exec(
            str(settings.binary),
            "-W",
            "-db",
            "-S",
            str(settings.master_socket),
            "-f",
            str(settings.config_file),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=child_output(),
            stderr=child_output(),
            env=environment(),
            preexec_fn=_terminate_with_parent,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise RuntimeError(f"HAProxy exited at start with code {self.process.returncode}")
            with contextlib.suppress(MasterCliError):
                if current_worker_pids(await master_cli(settings.master_socket, "show proc")):
                    self.metrics.haproxy_running.set(1)
                    log.info("Started HAProxy (master PID %s)", self.process.pid)
                    return
            await asyncio.sleep(0.05)
        # Not left running behind our back: a later start would find the ports taken.
        self.process.kill()
        await self.process.wait()
        raise RuntimeError("HAProxy started no worker in time")

    async def _reload(self, config: ProxyConfig) -> None:
        """Through the master CLI: the master re-reads the file and starts a new worker; the old
        one stops accepting and finishes its in-flight requests (hard-stop-after bounds it)."""
        socket_path = config.haproxy.master_socket
        before = current_worker_pids(await master_cli(socket_path, "show proc"))
        # In 2.6 the master re-executes itself and closes the connection without a reply.
        with contextlib.suppress(MasterCliError):
            await master_cli(socket_path, "reload")
        deadline = time.monotonic() + RELOAD_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            with contextlib.suppress(MasterCliError):
                now = current_worker_pids(await master_cli(socket_path, "show proc"))
                if now and not set(now) & set(before):
                    log.info("Reloaded HAProxy (worker %s)", now[0])
                    return
            await asyncio.sleep(0.05)
        raise RuntimeError("no new worker within the reload timeout; the old one keeps serving")

    # ---- running --------------------------------------------------------------------------

    async def watch(self, interval: float = 2.0) -> None:
        """Refresh route health from HAProxy's stats, and restart HAProxy if it died."""
        while True:
            await asyncio.sleep(interval)
            async with self._lock:
                if self._stopping or self.config is None:
                    continue
                if self.process is not None and self.process.returncode is not None:
                    self.metrics.haproxy_running.set(0)
                    self.last_error = f"HAProxy exited with code {self.process.returncode}"
                    log.error("%s; starting it again", self.last_error)
                    await asyncio.sleep(RESTART_DELAY_SECONDS)
                    with contextlib.suppress(RuntimeError, OSError):
                        await self._start(self.config)
                        self.last_error = None
                    continue
                await self.refresh_routes()

    async def refresh_routes(self) -> None:
        if self.config is None:
            return
        try:
            stats = await master_cli(self.config.haproxy.master_socket, "@1 show stat")
        except MasterCliError as error:
            self.routes = [
                {"name": r.name, "path": r.path, "owner": r.owner, "up": None, "detail": str(error)}
                for r in self.config.routes
            ]
            return
        self.routes = route_health(stats, self.config.routes)

    def ready(self) -> bool:
        return (
            self.config is not None and self.process is not None and self.process.returncode is None
        )

    def status(self) -> dict[str, Any]:
        routes = self.routes
        if self.config is not None and {r["name"] for r in routes} != {
            r.name for r in self.config.routes
        }:
            routes = [
                {"name": r.name, "path": r.path, "owner": r.owner, "up": None, "detail": "starting"}
                for r in self.config.routes
            ]
        return {
            "ready": self.ready(),
            "configDigest": self.digest,
            "routes": routes,
            "lastError": self.last_error,
        }

    async def stop(self) -> None:
        """Soft stop (SIGUSR1): workers finish their requests; then terminate if they linger."""
        self._stopping = True
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGUSR1)
        try:
            async with asyncio.timeout(SOFT_STOP_SECONDS):
                await process.wait()
        except TimeoutError:
            process.terminate()
            try:
                async with asyncio.timeout(5):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        self.metrics.haproxy_running.set(0)
