"""The twin's state: things in memory, persisted to SQLite (WAL) in batched transactions.

The service applies every update here (revisions, stale source times, desired status) and
commits the changes in batches: `take_batch` in the event loop, `write` in the database thread.
It also remembers, per gateway and epoch, which sequence numbers are stored, so a re-sent update
is recognised and the acknowledgement (docs/protocol.md, acks) can be computed and survives a
crash with the data it covers.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from spine_runtime.twin.state import (
    FAILED,
    PENDING,
    Change,
    Origin,
    Outcome,
    Thing,
    apply_changes,
    fail_desired,
    format_time,
    parse_time,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS things (
    thing_id TEXT PRIMARY KEY,
    revision INTEGER NOT NULL,
    created TEXT NOT NULL,
    modified TEXT NOT NULL,
    features BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS gateway_sequences (
    gateway TEXT NOT NULL,
    epoch TEXT NOT NULL,
    acked INTEGER NOT NULL,
    above BLOB NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (gateway, epoch)
);
"""
UPSERT_THING = (
    "INSERT INTO things (thing_id, revision, created, modified, features) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (thing_id) DO UPDATE SET revision = excluded.revision, "
    "created = excluded.created, modified = excluded.modified, features = excluded.features"
)
UPSERT_SEQUENCE = (
    "INSERT INTO gateway_sequences (gateway, epoch, acked, above, updated) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (gateway, epoch) DO UPDATE SET acked = excluded.acked, above = excluded.above, "
    "updated = excluded.updated"
)

# A gateway never has more than its `publish.maxInFlight` (at most 100,000) updates in flight
# beyond its acknowledged one; a sequence number further ahead is refused rather than
# remembered, which bounds the numbers kept per epoch (and what each commit serialises).
MAX_SEQUENCE_WINDOW = 200_000
# Epochs remembered per gateway: a gateway starts a new one only when its disk queue is wiped.
EPOCHS_KEPT = 4


class StorageError(RuntimeError):
    """The database cannot be opened or written; the twin cannot keep its promise and stops."""


class SequenceTracker:
    """Which sequence numbers of one gateway epoch are processed (stored or rejected).

    `acked` is the highest number such that it and every lower one are processed: what the twin
    acknowledges. Numbers processed beyond a gap wait in `above` until the gap closes.
    """

    __slots__ = ("above", "acked", "updated")

    def __init__(self, acked: int = 0, above: Iterable[int] = (), updated: float = 0.0) -> None:
        self.acked = acked
        self.above: set[int] = set(above)
        self.updated = updated

    def seen(self, seq: int) -> bool:
        return seq <= self.acked or seq in self.above

    def too_far_ahead(self, seq: int) -> bool:
        return seq > self.acked + MAX_SEQUENCE_WINDOW

    def record(self, seq: int) -> bool:
        """Mark `seq` processed; returns whether the acknowledged number moved."""
        if self.seen(seq):
            return False
        if seq != self.acked + 1:
            self.above.add(seq)
            return False
        self.acked = seq
        while self.acked + 1 in self.above:
            self.acked += 1
            self.above.discard(self.acked)
        return True


@dataclass
class Batch:
    """One transaction's worth of rows, serialised in the event loop."""

    things: list[tuple[str, int, str, str, bytes]] = field(default_factory=list)
    sequences: list[tuple[str, str, int, bytes, float]] = field(default_factory=list)
    dropped_sequences: list[tuple[str, str]] = field(default_factory=list)
    acks: list[tuple[str, str, int]] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.things or self.sequences or self.dropped_sequences)


@dataclass(frozen=True)
class ThingSpec:
    """What the config says about one thing."""

    thing_id: str
    name: str
    model_name: str
    definition: str
    attributes: dict[str, Any]
    features: list[str]


class TwinStore:
    """All things of the namespace and the gateway sequence state, with their SQLite copy."""

    def __init__(self, path: Path, synchronous: str = "full") -> None:
        self.path = path
        self.synchronous = synchronous
        self.things: dict[str, Thing] = {}
        self.sequences: dict[tuple[str, str], SequenceTracker] = {}
        # The epochs kept per gateway, so a new epoch's bookkeeping costs O(EPOCHS_KEPT), not
        # O(every gateway's epochs).
        self.epochs_of: dict[str, set[str]] = {}
        # Desired values waiting for a matching report (epoch of `since`), and failed ones.
        self.pending_desired: dict[tuple[str, str], float] = {}
        self.failed_desired: set[tuple[str, str]] = set()
        self._stored: dict[str, tuple[int, str, str, dict[str, Any]]] = {}
        self._dirty_things: set[str] = set()
        # Things removed from the config with changes not yet committed.
        self._detached: dict[str, Thing] = {}
        self._dirty_sequences: set[tuple[str, str]] = set()
        self._dropped_sequences: list[tuple[str, str]] = []
        self._acks_due: set[tuple[str, str]] = set()
        self._connection: sqlite3.Connection | None = None
        self._write_lock = threading.Lock()
        self.commits = 0
        self.last_commit: float | None = None

    # opening and closing --------------------------------------------------------------------

    def open(self) -> None:
        """Open (or create) the database and read everything it holds."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"{self.path} was written by a newer twin (schema {version}); "
                    f"this one knows schema {SCHEMA_VERSION}"
                )
            connection.executescript(SCHEMA)
            connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            rows = connection.execute(
                "SELECT thing_id, revision, created, modified, features FROM things"
            ).fetchall()
            sequence_rows = connection.execute(
                "SELECT gateway, epoch, acked, above, updated FROM gateway_sequences"
            ).fetchall()
        except sqlite3.Error as error:
            raise StorageError(f"cannot open {self.path}: {error}") from error
        self._connection = connection
        for thing_id, revision, created, modified, features in rows:
            self._stored[thing_id] = (revision, created, modified, orjson.loads(features))
        for gateway, epoch, acked, above, updated in sequence_rows:
            self.sequences[gateway, epoch] = SequenceTracker(acked, orjson.loads(above), updated)
            self.epochs_of.setdefault(gateway, set()).add(epoch)
        log.info(
            "Opened %s: %d things, %d gateway epochs", self.path, len(rows), len(sequence_rows)
        )

    def close(self) -> None:
        if self._connection is not None:
            with self._write_lock:
                self._connection.close()
                self._connection = None

    # things -----------------------------------------------------------------------------------

    def sync_things(self, specs: list[ThingSpec], now: float) -> None:
        """Make the things in memory those of the config, keeping every stored value.

        A thing removed from the config leaves memory but not the database, so adding it back
        brings its state back.
        """
        wanted = {spec.thing_id: spec for spec in specs}
        for thing_id in [thing_id for thing_id in self.things if thing_id not in wanted]:
            removed = self.things.pop(thing_id)
            if thing_id in self._dirty_things:
                self._detached[thing_id] = removed
            self._stored[thing_id] = (
                removed.revision,
                removed.created,
                removed.modified,
                removed.features,
            )
            self._forget_desired(thing_id)
        for spec in specs:
            thing = self.things.get(spec.thing_id)
            if thing is None:
                thing = Thing(
                    spec.thing_id,
                    spec.name,
                    spec.model_name,
                    spec.definition,
                    spec.attributes,
                    format_time(now),
                )
                thing.ensure_features(spec.features)
                stored = self._stored.pop(spec.thing_id, None)
                if stored is None:
                    self._dirty_things.add(spec.thing_id)  # persist its creation time
                else:
                    thing.restore(*stored)
                self.things[spec.thing_id] = thing
            else:
                thing.model_name, thing.definition = spec.model_name, spec.definition
                thing.attributes = spec.attributes
                thing.ensure_features(spec.features)
            self._index_desired(thing, spec.features)

    def _forget_desired(self, thing_id: str, feature: str | None = None) -> None:
        for key in [key for key in self.pending_desired if key[0] == thing_id]:
            if feature is None or key[1] == feature:
                del self.pending_desired[key]
        for key in [key for key in self.failed_desired if key[0] == thing_id]:
            if feature is None or key[1] == feature:
                self.failed_desired.discard(key)

    def _index_desired(self, thing: Thing, features: Iterable[str]) -> None:
        for feature in features:
            key = (thing.thing_id, feature)
            self.pending_desired.pop(key, None)
            self.failed_desired.discard(key)
            desired = thing.desired_of(feature)
            if desired is None:
                continue
            status = desired.get("status")
            if status == PENDING:
                try:
                    self.pending_desired[key] = parse_time(str(desired.get("since")))
                except ValueError:
                    self.pending_desired[key] = 0.0
            elif status == FAILED:
                self.failed_desired.add(key)

    # updates ----------------------------------------------------------------------------------

    def is_duplicate(self, origin: Origin) -> bool:
        """Whether this gateway update is already processed; its ack is then sent again, in
        case the earlier one was lost (the gateway would otherwise re-send it forever)."""
        if origin.gateway is None or origin.epoch is None or origin.seq is None:
            return False
        tracker = self.sequences.get((origin.gateway, origin.epoch))
        if tracker is None or not tracker.seen(origin.seq):
            return False
        self._acks_due.add((origin.gateway, origin.epoch))
        return True

    def seq_out_of_window(self, origin: Origin) -> bool:
        if origin.gateway is None or origin.epoch is None or origin.seq is None:
            return False
        tracker = self.sequences.get((origin.gateway, origin.epoch))
        return (tracker or SequenceTracker()).too_far_ahead(origin.seq)

    def record_processed(self, origin: Origin, now: float) -> None:
        """Count a gateway update as processed (stored, stale or rejected) for its ack."""
        if origin.gateway is None or origin.epoch is None or origin.seq is None:
            return
        key = (origin.gateway, origin.epoch)
        tracker = self.sequences.get(key)
        if tracker is None:
            tracker = self.sequences[key] = SequenceTracker(updated=now)
            self.epochs_of.setdefault(origin.gateway, set()).add(origin.epoch)
            self._drop_old_epochs(origin.gateway)
        tracker.record(origin.seq)
        tracker.updated = now
        self._dirty_sequences.add(key)
        self._acks_due.add(key)

    def tracks(self, gateway: str) -> bool:
        """Whether sequence numbers of this gateway are kept (in memory now)."""
        return gateway in self.epochs_of

    def tracked_gateways(self) -> int:
        return len(self.epochs_of)

    def _drop_old_epochs(self, gateway: str) -> None:
        kept = self.epochs_of[gateway]
        if len(kept) <= EPOCHS_KEPT:
            return
        epochs = sorted((self.sequences[gateway, epoch].updated, epoch) for epoch in kept)
        for _, epoch in epochs[:-EPOCHS_KEPT]:
            key = (gateway, epoch)
            kept.discard(epoch)
            del self.sequences[key]
            self._dirty_sequences.discard(key)
            self._acks_due.discard(key)
            self._dropped_sequences.append(key)

    def apply(
        self,
        thing: Thing,
        changes: list[Change],
        origin: Origin,
        now: float,
        source_time_limit: float | None = None,
    ) -> Outcome | None:
        """Apply validated changes to a thing and record the update as processed."""
        outcome = apply_changes(thing, changes, origin, now, source_time_limit)
        self.record_processed(origin, now)
        if outcome is not None:
            self._changed(thing, outcome)
        return outcome

    def fail_desired(
        self, thing_id: str, feature: str, now: float, timeout: float
    ) -> Outcome | None:
        thing = self.things.get(thing_id)
        if thing is None:
            self.pending_desired.pop((thing_id, feature), None)
            return None
        outcome = fail_desired(thing, feature, now, timeout)
        if outcome is not None:
            self._changed(thing, outcome)
        else:
            self.pending_desired.pop((thing_id, feature), None)
        return outcome

    def expired_desired(self, now: float, timeout: float) -> list[tuple[str, str]]:
        return [key for key, since in self.pending_desired.items() if since + timeout <= now]

    def _changed(self, thing: Thing, outcome: Outcome) -> None:
        self._dirty_things.add(thing.thing_id)
        touched = [
            feature
            for feature, partial in outcome.partial_features.items()
            if "desiredProperties" in partial
        ]
        if touched:
            self._index_desired(thing, touched)

    # committing -------------------------------------------------------------------------------

    def has_changes(self) -> bool:
        return bool(
            self._dirty_things or self._dirty_sequences or self._dropped_sequences or self._acks_due
        )

    def take_batch(self) -> Batch:
        """Serialise what changed since the last batch; call in the thread that applies."""
        batch = Batch()
        for thing_id in self._dirty_things:
            dirty = self.things.get(thing_id) or self._detached.get(thing_id)
            if dirty is not None:
                batch.things.append(
                    (
                        thing_id,
                        dirty.revision,
                        dirty.created,
                        dirty.modified,
                        orjson.dumps(dirty.features),
                    )
                )
        for key in self._dirty_sequences:
            tracker = self.sequences[key]
            batch.sequences.append(
                (
                    key[0],
                    key[1],
                    tracker.acked,
                    orjson.dumps(sorted(tracker.above)),
                    tracker.updated,
                )
            )
        batch.dropped_sequences = self._dropped_sequences
        for key in self._acks_due:
            due = self.sequences.get(key)
            if due is not None and due.acked > 0:
                batch.acks.append((key[0], key[1], due.acked))
        self._dirty_things = set()
        self._detached = {}
        self._dirty_sequences = set()
        self._dropped_sequences = []
        self._acks_due = set()
        return batch

    def write(self, batch: Batch) -> None:
        """Store a batch in one transaction; safe to call from the database thread."""
        if batch.empty():
            return
        with self._write_lock:
            connection = self._connection
            if connection is None:
                raise StorageError("the store is closed")
            try:
                connection.execute("BEGIN")
                if batch.things:
                    connection.executemany(UPSERT_THING, batch.things)
                if batch.sequences:
                    connection.executemany(UPSERT_SEQUENCE, batch.sequences)
                if batch.dropped_sequences:
                    connection.executemany(
                        "DELETE FROM gateway_sequences WHERE gateway = ? AND epoch = ?",
                        batch.dropped_sequences,
                    )
                connection.execute("COMMIT")
            except sqlite3.Error as error:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise StorageError(f"cannot write {self.path}: {error}") from error
        self.commits += 1

    def latest_acks(self) -> list[tuple[str, str, int]]:
        """The newest epoch's acknowledgement of every gateway, to announce after a reconnect."""
        latest: dict[str, tuple[float, str, int]] = {}
        for (gateway, epoch), tracker in self.sequences.items():
            if tracker.acked > 0 and tracker.updated >= latest.get(gateway, (-1.0, "", 0))[0]:
                latest[gateway] = (tracker.updated, epoch, tracker.acked)
        return [(gateway, epoch, acked) for gateway, (_, epoch, acked) in sorted(latest.items())]
