"""The MQTT side of docs/protocol.md: read Ditto Protocol updates, write events, commands, acks.

The service reads each message on `spine/things/<thing>/twin` and on a gateway's
`spine/gateways/<gateway>/things/<thing>/twin` (`twin_route`) with `read_origin` and
`read_changes`; `changes_at` (a Ditto path and value into changes) is shared with the HTTP API,
so both accept the same shapes. The builders produce the payloads the twin publishes.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from spine_runtime.twin.state import Change, Origin, parse_time
from spine_runtime.twin.validation import Rejection

THINGS_PREFIX = "spine/things/"
TWIN_SUBSCRIPTION = "spine/things/+/twin"
# A gateway publishes on a topic that names it, and the broker's ACL lets each gateway login
# publish only below its own name: so the name the twin reads from the topic is authenticated,
# unlike a header, which any publisher can write.
GATEWAY_TWIN_SUBSCRIPTION = "spine/gateways/+/things/+/twin"
TWIN_SUBSCRIPTIONS = (TWIN_SUBSCRIPTION, GATEWAY_TWIN_SUBSCRIPTION)
SEQUENCE_HEADERS = ("spine-gateway", "spine-epoch", "spine-seq")
COMMANDS = ("modify", "merge")
# Keys the twin writes beside `value`; a client may send them back (a PUT of what it read), and
# they are ignored rather than refused.
PROPERTY_METADATA = frozenset({"timestamp", "sourceTime"})
DESIRED_METADATA = frozenset({"status", "since", "reason"})
# A gateway name becomes a topic level of its ack topic and an epoch is echoed in the ack.
GATEWAY_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,253}")
EPOCH_PATTERN = re.compile(r"[\x21-\x7e]{1,128}")
MAX_ECHOED_CHARS = 65_536
# Deeper values are refused: comparing and serialising them would recurse without bound.
MAX_VALUE_DEPTH = 32


def thing_topic(name: str, channel: str) -> str:
    return f"{THINGS_PREFIX}{name}/{channel}"


def ack_topic(gateway: str) -> str:
    return f"spine/gateways/{gateway}/acks"


def gateway_twin_topic(gateway: str, thing: str) -> str:
    return f"spine/gateways/{gateway}/things/{thing}/twin"


def thing_name_of(topic: str) -> str | None:
    """`press-1` for `spine/things/press-1/twin` and for
    `spine/gateways/<gateway>/things/press-1/twin`; None for anything else."""
    route = twin_route(topic)
    return None if route is None else route[1]


def twin_route(topic: str) -> tuple[str | None, str] | None:
    """(gateway or None, thing) of an update's topic; None if it is not an update topic.

    The gateway is taken from the topic only (the broker enforces who may publish there); a
    name that is not a gateway name counts as no update topic.
    """
    parts = topic.split("/")
    if len(parts) == 4 and parts[0] == "spine" and parts[1] == "things" and parts[3] == "twin":
        return (None, parts[2]) if parts[2] else None
    if (
        len(parts) == 6
        and parts[0] == "spine"
        and parts[1] == "gateways"
        and parts[3] == "things"
        and parts[5] == "twin"
        and parts[4]
        and GATEWAY_PATTERN.fullmatch(parts[2])
    ):
        return parts[2], parts[4]
    return None


def read_origin(document: dict[str, Any], gateway: str | None = None) -> Origin:
    """The `spine-*` and correlation headers of an update that came on the topic of `gateway`
    (None: the plain thing topic, whose publishers get no sequence numbers)."""
    headers = document.get("headers", {})
    if headers is None:
        headers = {}
    if not isinstance(headers, dict):
        raise Rejection("headers must be a JSON object", field="/headers")
    origin = Origin()
    correlation = headers.get("correlation-id")
    if isinstance(correlation, str):
        origin.correlation_id = correlation[:256]
    source_time = headers.get("spine-source-time")
    if source_time is not None:
        if not isinstance(source_time, str) or len(source_time) > 64:
            raise Rejection(
                "spine-source-time must be an RFC 3339 time", field="/headers/spine-source-time"
            )
        try:
            origin.source_epoch = parse_time(source_time)
        except ValueError as error:
            raise Rejection(
                f"spine-source-time {source_time!r} is not an RFC 3339 time: {error}",
                field="/headers/spine-source-time",
            ) from None
        origin.source_time = source_time
    if gateway is None:
        for name in SEQUENCE_HEADERS:
            if name in headers:
                raise Rejection(
                    f"{name} is honoured only on a gateway's own topic, "
                    "spine/gateways/<gateway>/things/<thing>/twin, where the broker vouches "
                    "for the gateway; updates on spine/things/<thing>/twin get no sequence "
                    "numbers or acks",
                    field=f"/headers/{name}",
                )
        return origin
    claimed = headers.get("spine-gateway")
    if claimed is not None and claimed != gateway:
        raise Rejection(
            f"spine-gateway {str(claimed)[:100]!r} is not the gateway {gateway!r} whose topic "
            "the update came on",
            field="/headers/spine-gateway",
        )
    epoch = headers.get("spine-epoch")
    if not isinstance(epoch, str) or not EPOCH_PATTERN.fullmatch(epoch):
        raise Rejection(
            "spine-epoch must be a string of 1 to 128 printable characters on an "
            "update on a gateway's topic",
            field="/headers/spine-epoch",
        )
    seq = headers.get("spine-seq")
    if isinstance(seq, str) and seq.isdigit() and len(seq) < 19:
        seq = int(seq)
    if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq < 2**63:
        raise Rejection(
            "spine-seq must be a positive integer on an update on a gateway's topic",
            field="/headers/spine-seq",
        )
    origin.gateway, origin.epoch, origin.seq = gateway, epoch, seq
    return origin


def read_changes(
    document: dict[str, Any], namespace: str, thing_name: str, static: dict[str, Any] | None = None
) -> list[Change]:
    """The changes a `modify` or `merge` command for this thing asks for."""
    topic = document.get("topic")
    if not isinstance(topic, str):
        raise Rejection(
            f"topic is missing: expected {namespace}/{thing_name}/things/twin/commands/modify",
            field="/topic",
        )
    parts = topic.split("/")
    if len(parts) != 6 or parts[2:5] != ["things", "twin", "commands"] or parts[5] not in COMMANDS:
        raise Rejection(
            f"unsupported topic {topic[:200]!r}: expected "
            f"{namespace}/{thing_name}/things/twin/commands/modify or .../merge",
            field="/topic",
        )
    if parts[0] != namespace or parts[1] != thing_name:
        raise Rejection(
            f"topic {topic[:200]!r} names thing {parts[0]}/{parts[1]}, but the update "
            f"came on the topic of {namespace}/{thing_name}",
            field="/topic",
        )
    path = document.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise Rejection(
            "path must be a string starting with '/', e.g. /features/temperature/properties/value",
            field="/path",
        )
    if "value" not in document:
        raise Rejection("value is missing", field="/value")
    return changes_at(path, document["value"], merge=parts[5] == "merge", static=static)


def changes_at(
    path: str, value: Any, merge: bool, static: dict[str, Any] | None = None
) -> list[Change]:
    """The changes a Ditto `modify` (or `merge`) of `value` at `path` of a thing amounts to.

    Only feature values can change: the thing id, definition and attributes come from the
    TwinModel, so they may appear only with their current value (`static`).
    """
    stripped = path.strip("/")
    segments = stripped.split("/") if stripped else []
    if any(not segment for segment in segments) or len(path) > 1024:
        raise Rejection(f"malformed path {path[:200]!r}", field=path[:200])
    changes: list[Change] = []
    if not segments:
        _from_thing(value, changes, merge, static or {})
    elif segments[0] != "features":
        _refuse_static(segments[0], path)
    elif len(segments) == 1:
        _from_features(value, changes, merge)
    elif len(segments) == 2:
        _from_feature(segments[1], value, changes, merge)
    elif len(segments) == 3 and segments[2] in ("properties", "desiredProperties"):
        _from_properties(segments[1], segments[2] == "desiredProperties", value, changes, merge)
    elif (
        len(segments) == 4
        and segments[2] in ("properties", "desiredProperties")
        and segments[3] == "value"
    ):
        _from_value(segments[1], segments[2] == "desiredProperties", value, changes, merge)
    else:
        raise Rejection(
            f"unsupported path {path[:200]!r}: a feature's value is written at "
            "/features/<name>/properties/value or /features/<name>/desiredProperties/value",
            field=path[:200],
        )
    if not changes:
        raise Rejection("the update sets no property value", field=path[:200])
    return changes


def _refuse_static(key: str, path: str) -> None:
    if key in ("attributes", "definition", "thingId", "policyId"):
        raise Rejection(
            f"{key} is defined by the TwinModel and cannot be changed here",
            field=f"/{key}",
            status=403,
        )
    raise Rejection(f"unsupported path {path[:200]!r}", field=path[:200])


def _from_thing(value: Any, changes: list[Change], merge: bool, static: dict[str, Any]) -> None:
    if not isinstance(value, dict):
        raise Rejection("a thing must be a JSON object", field="/")
    for key, member in value.items():
        if key == "features":
            _from_features(member, changes, merge)
        elif key.startswith("_"):
            continue  # _revision, _modified, _created: read-only metadata a client read
        elif key not in static or static[key] != member:
            _refuse_static(key, f"/{key}")


def _from_features(value: Any, changes: list[Change], merge: bool) -> None:
    if not isinstance(value, dict):
        raise Rejection("features must be a JSON object", field="/features")
    for feature, member in value.items():
        _from_feature(feature, member, changes, merge)


def _from_feature(feature: str, value: Any, changes: list[Change], merge: bool) -> None:
    field = f"/features/{feature}"
    if not isinstance(value, dict):
        raise Rejection(
            "a feature must be a JSON object with properties or desiredProperties", field=field
        )
    for key, member in value.items():
        if key in ("properties", "desiredProperties"):
            _from_properties(feature, key == "desiredProperties", member, changes, merge)
        else:
            raise Rejection(
                f"only properties and desiredProperties of a feature can be written, "
                f"not {key[:100]!r}",
                field=f"{field}/{key[:100]}",
            )


def _from_properties(
    feature: str, desired: bool, value: Any, changes: list[Change], merge: bool
) -> None:
    kind = "desiredProperties" if desired else "properties"
    field = f"/features/{feature}/{kind}"
    if value is None and desired and merge:
        changes.append(Change(feature, desired=True, clear=True))
        return
    if not isinstance(value, dict):
        raise Rejection(f'{kind} must be a JSON object such as {{"value": 42}}', field=field)
    allowed = DESIRED_METADATA if desired else PROPERTY_METADATA
    for key in value:
        if key != "value" and key not in allowed:
            raise Rejection(
                f"{kind} holds only value (and the twin's metadata), not {key[:100]!r}",
                field=f"{field}/{key[:100]}",
            )
    if "value" in value:
        _from_value(feature, desired, value["value"], changes, merge)
    elif not merge:
        raise Rejection(f"{kind} needs a value", field=f"{field}/value")


def _from_value(
    feature: str, desired: bool, value: Any, changes: list[Change], merge: bool
) -> None:
    if value is None and desired and merge:
        changes.append(Change(feature, desired=True, clear=True))
        return
    if isinstance(value, dict | list) and nested_deeper_than(value, MAX_VALUE_DEPTH):
        kind = "desiredProperties" if desired else "properties"
        raise Rejection(
            f"the value is nested more than {MAX_VALUE_DEPTH} levels deep",
            field=f"/features/{feature}/{kind}/value",
        )
    changes.append(Change(feature, value, desired=desired))


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether a JSON value nests deeper than `limit`; without recursion, so any depth is safe."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


# what the twin publishes -------------------------------------------------------------------------


def event_message(
    namespace: str, thing_name: str, path: str, value: Any, revision: int, timestamp: str
) -> bytes:
    return orjson.dumps(
        {
            "topic": f"{namespace}/{thing_name}/things/twin/events/modified",
            "path": path,
            "value": value,
            "revision": revision,
            "timestamp": timestamp,
        }
    )


def merged_event_message(
    namespace: str,
    thing_name: str,
    changes: list[tuple[str, Any]],
    revision: int,
    timestamp: str,
) -> bytes:
    """One Ditto `merged` event for every path one update changed: Ditto announces a merge
    command this way, and one message instead of one per value halves the cost of a gateway's
    multi-value update. The value is a JSON merge patch below `/features` (a `None` withdraws)."""
    patch: dict[str, Any] = {}
    for path, value in changes:
        node = patch
        *parents, leaf = path.removeprefix("/features/").split("/")
        for segment in parents:
            node = node.setdefault(segment, {})
        node[leaf] = value
    return orjson.dumps(
        {
            "topic": f"{namespace}/{thing_name}/things/twin/events/merged",
            "path": "/features",
            "value": patch,
            "headers": {"content-type": "application/merge-patch+json"},
            "revision": revision,
            "timestamp": timestamp,
        }
    )


def desired_message(
    namespace: str, thing_name: str, feature: str, value: Any, correlation_id: str
) -> bytes:
    return orjson.dumps(
        {
            "topic": f"{namespace}/{thing_name}/things/twin/commands/modify",
            "path": f"/features/{feature}/desiredProperties/value",
            "value": value,
            "headers": {"correlation-id": correlation_id},
        }
    )


def error_message(
    thing_id: str, rejection: Rejection, payload: bytes, document: Any = None
) -> bytes:
    """The errors-topic message: the rejected payload as received (a string if not JSON)."""
    message: dict[str, Any] = {
        "thingId": thing_id,
        "status": rejection.status,
        "field": rejection.field,
        "reason": rejection.reason,
    }
    if len(payload) > MAX_ECHOED_CHARS:
        message["truncated"] = True
    elif document is not None:
        try:
            return orjson.dumps({**message, "message": document})
        except TypeError:
            pass  # nested too deep for the encoder (orjson raises a TypeError): echo the text
    message["message"] = payload[:MAX_ECHOED_CHARS].decode("utf-8", errors="replace")
    return orjson.dumps(message)


def ack_message(gateway: str, epoch: str, seq: int) -> bytes:
    return orjson.dumps({"gateway": gateway, "epoch": epoch, "seq": seq})
