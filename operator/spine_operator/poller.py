"""The operator's background poller of runtime health: each ready runtime's `/status`.

DESIGN.md, "How the operator works": runtime health reaches status through one background task
(started by `handlers` in `@kopf.on.startup`), not a kopf timer per resource, which would
put a finalizer on every resource. Every `SETTINGS.interval` seconds (env
SPINE_STATUS_POLL_SECONDS, default 10) it reads each target's /status with httpx and explicit
timeouts, counts the poll in `spine_runtime_health_polls_total{kind, result}`, and hands a
`RuntimeReport` to the handler, which writes it into the resource's status. `report_from_status`
is the pure mapping from the gateway's /status document (spine_runtime.gateway.app).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from spine_operator.external import unreachable_cause
from spine_operator.metrics import OperatorMetrics

log = logging.getLogger(__name__)

STATUS_TIMEOUT = httpx.Timeout(3.0, connect=1.0)
CONCURRENT_POLLS = 8
MAX_ERROR_LENGTH = 300  # a PLC's error text, as much as a status line should carry

Key = tuple[str, str]  # (namespace, name)


def _interval_from_environment() -> float:
    try:
        return max(0.1, float(os.environ.get("SPINE_STATUS_POLL_SECONDS", "10")))
    except ValueError:
        log.warning("SPINE_STATUS_POLL_SECONDS is not a number; polling every 10 s")
        return 10.0


@dataclass
class PollerSettings:
    interval: float = dataclasses.field(default_factory=_interval_from_environment)


SETTINGS = PollerSettings()


def _text(value: Any) -> str | None:
    return None if value is None else str(value)[:MAX_ERROR_LENGTH]


@dataclass(frozen=True)
class ConnectionReport:
    name: str
    protocol: str | None
    state: str | None
    last_success: str | None
    last_error: str | None

    def to_status(self) -> dict[str, Any]:
        status = {
            "name": self.name,
            "protocol": self.protocol,
            "state": self.state,
            "lastSuccess": self.last_success,
            "lastError": self.last_error,
        }
        return {key: value for key, value in status.items() if value is not None}


@dataclass(frozen=True)
class RuntimeReport:
    """What a gateway's /status said at the last poll, or that it could not be read."""

    reachable: bool
    error: str | None = None
    connections: tuple[ConnectionReport, ...] = ()
    broker_connected: bool | None = None
    broker_error: str | None = None
    tags: dict[str, int] | None = None
    buffered: int | None = None
    oldest_buffered_seconds: float | None = None
    publish_rate: float | None = None

    def unreachable(self, error: str) -> RuntimeReport:
        """This report's last known figures, marked as no longer confirmed."""
        return dataclasses.replace(self, reachable=False, error=error)

    def down(self) -> list[str]:
        """Each connection (and the broker session) that is not up, with its last error."""
        found = []
        for connection in self.connections:
            if connection.state != "connected":
                detail = f": {connection.last_error}" if connection.last_error else ""
                found.append(
                    f"{connection.name} ({connection.protocol}) is {connection.state}{detail}"
                )
        if self.broker_connected is False:
            detail = f": {self.broker_error}" if self.broker_error else ""
            found.append(f"the broker session is down{detail}")
        return found

    def status_fields(self) -> dict[str, Any]:
        return {
            "connections": [connection.to_status() for connection in self.connections],
            "tags": self.tags,
            "buffered": self.buffered,
            "oldestBufferedSeconds": self.oldest_buffered_seconds,
            "publishRate": self.publish_rate,
        }


def report_from_status(document: Any) -> RuntimeReport:
    """The report of one /status answer; raises ValueError if it is not a gateway's status."""
    if not isinstance(document, dict) or not isinstance(document.get("connections"), list):
        raise ValueError("the answer is not a gateway's /status document")
    try:
        connections = tuple(
            ConnectionReport(
                name=str(item["name"]),
                protocol=_text(item.get("protocol")),
                state=_text(item.get("state")),
                last_success=_text(item.get("lastSuccess")),
                last_error=_text(item.get("lastError")),
            )
            for item in document["connections"]
        )
        tags = document.get("tags") or {}
        buffer = document.get("buffer") or {}
        publish = document.get("publish") or {}
        broker = document.get("broker") or {}
        return RuntimeReport(
            reachable=True,
            connections=connections,
            broker_connected=bool(broker["connected"]) if "connected" in broker else None,
            broker_error=_text(broker.get("lastRefusal") or broker.get("lastError")),
            tags={
                "total": int(tags.get("total", 0)),
                "ok": int(tags.get("ok", 0)),
                "waiting": int(tags.get("waiting", 0)),
                "failing": len(tags.get("failing") or []),
            },
            buffered=int(buffer.get("messages", 0)),
            # Whole seconds and one decimal: a status patch every poll is enough churn.
            oldest_buffered_seconds=float(round(float(buffer.get("oldestAgeSeconds", 0.0)))),
            publish_rate=round(float(publish.get("ratePerSecond", 0.0)), 1),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"the gateway's /status has an unexpected shape ({error!r})") from None


@dataclass(frozen=True)
class FlowEngineReport:
    """What the flow engine's /status said of each flow, or that it could not be read."""

    reachable: bool
    error: str | None = None
    flows: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


def flow_engine_report(document: Any) -> FlowEngineReport:
    """The report of the flow engine's /status; ValueError if it is not one."""
    if not isinstance(document, dict) or not isinstance(document.get("flows"), dict):
        raise ValueError("the answer is not the flow engine's /status document")
    return FlowEngineReport(True, flows=document["flows"])


_SUMMED = ("received", "undecodable", "queued", "inFlight", "deadLetters", "dropped")


def _sum_counters(
    into: dict[str, dict[str, Any]], found: Any, keys: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    for name, figures in (found or {}).items():
        if not isinstance(figures, dict):
            continue
        merged = into.get(name)
        if merged is None:
            into[name] = dict(figures)
            continue
        for key in keys:
            merged[key] = int(merged.get(key) or 0) + int(figures.get(key) or 0)
    return into


def combine_flow_engine_reports(reports: list[Any]) -> FlowEngineReport:
    """One report of every replica's /status (in ordinal order): each flow's counters summed
    over the replicas that answered, `running` only if every replica runs the flow (a replica
    that does not leaves its share of the input waiting in its session), and unreachable, with
    each replica's error, if any replica could not be read."""
    errors = [
        f"replica {ordinal}: {report.error}"
        for ordinal, report in enumerate(reports)
        if not report.reachable
    ]
    answered = [report for report in reports if report.reachable]
    flows: dict[str, dict[str, Any]] = {}
    for report in answered:
        for name, flow in report.flows.items():
            if not isinstance(flow, dict):
                continue
            merged = flows.get(name)
            if merged is None:
                flows[name] = {
                    **flow,
                    "replicasRunning": 1 if flow.get("running") else 0,
                    "steps": _sum_counters({}, flow.get("steps"), ()),
                    "sinks": _sum_counters({}, flow.get("sinks"), ()),
                }
                continue
            for key in _SUMMED:
                merged[key] = int(merged.get(key) or 0) + int(flow.get(key) or 0)
            merged["messagesPerSecond"] = round(
                float(merged.get("messagesPerSecond") or 0.0)
                + float(flow.get("messagesPerSecond") or 0.0),
                2,
            )
            merged["replicasRunning"] += 1 if flow.get("running") else 0
            merged["running"] = bool(merged.get("running")) and bool(flow.get("running"))
            times = [t for t in (merged.get("lastMessageTime"), flow.get("lastMessageTime")) if t]
            merged["lastMessageTime"] = max(times) if times else None
            merged["lastError"] = merged.get("lastError") or flow.get("lastError")
            _sum_counters(merged["steps"], flow.get("steps"), ("in", "out", "filtered", "errors"))
            _sum_counters(merged["sinks"], flow.get("sinks"), ("in", "out", "errors"))
    for flow in flows.values():  # a flow some replica does not list is not running there
        if flow["replicasRunning"] < len(reports):
            flow["running"] = False
    return FlowEngineReport(not errors, "; ".join(errors) or None, flows)


async def fetch_report(
    client: httpx.AsyncClient, url: str, parse: Callable[[Any], Any] = report_from_status
) -> tuple[Any, str]:
    """(report, poll result for the metric): ok, unreachable or invalid. Never raises."""
    try:
        response = await client.get(f"{url}/status", timeout=STATUS_TIMEOUT)
    except httpx.HTTPError as error:
        return RuntimeReport(
            False, f"{url} is not reachable ({unreachable_cause(error)})"
        ), "unreachable"
    if response.status_code != 200:
        return RuntimeReport(False, f"{url}/status answered {response.status_code}"), "invalid"
    try:
        return parse(response.json()), "ok"
    except ValueError as error:
        return RuntimeReport(False, f"{url}/status: {error}"), "invalid"


class RuntimePoller:
    """Polls `targets()` of one kind every `interval` seconds; passes each report to `deliver`."""

    def __init__(
        self,
        kind: str,
        targets: Callable[[], Iterable[Key]],
        url_of: Callable[[Key], str],
        deliver: Callable[[Key, Any], Awaitable[None]],
        metrics: OperatorMetrics,
        interval: float | None = None,
        parse: Callable[[Any], Any] = report_from_status,
        replica_urls: Callable[[Key], list[str]] | None = None,
        combine: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        self.kind = kind
        # A target of several replicas: each one's /status is read, `combine` makes one report.
        self.replica_urls = replica_urls
        self.combine = combine
        self.parse = parse
        self.targets = targets
        self.url_of = url_of
        self.deliver = deliver
        self.metrics = metrics
        self.interval = interval if interval is not None else SETTINGS.interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="spine-status-poller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        async with httpx.AsyncClient() as client:
            while True:
                started = loop.time()
                await self.poll_once(client)
                await asyncio.sleep(max(0.0, self.interval - (loop.time() - started)))

    async def poll_once(self, client: httpx.AsyncClient) -> None:
        limit = asyncio.Semaphore(CONCURRENT_POLLS)

        async def poll(key: Key) -> None:
            async with limit:
                try:
                    if self.replica_urls is not None and self.combine is not None:
                        reports = []
                        for url in self.replica_urls(key):
                            report, result = await fetch_report(client, url, self.parse)
                            self.metrics.health_polls.labels(self.kind, result).inc()
                            reports.append(report)
                        await self.deliver(key, self.combine(reports))
                        return
                    report, result = await fetch_report(client, self.url_of(key), self.parse)
                    self.metrics.health_polls.labels(self.kind, result).inc()
                    await self.deliver(key, report)
                except Exception:  # one gateway's trouble must never stop the others' polls
                    log.exception("Polling %s %s/%s failed", self.kind, *key)

        await asyncio.gather(*(poll(key) for key in list(self.targets())))


@dataclass(frozen=True)
class ProxyReport:
    """What the proxy supervisor's /status said: each route's health, or that it is away."""

    reachable: bool
    error: str | None = None
    ready: bool | None = None
    routes: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    last_error: str | None = None


def proxy_report(document: Any) -> ProxyReport:
    """The report of the proxy's /status ({ready, configDigest, routes[], lastError})."""
    if not isinstance(document, dict) or not isinstance(document.get("routes"), list):
        raise ValueError("the answer is not the proxy's /status document")
    routes = {
        str(route["name"]): route
        for route in document["routes"]
        if isinstance(route, dict) and "name" in route
    }
    return ProxyReport(
        True,
        ready=bool(document.get("ready")),
        routes=routes,
        last_error=_text(document.get("lastError")),
    )


@dataclass(frozen=True)
class CatalogReport:
    """What the catalog's /status said of each entry's probe, or that it is away."""

    reachable: bool
    error: str | None = None
    ready: bool | None = None
    entries: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


def catalog_report(document: Any) -> CatalogReport:
    """The report of the catalog's /status ({ready, entries[{id, owner, reachable, detail}]})."""
    if not isinstance(document, dict) or not isinstance(document.get("entries"), list):
        raise ValueError("the answer is not the catalog's /status document")
    entries = {
        str(entry["id"]): entry
        for entry in document["entries"]
        if isinstance(entry, dict) and "id" in entry
    }
    return CatalogReport(True, ready=bool(document.get("ready")), entries=entries)
