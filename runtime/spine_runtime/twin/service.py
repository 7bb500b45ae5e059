"""The twin service's core: take updates, validate, apply, commit in batches, then tell everyone.

`main.py` builds one `TwinService` and the HTTP API (`api.py`) calls into it. One task, the
committer, owns the order of things: it applies updates from the broker (and HTTP writes join
the same batches), writes the batch in the database thread, and only after the commit
acknowledges the QoS 1 messages, publishes gateway acks, Ditto events, desired commands and
errors, and feeds the SSE stream. So nothing is confirmed or announced before it is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson

from spine_runtime.config.twin import ThingInstance, ThingModel, TwinConfig, thing_id
from spine_runtime.twin.metrics import RESULTS, TwinMetrics
from spine_runtime.twin.mqtt import Inbound, MqttLink
from spine_runtime.twin.protocol import (
    ack_message,
    ack_topic,
    desired_message,
    error_message,
    event_message,
    merged_event_message,
    read_changes,
    read_origin,
    thing_topic,
    twin_route,
)
from spine_runtime.twin.sse import SseHub
from spine_runtime.twin.state import Change, Origin, Outcome, Thing, format_time, utc_now
from spine_runtime.twin.store import Batch, StorageError, ThingSpec, TwinStore
from spine_runtime.twin.validation import ModelValidator, Rejection

log = logging.getLogger(__name__)

# Updates applied between two yields to the event loop, so HTTP requests are served meanwhile.
SLICE = 200
DESIRED_CHECK_SECONDS = 0.2
# Settings read at start only; the operator's pod checksum should cover them.
RESTART_FIELDS = ("namespace", "mqtt", "http", "storage", "ingest")
# Gateways whose sequence numbers are kept when the config does not list the gateways. The
# broker's ACL already ties a gateway's topic to its login; this bounds what a wrong ACL costs.
MAX_UNLISTED_GATEWAYS = 256


@dataclass
class AfterCommit:
    """What waits for the current batch's commit."""

    inbound: list[Inbound] = field(default_factory=list)
    accepted_arrivals: list[float] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    errors: list[tuple[str, bytes]] = field(default_factory=list)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)

    def pending(self) -> bool:
        return bool(self.inbound or self.outcomes or self.errors or self.waiters)


class TwinService:
    def __init__(self, config: TwinConfig, config_digest: Callable[[], str] = lambda: "") -> None:
        self.config = config
        self.namespace = config.namespace
        self.config_digest = config_digest
        self.metrics = TwinMetrics()
        self.store = TwinStore(config.storage.path, config.storage.synchronous)
        self.hub = SseHub()
        self.models: dict[str, ThingModel] = {}
        self.validators: dict[str, ModelValidator] = {}
        self.instances: dict[str, ThingInstance] = {}
        self.counts = dict.fromkeys(RESULTS, 0)
        self.source_time_ahead = 0
        self.link: MqttLink | None = None
        self.fatal: BaseException | None = None
        self.stopped = asyncio.Event()
        self._sorted_ids: list[str] | None = None
        self._after = AfterCommit()
        self._work = asyncio.Event()
        self._stopping = False
        self._database = ThreadPoolExecutor(1, thread_name_prefix="twin-db")
        self._tasks: list[asyncio.Task[None]] = []
        self._error_budget: dict[str, tuple[float, float]] = {}
        self._errors_total: tuple[float, float] | None = None
        self._gateways: frozenset[str] | None = None
        self._admitted: set[str] = set()  # gateways tracked while the config lists none
        self._committed_acks: dict[str, tuple[str, int, float]] = {}
        self.last_commit: float | None = None

    # lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._database, self.store.open)
        for key, tracker in self.store.sequences.items():
            self._remember_ack(key[0], key[1], tracker.acked, tracker.updated)
        self._load(self.config)
        self.metrics.bind_gauges(
            things=lambda: len(self.store.things),
            pending=lambda: len(self.store.pending_desired),
            failed=lambda: len(self.store.failed_desired),
            connected=lambda: 1.0 if self.link is not None and self.link.connected else 0.0,
            sse_clients=lambda: len(self.hub.clients),
        )
        self.link = MqttLink(
            self.config.mqtt,
            self.config.ingest,
            on_inbox=self._work.set,
            on_connected=self._announce_acks,
        )
        self._tasks = [
            asyncio.create_task(self._commit_loop(), name="twin-committer"),
            asyncio.create_task(self._desired_loop(), name="twin-desired-timeouts"),
        ]
        self.link.start()
        log.info(
            "Twin %s serving %d things of %d models",
            self.namespace,
            len(self.store.things),
            len(self.models),
        )

    async def stop(self) -> None:
        """Commit what is applied, then disconnect; unacknowledged updates come again."""
        self._stopping = True
        self._work.set()
        committer = self._tasks[0] if self._tasks else None
        for task in self._tasks[1:]:
            task.cancel()
        if committer is not None:
            try:
                await asyncio.wait_for(committer, 10)
            except (TimeoutError, asyncio.CancelledError):
                log.warning("The last commit did not finish in time")
            except Exception:
                log.exception("The committer failed while stopping")
        if self.link is not None:
            await self.link.stop()
        self.store.close()
        self._database.shutdown(wait=False)

    def healthy(self) -> bool:
        return self.fatal is None and all(not task.done() for task in self._tasks)

    # config -----------------------------------------------------------------------------------

    def _load(self, config: TwinConfig) -> None:
        models = {model.name: model for model in config.models}
        validators = {
            name: self.validators[name]
            if name in self.validators and self.models.get(name) == model
            else ModelValidator(model)
            for name, model in models.items()
        }
        instances = {thing_id(self.namespace, thing.name): thing for thing in config.things}
        specs = [
            ThingSpec(
                identifier,
                thing.name,
                thing.model,
                models[thing.model].definition,
                dict(thing.attributes),
                list(models[thing.model].properties),
            )
            for identifier, thing in instances.items()
        ]
        self.store.sync_things(specs, utc_now())
        self.models, self.validators, self.instances = models, validators, instances
        self._gateways = None if config.gateways is None else frozenset(config.gateways)
        self._sorted_ids = None
        self._work.set()  # new things are stored with their creation time

    async def apply_config(self, config: TwinConfig) -> None:
        """ConfigSource's on_change: models, things and timeouts apply now, state is kept."""
        changed = [
            name for name in RESTART_FIELDS if getattr(config, name) != getattr(self.config, name)
        ]
        if changed:
            log.warning("Changed %s take effect at the next restart", ", ".join(changed))
        self._load(config)
        self.config = config
        log.info("Now serving %d things of %d models", len(self.store.things), len(self.models))

    def model_of(self, thing: Thing) -> ThingModel:
        return self.models[thing.model_name]

    def sorted_thing_ids(self) -> list[str]:
        if self._sorted_ids is None:
            self._sorted_ids = sorted(self.store.things)
        return self._sorted_ids

    # updates from the broker ------------------------------------------------------------------

    def _count(self, result: str) -> None:
        self.counts[result] += 1
        if result == "accepted":
            self.metrics.accepted.inc()
        elif result == "rejected":
            self.metrics.rejected.inc()
        elif result == "duplicate":
            self.metrics.duplicate.inc()
        elif result == "stale":
            self.metrics.stale.inc()
        else:
            self.metrics.unknown_gateway.inc()

    def tracks_gateway(self, gateway: str) -> bool:
        """Whether the twin keeps sequence numbers (and sends acks) for this gateway: one the
        config lists, or, with no list, one of the first MAX_UNLISTED_GATEWAYS seen on a
        gateway topic since the start. O(1).

        The bound counts names seen, not trackers in the database: one written before the
        identity came from the topic may hold any number of forged names, and must not use up
        the room of the real gateways (their own trackers are kept and found again)."""
        if self._gateways is not None:
            return gateway in self._gateways
        if gateway in self._admitted:
            return True
        if len(self._admitted) >= MAX_UNLISTED_GATEWAYS:
            return False
        self._admitted.add(gateway)
        return True

    def _process(self, inbound: Inbound, now: float) -> None:
        self._after.inbound.append(inbound)
        route = twin_route(inbound.topic)
        gateway, name = route if route is not None else (None, None)
        identifier = thing_id(self.namespace, name or "")
        document: Any = None
        origin: Origin | None = None
        # the clock skew allowed: a later source time is replaced, a held one no longer counts
        limit = now + self.config.ingest.max_source_time_ahead_seconds
        try:
            try:
                document = orjson.loads(inbound.payload)
            except orjson.JSONDecodeError:
                raise Rejection("the payload is not JSON") from None
            if not isinstance(document, dict):
                raise Rejection("the payload must be a JSON object: a Ditto Protocol command")
            read = read_origin(document, gateway)
            if gateway is not None and not self.tracks_gateway(gateway):
                # Not processed: no tracker, no ack. If the config lags behind a new gateway,
                # the gateway sends the update again until the twin knows it; nothing is lost.
                self._count("unknown_gateway")
                self._report(
                    name,
                    identifier,
                    Rejection(
                        f"gateway {gateway} is not one of the twin's gateways: the update is "
                        "neither applied nor acknowledged",
                        status=403,
                    ),
                    inbound.payload,
                    document,
                )
                return
            origin = read
            if origin.source_epoch is not None and origin.source_epoch > limit:
                # A clock ahead (or a forged time) would make every later value look stale.
                self.source_time_ahead += 1
                self.metrics.source_time_ahead.inc()
                origin.source_epoch, origin.source_time = now, format_time(now)
            if self.store.is_duplicate(origin):
                self._count("duplicate")
                return
            if self.store.seq_out_of_window(origin):
                origin = None  # cannot be remembered; see MAX_SEQUENCE_WINDOW
                raise Rejection(
                    "spine-seq is too far ahead of the acknowledged sequence",
                    field="/headers/spine-seq",
                )
            thing = self.store.things.get(identifier)
            if thing is None:
                raise Rejection(f"unknown thing {identifier}: no TwinModel defines it", status=404)
            changes = read_changes(document, self.namespace, thing.name, self.static_parts(thing))
            desired = next((change for change in changes if change.desired), None)
            if desired is not None:
                raise Rejection(
                    "desired values are set over HTTP with the write token (PUT "
                    ".../desiredProperties/value), not on the twin topic, where publishers "
                    "report values",
                    field=desired.path,
                    status=403,
                )
            self.validators[thing.model_name].check_all(changes)
        except Rejection as rejection:
            if origin is not None:
                self.store.record_processed(origin, now)
            self._reject(name, identifier, rejection, inbound.payload, document)
            return
        outcome = self.store.apply(thing, changes, origin, now, limit)
        if outcome is None:
            self._count("stale")
            return
        self._count("accepted")
        self._after.outcomes.append(outcome)
        self._after.accepted_arrivals.append(inbound.received)

    def _reject(
        self, name: str | None, identifier: str, rejection: Rejection, payload: bytes, document: Any
    ) -> None:
        self._count("rejected")
        self._report(name, identifier, rejection, payload, document)

    def _report(
        self, name: str | None, identifier: str, rejection: Rejection, payload: bytes, document: Any
    ) -> None:
        """Publish a refusal on the thing's errors topic, within its rate limit."""
        if name is None:
            return
        if not self._error_allowed(name):
            self.metrics.errors_suppressed.inc()
            return
        self._after.errors.append(
            (thing_topic(name, "errors"), error_message(identifier, rejection, payload, document))
        )

    def _error_allowed(self, name: str) -> bool:
        """A token bucket per thing for the errors topic, and one for all things: each error
        echoes the message, so a flood spread over many things would otherwise cost the twin
        a publish per message (measured: +31 MiB and 0.8 s health checks for 20,000)."""
        ingest = self.config.ingest
        rate = ingest.errors_per_second_per_thing
        now = time.monotonic()
        tokens, last = self._error_budget.get(name, (rate, now))
        tokens = min(rate, tokens + (now - last) * rate)
        allowed = tokens >= 1.0
        if len(self._error_budget) > 10_000:
            self._error_budget.clear()  # names come from topics; keep this bounded
        self._error_budget[name] = (tokens - 1.0 if allowed else tokens, now)
        if not allowed:
            return False
        total_rate = ingest.errors_per_second
        total, total_last = self._errors_total or (total_rate, now)
        total = min(total_rate, total + (now - total_last) * total_rate)
        self._errors_total = (total - 1.0 if total >= 1.0 else total, now)
        return total >= 1.0

    @staticmethod
    def static_parts(thing: Thing) -> dict[str, Any]:
        return {
            "thingId": thing.thing_id,
            "definition": thing.definition,
            "attributes": thing.attributes,
        }

    # writes from HTTP ---------------------------------------------------------------------------

    async def write(
        self, identifier: str, if_match: str | None, changes_for: Callable[[Thing], list[Change]]
    ) -> Outcome | None:
        """Apply the changes `changes_for` makes of the thing; return once committed.

        Raises Rejection with the HTTP status: 404, 412 (If-Match), 400/403 (the changes).
        """
        if self.fatal is not None or self._stopping:
            raise Rejection("the twin is shutting down", status=503)
        thing = self.store.things.get(identifier)
        if thing is None:
            raise Rejection(f"thing {identifier} not found", status=404)
        if if_match is not None and not etag_matches(if_match, thing.revision):
            raise Rejection(
                f"the thing's revision is {thing.revision}, not {if_match[:40]}", status=412
            )
        changes = changes_for(thing)
        self.validators[thing.model_name].check_all(changes)
        origin = Origin(correlation_id=str(uuid.uuid4()))
        outcome = self.store.apply(thing, changes, origin, utc_now())
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if outcome is not None:
            self._after.outcomes.append(outcome)
        self._after.waiters.append(waiter)
        self._work.set()
        await waiter
        return outcome

    # the committer ----------------------------------------------------------------------------

    def _has_work(self) -> bool:
        return self.store.has_changes() or self._after.pending()

    async def _commit_loop(self) -> None:
        """Gather a batch, hand it to the database thread, and gather the next one meanwhile:
        commits run one at a time and in order, so acknowledgements stay in order too."""
        assert self.link is not None
        link = self.link
        loop = asyncio.get_running_loop()
        in_flight: asyncio.Task[None] | None = None
        try:
            while True:
                if in_flight is not None and in_flight.done():
                    in_flight.result()  # raises what a failed commit raised
                    in_flight = None
                if not link.inbox and not self._has_work():
                    if self._stopping:
                        break
                    self._work.clear()
                    await self._work.wait()
                    continue
                await self._gather(link, loop, in_flight)
                after, self._after = self._after, AfterCommit()
                batch = self.store.take_batch()
                if batch.empty() and not batch.acks and not after.pending():
                    continue
                if in_flight is not None:
                    await in_flight
                in_flight = asyncio.create_task(self._commit(after, batch, loop))
                in_flight.add_done_callback(lambda _: self._work.set())
            if in_flight is not None:
                await in_flight
        except Exception as error:
            self.fatal = error
            if isinstance(error, StorageError):
                log.critical("Stopping: %s", error)
            else:
                log.exception("Stopping: the committer failed")
            for waiter in self._after.waiters:
                if not waiter.done():
                    waiter.set_exception(Rejection("the twin cannot store changes", status=503))
            self.stopped.set()

    async def _gather(
        self, link: MqttLink, loop: asyncio.AbstractEventLoop, in_flight: asyncio.Task[None] | None
    ) -> None:
        """Apply updates until the batch is full, or nothing more came within the interval and
        the previous commit is done (updates arriving during a commit join the next one)."""
        storage = self.config.storage
        deadline = loop.time() + storage.commit_interval_ms / 1000
        applied = 0
        while not self._stopping:
            now = utc_now()
            for _ in range(min(SLICE, storage.commit_batch_size - applied)):
                if not link.inbox:
                    break
                inbound = link.inbox.popleft()
                try:
                    self._process(inbound, now)
                except Exception:
                    # A bug must not turn one message into a poison pill that stops the twin
                    # (or comes back forever): count it as rejected and carry on.
                    log.exception("Failed to process an update on %s", inbound.topic)
                    self._count("rejected")
                applied += 1
            if applied >= storage.commit_batch_size:
                return
            if link.inbox:
                await asyncio.sleep(0)
                continue
            committing = in_flight is not None and not in_flight.done()
            remaining = deadline - loop.time()
            if remaining <= 0 and not committing:
                return
            self._work.clear()
            if remaining > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._work.wait(), remaining)
            else:
                await self._work.wait()  # the commit's completion sets it

    async def _commit(
        self, after: AfterCommit, batch: Batch, loop: asyncio.AbstractEventLoop
    ) -> None:
        if not batch.empty():
            started = time.perf_counter()
            try:
                await loop.run_in_executor(self._database, self.store.write, batch)
            except Exception:
                for waiter in after.waiters:
                    if not waiter.done():
                        waiter.set_exception(Rejection("the twin cannot store changes", status=503))
                raise
            self.metrics.commit_seconds.observe(time.perf_counter() - started)
            self.metrics.commits.inc()
            self.metrics.commit_updates.observe(len(after.inbound))
            self.last_commit = utc_now()
        await self._announce(after, batch.acks)

    async def _announce(self, after: AfterCommit, acks: list[tuple[str, str, int]]) -> None:
        """Everything that may only happen once the batch is stored."""
        assert self.link is not None
        link = self.link
        for inbound in after.inbound:
            link.ack(inbound)
        arrived = time.monotonic()
        observe = self.metrics.update_latency.observe
        for received in after.accepted_arrivals:
            observe(arrived - received)
        now = utc_now()
        for gateway, epoch, seq in acks:
            self._remember_ack(gateway, epoch, seq, now)
            link.publish(ack_topic(gateway), ack_message(gateway, epoch, seq))
        for index, outcome in enumerate(after.outcomes):
            name = outcome.thing_id.split(":", 1)[1]
            if len(outcome.events) == 1:
                path, value = outcome.events[0]
                link.publish(
                    thing_topic(name, "events"),
                    event_message(
                        self.namespace, name, path, value, outcome.revision, outcome.modified
                    ),
                )
            elif outcome.events:
                link.publish(
                    thing_topic(name, "events"),
                    merged_event_message(
                        self.namespace, name, outcome.events, outcome.revision, outcome.modified
                    ),
                )
            for feature, value, correlation in outcome.desired_commands:
                link.publish(
                    thing_topic(name, "desired"),
                    desired_message(self.namespace, name, feature, value, correlation),
                )
            thing = self.store.things.get(outcome.thing_id)
            if thing is not None:
                self.hub.publish(outcome, thing.document_with_meta)
            if index % SLICE == SLICE - 1:
                await asyncio.sleep(0)
        for topic, payload in after.errors:
            link.publish(topic, payload)
        for waiter in after.waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _remember_ack(self, gateway: str, epoch: str, seq: int, updated: float) -> None:
        if seq > 0 and updated >= self._committed_acks.get(gateway, ("", 0, -1.0))[2]:
            self._committed_acks[gateway] = (epoch, seq, updated)

    def _announce_acks(self) -> None:
        """After a (re)connect, repeat each gateway's committed ack: one published just before
        a broker crash may never have arrived."""
        if self.link is None:
            return
        for gateway, (epoch, seq, _) in sorted(self._committed_acks.items()):
            if self._gateways is None or gateway in self._gateways:
                self.link.publish(ack_topic(gateway), ack_message(gateway, epoch, seq))

    # desired timeouts ---------------------------------------------------------------------------

    async def _desired_loop(self) -> None:
        while True:
            await asyncio.sleep(DESIRED_CHECK_SECONDS)
            now = utc_now()
            timeout = self.config.desired_timeout_seconds
            for identifier, feature in self.store.expired_desired(now, timeout):
                outcome = self.store.fail_desired(identifier, feature, now, timeout)
                if outcome is not None:
                    self._after.outcomes.append(outcome)
                    self._work.set()

    # status -------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "healthy": self.healthy(),
            "things": len(self.store.things),
            "models": len(self.models),
            "updates": dict(self.counts),
            "sourceTimeAhead": self.source_time_ahead,
            "gatewaysTracked": self.store.tracked_gateways(),
            "commits": self.store.commits,
            "lastCommit": format_time(self.last_commit) if self.last_commit else None,
            "mqttConnected": self.link is not None and self.link.connected,
            "desired": {
                "pending": len(self.store.pending_desired),
                "failed": len(self.store.failed_desired),
            },
            "sseClients": len(self.hub.clients),
            "configDigest": self.config_digest(),
        }


def etag_of(revision: int) -> str:
    return f'"{revision}"'


def etag_matches(header: str, revision: int) -> bool:
    """RFC 9110 If-Match: `*` or any listed tag (weak ones compared weakly, as for GET)."""
    wanted = etag_of(revision)
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == wanted:
            return True
    return False
