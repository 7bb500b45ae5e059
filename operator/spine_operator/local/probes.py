"""How `spine up` tells a workload is healthy: probes that can be written down and read back.

The renderer (a short-lived child of `spine up`, `prepare.py`) picks each workload's probe and
writes it into the run description as `spec()`; the supervisor reads it back with `probe_of`.
Kept free of the builders' imports: the long-lived `spine up` imports this.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from spine_operator.local.supervisor import Workload

HOST = "127.0.0.1"


class HttpProbe:
    """Healthy when `url` answers 200."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def __call__(self) -> bool:
        async with httpx.AsyncClient(timeout=1.0) as client:
            return (await client.get(self.url)).status_code == 200

    def spec(self) -> dict[str, Any]:
        return {"http": self.url}


class TcpProbe:
    """Healthy when the port accepts a connection (mosquitto has no HTTP endpoint)."""

    def __init__(self, port: int, host: str = HOST) -> None:
        self.port, self.host = port, host

    async def __call__(self) -> bool:
        _, writer = await asyncio.open_connection(self.host, self.port)
        writer.close()
        await writer.wait_closed()
        return True

    def spec(self) -> dict[str, Any]:
        return {"tcp": self.port, "host": self.host}


class EveryMemberHealthy:
    """A host process is healthy when each runtime it runs is; the others are named in
    `host.unhealthy` for the failure message."""

    def __init__(self, host: Workload) -> None:
        self.host = host

    async def __call__(self) -> bool:
        members = self.host.members
        results = await asyncio.gather(*(m.probe() for m in members), return_exceptions=True)
        self.host.unhealthy = [
            member.name
            for member, result in zip(members, results, strict=True)
            if result is not True
        ]
        return not self.host.unhealthy

    def spec(self) -> dict[str, Any]:
        return {"members": True}


def probe_of(spec: dict[str, Any], workload: Workload) -> Any:
    """The probe a `spec()` describes, for `workload`."""
    if "http" in spec:
        return HttpProbe(str(spec["http"]))
    if "tcp" in spec:
        return TcpProbe(int(spec["tcp"]), str(spec.get("host") or HOST))
    if spec.get("members"):
        return EveryMemberHealthy(workload)
    raise ValueError(f"unknown probe {spec!r}")
