"""One thing's state in memory, and how a validated change lands on it.

Pure logic, no I/O: the store (`store.py`) owns the things and persists them; the service calls
`apply_changes` for updates from MQTT and HTTP alike. The JSON layout of a thing (reported value
with its metadata in `properties`, the desired one with its status in `desiredProperties`) is
defined here and documented in the README.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

PENDING, REACHED, FAILED = "pending", "reached", "failed"


def format_time(epoch: float) -> str:
    """RFC 3339 UTC with milliseconds, as Ditto writes `_modified`."""
    whole = int(epoch)
    millis = int((epoch - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def parse_time(text: str) -> float:
    """Epoch seconds of an RFC 3339 time with a zone; ValueError otherwise."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("a time zone is required, e.g. 2026-11-22T19:45:01.123Z")
    return moment.timestamp()


def utc_now() -> float:
    return datetime.now(UTC).timestamp()


def json_equal(left: Any, right: Any) -> bool:
    """Equality of JSON values: 40 equals 40.0, but true is not 1 (Python says it is)."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, dict):
        return (
            isinstance(right, dict)
            and left.keys() == right.keys()
            and all(json_equal(value, right[key]) for key, value in left.items())
        )
    if isinstance(left, list):
        return (
            isinstance(right, list)
            and len(left) == len(right)
            and all(json_equal(a, b) for a, b in zip(left, right, strict=True))
        )
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    return type(left) is type(right) and left == right


@dataclass(slots=True)
class Change:
    """Set a feature's reported (`desired=False`) or desired value; `clear` drops a desired one."""

    feature: str
    value: Any = None
    desired: bool = False
    clear: bool = False

    @property
    def path(self) -> str:
        kind = "desiredProperties" if self.desired else "properties"
        return f"/features/{self.feature}/{kind}/value"


@dataclass(slots=True)
class Origin:
    """Where an update came from: a gateway's numbered update, or anyone else."""

    gateway: str | None = None
    epoch: str | None = None
    seq: int | None = None
    source_time: str | None = None
    source_epoch: float | None = None
    correlation_id: str | None = None


@dataclass(slots=True)
class Outcome:
    """What one accepted update did: the new revision, Ditto events, and the changed part."""

    thing_id: str
    revision: int
    modified: str
    events: list[tuple[str, Any]] = field(default_factory=list)  # (path, value)
    partial_features: dict[str, dict[str, Any]] = field(default_factory=dict)
    desired_commands: list[tuple[str, Any, str]] = field(default_factory=list)
    created_paths: int = 0  # how many written values did not exist before (HTTP 201 vs 204)

    def partial(self) -> dict[str, Any]:
        """The thing JSON of what changed, as sent on the SSE stream."""
        return {
            "thingId": self.thing_id,
            "_revision": self.revision,
            "_modified": self.modified,
            "features": self.partial_features,
        }


class Thing:
    """A thing: static parts from the config, features (reported + desired) from updates."""

    __slots__ = (
        "attributes",
        "created",
        "definition",
        "features",
        "model_name",
        "modified",
        "name",
        "revision",
        "source_epochs",
        "thing_id",
    )

    def __init__(
        self,
        thing_id: str,
        name: str,
        model_name: str,
        definition: str,
        attributes: dict[str, Any],
        created: str,
    ) -> None:
        self.thing_id = thing_id
        self.name = name
        self.model_name = model_name
        self.definition = definition
        self.attributes = attributes
        self.features: dict[str, dict[str, Any]] = {}
        self.revision = 1
        self.created = created
        self.modified = created
        # Parsed `sourceTime` per feature, so the staleness check does not parse it each time.
        self.source_epochs: dict[str, float] = {}

    def document(self) -> dict[str, Any]:
        """The Ditto thing JSON. Nested dicts are shared: serialise it, do not change it."""
        return {
            "thingId": self.thing_id,
            "definition": self.definition,
            "attributes": self.attributes,
            "features": self.features,
        }

    def document_with_meta(self) -> dict[str, Any]:
        """The thing JSON plus Ditto's `_revision`, `_modified` and `_created`."""
        document = self.document()
        document["_revision"] = self.revision
        document["_modified"] = self.modified
        document["_created"] = self.created
        return document

    def ensure_features(self, names: list[str]) -> None:
        """Each model property is a feature, present before any value was reported; features of
        properties the model no longer has are dropped."""
        for name in names:
            self.features.setdefault(name, {"properties": {}})
        for name in [name for name in self.features if name not in names]:
            del self.features[name]
            self.source_epochs.pop(name, None)

    def restore(self, revision: int, created: str, modified: str, features: dict[str, Any]) -> None:
        self.revision, self.created, self.modified = revision, created, modified
        for name, feature in features.items():
            if name in self.features and isinstance(feature, dict):
                self.features[name] = feature
                source = feature.get("properties", {}).get("sourceTime")
                if isinstance(source, str):
                    with contextlib.suppress(ValueError):
                        self.source_epochs[name] = parse_time(source)

    def desired_of(self, feature: str) -> dict[str, Any] | None:
        entry = self.features.get(feature)
        return None if entry is None else entry.get("desiredProperties")


def apply_changes(
    thing: Thing,
    changes: list[Change],
    origin: Origin,
    now: float,
    source_time_limit: float | None = None,
) -> Outcome | None:
    """Apply validated changes; None if every one was stale (nothing changed).

    Values are replaced, never changed in place, so an outcome may share them with the thing
    until it has been sent.

    A reported value whose source time is older than the one held is stale and skipped, so a
    replayed or late message never turns a value back (docs/protocol.md). A held source time
    beyond `source_time_limit` (now plus the clock skew allowed; one stored before that bound
    existed) does not count, so it cannot hold a value back. A reported value equal to a
    pending or failed desired one marks that desired value reached.
    """
    stamp = format_time(now)
    applied: list[tuple[Change, bool]] = []  # (change, value existed before)
    for change in changes:
        entry = thing.features[change.feature]
        if change.desired:
            existed = "desiredProperties" in entry
            if change.clear:
                if not existed:
                    continue
                del entry["desiredProperties"]
            else:
                reported = entry["properties"]
                reached = "value" in reported and json_equal(reported["value"], change.value)
                desired: dict[str, Any] = {
                    "value": change.value,
                    "status": REACHED if reached else PENDING,
                    "since": stamp,
                }
                entry["desiredProperties"] = desired
            applied.append((change, existed))
            continue
        held = thing.source_epochs.get(change.feature)
        if (
            origin.source_epoch is not None
            and held is not None
            and origin.source_epoch < held
            and (source_time_limit is None or held <= source_time_limit)
        ):
            continue
        properties = entry["properties"]
        existed = "value" in properties
        updated: dict[str, Any] = {"value": change.value, "timestamp": stamp}
        if origin.source_time is not None and origin.source_epoch is not None:
            updated["sourceTime"] = origin.source_time
            thing.source_epochs[change.feature] = origin.source_epoch
        else:
            thing.source_epochs.pop(change.feature, None)
        entry["properties"] = updated
        applied.append((change, existed))
    if not applied:
        return None
    thing.revision += 1
    thing.modified = stamp
    outcome = Outcome(thing.thing_id, thing.revision, stamp)
    for change, existed in applied:
        entry = thing.features[change.feature]
        partial = outcome.partial_features.setdefault(change.feature, {})
        if not existed:
            outcome.created_paths += 1
        if change.desired:
            desired_entry = entry.get("desiredProperties")
            outcome.events.append((f"/features/{change.feature}/desiredProperties", desired_entry))
            partial["desiredProperties"] = desired_entry
            if desired_entry is not None:
                outcome.desired_commands.append(
                    (change.feature, change.value, origin.correlation_id or "")
                )
            continue
        outcome.events.append((change.path, change.value))
        partial["properties"] = entry["properties"]
        desired_entry = entry.get("desiredProperties")
        if (
            desired_entry is not None
            and desired_entry.get("status") != REACHED
            and json_equal(desired_entry.get("value"), change.value)
        ):
            reached_entry = {"value": desired_entry["value"], "status": REACHED, "since": stamp}
            entry["desiredProperties"] = reached_entry
            outcome.events.append((f"/features/{change.feature}/desiredProperties", reached_entry))
            partial["desiredProperties"] = reached_entry
    return outcome


def fail_desired(thing: Thing, feature: str, now: float, timeout: float) -> Outcome | None:
    """Mark a pending desired value failed: no matching reported value came in time."""
    entry = thing.features.get(feature)
    desired = None if entry is None else entry.get("desiredProperties")
    if entry is None or desired is None or desired.get("status") != PENDING:
        return None
    stamp = format_time(now)
    failed = {
        "value": desired.get("value"),
        "status": FAILED,
        "since": stamp,
        "reason": f"no matching reported value within {timeout:g} s",
    }
    entry["desiredProperties"] = failed
    thing.revision += 1
    thing.modified = stamp
    outcome = Outcome(thing.thing_id, thing.revision, stamp)
    outcome.events.append((f"/features/{feature}/desiredProperties", failed))
    outcome.partial_features[feature] = {"desiredProperties": failed}
    return outcome
