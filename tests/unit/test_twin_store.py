"""The twin store: revisions, stale source times, desired status, sequence dedupe and acks,
and that all of it survives closing and reopening the SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from spine_runtime.twin.state import FAILED, PENDING, REACHED, Change, Origin, parse_time
from spine_runtime.twin.store import (
    EPOCHS_KEPT,
    MAX_SEQUENCE_WINDOW,
    SequenceTracker,
    ThingSpec,
    TwinStore,
)

NOW = parse_time("2026-11-22T19:45:00Z")
SPECS = [
    ThingSpec(
        "plant_a:press-1",
        "press-1",
        "press",
        "press:1.2.0",
        {"line": "A"},
        ["temperature", "targetSpeed"],
    ),
    ThingSpec(
        "plant_a:press-2",
        "press-2",
        "press",
        "press:1.2.0",
        {"line": "B"},
        ["temperature", "targetSpeed"],
    ),
]


def open_store(path: Path, specs: list[ThingSpec] = SPECS) -> TwinStore:
    store = TwinStore(path / "twin.db")
    store.open()
    store.sync_things(specs, NOW)
    return store


def commit(store: TwinStore) -> list[tuple[str, str, int]]:
    batch = store.take_batch()
    store.write(batch)
    return batch.acks


def from_gateway(seq: int, epoch: str = "e1", source_time: str | None = None) -> Origin:
    return Origin(
        gateway="gw1",
        epoch=epoch,
        seq=seq,
        source_time=source_time,
        source_epoch=parse_time(source_time) if source_time else None,
    )


@pytest.fixture
def store(tmp_path: Path):
    opened = open_store(tmp_path)
    yield opened
    opened.close()


def test_revisions_count_accepted_updates(store: TwinStore) -> None:
    thing = store.things["plant_a:press-1"]
    assert thing.revision == 1
    first = store.apply(thing, [Change("temperature", 20.5)], Origin(), NOW)
    assert first is not None and first.revision == 2
    second = store.apply(
        thing, [Change("temperature", 21), Change("targetSpeed", 3)], Origin(), NOW + 1
    )
    assert second is not None and second.revision == 3  # one update, one revision
    assert second.events == [
        ("/features/temperature/properties/value", 21),
        ("/features/targetSpeed/properties/value", 3),
    ]
    assert thing.features["temperature"]["properties"] == {
        "value": 21,
        "timestamp": "2026-11-22T19:45:01.000Z",
    }
    assert thing.modified == "2026-11-22T19:45:01.000Z"
    assert second.partial()["features"]["targetSpeed"]["properties"]["value"] == 3


def test_an_older_source_time_does_not_overwrite(store: TwinStore) -> None:
    thing = store.things["plant_a:press-1"]
    newer = Origin(source_time="2026-11-22T19:45:02Z", source_epoch=NOW + 2)
    older = Origin(source_time="2026-11-22T19:45:01Z", source_epoch=NOW + 1)
    assert store.apply(thing, [Change("temperature", 30)], newer, NOW) is not None
    assert store.apply(thing, [Change("temperature", 10)], older, NOW) is None  # stale
    assert thing.features["temperature"]["properties"]["value"] == 30
    assert thing.features["temperature"]["properties"]["sourceTime"] == "2026-11-22T19:45:02Z"
    assert thing.revision == 2
    # one property stale, the other new: only the new one lands
    mixed = store.apply(thing, [Change("temperature", 11), Change("targetSpeed", 5)], older, NOW)
    assert mixed is not None and [path for path, _ in mixed.events] == [
        "/features/targetSpeed/properties/value"
    ]
    # the same source time is not older: it applies
    assert store.apply(thing, [Change("temperature", 31)], newer, NOW) is not None
    # a write without a source time (HTTP) always applies and drops the source time
    assert store.apply(thing, [Change("temperature", 5)], Origin(), NOW) is not None
    assert "sourceTime" not in thing.features["temperature"]["properties"]
    assert store.apply(thing, [Change("temperature", 6)], older, NOW) is not None


def test_sequence_tracker_acknowledges_only_a_gapless_prefix() -> None:
    tracker = SequenceTracker()
    assert tracker.record(1) and tracker.acked == 1
    assert not tracker.record(3) and tracker.acked == 1  # gap at 2
    assert not tracker.record(4) and tracker.above == {3, 4}
    assert tracker.seen(3) and not tracker.seen(2) and not tracker.seen(5)
    assert tracker.record(2) and tracker.acked == 4 and tracker.above == set()
    assert not tracker.record(2)  # already processed
    assert tracker.too_far_ahead(4 + MAX_SEQUENCE_WINDOW + 1)
    assert not tracker.too_far_ahead(4 + MAX_SEQUENCE_WINDOW)


def test_duplicates_are_recognised_and_their_ack_repeated(store: TwinStore) -> None:
    thing = store.things["plant_a:press-1"]
    for seq in (1, 2, 4):
        assert not store.is_duplicate(from_gateway(seq))
        store.apply(thing, [Change("temperature", seq)], from_gateway(seq), NOW)
    assert commit(store) == [("gw1", "e1", 2)]  # 4 waits for 3
    assert store.is_duplicate(from_gateway(2))
    assert store.is_duplicate(from_gateway(4))
    assert not store.is_duplicate(from_gateway(3))
    assert not store.is_duplicate(from_gateway(1, epoch="e2"))  # a new epoch starts afresh
    # a duplicate changes nothing but makes the next batch repeat the ack
    assert commit(store) == [("gw1", "e1", 2)]
    # a rejected update counts as processed
    store.record_processed(from_gateway(3), NOW)
    assert commit(store) == [("gw1", "e1", 4)]
    assert thing.revision == 4  # created + three stored updates
    assert commit(store) == []  # nothing new, nothing to announce


def test_old_epochs_are_forgotten(store: TwinStore) -> None:
    for index in range(EPOCHS_KEPT + 2):
        store.record_processed(from_gateway(1, epoch=f"e{index}"), NOW + index)
    epochs = sorted(epoch for gateway, epoch in store.sequences if gateway == "gw1")
    assert epochs == [f"e{index}" for index in range(2, EPOCHS_KEPT + 2)]
    batch = store.take_batch()
    assert ("gw1", "e0") in batch.dropped_sequences
    store.write(batch)


def test_epochs_are_kept_per_gateway_and_survive_reopening(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    for gateway in ("gw1", "gw2"):
        for index in range(EPOCHS_KEPT + 1):
            store.record_processed(Origin(gateway=gateway, epoch=f"e{index}", seq=1), NOW + index)
    assert store.tracked_gateways() == 2 and store.tracks("gw1") and not store.tracks("gw3")
    assert store.epochs_of["gw2"] == {f"e{index}" for index in range(1, EPOCHS_KEPT + 1)}
    assert len(store.sequences) == 2 * EPOCHS_KEPT  # the index and the trackers agree
    commit(store)
    store.close()
    reopened = open_store(tmp_path)
    assert reopened.epochs_of == store.epochs_of
    reopened.close()


def test_a_held_source_time_beyond_the_limit_does_not_hold_values_back(store: TwinStore) -> None:
    """A source time stored before the clock-skew bound existed (or with a wrong limit) would
    make every later value stale until that time; past the limit it no longer counts."""
    thing = store.things["plant_a:press-1"]
    future = Origin(source_time="2027-11-22T19:45:00Z", source_epoch=NOW + 365 * 86400)
    assert store.apply(thing, [Change("temperature", 99)], future, NOW) is not None
    real = Origin(source_time="2026-11-22T19:45:01Z", source_epoch=NOW + 1)
    assert store.apply(thing, [Change("temperature", 20)], real, NOW + 1) is None  # no limit
    applied = store.apply(thing, [Change("temperature", 21)], real, NOW + 1, NOW + 31)
    assert applied is not None
    assert thing.features["temperature"]["properties"]["sourceTime"] == "2026-11-22T19:45:01Z"
    older = Origin(source_time="2026-11-22T19:45:00Z", source_epoch=NOW)
    assert store.apply(thing, [Change("temperature", 22)], older, NOW + 2, NOW + 32) is None


def test_desired_values_go_pending_reached_and_failed(store: TwinStore) -> None:
    thing = store.things["plant_a:press-1"]
    key = ("plant_a:press-1", "targetSpeed")
    outcome = store.apply(
        thing, [Change("targetSpeed", 40, desired=True)], Origin(correlation_id="c1"), NOW
    )
    assert outcome is not None and outcome.desired_commands == [("targetSpeed", 40, "c1")]
    assert thing.desired_of("targetSpeed") == {
        "value": 40,
        "status": PENDING,
        "since": "2026-11-22T19:45:00.000Z",
    }
    assert store.pending_desired == {key: NOW}
    store.apply(thing, [Change("targetSpeed", 35)], Origin(), NOW + 1)  # not there yet
    assert thing.desired_of("targetSpeed")["status"] == PENDING
    reached = store.apply(thing, [Change("targetSpeed", 40.0)], Origin(), NOW + 2)
    assert reached is not None
    assert thing.desired_of("targetSpeed")["status"] == REACHED
    assert (
        "/features/targetSpeed/desiredProperties",
        thing.desired_of("targetSpeed"),
    ) in reached.events
    assert store.pending_desired == {}

    store.apply(thing, [Change("targetSpeed", 50, desired=True)], Origin(), NOW + 3)
    assert store.expired_desired(NOW + 4, timeout=5) == []
    assert store.expired_desired(NOW + 8, timeout=5) == [key]
    failed = store.fail_desired(*key, NOW + 8, timeout=5)
    assert failed is not None
    assert thing.desired_of("targetSpeed")["status"] == FAILED
    assert "within 5 s" in thing.desired_of("targetSpeed")["reason"]
    assert store.pending_desired == {} and store.failed_desired == {key}
    # a late matching report still reaches it
    store.apply(thing, [Change("targetSpeed", 50)], Origin(), NOW + 9)
    assert thing.desired_of("targetSpeed")["status"] == REACHED
    assert store.failed_desired == set()
    # a desired value equal to the reported one is reached at once; clearing removes it
    store.apply(thing, [Change("targetSpeed", 50, desired=True)], Origin(), NOW + 10)
    assert thing.desired_of("targetSpeed")["status"] == REACHED
    store.apply(thing, [Change("targetSpeed", desired=True, clear=True)], Origin(), NOW + 11)
    assert thing.desired_of("targetSpeed") is None


def test_everything_survives_reopening(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    thing = store.things["plant_a:press-1"]
    store.apply(
        thing, [Change("temperature", 20)], from_gateway(1, source_time="2026-11-22T19:45:05Z"), NOW
    )
    store.apply(thing, [Change("targetSpeed", 40, desired=True)], Origin(), NOW)
    store.record_processed(from_gateway(3), NOW)
    commit(store)
    created = thing.created
    store.apply(thing, [Change("temperature", 99)], Origin(), NOW)  # never committed
    store.close()

    reopened = open_store(tmp_path)
    again = reopened.things["plant_a:press-1"]
    assert again.revision == 3 and again.created == created
    assert again.features["temperature"]["properties"]["value"] == 20
    assert again.desired_of("targetSpeed")["status"] == PENDING
    assert reopened.pending_desired == {("plant_a:press-1", "targetSpeed"): NOW}
    tracker = reopened.sequences["gw1", "e1"]
    assert tracker.acked == 1 and tracker.above == {3}
    assert reopened.is_duplicate(from_gateway(3))
    # the source time came back too: an older update is still stale
    stale = from_gateway(4, source_time="2026-11-22T19:45:04Z")
    assert reopened.apply(again, [Change("temperature", 1)], stale, NOW) is None
    reopened.close()


def test_a_thing_removed_from_the_config_keeps_its_state(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.apply(store.things["plant_a:press-2"], [Change("temperature", 7)], Origin(), NOW)
    store.sync_things(SPECS[:1], NOW)  # removed before its change was committed
    assert "plant_a:press-2" not in store.things
    commit(store)
    store.sync_things(SPECS, NOW)
    assert store.things["plant_a:press-2"].features["temperature"]["properties"]["value"] == 7
    store.close()
    reopened = open_store(tmp_path, SPECS[:1])
    reopened.sync_things(SPECS, NOW)
    assert reopened.things["plant_a:press-2"].features["temperature"]["properties"]["value"] == 7
    reopened.close()


def test_a_model_change_keeps_values_of_remaining_properties(store: TwinStore) -> None:
    thing = store.things["plant_a:press-1"]
    store.apply(thing, [Change("temperature", 20), Change("targetSpeed", 3)], Origin(), NOW)
    changed = ThingSpec(
        "plant_a:press-1",
        "press-1",
        "press",
        "press:1.3.0",
        {"line": "A"},
        ["temperature", "pressure"],
    )
    store.sync_things([changed, SPECS[1]], NOW)
    assert thing.definition == "press:1.3.0"
    assert thing.features == {
        "temperature": {"properties": {"value": 20, "timestamp": "2026-11-22T19:45:00.000Z"}},
        "pressure": {"properties": {}},
    }
