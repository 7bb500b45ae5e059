"""The twin sink's side of docs/protocol.md: a flow writes properties the way a gateway does.

A flow numbers its twin updates (`spine-gateway` is `flow.<flow>`, which no gateway can be
named, since gateway names are DNS labels, and `flow.<flow>.<n>` on the engine's replica n > 0,
so replicas never share a sequence; `spine-epoch` is new at every start of the flow;
`spine-seq` counts from 1) and a write counts as accepted only when the twin's ack covers its
seq: stored, or rejected as invalid and reported on the thing's errors topic. What stays
unacknowledged past the timeout is published again from the oldest on (go-back-N, the twin
needs every seq to advance its ack and ignores a seq it already stored).

The topics are spelled in `twin_update_topic` and `twin_ack_topic` only, so a change of the
gateways' topic layout (the gateway identity in the topic) is followed here.
"""

from __future__ import annotations

import collections
import datetime
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from spine_runtime.config.flow import replica_suffix
from spine_runtime.gateway.protocol import parse_ack, update_payload


def twin_identity(flow: str, ordinal: int = 0) -> str:
    """The numbered publisher a flow writes the twin as on replica `ordinal` of the engine:
    one sequence per replica, or two replicas' numbers would clash in the twin's tracker."""
    return f"flow.{flow}{replica_suffix(ordinal)}"


def twin_update_topic(identity: str, thing: str) -> str:
    """Where a flow publishes updates of `thing`: the topic names its identity, as a gateway's
    does, so the twin takes the identity from the topic (docs/protocol.md)."""
    return f"spine/gateways/{identity}/things/{thing}/twin"


def twin_ack_topic(identity: str) -> str:
    return f"spine/gateways/{identity}/acks"


def twin_acl_topics(flow: str, ordinal: int = 0) -> tuple[str, str]:
    """(publish, subscribe) topics a flow with a twin sink needs in its broker login."""
    identity = twin_identity(flow, ordinal)
    return twin_update_topic(identity, "+"), twin_ack_topic(identity)


def now_rfc3339() -> str:
    return (
        datetime.datetime.now(datetime.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


@dataclass(slots=True)
class PendingUpdate:
    seq: int
    topic: str
    payload: bytes
    sent_at: float
    done: Callable[[bool], None]


class TwinWriter:
    """Sequence numbers, the unacknowledged window and resends of one flow's twin updates."""

    def __init__(
        self,
        flow: str,
        namespace: str,
        publish: Callable[[str, bytes, Callable[[bool], None]], None],
        ack_timeout: float,
        ordinal: int = 0,
    ) -> None:
        self.identity = twin_identity(flow, ordinal)
        self.namespace = namespace
        self.publish = publish
        self.ack_timeout = ack_timeout
        # 48 random bits, as a gateway's: the twin keeps state per epoch.
        self.epoch = secrets.token_hex(6)
        self.seq = 0
        self.unacked: collections.OrderedDict[int, PendingUpdate] = collections.OrderedDict()
        self.resends = 0
        self.acked_seq = 0

    def write(self, thing: str, prop: str, value: object, done: Callable[[bool], None]) -> None:
        self.seq += 1
        features = orjson.dumps({prop: {"properties": {"value": value}}}).decode()
        payload = update_payload(
            namespace=self.namespace,
            thing=thing,
            features=features,
            gateway=self.identity,
            epoch=self.epoch,
            seq=self.seq,
            source_time=now_rfc3339(),
        )
        update = PendingUpdate(
            self.seq, twin_update_topic(self.identity, thing), payload, time.monotonic(), done
        )
        self.unacked[self.seq] = update
        self._send(update)

    def _send(self, update: PendingUpdate) -> None:
        # The broker's PUBACK only says the broker has it; the twin's ack is what counts.
        self.publish(update.topic, update.payload, _ignore)

    def on_ack(self, payload: bytes) -> None:
        try:
            ack = parse_ack(payload)
        except ValueError:
            return
        if ack.gateway != self.identity or ack.epoch != self.epoch:
            return
        self.acked_seq = max(self.acked_seq, ack.seq)
        while self.unacked:
            seq, update = next(iter(self.unacked.items()))
            if seq > ack.seq:
                break
            self.unacked.popitem(last=False)
            update.done(True)

    def resend_overdue(self, now: float | None = None) -> int:
        """Publish everything unacknowledged again if the oldest waited too long."""
        if not self.unacked:
            return 0
        now = time.monotonic() if now is None else now
        oldest = next(iter(self.unacked.values()))
        if now - oldest.sent_at < self.ack_timeout:
            return 0
        for update in self.unacked.values():
            update.sent_at = now
            self._send(update)
        self.resends += len(self.unacked)
        return len(self.unacked)

    def abandon(self) -> None:
        """The flow stops: what the twin has not confirmed stays unaccepted (the source
        message is not acknowledged, so the broker delivers it again)."""
        for update in self.unacked.values():
            update.done(False)
        self.unacked.clear()


def _ignore(accepted: bool) -> None:
    del accepted
