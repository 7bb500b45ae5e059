"""The disk queue: bounded, drops the oldest (counted), survives reopening, replays in order,
forgets what an ack covers, and renumbers after a drop so the twin's acks can advance."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from spine_runtime.gateway.queue import AsyncDiskQueue, DiskQueue, NewUpdate


def update(n: int) -> NewUpdate:
    return NewUpdate(
        "press-1", f'{{"counter":{{"properties":{{"value":{n}}}}}}}', "2026-01-01T00:00:00.000Z"
    )


def counters(queue: DiskQueue, after: int = 0, limit: int = 1000) -> list[int]:
    return [int(u.features.split(":")[-1].rstrip("}")) for u in queue.read_after(after, limit)]


def test_updates_are_numbered_from_1_and_replayed_in_order(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path, max_messages=100, max_bytes=10**6)
    queue.append([update(n) for n in range(5)])
    queue.append([update(5)])
    batch = queue.read_after(0, 100)
    assert [u.seq for u in batch] == [1, 2, 3, 4, 5, 6]
    assert counters(queue) == [0, 1, 2, 3, 4, 5]
    assert [u.seq for u in queue.read_after(batch[2].position, 2)] == [4, 5]
    assert {u.epoch for u in batch} == {queue.epoch}


def test_an_ack_removes_what_it_covers_and_nothing_else(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path, max_messages=100, max_bytes=10**6)
    queue.append([update(n) for n in range(10)])
    result = queue.ack(queue.epoch, 4)
    assert (result.accepted, result.removed) == (True, 4)
    assert [u.seq for u in queue.read_after(0, 100)] == [5, 6, 7, 8, 9, 10]
    assert queue.stats().messages == 6
    assert queue.ack(queue.epoch, 3).removed == 0  # an older ack changes nothing
    assert not queue.ack("another-epoch", 10).accepted  # another epoch's ack is ignored
    assert not queue.ack(queue.epoch, 11).accepted  # beyond what was ever queued
    assert queue.stats().messages == 6
    queue.ack(queue.epoch, 10)
    stats = queue.stats()
    assert (stats.messages, stats.bytes, stats.acked_seq, stats.last_seq) == (0, 0, 10, 10)


def test_the_queue_survives_reopening_with_its_epoch_and_numbering(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path, max_messages=100, max_bytes=10**6)
    queue.append([update(n) for n in range(10)])
    queue.ack(queue.epoch, 3)
    epoch = queue.epoch
    queue.close()  # (a SIGKILL leaves the WAL behind; the integration tests cover that)

    reopened = DiskQueue(tmp_path, max_messages=100, max_bytes=10**6)
    assert reopened.epoch == epoch
    assert [u.seq for u in reopened.read_after(0, 100)] == [4, 5, 6, 7, 8, 9, 10]
    reopened.append([update(10)])
    assert reopened.read_after(0, 100)[-1].seq == 11
    reopened.ack(epoch, 11)
    reopened.close()
    # emptied and reopened: numbering goes on, it does not restart at 1
    again = DiskQueue(tmp_path, max_messages=100, max_bytes=10**6)
    again.append([update(11)])
    assert [u.seq for u in again.read_after(0, 10)] == [12]


def test_a_full_queue_drops_the_oldest_counts_them_and_starts_a_new_epoch(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path, max_messages=10, max_bytes=10**6)
    queue.append([update(n) for n in range(10)])
    first_epoch = queue.epoch
    assert queue.append([update(10)]) == 1
    assert counters(queue) == list(range(1, 11))
    stats = queue.stats()
    assert (stats.messages, stats.dropped_total) == (10, 1)
    # seq 1 of the new epoch is the oldest update kept: the twin's ack can advance again
    assert queue.epoch != first_epoch
    assert [u.seq for u in queue.read_after(0, 100)] == list(range(1, 11))
    assert queue.ack(queue.epoch, 10).removed == 10
    assert not queue.ack(first_epoch, 10).accepted


def test_a_large_queue_drops_one_percent_at_a_time(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path, max_messages=1000, max_bytes=10**8)
    queue.append([update(n) for n in range(1000)])
    assert queue.append([update(1000)]) == 11  # down to 99 % of the bound
    assert queue.stats().messages == 990
    assert queue.append([update(1001)]) == 0  # room again: no new epoch per update


def test_the_byte_bound_holds_too(tmp_path: Path) -> None:
    size = update(0).size
    queue = DiskQueue(tmp_path, max_messages=10**6, max_bytes=size * 5)
    queue.append([update(n) for n in range(5)])
    assert queue.stats().dropped_total == 0
    queue.append([update(5)])
    stats = queue.stats()
    assert stats.bytes <= size * 5 and stats.dropped_total >= 1
    assert counters(queue)[-1] == 5  # the newest is kept


def test_a_damaged_file_is_moved_aside_and_a_new_queue_starts(tmp_path: Path) -> None:
    (tmp_path / "queue.sqlite3").write_bytes(b"this is not a database" * 100)
    queue = DiskQueue(tmp_path, max_messages=10, max_bytes=10**6)
    queue.append([update(1)])
    assert [u.seq for u in queue.read_after(0, 10)] == [1]
    assert list(tmp_path.glob("queue.sqlite3.damaged-*"))


def test_stats_show_the_oldest_age(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path, max_messages=10, max_bytes=10**6)
    assert queue.stats().oldest_enqueued_at is None
    queue.append([update(1)], now=1000.0)
    queue.append([update(2)], now=2000.0)
    assert queue.stats().oldest_enqueued_at == 1000.0


def test_an_append_is_on_disk_when_it_returns(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path, max_messages=10, max_bytes=10**6)
    queue.append([update(1), update(2)])
    # another connection (another process would do the same) sees the committed rows
    other = sqlite3.connect(tmp_path / "queue.sqlite3")
    assert other.execute("SELECT COUNT(*) FROM updates").fetchone()[0] == 2
    other.close()


async def test_the_async_queue_runs_calls_in_order_off_the_event_loop(tmp_path: Path) -> None:
    queue = AsyncDiskQueue(tmp_path, max_messages=100, max_bytes=10**6, fsync=True)
    await queue.open()
    await asyncio.gather(*(queue.append([update(n)]) for n in range(20)))
    batch = await queue.read_after(0, 100)
    assert [u.seq for u in batch] == list(range(1, 21))
    await queue.ack(batch[0].epoch, 20)
    assert queue.stats is not None and queue.stats.messages == 0
    await queue.close()


def test_a_refused_update_becomes_a_bounded_dead_letter_and_its_seq_a_gap(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path, max_messages=100, max_bytes=10**6, max_dead_letters=3)
    queue.append([update(n) for n in range(6)])
    for seq in (2, 3, 4, 5):
        gap = queue.replace_with_gap(seq, "Not authorized (135)", "press-9", now=1000.0 + seq)
        assert gap is not None and (gap.seq, gap.thing, gap.features) == (seq, "press-9", "{}")
    # the seq stays, carrying no value, so the twin's ack can pass it
    assert [(u.seq, u.features) for u in queue.read_after(0, 100)][1:3] == [(2, "{}"), (3, "{}")]
    assert counters(queue, after=5) == [5]
    # a gap refused again only moves to another thing: no second dead letter
    assert queue.replace_with_gap(2, "Not authorized (135)", "press-8") is not None
    kept = queue.dead_letters(10)
    assert [(d.seq, d.thing) for d in kept] == [(5, "press-1"), (4, "press-1"), (3, "press-1")]
    assert kept[0].features == '{"counter":{"properties":{"value":4}}}'
    assert kept[0].reason == "Not authorized (135)"
    assert (queue.stats().dead_letters_total, queue.stats().dead_letters_kept) == (4, 3)
    queue.ack(queue.epoch, 6)
    assert queue.replace_with_gap(6, "gone", "press-9") is None  # acknowledged meanwhile
    queue.close()
    reopened = DiskQueue(tmp_path, max_messages=100, max_bytes=10**6, max_dead_letters=3)
    assert (reopened.stats().dead_letters_total, reopened.stats().dead_letters_kept) == (4, 3)


async def test_what_the_sender_reads_from_memory_is_what_is_on_disk(tmp_path: Path) -> None:
    queue = AsyncDiskQueue(tmp_path, max_messages=20, max_bytes=10**6, fsync=False)
    await queue.open()

    async def from_disk(after: int, limit: int = 1000) -> list:
        return await queue._call(lambda disk: disk.read_after(after, limit))

    for n in range(10):
        await queue.append([update(n)])
    assert await queue.read_after(0, 1000) == await from_disk(0)
    assert await queue.read_after(7, 2) == await from_disk(7, 2)
    assert await queue.read_after(10, 100) == []
    gap = await queue.replace_with_gap(4, "Not authorized (135)", "press-2")
    assert gap is not None
    assert (await queue.read_after(3, 1))[0].features == "{}"
    assert await queue.read_after(0, 1000) == await from_disk(0)
    # a full buffer drops the oldest and starts a new epoch: every seq changes
    for n in range(10, 25):
        await queue.append([update(n)])
    assert queue.stats is not None and queue.stats.dropped_total > 0
    after = queue.stats.acked_position
    assert await queue.read_after(after, 1000) == await from_disk(after)
    assert (await queue.read_after(after, 1))[0].seq == 1
    await queue.close()
