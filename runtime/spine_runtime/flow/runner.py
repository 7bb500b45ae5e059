"""One flow at run time: its broker login, its source, its steps and sinks, its counters.

Messages arrive through callbacks into a bounded inbox; one worker task takes what is there at
each wakeup as a batch (never a task per message) and runs it through the steps and out to the
sinks. Every source message is an `Origin` that counts the deliveries it waits for (a QoS 1
PUBACK, an HTTP 2xx, the twin's ack, its dead letter's PUBACK); origins complete in any order
but are acknowledged to the source in the order they arrived, as MQTT requires, and only once
everything they led to was accepted: at least once from a QoS 1 source to QoS 1 sinks.
Backpressure: the broker's window (receive maximum = maxInFlight) bounds a QoS 1 source; a
QoS 0 source stops being read (TCP) while the inbox is full; an HTTP source answers 503.

One connection per flow carries its source, its publishes and their PUBACKs, and the twin's
acks, under the one client id the flow's login is bound to. Two things keep it from blocking
itself: the twin's acks are subscribed at QoS 0, which mosquitto delivers even while the source
fills the connection's receive window; and a paused QoS 0 source is read again as soon as the
worker waits for acknowledgements, QoS 0 messages beyond twice the inbox being dropped (counted).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import logging
import re
import socket
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

import orjson

from spine_runtime.config.flow import (
    PLACEHOLDER,
    FlowConfig,
    FlowEngineConfig,
    Sink,
    dead_letter_topic,
    shared_group,
    shared_subscription,
)
from spine_runtime.config.names import THING_NAME_PATTERN
from spine_runtime.flow.expressions import ExpressionError
from spine_runtime.flow.http import HttpClient, HttpFailure
from spine_runtime.flow.link import FlowLink, Received
from spine_runtime.flow.metrics import LATENCY_BUCKETS, FlowMetrics
from spine_runtime.flow.steps import StepError, StepRunner, build_step
from spine_runtime.flow.twin import TwinWriter, now_rfc3339, twin_ack_topic, twin_identity

log = logging.getLogger(__name__)

BATCH_MAX = 512
DEAD_LETTER_EXCERPT = 4096
THING_NAME = re.compile(THING_NAME_PATTERN)
# A rendered placeholder stays inside its topic level and adds no wildcard or control character.
BAD_TOPIC_VALUE = re.compile(r"[/+#\x00-\x1f\x7f]")
HTTP_SINK_MAX_BACKOFF = 30.0
TICK_SECONDS = 0.1
IDLE_TICK_SECONDS = 1.0


class Origin:
    """One source message until every delivery it led to was accepted."""

    __slots__ = ("done", "failed", "pending", "raw", "received", "reply", "runner", "source")

    def __init__(self, runner: FlowRunner | None, source: Any, raw: bytes, received: float):
        self.runner = runner
        self.source = source  # Received (MQTT), an asyncio.Future (HTTP) or None
        self.raw = raw
        self.received = received
        self.pending = 1  # the pipeline's own hold, released when the batch is through
        self.done = False
        self.failed = False

    def hold(self) -> None:
        self.pending += 1

    def release(self) -> None:
        self.pending -= 1
        if self.pending == 0 and not self.done:
            self.done = True
            if self.runner is not None:
                self.runner._completed(self)


class FlowRunner:
    def __init__(
        self,
        flow: FlowConfig,
        engine: FlowEngineConfig,
        metrics: FlowMetrics,
        digest: str,
    ) -> None:
        self.flow = flow
        self.name = flow.name
        self.engine = engine
        self.metrics = metrics
        self.digest = digest
        timeout = flow.expression_timeout_ms / 1000
        self.steps: list[StepRunner] = [
            build_step(step, flow.on_error, timeout) for step in flow.steps
        ]
        self.sinks = [SinkRunner.build(self, index, sink) for index, sink in enumerate(flow.sinks)]
        self.max_bytes = engine.max_message_bytes
        self.inbox: collections.deque[Origin] = collections.deque()
        self.in_order: collections.deque[Origin] = collections.deque()
        source = flow.source
        self.source_kind = source.kind
        self.source_qos = source.mqtt.qos if source.mqtt else (0 if source.schedule else 1)
        self.inbox_limit = min(20_000, max(1000, flow.max_in_flight * 4))
        self.wake = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.accepting = True
        self.running = False
        self.started_at = time.time()
        self.last_message_at: float | None = None
        self.last_error: dict[str, Any] | None = None
        self.count_received = 0
        self.count_undecodable = 0
        self.count_dead_letters: collections.Counter[str] = collections.Counter()
        self.count_dropped: collections.Counter[str] = collections.Counter()
        self._pushed: dict[tuple[str, str], int] = {}
        self._rate_samples: collections.deque[tuple[float, int]] = collections.deque()
        self._tasks: list[asyncio.Task[Any]] = []
        # Counters reach Prometheus on the tick and before each scrape, not per batch: at a few
        # messages per wakeup the labelled lookups cost more than the flow itself. The latency
        # histogram is plain counts (metrics.LatencyCounts).
        self._latency = metrics.latency.labels(self.name)
        self.twin: TwinWriter | None = None
        # Replica `ordinal` of the engine runs the flow under its own login, client id and twin
        # identity; the replicas split the input through one shared subscription group.
        self.ordinal = engine.replica_ordinal()
        login = flow.login_of(self.ordinal)
        identity = twin_identity(self.name, self.ordinal)
        source_qos = source.mqtt.qos if source.mqtt is not None else 1
        source_topics: list[tuple[str, int]] = []
        plain_topics: list[str] = []  # what an engine before shared twin sources subscribed
        for topic in flow.source_filters():
            if engine.shared_subscriptions:
                if source.twin is not None:
                    plain_topics.append(topic)
                topic = shared_subscription(shared_group(self.name), topic)
            source_topics.append((topic, source_qos))
        self.ack_topic: str | None = None
        if any(sink.twin is not None for sink in flow.sinks):
            self.ack_topic = twin_ack_topic(identity)
        client_id = (
            login.client_id or (f"flow-{self.name}-{engine.instance or socket.gethostname()}"[:200])
        )
        # Acks at QoS 0: mosquitto sends QoS 0 even while unacknowledged source messages fill
        # the receive window, and a lost ack is made good by the next one or a re-send.
        ack_subscription = [(self.ack_topic, 0)] if self.ack_topic else []
        self.link = FlowLink(
            client_id=client_id,
            username=login.username,
            password=login.password(),
            # A resumed session may still hold a twin source's plain filter: it would deliver
            # every event beside this replica's share of them.
            unsubscriptions=plain_topics,
            host=engine.broker.host,
            port=engine.broker.port,
            on_message=self._on_message,
            subscriptions=source_topics + ack_subscription,
            # A QoS 1 source keeps its session (and what queues meanwhile) across restarts.
            persistent=source.twin is not None
            or (source.mqtt is not None and source.mqtt.qos == 1),
            session_expiry=engine.broker.session_expiry_seconds,
            receive_maximum=flow.max_in_flight,
            batch_window=flow.batch_window_ms / 1000,
            keepalive=engine.broker.keepalive_seconds,
            tls_ca_file=str(engine.broker.tls_ca_file) if engine.broker.tls_ca_file else None,
        )
        self.reads_source = bool(source_topics)
        self.sync_steps = not any(step.is_async for step in self.steps)
        # Read per message or per batch: plain attributes, not the config model's.
        self.max_in_flight = flow.max_in_flight
        self.twin_source = source.twin is not None
        self.failers = [self._failer(step) for step in self.steps]
        self.link.after_read = self._after_read
        if self.ack_topic is not None:
            self.twin = TwinWriter(
                self.name,
                engine.twin_namespace,
                lambda topic, payload, done: self.link.publish(topic, payload, 1, False, done),
                engine.twin_ack_timeout_seconds,
                self.ordinal,
            )

    def connected(self) -> bool:
        return self.link.connected.is_set()

    # Life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self.running = True
        self.metrics.running.labels(self.name).set(1)
        self._tasks = [
            asyncio.create_task(self._work(), name=f"flow-{self.name}-work"),
            asyncio.create_task(self._tick(), name=f"flow-{self.name}-tick"),
            asyncio.create_task(self.link.start(), name=f"flow-{self.name}-connect"),
        ]
        # A schedule fires once per period in the namespace, not once per replica.
        if self.flow.source.schedule is not None and self.ordinal == 0:
            self._tasks.append(
                asyncio.create_task(self._schedule(), name=f"flow-{self.name}-schedule")
            )
        log.info(
            "Started flow %s (%s source, %d steps)", self.name, self.source_kind, len(self.steps)
        )

    async def stop(self, drain_seconds: float = 10.0) -> None:
        """Take nothing more, finish what is inside (bounded), then log out."""
        # New source messages are ignored from now on (not acknowledged: the broker delivers a
        # QoS 1 one again to the next run); the connection stays read for the sinks' acks.
        self.accepting = False
        self.link.resume()
        deadline = time.monotonic() + drain_seconds
        while (self.inbox or self.in_order) and time.monotonic() < deadline:
            self.wake.set()
            await asyncio.sleep(0.02)
        left = len(self.inbox) + len(self.in_order)
        if left:
            log.warning(
                "Flow %s stopped with %d messages not accepted by every sink", self.name, left
            )
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for sink in self.sinks:
            await sink.close()
        for step in self.steps:
            await step.close()
        if self.twin is not None:
            self.twin.abandon()
        for origin in list(self.inbox) + list(self.in_order):
            if isinstance(origin.source, asyncio.Future) and not origin.source.done():
                origin.source.set_result(("stopped", "the flow was stopped before delivering"))
        # What the source did not acknowledge goes to the flow's next run.
        await self.link.stop()
        self.running = False
        self._push_counts()
        self.metrics.running.labels(self.name).set(0)
        log.info("Stopped flow %s", self.name)

    # Intake ------------------------------------------------------------------------------------

    def _on_message(self, message: Received) -> None:
        if message.topic == self.ack_topic:
            if self.twin is not None:
                self.twin.on_ack(message.payload)
            self.link.ack(message)
            return
        if not self.accepting:
            return  # not acknowledged: the broker delivers it again to the flow's next run
        inbox = self.inbox
        if len(inbox) >= self.inbox_limit:
            if message.qos == 0 and len(inbox) >= 2 * self.inbox_limit:
                # Read again while the worker waits for acks (see the module's docstring).
                self.count_dropped["source"] += 1
                return
            # Not while the worker waits for room: what frees it arrives on this connection.
            # (The inbox can outgrow the receive window at QoS 1 too: mosquitto 2.0 sent a
            # resumed session's whole queue, 2,500 messages past a window of 100, here.)
            if self.room.is_set():
                self.link.pause()
        inbox.append(Origin(self, message, message.payload, time.monotonic()))
        self.count_received += 1
        if not self.sync_steps:
            self.wake.set()  # else _after_read runs it, once the link has read the chunk

    def submit_http(self, body: bytes) -> asyncio.Future[tuple[str, str]] | None:
        """Queue an HTTP request's body; None when the flow cannot take more now."""
        if not self.accepting or len(self.inbox) >= self.inbox_limit:
            return None
        future: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()
        self.inbox.append(Origin(self, future, body, time.monotonic()))
        self.count_received += 1
        self.wake.set()
        return future

    async def _schedule(self) -> None:
        schedule = self.flow.source.schedule
        assert schedule is not None
        while True:
            await asyncio.sleep(schedule.every)
            if not self.accepting or len(self.inbox) >= self.inbox_limit:
                continue
            body = {**(schedule.payload or {}), "time": now_rfc3339()}
            self.inbox.append(Origin(self, None, orjson.dumps(body), time.monotonic()))
            self.count_received += 1
            self.wake.set()

    # The worker ----------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            if not self.inbox:
                self.wake.clear()
                await self.wake.wait()
                continue
            if self.max_in_flight - len(self.in_order) <= 0:
                # What frees room (PUBACKs, the twin's acks) arrives on the source's connection.
                self.link.resume()
                self.room.clear()
                await self.room.wait()
                continue
            batch = self._take_batch()
            try:
                await self._process(batch)
            except Exception as error:  # a bug must not stop the flow: say it, keep going
                self._failed_batch(batch, error)

    def _take_batch(self) -> list[Origin]:
        room = self.max_in_flight - len(self.in_order)
        count = min(len(self.inbox), room, BATCH_MAX)
        batch = [self.inbox.popleft() for _ in range(count)]
        if len(self.inbox) < self.inbox_limit // 2 and self.accepting:
            self.link.resume()
        return batch

    def _failed_batch(self, batch: list[Origin], error: Exception) -> None:
        log.exception("Flow %s failed on a batch", self.name)
        self._record_error("engine", f"internal error: {error}")
        for origin in batch:
            if not origin.done:
                origin.release()

    def _after_read(self) -> None:
        """Called by the link after each chunk it read. A flow whose steps are all synchronous
        runs what arrived right here, in the same turn of the event loop, instead of waking
        its worker task for it (a task switch and a loop turn per wakeup, which at 2,000
        msg/s is per message or two). The worker takes over what does not fit (no room).
        The worker never waits inside a batch of such a flow, so the two never interleave."""
        if not self.sync_steps or not self.inbox:
            return
        if self.max_in_flight - len(self.in_order) > 0:
            batch = self._take_batch()
            try:
                self._process_now(batch)
            except Exception as error:  # a bug must not stop the flow: say it, keep going
                self._failed_batch(batch, error)
        if self.inbox:
            self.wake.set()

    def _begin(self, batch: list[Origin]) -> list[tuple[Origin, Any]]:
        self.last_message_at = time.time()
        pairs: list[tuple[Origin, Any]] = []
        for origin in batch:
            self.in_order.append(origin)
            message = self._decode(origin)
            if message is not _SKIP:
                pairs.append((origin, message))
        return pairs

    async def _process(self, batch: list[Origin]) -> None:
        await self._run_from(0, self._begin(batch))
        for origin in batch:
            origin.release()

    def _process_now(self, batch: list[Origin]) -> None:
        pairs = self._begin(batch)
        for step, fail in zip(self.steps, self.failers, strict=True):
            if not pairs:
                break
            pairs = step.run(pairs, fail)
        self._deliver(pairs)
        for origin in batch:
            origin.release()

    def _decode(self, origin: Origin) -> Any:
        raw = origin.raw
        if len(raw) > self.max_bytes:
            self.count_undecodable += 1
            self.fail_message(
                origin,
                None,
                "source",
                f"the payload of {len(raw)} bytes is larger "
                f"than maxMessageBytes ({self.max_bytes})",
            )
            return _SKIP
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            self.count_undecodable += 1
            self.fail_message(origin, None, "source", f"the payload is not JSON: {error}")
            return _SKIP
        if self.twin_source:
            return self._twin_event(origin, message)
        return message

    def _twin_event(self, origin: Origin, event: Any) -> Any:
        source = origin.source
        thing = source.topic.split("/")[2] if isinstance(source, Received) else None
        if not isinstance(event, dict):
            self.fail_message(origin, None, "source", "the twin event is not a JSON object")
            return _SKIP
        text = orjson.dumps(event.get("value")) + str(event.get("path", "")).encode()
        change = "desired" if b"desiredProperties" in text else "reported"
        twin = self.flow.source.twin
        if twin is not None and change not in twin.changes:
            return _SKIP
        return {**event, "thing": thing, "change": change}

    async def _run_from(self, start: int, pairs: list[tuple[Any, Any]]) -> None:
        """Run pairs through steps[start:] and out to the sinks. A pair whose origin is None
        was emitted by a window: nothing upstream waits for it, so it gets a detached origin
        whose completion only releases what it holds."""
        for index in range(start, len(self.steps)):
            if not pairs:
                return
            step = self.steps[index]
            fail = self.failers[index]
            if step.is_async:
                pairs = await step.run_async(pairs, fail)
            else:
                pairs = step.run(pairs, fail)
        self._deliver(pairs)

    def _deliver(self, pairs: list[tuple[Any, Any]]) -> None:
        for origin, message in pairs:
            detached = origin is None
            if detached:
                origin = Origin(None, None, orjson.dumps(message), time.monotonic())
            encoded: list[bytes] = []
            for sink in self.sinks:
                sink.deliver(origin, message, encoded)
            if detached:
                origin.release()

    def _failer(self, step: StepRunner) -> Callable[[Any, Any, str], None]:
        def fail(origin: Origin | None, message: Any, reason: str) -> None:
            if origin is None:
                detached = Origin(None, None, orjson.dumps(message), time.monotonic())
                self.fail_message(detached, message, step.name, reason, step.on_error)
                detached.release()
            else:
                self.fail_message(origin, message, step.name, reason, step.on_error)

        return fail

    # Failures ----------------------------------------------------------------------------

    def fail_message(
        self,
        origin: Origin,
        message: Any,
        step: str,
        reason: str,
        action: str | None = None,
    ) -> None:
        """Send the original message, the step and the reason to the dead letter topic (or
        count it as dropped); the source is acknowledged once the dead letter is accepted."""
        self._record_error(step, reason)
        action = action or self.flow.on_error
        if action == "drop":
            self.count_dropped[step] += 1
            return
        self.count_dead_letters[step] += 1
        letter = {
            "flow": self.name,
            "step": step,
            "reason": reason,
            "time": now_rfc3339(),
            "message": _original(origin.raw),
        }
        if isinstance(origin.source, Received):
            letter["topic"] = origin.source.topic
        origin.hold()
        origin.failed = True
        self.link.publish(
            dead_letter_topic(self.name),
            orjson.dumps(letter),
            1,
            False,
            lambda accepted: origin.release(),
        )

    def _record_error(self, step: str, reason: str) -> None:
        self.last_error = {"step": step, "message": reason[:1000], "time": now_rfc3339()}

    # Completion --------------------------------------------------------------------------

    def _completed(self, origin: Origin) -> None:
        in_order = self.in_order
        latency = self._latency
        counts = latency.counts
        now = time.monotonic()
        while in_order and in_order[0].done:
            head = in_order.popleft()
            source = head.source
            if isinstance(source, Received):
                self.link.ack(source)
            elif isinstance(source, asyncio.Future) and not source.done():
                source.set_result(("deadLetter" if head.failed else "accepted", ""))
            seconds = now - head.received
            counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
            latency.total += seconds
        if len(in_order) < self.max_in_flight:
            self.room.set()

    # Timers, counters, status --------------------------------------------------------------

    def tick_seconds(self) -> float:
        """A window to close or twin updates to re-send want the 0.1 s tick; a flow with
        neither ticks once a second (status rate, gauges): two relay flows ticking at 0.1 s
        cost the engine 5 µs per message at 2,000 msg/s. Counters reach /metrics on each
        scrape anyway (FlowEngine.push_counts)."""
        if self.twin is not None or any(step.flushes for step in self.steps):
            return TICK_SECONDS
        return IDLE_TICK_SECONDS

    async def _tick(self) -> None:
        interval = self.tick_seconds()
        while True:
            await asyncio.sleep(interval)
            now = time.time()
            for index, step in enumerate(self.steps):
                emitted = step.flush(now)
                if emitted:
                    await self._run_from(index + 1, [(None, message) for message in emitted])
            if self.twin is not None:
                resent = self.twin.resend_overdue()
                if resent:
                    log.warning(
                        "Flow %s: the twin confirmed nothing in time, re-sent %d updates",
                        self.name,
                        resent,
                    )
            self.push_counts()

    def push_counts(self) -> None:
        """Counters and gauges to Prometheus: on the tick and before each scrape."""
        self.metrics.connected.labels(self.name).set(1 if self.connected() else 0)
        self._push_counts()

    def counts(self) -> dict[tuple[str, str], int]:
        counts = {
            ("source", "in"): self.count_received,
            ("source", "error"): self.count_undecodable,
        }
        for step in self.steps:
            counts[(step.name, "in")] = step.count_in
            counts[(step.name, "out")] = step.count_out
            counts[(step.name, "filtered")] = step.count_filtered
            counts[(step.name, "error")] = step.count_errors
        for sink in self.sinks:
            counts[(sink.label, "in")] = sink.count_in
            counts[(sink.label, "out")] = sink.count_out
            counts[(sink.label, "error")] = sink.count_errors
        return counts

    def _push_counts(self) -> None:
        messages = self.metrics.messages
        for key, value in self.counts().items():
            delta = value - self._pushed.get(key, 0)
            if delta:
                messages.labels(self.name, key[0], key[1]).inc(delta)
                self._pushed[key] = value
        for kind, counter, metric in (
            ("deadletter", self.count_dead_letters, self.metrics.dead_letters),
            ("dropped", self.count_dropped, self.metrics.dropped),
        ):
            for step, value in counter.items():
                key = (f"{kind}:{step}", kind)
                delta = value - self._pushed.get(key, 0)
                if delta:
                    metric.labels(self.name, step).inc(delta)
                    self._pushed[key] = value
        self.metrics.queue_depth.labels(self.name).set(len(self.inbox))
        self.metrics.in_flight.labels(self.name).set(len(self.in_order))
        now = time.monotonic()
        samples = self._rate_samples
        if not samples or now - samples[-1][0] >= 1.0:
            samples.append((now, self.count_received))
            while len(samples) > 2 and now - samples[0][0] > 60:
                samples.popleft()

    def rate(self) -> float:
        samples = self._rate_samples
        if len(samples) < 2:
            return 0.0
        (start, first), (end, _) = samples[0], samples[-1]
        # Include what arrived since the last sample, over the time since the first.
        now = time.monotonic()
        return round((self.count_received - first) / max(now - start, end - start, 1e-6), 2)

    def status(self) -> dict[str, Any]:
        steps = {
            step.name: {
                "kind": step.kind,
                "in": step.count_in,
                "out": step.count_out,
                "filtered": step.count_filtered,
                "errors": step.count_errors,
            }
            for step in self.steps
        }
        sinks = {
            sink.label: {
                "in": sink.count_in,
                "out": sink.count_out,
                "errors": sink.count_errors,
                "retrying": sink.retrying,
            }
            for sink in self.sinks
        }
        return {
            "name": self.name,
            "running": self.running,
            "connected": self.connected(),
            "source": self.source_kind,
            "revision": self.digest[:12],
            "received": self.count_received,
            "undecodable": self.count_undecodable,
            "queued": len(self.inbox),
            "inFlight": len(self.in_order),
            "steps": steps,
            "sinks": sinks,
            "deadLetters": sum(self.count_dead_letters.values()),
            "dropped": sum(self.count_dropped.values()),
            "messagesPerSecond": self.rate(),
            "lastMessageTime": _iso_or_none(self.last_message_at),
            "lastError": self.last_error,
            "brokerError": self.link.last_error,
            # The source is not being read: the inbox is full (backpressure).
            "sourcePaused": self.link.paused if self.reads_source else False,
            "publishing": {
                "unacknowledged": len(self.link.pending),
                "waiting": len(self.link.waiting),
            },
            "twinUnacknowledged": len(self.twin.unacked) if self.twin else None,
        }


_SKIP = object()


def _iso_or_none(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _original(raw: bytes) -> Any:
    """The source message for a dead letter: its JSON, else its text, else base64, cut short."""
    if len(raw) <= DEAD_LETTER_EXCERPT:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    excerpt = raw[:DEAD_LETTER_EXCERPT]
    try:
        text = excerpt.decode()
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(excerpt).decode(), "bytes": len(raw)}
    return text if len(raw) <= DEAD_LETTER_EXCERPT else {"excerpt": text, "bytes": len(raw)}


# Sinks ------------------------------------------------------------------------------------


class SinkRunner:
    def __init__(self, runner: FlowRunner, index: int, sink: Sink) -> None:
        self.runner = runner
        self.label = f"sink:{sink.name or index}"
        self.count_in = 0
        self.count_out = 0
        self.count_errors = 0
        self.retrying = 0

    @staticmethod
    def build(runner: FlowRunner, index: int, sink: Sink) -> SinkRunner:
        if sink.mqtt is not None:
            return MqttSinkRunner(runner, index, sink)
        if sink.http is not None:
            return HttpSinkRunner(runner, index, sink)
        return TwinSinkRunner(runner, index, sink)

    def deliver(self, origin: Origin, message: Any, encoded: list[bytes]) -> None:
        raise NotImplementedError

    def fail(self, origin: Origin, message: Any, reason: str) -> None:
        self.count_errors += 1
        self.runner.fail_message(origin, message, self.label, reason)

    async def close(self) -> None:
        return None


def _encode(message: Any, encoded: list[bytes]) -> bytes:
    if not encoded:
        encoded.append(orjson.dumps(message))
    return encoded[0]


class MqttSinkRunner(SinkRunner):
    def __init__(self, runner: FlowRunner, index: int, sink: Sink) -> None:
        super().__init__(runner, index, sink)
        assert sink.mqtt is not None
        self.template = sink.mqtt.topic
        self.qos = sink.mqtt.qos
        self.retain = sink.mqtt.retain
        self.fields = [
            (match.group(0), match.group(1).split("."))
            for match in PLACEHOLDER.finditer(self.template)
        ]

    def topic_for(self, message: Any) -> str:
        topic = self.template
        for placeholder, path in self.fields:
            value: Any = message
            for part in path:
                value = value.get(part) if isinstance(value, dict) else None
            if isinstance(value, bool) or value is None or isinstance(value, dict | list):
                raise StepError(
                    f"topic {self.template}: field {'.'.join(path)} is "
                    f"{'missing' if value is None else 'not a string or number'}"
                )
            text = str(value)
            if not text or BAD_TOPIC_VALUE.search(text) or len(text) > 128:
                raise StepError(
                    f"topic {self.template}: field {'.'.join(path)} = {text[:64]!r} "
                    "cannot be a topic level (empty, over 128 characters, or "
                    "holding '/', '+', '#' or a control character)"
                )
            topic = topic.replace(placeholder, text)
        if len(topic.encode()) > 1024:
            raise StepError("the rendered topic is longer than 1024 bytes")
        return topic

    def deliver(self, origin: Origin, message: Any, encoded: list[bytes]) -> None:
        self.count_in += 1
        try:
            topic = self.topic_for(message) if self.fields else self.template
        except StepError as error:
            self.fail(origin, message, str(error))
            return
        payload = _encode(message, encoded)
        if self.qos == 0:
            self.runner.link.publish(topic, payload, 0, self.retain, self._qos0_done)
            return
        origin.hold()

        def done(accepted: bool) -> None:
            if accepted:
                self.count_out += 1
            else:
                self.fail(origin, message, f"the broker refused the publish to {topic}")
            origin.release()

        self.runner.link.publish(topic, payload, 1, self.retain, done)

    def _qos0_done(self, sent: bool) -> None:
        if sent:
            self.count_out += 1
        else:
            self.count_errors += 1


class HttpSinkRunner(SinkRunner):
    """POST/PUT each message; retried with backoff until a 2xx (the source waits meanwhile);
    a 4xx other than 408/429 is final and goes to onError."""

    def __init__(self, runner: FlowRunner, index: int, sink: Sink) -> None:
        super().__init__(runner, index, sink)
        assert sink.http is not None and sink.http.url is not None
        self.url = sink.http.url
        self.method = sink.http.method
        self.client = HttpClient(sink.http.timeout_seconds)
        self.tasks: set[asyncio.Task[None]] = set()

    def deliver(self, origin: Origin, message: Any, encoded: list[bytes]) -> None:
        self.count_in += 1
        origin.hold()
        task = asyncio.create_task(self._send(origin, message, _encode(message, encoded)))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send(self, origin: Origin, message: Any, payload: bytes) -> None:
        delay = 0.2
        retrying = False
        try:
            while True:
                try:
                    status, _ = await self.client.request(self.method, self.url, payload)
                    if 200 <= status < 300:
                        self.count_out += 1
                        return
                    if 400 <= status < 500 and status not in (408, 429):
                        self.fail(origin, message, f"{self.url} answered {status}")
                        return
                    reason = f"{self.url} answered {status}"
                except HttpFailure as error:
                    reason = f"{self.url}: {error}"
                if not retrying:
                    retrying = True
                    self.retrying += 1
                self.count_errors += 1
                self.runner._record_error(self.label, f"{reason}; retrying in {delay:.1f} s")
                await asyncio.sleep(delay)
                delay = min(delay * 2, HTTP_SINK_MAX_BACKOFF)
        finally:
            if retrying:
                self.retrying -= 1
            origin.release()

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await self.client.close()


class TwinSinkRunner(SinkRunner):
    def __init__(self, runner: FlowRunner, index: int, sink: Sink) -> None:
        super().__init__(runner, index, sink)
        assert sink.twin is not None
        timeout = runner.flow.expression_timeout_ms / 1000
        self.thing = sink.twin.expression("thing").with_timeout(timeout)
        self.value = sink.twin.expression("value").with_timeout(timeout)
        self.property = sink.twin.property

    def deliver(self, origin: Origin, message: Any, encoded: list[bytes]) -> None:
        self.count_in += 1
        try:
            thing = self.thing.evaluate(message)
            value = self.value.evaluate(message)
        except ExpressionError as error:
            self.fail(origin, message, f"twin sink: {error}")
            return
        if not isinstance(thing, str) or not THING_NAME.fullmatch(thing) or len(thing) > 180:
            self.fail(origin, message, f"twin sink: thing {str(thing)[:64]!r} is not a thing name")
            return
        if value is None:
            self.fail(origin, message, "twin sink: the value expression gave no value")
            return
        writer = self.runner.twin
        assert writer is not None
        origin.hold()

        def done(accepted: bool) -> None:
            # False only when the flow stops: the source stays unacknowledged.
            if accepted:
                self.count_out += 1
                origin.release()

        writer.write(thing, self.property, value, done)
