"""The store-and-forward buffer: every twin update waits on disk until the twin confirms it.

The pipeline appends each cycle's updates; the sender reads them in order, publishes them and
removes what an ack covers (DESIGN.md, "Delivery guarantee"). SQLite in WAL mode: an append is
on disk when `append` returns, so a killed gateway (SIGKILL, OOM, pod restart) loses nothing;
with `fsync` every commit is also flushed, so a power loss of the node loses nothing either.

Numbering: rows have a position that only grows. An update's `spine-seq` is its position minus
the epoch's base. The twin acknowledges the highest seq up to which it has *everything*, so an
update dropped because the buffer was full would stall its acks forever. When the buffer must
drop unconfirmed updates it therefore starts a new epoch whose seq 1 is the oldest update kept
(docs/protocol.md: a gateway whose queue was wiped starts a new sequence; a partial wipe does
too). It drops down to 99% of the bound, so a buffer that stays full starts a new epoch once per
1% of capacity rather than on every update.

Dead letters: an update the broker refuses (a PUBACK failure reason code, e.g. 135 not
authorised) can never be delivered, and its seq would stall the twin's acks forever. The sender
moves its content to the bounded `dead_letters` table, with the reason, and keeps its row as a
*gap*: an update with no feature values (`GAP_FEATURES`) for a thing the gateway may publish,
which the twin processes (rejects: it sets no value) and so acknowledges.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

QUEUE_FILE = "queue.sqlite3"
SCHEMA = """
CREATE TABLE IF NOT EXISTS updates (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    thing TEXT NOT NULL,
    features TEXT NOT NULL,
    source_time TEXT NOT NULL,
    enqueued_at REAL NOT NULL,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    epoch TEXT NOT NULL,
    seq INTEGER NOT NULL,
    thing TEXT NOT NULL,
    features TEXT NOT NULL,
    source_time TEXT NOT NULL,
    enqueued_at REAL NOT NULL,
    refused_at REAL NOT NULL,
    reason TEXT NOT NULL
);
"""
GAP_FEATURES = "{}"
DEFAULT_MAX_DEAD_LETTERS = 1000


def new_epoch() -> str:
    # 48 random bits: the twin keeps state per epoch, so a reused epoch would make it ignore
    # new updates as already stored.
    return secrets.token_hex(6)


@dataclass(frozen=True)
class NewUpdate:
    thing: str
    features: str  # JSON text of the merge command's value
    source_time: str  # RFC 3339

    @property
    def size(self) -> int:
        return len(self.thing) + len(self.features) + len(self.source_time)


@dataclass(frozen=True)
class QueuedUpdate:
    position: int
    seq: int
    epoch: str
    thing: str
    features: str
    source_time: str
    enqueued_at: float


@dataclass(frozen=True)
class DeadLetter:
    epoch: str
    seq: int
    thing: str
    features: str
    source_time: str
    refused_at: float
    reason: str


@dataclass(frozen=True)
class QueueStats:
    messages: int
    bytes: int
    oldest_enqueued_at: float | None
    epoch: str
    epoch_base: int
    acked_position: int
    last_position: int
    dropped_total: int
    dead_letters_total: int = 0
    dead_letters_kept: int = 0

    @property
    def acked_seq(self) -> int:
        return self.acked_position - self.epoch_base

    @property
    def last_seq(self) -> int:
        return self.last_position - self.epoch_base


@dataclass(frozen=True)
class AckResult:
    accepted: bool  # False: another epoch, or beyond what was ever queued
    removed: int
    acked_position: int


class DiskQueue:
    """The synchronous queue; one thread uses it (AsyncDiskQueue sees to that)."""

    def __init__(
        self,
        directory: Path,
        max_messages: int,
        max_bytes: int,
        fsync: bool = False,
        max_dead_letters: int = DEFAULT_MAX_DEAD_LETTERS,
    ) -> None:
        self.path = directory / QUEUE_FILE
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.max_dead_letters = max_dead_letters
        directory.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open(fsync)
        except sqlite3.DatabaseError as error:
            # A damaged file must not keep the gateway down: keep it for inspection, start anew.
            aside = self.path.with_name(f"{QUEUE_FILE}.damaged-{int(time.time())}")
            log.error("Buffer %s is damaged (%s); moved it to %s", self.path, error, aside)
            self.path.rename(aside)
            for suffix in ("-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            self._db = self._open(fsync)
        self._load()

    def _open(self, fsync: bool) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        db.executescript(SCHEMA)
        db.execute("SELECT COUNT(*) FROM updates").fetchone()  # fails here on a damaged file
        return db

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, **values: object) -> None:
        self._db.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(key, str(value)) for key, value in values.items()],
        )

    def _load(self) -> None:
        count, size, first, last = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(position), MAX(position) FROM updates"
        ).fetchone()
        sequence = self._db.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'updates'"
        ).fetchone()
        self.count, self.bytes = int(count), int(size)
        self.last_position = int(sequence[0]) if sequence else 0
        self.dead_letters_total = int(self._meta("dead_letters_total") or 0)
        self.dead_letters_kept = int(
            self._db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
        )
        epoch = self._meta("epoch")
        if epoch is None:
            self.epoch, self.epoch_base, self.acked_position, self.dropped_total = (
                new_epoch(),
                self.last_position,
                self.last_position,
                0,
            )
            self._set_meta(
                epoch=self.epoch,
                epoch_base=self.epoch_base,
                acked_position=self.acked_position,
                dropped_total=0,
            )
            log.info("Created buffer %s with epoch %s", self.path, self.epoch)
        else:
            self.epoch = epoch
            self.epoch_base = int(self._meta("epoch_base") or 0)
            self.acked_position = int(self._meta("acked_position") or 0)
            self.dropped_total = int(self._meta("dropped_total") or 0)
            log.info(
                "Opened buffer %s: epoch %s, %d updates waiting (seq %d to %d)",
                self.path,
                self.epoch,
                self.count,
                (first or 0) - self.epoch_base,
                (last or 0) - self.epoch_base,
            )

    def append(self, updates: Sequence[NewUpdate], now: float | None = None) -> int:
        """Store updates durably, dropping the oldest if over a bound; returns how many dropped."""
        if not updates:
            return 0
        enqueued_at = time.time() if now is None else now
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "INSERT INTO updates (thing, features, source_time, enqueued_at, size) "
                "VALUES (?, ?, ?, ?, ?)",
                [(u.thing, u.features, u.source_time, enqueued_at, u.size) for u in updates],
            )
            self.count += len(updates)
            self.bytes += sum(update.size for update in updates)
            self.last_position += len(updates)
            dropped = 0
            if self.count > self.max_messages or self.bytes > self.max_bytes:
                dropped = self._drop_oldest()
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            self._load()
            raise
        return dropped

    def _drop_oldest(self) -> int:
        target_messages = max(1, self.max_messages - self.max_messages // 100)
        target_bytes = self.max_bytes - self.max_bytes // 100
        count, size, cut = self.count, self.bytes, self.acked_position
        rows = self._db.execute("SELECT position, size FROM updates ORDER BY position")
        for position, row_size in rows:
            if (count <= target_messages and size <= target_bytes) or count <= 1:
                break
            cut, count, size = position, count - 1, size - row_size
        rows.close()
        dropped = self.count - count
        self._db.execute("DELETE FROM updates WHERE position <= ?", (cut,))
        previous = self.epoch
        self.count, self.bytes = count, size
        self.dropped_total += dropped
        # Everything dropped was unconfirmed: without a new epoch the twin's ack would never
        # pass the first dropped seq.
        self.epoch, self.epoch_base, self.acked_position = new_epoch(), cut, cut
        self._set_meta(
            epoch=self.epoch,
            epoch_base=self.epoch_base,
            acked_position=self.acked_position,
            dropped_total=self.dropped_total,
        )
        log.warning(
            "Buffer full: dropped the %d oldest updates (%d in all); epoch %s follows %s",
            dropped,
            self.dropped_total,
            self.epoch,
            previous,
        )
        return dropped

    def read_after(self, position: int, limit: int) -> list[QueuedUpdate]:
        rows = self._db.execute(
            "SELECT position, thing, features, source_time, enqueued_at FROM updates "
            "WHERE position > ? ORDER BY position LIMIT ?",
            (position, limit),
        ).fetchall()
        return [
            QueuedUpdate(p, p - self.epoch_base, self.epoch, thing, features, source, enqueued)
            for p, thing, features, source, enqueued in rows
        ]

    def ack(self, epoch: str, seq: int) -> AckResult:
        """Remove every update up to `seq` of `epoch`; other epochs are ignored."""
        position = self.epoch_base + seq
        if epoch != self.epoch or position > self.last_position:
            return AckResult(False, 0, self.acked_position)
        if position <= self.acked_position:
            return AckResult(True, 0, self.acked_position)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            removed, size = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM updates WHERE position <= ?",
                (position,),
            ).fetchone()
            self._db.execute("DELETE FROM updates WHERE position <= ?", (position,))
            self._set_meta(acked_position=position)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self.count -= int(removed)
        self.bytes -= int(size)
        self.acked_position = position
        return AckResult(True, int(removed), position)

    def replace_with_gap(
        self, position: int, reason: str, gap_thing: str, now: float | None = None
    ) -> QueuedUpdate | None:
        """Move the update at `position` to the dead letters (with `reason`) and keep its seq
        as a gap for `gap_thing`; returns the gap to publish, or None if the update is gone
        (acknowledged or dropped meanwhile). A gap refused in turn only changes its thing."""
        row = self._db.execute(
            "SELECT thing, features, source_time, enqueued_at, size FROM updates "
            "WHERE position = ?",
            (position,),
        ).fetchone()
        if row is None:
            return None
        thing, features, source_time, enqueued_at, size = row
        refused_at = time.time() if now is None else now
        new_size = NewUpdate(gap_thing, GAP_FEATURES, source_time).size
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if features != GAP_FEATURES:
                self._db.execute(
                    "INSERT INTO dead_letters (epoch, seq, thing, features, source_time, "
                    "enqueued_at, refused_at, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        self.epoch,
                        position - self.epoch_base,
                        thing,
                        features,
                        source_time,
                        enqueued_at,
                        refused_at,
                        reason,
                    ),
                )
                # Bounded: the oldest dead letters go first.
                self._db.execute(
                    "DELETE FROM dead_letters WHERE id <= (SELECT MAX(id) FROM dead_letters) - ?",
                    (self.max_dead_letters,),
                )
                self._set_meta(dead_letters_total=self.dead_letters_total + 1)
            self._db.execute(
                "UPDATE updates SET thing = ?, features = ?, size = ? WHERE position = ?",
                (gap_thing, GAP_FEATURES, new_size, position),
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        if features != GAP_FEATURES:
            self.dead_letters_total += 1
            self.dead_letters_kept = min(self.dead_letters_kept + 1, self.max_dead_letters)
        self.bytes += new_size - int(size)
        return QueuedUpdate(
            position,
            position - self.epoch_base,
            self.epoch,
            gap_thing,
            GAP_FEATURES,
            source_time,
            float(enqueued_at),
        )

    def dead_letters(self, limit: int) -> list[DeadLetter]:
        """The newest dead letters, newest first."""
        rows = self._db.execute(
            "SELECT epoch, seq, thing, features, source_time, refused_at, reason "
            "FROM dead_letters ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [DeadLetter(*row) for row in rows]

    def stats(self) -> QueueStats:
        row = self._db.execute(
            "SELECT enqueued_at FROM updates ORDER BY position LIMIT 1"
        ).fetchone()
        return QueueStats(
            messages=self.count,
            bytes=self.bytes,
            oldest_enqueued_at=float(row[0]) if row else None,
            epoch=self.epoch,
            epoch_base=self.epoch_base,
            acked_position=self.acked_position,
            last_position=self.last_position,
            dropped_total=self.dropped_total,
            dead_letters_total=self.dead_letters_total,
            dead_letters_kept=self.dead_letters_kept,
        )

    def close(self) -> None:
        self._db.close()


RECENT_UPDATES = 4096


class AsyncDiskQueue:
    """The disk queue for asyncio code: every call runs in one worker thread, in call order,
    so a slow disk (fsync) never stalls the event loop.

    The updates appended last are also kept in memory (`RECENT_UPDATES` of them), so a sender
    that keeps up reads them from there: one thread hop and one SQLite read less on the way
    from the PLC to the broker. What is read from memory is exactly what is on disk: the copy
    is made after the append committed, an epoch change or a drop makes it unusable, and a
    gap replaces its entry.
    """

    def __init__(
        self,
        directory: Path,
        max_messages: int,
        max_bytes: int,
        fsync: bool,
        max_dead_letters: int = DEFAULT_MAX_DEAD_LETTERS,
    ) -> None:
        self._args = (directory, max_messages, max_bytes, fsync, max_dead_letters)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spine-buffer")
        self._queue: DiskQueue | None = None
        self.stats: QueueStats | None = None  # refreshed after every call, for /status
        self._recent: dict[int, QueuedUpdate] = {}  # position -> the update as committed
        self._last_position = 0  # of the last append (the sender reads no further)

    async def _call(self, operation: Callable[[DiskQueue], T]) -> T:
        def run() -> T:
            assert self._queue is not None
            result = operation(self._queue)
            self.stats = self._queue.stats()
            return result

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    async def open(self) -> QueueStats:
        def open_queue() -> QueueStats:
            self._queue = DiskQueue(*self._args)
            self.stats = self._queue.stats()
            return self.stats

        stats = await asyncio.get_running_loop().run_in_executor(self._executor, open_queue)
        self._last_position = stats.last_position
        return stats

    async def append(self, updates: Sequence[NewUpdate]) -> int:
        now = time.time()

        def append(queue: DiskQueue) -> tuple[int, int, str, int]:
            dropped = queue.append(updates, now)
            return dropped, queue.last_position, queue.epoch, queue.epoch_base

        dropped, last, epoch, base = await self._call(append)
        self._last_position = max(self._last_position, last)
        if dropped:
            self._recent.clear()  # a new epoch: every seq changed
            return dropped
        for position, update in enumerate(updates, start=last - len(updates) + 1):
            self._recent[position] = QueuedUpdate(
                position,
                position - base,
                epoch,
                update.thing,
                update.features,
                update.source_time,
                now,
            )
        excess = len(self._recent) - RECENT_UPDATES
        if excess > 0:
            for position in list(itertools.islice(self._recent, excess)):
                del self._recent[position]
        return dropped

    async def read_after(self, position: int, limit: int) -> list[QueuedUpdate]:
        stats = self.stats
        found: list[QueuedUpdate] = []
        next_position = position + 1
        while stats is not None and len(found) < limit:
            update = self._recent.get(next_position)
            if update is None or update.epoch != stats.epoch:
                break
            found.append(update)
            next_position += 1
        if len(found) == limit or next_position > self._last_position:
            return found
        return await self._call(lambda queue: queue.read_after(position, limit))

    async def ack(self, epoch: str, seq: int) -> AckResult:
        return await self._call(lambda queue: queue.ack(epoch, seq))

    async def replace_with_gap(
        self, position: int, reason: str, gap_thing: str
    ) -> QueuedUpdate | None:
        self._recent.pop(position, None)
        return await self._call(lambda queue: queue.replace_with_gap(position, reason, gap_thing))

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        return await self._call(lambda queue: queue.dead_letters(limit))

    async def close(self) -> None:
        def close_queue() -> None:
            if self._queue is not None:
                self._queue.close()

        await asyncio.get_running_loop().run_in_executor(self._executor, close_queue)
        self._executor.shutdown(wait=True)
