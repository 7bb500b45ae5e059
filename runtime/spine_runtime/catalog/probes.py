"""Health probes of owned entries: GET `probe.url` every `intervalSeconds`.

An entry is reachable when its probe answers 2xx or 3xx within `timeoutSeconds`. Only http://
URLs are probed (the operator builds them from the namespace's Services); anything else is
reported unreachable with the reason, never fetched. `service.CatalogService` calls `update()`
with each config's entries; /status reads `results`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from spine_runtime.catalog.metrics import CatalogMetrics
from spine_runtime.config.catalog import Probe, ServiceEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeResult:
    reachable: bool | None  # None until the first probe answered or failed
    detail: str


NOT_PROBED = ProbeResult(None, "not probed yet")
NO_PROBE = ProbeResult(None, "no probe configured")


async def probe_once(client: httpx.AsyncClient, probe: Probe) -> ProbeResult:
    parts = urlsplit(probe.url)
    if parts.scheme != "http" or not parts.hostname:
        return ProbeResult(False, f"not probed: only http:// URLs are probed, not {probe.url!r}")
    try:
        response = await client.get(probe.url, timeout=probe.timeout_seconds)
    except httpx.TimeoutException:
        return ProbeResult(False, f"no answer within {probe.timeout_seconds:g} s")
    except httpx.HTTPError:
        # No exception class names in the detail: it lands in a status, where a message that
        # flips between two wordings of one outage would write a status on every poll.
        return ProbeResult(False, f"cannot connect to {parts.netloc}")
    if 200 <= response.status_code < 400:
        return ProbeResult(True, f"HTTP {response.status_code}")
    return ProbeResult(False, f"HTTP {response.status_code}")


class Prober:
    def __init__(self, metrics: CatalogMetrics) -> None:
        self.metrics = metrics
        self.results: dict[str, ProbeResult] = {}
        self._tasks: dict[str, tuple[Probe, asyncio.Task[None]]] = {}
        # No proxy from the environment: probes go straight to the namespace's Services.
        self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False)

    def update(self, entries: list[ServiceEntry]) -> None:
        wanted = {entry.id: entry.probe for entry in entries}
        for service_id in list(self._tasks):
            if wanted.get(service_id) != self._tasks[service_id][0]:
                self._tasks.pop(service_id)[1].cancel()
        self.results = {
            service_id: self.results.get(service_id, NOT_PROBED) if probe else NO_PROBE
            for service_id, probe in wanted.items()
        }
        for service_id, probe in wanted.items():
            if probe is not None and service_id not in self._tasks:
                self.results[service_id] = NOT_PROBED
                task = asyncio.create_task(self._run(service_id, probe), name=f"probe-{service_id}")
                self._tasks[service_id] = (probe, task)

    async def _run(self, service_id: str, probe: Probe) -> None:
        while True:
            result = await probe_once(self._client, probe)
            previous = self.results.get(service_id)
            if service_id not in self.results:
                return  # the entry is gone
            self.results[service_id] = result
            self.metrics.probes.labels("up" if result.reachable else "down").inc()
            if previous is not None and previous.reachable != result.reachable:
                log.info(
                    "Service %s is %s: %s",
                    service_id,
                    "reachable" if result.reachable else "unreachable",
                    result.detail,
                )
            await asyncio.sleep(probe.interval_seconds)

    async def stop(self) -> None:
        for _, task in self._tasks.values():
            task.cancel()
        for _, task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self._client.aclose()
