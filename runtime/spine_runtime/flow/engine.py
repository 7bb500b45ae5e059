"""All flows of a namespace in one process: applies a new config flow by flow.

A flow whose own config (or its password, or an engine setting it uses) changed is drained and
restarted alone; a removed one is drained and stopped; every other flow keeps running without a
pause. Serves the HTTP sources at /flows/<flow><path> and the engine's /status.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from typing import Any

from spine_runtime.common.endpoints import Reply, error_reply, json_reply
from spine_runtime.common.leanserver import LeanServer, Request
from spine_runtime.config.flow import FlowConfig, FlowEngineConfig
from spine_runtime.flow.expressions import ENGINE
from spine_runtime.flow.metrics import FlowMetrics
from spine_runtime.flow.runner import FlowRunner

log = logging.getLogger(__name__)

HTTP_SOURCE_WAIT_SECONDS = 30.0


def flow_digest(flow: FlowConfig, engine: FlowEngineConfig, ordinal: int = 0) -> str:
    """What a running flow depends on: its spec and this replica's login (with the password
    itself, so a new password reconnects it) and the engine settings its runner reads. Not the
    other replicas' logins nor their number: scaling restarts no flow of a running replica."""
    login = flow.login_of(ordinal)
    try:
        password = login.password()
    except OSError:
        password = ""
    document = {
        "flow": flow.model_dump(mode="json", by_alias=True, exclude={"login", "replica_logins"}),
        "login": login.model_dump(mode="json", by_alias=True),
        "password": hashlib.sha256(password.encode()).hexdigest(),
        "engine": engine.model_dump(
            mode="json", by_alias=True, exclude={"flows", "http", "replicas"}
        ),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


class FlowEngine:
    def __init__(self, config: FlowEngineConfig) -> None:
        self.config = config
        # Fails at start, not at the first flow, when the pod's name carries no ordinal.
        self.ordinal = config.replica_ordinal()
        self.metrics = FlowMetrics()
        self.runners: dict[str, FlowRunner] = {}
        self.started_at = time.time()
        self.restarts = 0
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await self.apply(self.config)

    async def apply(self, config: FlowEngineConfig) -> None:
        async with self._lock:
            # A replica beyond the wanted number (scaled down, still stopping) runs nothing:
            # its logins are about to go.
            flows = config.flows if self.ordinal < config.replicas else []
            if not flows and config.flows:
                log.warning(
                    "Replica %d runs no flow: the engine has %d replicas",
                    self.ordinal,
                    config.replicas,
                )
            wanted = {flow.name: (flow, flow_digest(flow, config, self.ordinal)) for flow in flows}
            changed = [
                name
                for name, runner in self.runners.items()
                if name not in wanted or wanted[name][1] != runner.digest
            ]
            await asyncio.gather(
                *(self._replace(name, wanted.get(name), config) for name in changed)
            )
            for name, (flow, digest) in wanted.items():
                if name not in self.runners:
                    await self._start(flow, digest, config)
            self.config = config

    async def _replace(
        self, name: str, wanted: tuple[FlowConfig, str] | None, config: FlowEngineConfig
    ) -> None:
        runner = self.runners.pop(name)
        await runner.stop()
        if wanted is None:
            self.metrics.forget(name)
            log.info("Removed flow %s", name)
            return
        self.restarts += 1
        await self._start(wanted[0], wanted[1], config)

    async def _start(self, flow: FlowConfig, digest: str, config: FlowEngineConfig) -> None:
        try:
            runner = FlowRunner(flow, config, self.metrics, digest)
        except OSError as error:  # the password file is missing: the others still run
            log.error("Cannot start flow %s: %s", flow.name, error)
            return
        self.runners[flow.name] = runner
        await runner.start()

    async def stop(self) -> None:
        async with self._lock:
            await asyncio.gather(*(runner.stop() for runner in self.runners.values()))
            self.runners.clear()

    def status(self) -> dict[str, Any]:
        flows = {name: runner.status() for name, runner in sorted(self.runners.items())}
        return {
            "engine": ENGINE,
            "startedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at)),
            "flows": flows,
            "missing": sorted(
                flow.name for flow in self.config.flows if flow.name not in self.runners
            ),
        }

    def healthy(self) -> bool:
        return True

    def push_counts(self) -> None:
        """What the runners counted since, to the metrics: called before each scrape."""
        for runner in self.runners.values():
            runner.push_counts()

    def add_routes(self, server: LeanServer) -> None:
        server.add_prefix_route("/flows/", self._http_source)

    async def _http_source(self, request: Request) -> Reply:
        """`/flows/<flow><path>`: the body is the flow's message, answered once every sink
        accepted it (202), it went to the dead letter topic (422), or the flow is busy (503)."""
        flow, slash, rest = request.path[len("/flows/") :].partition("/")
        runner = self.runners.get(flow)
        source = runner.flow.source.http if runner is not None else None
        path = slash + rest or "/"
        if runner is None or source is None or source.path.rstrip("/") != path.rstrip("/"):
            return error_reply(404, "no flow takes requests here")
        if request.method not in source.methods:
            return error_reply(405, f"this flow takes {', '.join(source.methods)}")
        limit = self.config.max_message_bytes
        if request.content_length is not None and request.content_length > limit:
            reply = error_reply(413, f"the body is larger than maxMessageBytes ({limit})")
            reply.close = True  # the body is not read
            return reply
        body = await request.read(limit)
        if len(body) > limit:
            reply = error_reply(413, f"the body is larger than maxMessageBytes ({limit})")
            reply.close = True
            return reply
        future = runner.submit_http(body)
        if future is None:
            return json_reply(
                {"status": 503, "error": "the flow is busy; try again"}, 503, **{"Retry-After": "1"}
            )
        try:
            outcome, detail = await asyncio.wait_for(
                asyncio.shield(future), HTTP_SOURCE_WAIT_SECONDS
            )
        except TimeoutError:
            return error_reply(504, "the sinks did not accept the message in time; it stays queued")
        if outcome == "accepted":
            return json_reply({"status": "accepted"}, 202)
        if outcome == "deadLetter":
            return error_reply(422, "the message failed a step; see the flow's dead letter topic")
        return error_reply(503, detail)
