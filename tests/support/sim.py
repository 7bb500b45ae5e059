"""Start the press simulator (`spine-runtime sim`) for a test and use its HTTP test API.

The simulator's own tests and the gateway's integration tests and benchmarks call `start_sim`:
every call gets free 127.0.0.1 ports, a config file in the test's directory and a
`ManagedProcess`, and returns once every enabled protocol listens (the simulator starts its
HTTP server last). `SimHandle.restart()` brings it back on the same ports, as a rebooted PLC.
"""

from __future__ import annotations

import itertools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from spine_operator.local.processes import free_ports
from tests.support.processes import ManagedProcess, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
ALL_PROTOCOLS = ("modbus", "opcua", "s7")
HOST = "127.0.0.1"
_log_numbers = itertools.count(1)


@dataclass(frozen=True)
class SimPorts:
    modbus: int
    opcua: int
    s7: int
    http: int

    @classmethod
    def free(cls) -> SimPorts:
        modbus, opcua, s7, http = sorted(free_ports(4))
        return cls(modbus=modbus, opcua=opcua, s7=s7, http=http)


class SimHandle:
    """A running simulator: its ports, its process and small helpers for its HTTP API."""

    def __init__(self, config_path: Path, ports: SimPorts, log_dir: Path) -> None:
        self.config_path = config_path
        self.ports = ports
        self.log_dir = log_dir
        self.host = HOST
        self.process: ManagedProcess | None = None
        self._http = httpx.Client(base_url=self.http_url, timeout=5.0)

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.ports.http}"

    @property
    def opcua_endpoint(self) -> str:
        return f"opc.tcp://{HOST}:{self.ports.opcua}"

    def start(self, timeout: float = 20.0) -> SimHandle:
        log_path = self.log_dir / f"sim-{next(_log_numbers)}.log"
        argv = [sys.executable, "-m", "spine_runtime.cli", "sim", "--config", str(self.config_path)]
        # This checkout's code, whatever is installed.
        python_path = os.pathsep.join(
            filter(None, [str(REPO_ROOT / "runtime"), os.environ.get("PYTHONPATH")])
        )
        self.process = ManagedProcess(argv, log_path, env={"PYTHONPATH": python_path}).start()
        try:
            wait_until(self._ready, timeout, f"the press simulator on {self.http_url}")
        except AssertionError as error:
            self.process.stop()
            raise AssertionError(f"{error}\n{self.process.log()[-3000:]}") from None
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if not self.process.running():
            raise AssertionError(f"the simulator exited early:\n{self.process.log()[-3000:]}")
        return self._http.get("/healthz").status_code == 200

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait; returns the exit code."""
        return self.process.stop(timeout) if self.process is not None else None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def restart(self, timeout: float = 20.0) -> SimHandle:
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        self.stop()
        self._http.close()

    def __enter__(self) -> SimHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def log(self) -> str:
        return self.process.log() if self.process is not None else ""

    def _json(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise AssertionError(
                f"{response.request.method} {response.request.url.path}: "
                f"{response.status_code} {response.text}"
            )
        return response.json()  # Python's json reads the NaN and Infinity the simulator writes

    def values(self) -> dict[str, Any]:
        """The press's current process values (`GET /values`)."""
        return self._json(self._http.get("/values"))

    def put_values(self, **values: Any) -> dict[str, Any]:
        """`PUT /values` with camelCase names, e.g. `put_values(temperature=float("nan"))`;
        `None` releases a forced measured value. Returns the values after the change."""
        return self._json(self._http.put("/values", json=values))

    def put_values_raw(self, body: str) -> httpx.Response:
        return self._http.put("/values", content=body, headers={"Content-Type": "application/json"})

    def status(self) -> dict[str, Any]:
        return self._json(self._http.get("/status"))

    def requests(self, protocol: str) -> dict[str, int]:
        """Requests served over `protocol` since the last reset, by kind."""
        return dict(self.status()["requests"].get(protocol, {}))

    def reset_counters(self) -> dict[str, dict[str, int]]:
        """Start a new counting window; returns the counts of the window it closed."""
        return dict(self._json(self._http.post("/reset-counters"))["requests"])

    def metrics(self) -> str:
        response = self._http.get("/metrics")
        response.raise_for_status()
        return response.text


def sim_config(
    ports: SimPorts,
    protocols: tuple[str, ...] = ALL_PROTOCOLS,
    unit_id: int = 1,
    **settings: Any,
) -> dict[str, Any]:
    """A simulator config document (camelCase, as the config file takes it)."""
    modbus = {
        "enabled": "modbus" in protocols,
        "host": HOST,
        "port": ports.modbus,
        "unitId": unit_id,
    }
    return {
        **settings,
        "modbus": modbus,
        "opcua": {"enabled": "opcua" in protocols, "host": HOST, "port": ports.opcua},
        "s7": {"enabled": "s7" in protocols, "host": HOST, "port": ports.s7},
        "http": {"host": HOST, "port": ports.http},
    }


def start_sim(
    tmp_path: Path,
    *,
    ports: SimPorts | None = None,
    protocols: tuple[str, ...] = ALL_PROTOCOLS,
    unit_id: int = 1,
    timeout: float = 20.0,
    **settings: Any,
) -> SimHandle:
    """Write a config into `tmp_path` and start the simulator on it.

    `settings` are top-level config fields in camelCase (`benchRegisters=200`, `seed=7`,
    `tickIntervalMs=50`, `startRunning=False`); `unit_id=0` answers every Modbus unit id. Only
    the listed protocols are served, which also saves the second an OPC UA server takes to
    start.
    """
    ports = ports or SimPorts.free()
    config_path = tmp_path / f"sim-{ports.http}.yaml"
    config_path.write_text(yaml.safe_dump(sim_config(ports, protocols, unit_id, **settings)))
    return SimHandle(config_path, ports, tmp_path).start(timeout)
