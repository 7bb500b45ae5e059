"""The gateway's side of docs/protocol.md: topics, twin updates, acks and desired commands.

The sender builds each update's payload at send time (its epoch and sequence number can change,
see queue.py); the MQTT link parses acks and desired commands. Pure functions, unit-tested.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from spine_runtime.gateway.values import JsonValue, UpdateDraft


def twin_topic(gateway: str, thing: str) -> str:
    """The gateway's own update topic: the broker lets only this gateway publish there, so the
    twin knows who sent an update (docs/protocol.md)."""
    return f"spine/gateways/{gateway}/things/{thing}/twin"


def desired_topic(thing: str) -> str:
    return f"spine/things/{thing}/desired"


def ack_topic(gateway: str) -> str:
    return f"spine/gateways/{gateway}/acks"


def features_json(draft: UpdateDraft) -> str:
    """The merge command's `value`: {"<property>": {"properties": {"value": ...}}, ...}."""
    value = {name: {"properties": {"value": item}} for name, item in draft.features.items()}
    # allow_nan=False: a NaN must have been caught before (values.py); never emit invalid JSON.
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def update_payload(
    *,
    namespace: str,
    thing: str,
    features: str,
    gateway: str,
    epoch: str,
    seq: int,
    source_time: str,
    gap: str | None = None,
) -> bytes:
    """A Ditto `merge` of several features of one thing, with the gateway's headers.

    `gap`: this seq's update was refused by the broker and is kept as a dead letter; the
    message carries no value, only the seq (so the twin's ack can pass it) and the reason.
    """
    headers: dict[str, Any] = {
        "content-type": "application/merge-patch+json",
        "correlation-id": f"{gateway}:{epoch}:{seq}",
        "spine-gateway": gateway,
        "spine-epoch": epoch,
        "spine-seq": seq,
        "spine-source-time": source_time,
    }
    if gap is not None:
        headers["spine-gap"] = gap
    # `features` is already JSON (stored that way in the disk queue): splice it in rather than
    # parse and re-encode it on every send.
    return (
        '{"topic":'
        + json.dumps(f"{namespace}/{thing}/things/twin/commands/merge")
        + ',"path":"/features","value":'
        + features
        + ',"headers":'
        + json.dumps(headers, separators=(",", ":"))
        + "}"
    ).encode()


@dataclass(frozen=True)
class Ack:
    gateway: str
    epoch: str
    seq: int


def parse_ack(payload: bytes) -> Ack:
    """An ack from the twin; raises ValueError on anything else."""
    data = json.loads(payload)
    if not isinstance(data, dict):
        raise ValueError("an ack must be a JSON object")
    gateway, epoch, seq = data.get("gateway"), data.get("epoch"), data.get("seq")
    if not isinstance(gateway, str) or not isinstance(epoch, str):
        raise ValueError("an ack needs string fields gateway and epoch")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ValueError("an ack needs a non-negative integer seq")
    return Ack(gateway, epoch, seq)


@dataclass(frozen=True)
class DesiredValue:
    thing: str
    property: str
    value: JsonValue
    correlation_id: str | None


def parse_desired(thing: str, namespace: str, payload: bytes) -> list[DesiredValue]:
    """Desired values in a Ditto modify (or merge) command; raises ValueError.

    Accepted forms: modify at /features/<p>/desiredProperties/value (the value itself) or at
    /features/<p>/desiredProperties ({"value": ...}), and merge at /features
    ({"<p>": {"desiredProperties": {"value": ...}}, ...}).
    """
    data: Any = json.loads(payload, parse_constant=_reject_constant)
    if not isinstance(data, dict):
        raise ValueError("a desired command must be a JSON object")
    topic, path = data.get("topic"), data.get("path")
    if not isinstance(topic, str) or not isinstance(path, str):
        raise ValueError("a desired command needs string fields topic and path")
    parts = topic.split("/")
    if len(parts) < 6 or parts[2:5] != ["things", "twin", "commands"]:
        raise ValueError(f"topic {topic!r} is not a Ditto twin command")
    if parts[0] != namespace or parts[1] != thing:
        raise ValueError(f"topic {topic!r} is not for thing {namespace}:{thing}")
    action = parts[5]
    headers = data.get("headers") if isinstance(data.get("headers"), dict) else {}
    correlation = headers.get("correlation-id") if isinstance(headers, dict) else None
    correlation_id = correlation if isinstance(correlation, str) else None
    if "value" not in data:
        raise ValueError("a desired command needs a value")
    value = data["value"]
    segments = path.strip("/").split("/")
    if (
        action == "modify"
        and len(segments) == 4
        and segments[0] == "features"
        and segments[2:] == ["desiredProperties", "value"]
    ):
        return [DesiredValue(thing, segments[1], value, correlation_id)]
    if (
        action == "modify"
        and len(segments) == 3
        and segments[0] == "features"
        and (segments[2] == "desiredProperties")
    ):
        if not isinstance(value, dict) or "value" not in value:
            raise ValueError("desiredProperties must be an object with a value")
        return [DesiredValue(thing, segments[1], value["value"], correlation_id)]
    if action == "merge" and segments == ["features"] and isinstance(value, dict):
        found = []
        for name, feature in value.items():
            desired = feature.get("desiredProperties") if isinstance(feature, dict) else None
            if isinstance(desired, dict) and "value" in desired:
                found.append(DesiredValue(thing, name, desired["value"], correlation_id))
        if not found:
            raise ValueError("the merge command carries no desired value")
        return found
    raise ValueError(f"{action} at {path!r} is not a desired-property command")


def _reject_constant(name: str) -> float:
    # Python's json accepts NaN and Infinity, which are not JSON: refuse them as values to write.
    raise ValueError(f"{name} is not a JSON value")


def is_finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
