"""The 127.0.0.1 ports of a local run: fixed, documented defaults, or free ones (`--ports auto`).

Fixed defaults keep the demo's `curl` lines the same from one run to the next; they avoid the
usual ports (1883, 8080, 502, 4840, 102), which a system mosquitto or a real PLC tool may hold.
A second instance of a service takes the next port. The tests ask for free ports instead:
`--ports auto` picks unused ports below the kernel's ephemeral range, because a port there is
never handed to an outgoing connection, so no client of ours (nor another program's) can take
it between the choice and the bind, or while a restarted workload is down.
"""

from __future__ import annotations

import random
from pathlib import Path

from spine_operator.local.processes import port_free

DEFAULT_PORTS = {
    "broker": 11883,
    "twin": 18080,
    "gateway": 18081,
    "flow": 18082,
    "proxy": 18443,
    "proxy-admin": 18083,
    "proxy-exporter": 18405,
    "catalog": 18084,
    "issuer": 18085,
    "sim-http": 18090,
    "modbus": 15020,
    "opcua": 14840,
    "s7": 11102,
}


# Where auto ports come from: above the well-known and registered ports people configure by
# hand (1883, 8080, 8883, 9090, ...), below the ephemeral range (32768 by default on Linux).
AUTO_PORTS_START = 20000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ephemeral_start() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class PortInUse(RuntimeError):
    """A fixed port is taken; the message says which and what to do."""


class Ports:
    """Hands out one port per request, never the same one twice."""

    def __init__(self, auto: bool = False) -> None:
        self.auto = auto
        self.taken: set[int] = set()
        self._counts: dict[str, int] = {}
        self._random = random.Random()

    def take(self, service: str) -> int:
        if self.auto:
            end = max(ephemeral_start(), AUTO_PORTS_START + 1000)
            for _ in range(200):
                port = self._random.randrange(AUTO_PORTS_START, end)
                if port not in self.taken and port_free(port):
                    self.taken.add(port)
                    return port
            raise PortInUse(f"no free port on 127.0.0.1 between {AUTO_PORTS_START} and {end}")
        index = self._counts.get(service, 0)
        self._counts[service] = index + 1
        port = DEFAULT_PORTS[service] + index
        if port in self.taken or not port_free(port):
            raise PortInUse(
                f"port {port} ({service}) on 127.0.0.1 is in use: stop what listens there "
                "(another spine up?) or run with --ports auto"
            )
        self.taken.add(port)
        return port
