"""The steps of a flow at run time: each takes a batch of (origin, message) pairs and returns
the pairs that go on; a message a step fails on goes to `fail(origin, message, reason)`.

Built from the validated config (`config.flow.Step`, whose expressions are compiled already)
by `build_step`. All but `call` are synchronous: a batch runs through them without yielding to
the event loop. `window` keeps state between batches and emits when a window closes.
"""

from __future__ import annotations

import asyncio
import copy
import math
import time
from collections.abc import Callable
from typing import Any

import orjson

from spine_runtime.config.flow import Step
from spine_runtime.flow.expressions import Expression, ExpressionError, truthy
from spine_runtime.flow.http import HttpClient, HttpFailure
from spine_runtime.flow.units import converter

# (origin, message); the origin is None for a message a window emitted. A step does not
# acknowledge anything: the runner completes an origin when nothing holds it any more.
Pair = tuple[Any, Any]
Fail = Callable[[Any, Any, str], None]


class StepError(Exception):
    """A message this step cannot handle; the reason goes to the dead letter."""


class StepRunner:
    """Counts what passed; subclasses implement `handle` (one message in, one or none out)."""

    is_async = False
    # Whether `flush` may emit (a window): the flow's tick then runs every TICK_SECONDS.
    flushes = False

    def __init__(self, step: Step, on_error: str, timeout: float) -> None:
        self.name = step.name
        self.kind = step.kind
        self.on_error = step.on_error or on_error
        self.timeout = timeout
        self.key = step.expression("key").with_timeout(timeout) if step.key else None
        self.max_keys = step.max_keys
        # key -> the message this step last passed on; insertion order drops the oldest.
        self.previous: dict[str, Any] = {}
        self.count_in = 0
        self.count_out = 0
        self.count_filtered = 0
        self.count_errors = 0

    def expression(self, step: Step, where: str) -> Expression:
        return step.expression(where).with_timeout(self.timeout)

    def run(self, pairs: list[Pair], fail: Fail) -> list[Pair]:
        if self.key is not None:
            return self._run_keyed(pairs, fail)
        out: list[Pair] = []
        handle = self.handle
        for origin, message in pairs:
            try:
                result = handle(message, None)
            except (StepError, ExpressionError) as error:
                self.count_errors += 1
                fail(origin, message, str(error))
                continue
            if result is None:
                self.count_filtered += 1
            else:
                out.append((origin, result))
        self.count_in += len(pairs)
        self.count_out += len(out)
        return out

    def _run_keyed(self, pairs: list[Pair], fail: Fail) -> list[Pair]:
        assert self.key is not None
        out: list[Pair] = []
        previous = self.previous
        for origin, message in pairs:
            try:
                key = self.key.evaluate(message)
                key = key if isinstance(key, str) else orjson.dumps(key).decode()
                before = previous.get(key)
                result = self.handle(message, {"previous": before} if before is not None else {})
            except (StepError, ExpressionError) as error:
                self.count_errors += 1
                fail(origin, message, str(error))
                continue
            if result is None:
                self.count_filtered += 1
                continue
            previous.pop(key, None)
            previous[key] = copy.deepcopy(result)
            if len(previous) > self.max_keys:
                del previous[next(iter(previous))]
            out.append((origin, result))
        self.count_in += len(pairs)
        self.count_out += len(out)
        return out

    def handle(self, message: Any, bindings: dict[str, Any] | None) -> Any:
        raise NotImplementedError

    async def run_async(self, pairs: list[Pair], fail: Fail) -> list[Pair]:
        raise NotImplementedError

    def flush(self, now: float, force: bool = False) -> list[Any]:
        return []

    async def close(self) -> None:
        return None


class ValidateRunner(StepRunner):
    def __init__(self, step: Step, on_error: str, timeout: float) -> None:
        super().__init__(step, on_error, timeout)
        assert step.validate_ is not None and step.validate_.json_schema is not None
        # Imported by the first validate step only: jsonschema and what it loads are ~4 MiB
        # of the engine's memory, which a namespace without validate steps does not need.
        import jsonschema

        self.validator = jsonschema.Draft202012Validator(step.validate_.json_schema)
        self.best_match = jsonschema.exceptions.best_match

    def handle(self, message: Any, bindings: dict[str, Any] | None) -> Any:
        error = self.best_match(self.validator.iter_errors(message))
        if error is not None:
            where = "/" + "/".join(str(part) for part in error.absolute_path)
            raise StepError(f"invalid at {where}: {error.message[:300]}")
        return message


class FilterRunner(StepRunner):
    def __init__(self, step: Step, on_error: str, timeout: float) -> None:
        super().__init__(step, on_error, timeout)
        self.test = self.expression(step, "expression")

    def handle(self, message: Any, bindings: dict[str, Any] | None) -> Any:
        return message if truthy(self.test.evaluate(message, bindings)) else None


class TransformRunner(StepRunner):
    """An undefined result (nothing matched) drops the message, counted as filtered."""

    def __init__(self, step: Step, on_error: str, timeout: float) -> None:
        super().__init__(step, on_error, timeout)
        self.transform = self.expression(step, "expression")

    def handle(self, message: Any, bindings: dict[str, Any] | None) -> Any:
        return self.transform.evaluate(message, bindings)


def _parent(message: Any, path: list[str], create: bool) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise StepError("the message is not a JSON object")
    node = message
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            if not create:
                raise KeyError(part)
            child = {}
            node[part] = child
        node = child
    return node


class SetRunner(StepRunner):
    def __init__(self, step: Step, on_error: str, timeout: float) -> None:
        super().__init__(step, on_error, timeout)
        self.fields = [
            (field.split("."), self.expression(step, f"set.{field}")) for field in step.set or {}
        ]

    def handle(self, message: Any, bindings: dict[str, Any] | None) -> Any:
        values = [
            (path, expression.evaluate(message, bindings)) for path, expression in self.fields
        ]
        for path, value in values:
            _parent(message, path, create=True)[path[-1]] = value
        return message


class RenameRunner(StepRunner):
    def __init__(self, step: Step, on_error: str, timeout: float) -> None:
        super().__init__(step, on_error, timeout)
        self.pairs = [(old.split("."), new.split(".")) for old, new in (step.rename or {}).items()]

    def handle(self, message: Any, bindings: dict[str, Any] | None) -> Any:
        for old, new in self.pairs:
            try:
                parent = _parent(message, old, create=False)
            except KeyError:
                continue
            if old[-1] in parent:
                value = parent.pop(old[-1])
                _parent(message, new, create=True)[new[-1]] = value
        return message


class RemoveRunner(StepRunner):
    def __init__(self, step: Step, on_error: str, timeout: float) -> None:
        super().__init__(step, on_error, timeout)
        self.paths = [field.split(".") for field in step.remove or []]

    def handle(self, message: Any, bindings: dict[str, Any] | None) -> Any:
        for path in self.paths:
            try:
                _parent(message, path, create=False).pop(path[-1], None)
            except KeyError:
                continue
        return message


class ConvertRunner(StepRunner):
    def __init__(self, step: Step, on_error: str, timeout: float) -> None:
        super().__init__(step, on_error, timeout)
        assert step.convert is not None
        self.path = step.convert.field.split(".")
        self.field = step.convert.field
        self.factor, self.offset = converter(step.convert.from_unit, step.convert.to_unit)

    def handle(self, message: Any, bindings: dict[str, Any] | None) -> Any:
        try:
            parent = _parent(message, self.path, create=False)
        except KeyError:
            raise StepError(f"the message has no field {self.field}") from None
        value = parent.get(self.path[-1])
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise StepError(f"field {self.field} is {_kind(value)}, not a number")
        converted = value * self.factor + self.offset
        if not math.isfinite(converted):
            raise StepError(f"field {self.field} converts to a number out of range")
        # 12 significant digits: more than any sensor has, and 212 degF gives 100, not
        # 100.00000000000001 (the round trip through the base unit costs the last bits).
        parent[self.path[-1]] = float(f"{converted:.12g}")
        return message


def _kind(value: Any) -> str:
    if value is None:
        return "missing or null"
    return {bool: "a boolean", str: "a string", list: "an array", dict: "an object"}.get(
        type(value), type(value).__name__
    )


class _Group:
    __slots__ = ("count", "first_value", "start", "values")

    def __init__(self, start: float) -> None:
        self.start = start
        self.count = 0
        self.values: dict[str, list[float]] = {}
        self.first_value: dict[str, Any] = {}


class WindowRunner(StepRunner):
    """Tumbling windows per group. A message absorbed into a window is settled at once (its
    source acknowledged): an open window lives in memory and a restart loses it (README)."""

    flushes = True

    def __init__(self, step: Step, on_error: str, timeout: float) -> None:
        super().__init__(step, on_error, timeout)
        window = step.window
        assert window is not None
        self.every = window.every
        self.size = window.count
        self.max_groups = window.max_groups
        self.group_by = self.expression(step, "groupBy") if window.group_by else None
        self.aggregates = [
            (
                name,
                aggregate.op,
                self.expression(step, f"aggregates.{name}") if aggregate.expression else None,
            )
            for name, aggregate in window.aggregates.items()
        ]
        self.groups: dict[str, _Group] = {}
        self.window_start = time.time()

    def run(self, pairs: list[Pair], fail: Fail) -> list[Pair]:
        out: list[Pair] = []
        for origin, message in pairs:
            try:
                emitted = self._absorb(message)
            except (StepError, ExpressionError) as error:
                self.count_errors += 1
                fail(origin, message, str(error))
                continue
            self.count_filtered += 1  # absorbed: nothing more waits for this message
            if emitted is not None:
                out.append((None, emitted))
        self.count_in += len(pairs)
        self.count_out += len(out)
        return out

    def _absorb(self, message: Any) -> Any:
        key = "" if self.group_by is None else self.group_by.evaluate(message)
        if not isinstance(key, str):
            if key is None:
                raise StepError("groupBy gave no value for this message")
            key = orjson.dumps(key).decode()
        values = []
        for name, op, expression in self.aggregates:
            if expression is None:
                continue
            value = expression.evaluate(message)
            if op in ("avg", "sum", "min", "max") and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise StepError(f"aggregate {name} ({op}) needs a number, got {_kind(value)}")
            values.append((name, op, value))
        group = self.groups.get(key)
        if group is None:
            if len(self.groups) >= self.max_groups:
                raise StepError(f"more than {self.max_groups} open groups (maxGroups)")
            group = self.groups[key] = _Group(self.window_start if self.every else time.time())
        group.count += 1
        for name, op, value in values:
            if op == "first":
                group.first_value.setdefault(name, value)
            elif op == "last":
                group.first_value[name] = value
            else:
                group.values.setdefault(name, []).append(value)
        if self.size is not None and group.count >= self.size:
            del self.groups[key]
            return self._emit(key, group, time.time())
        return None

    def _emit(self, key: str, group: _Group, end: float) -> dict[str, Any]:
        result: dict[str, Any] = {
            "group": key,
            "start": _iso(group.start),
            "end": _iso(end),
            "count": group.count,
        }
        for name, op, _ in self.aggregates:
            if op == "count":
                value: Any = group.count
            elif op in ("first", "last"):
                value = group.first_value.get(name)
            else:
                numbers = group.values.get(name, [])
                if not numbers:
                    value = None
                elif op == "avg":
                    value = math.fsum(numbers) / len(numbers)
                elif op == "sum":
                    value = math.fsum(numbers)
                elif op == "min":
                    value = min(numbers)
                else:
                    value = max(numbers)
            result[name] = value
        return result

    def flush(self, now: float, force: bool = False) -> list[Any]:
        """Close the time window if it is over (or `force`): one message per group."""
        if self.every is None and not force:
            return []
        if not force and now - self.window_start < (self.every or 0):
            return []
        emitted = [self._emit(key, group, now) for key, group in self.groups.items()]
        self.groups = {}
        self.window_start = now
        self.count_out += len(emitted)
        return emitted


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"


class CallRunner(StepRunner):
    """HTTP call per message, concurrently within a batch, results in order."""

    is_async = True

    def __init__(self, step: Step, on_error: str, timeout: float) -> None:
        super().__init__(step, on_error, timeout)
        call = step.call
        assert call is not None and call.url is not None
        self.url = call.url
        self.method = call.method
        self.body = self.expression(step, "body") if call.body else None
        self.result = self.expression(step, "result")
        self.retries = call.retries
        self.backoff = call.backoff_seconds
        self.client = HttpClient(call.timeout_seconds)
        self.calls = 0

    async def run_async(self, pairs: list[Pair], fail: Fail) -> list[Pair]:
        results = await asyncio.gather(*(self._one(message) for _, message in pairs))
        out: list[Pair] = []
        for (origin, message), (ok, value) in zip(pairs, results, strict=True):
            if not ok:
                self.count_errors += 1
                fail(origin, message, value)
            elif value is None:
                self.count_filtered += 1
            else:
                out.append((origin, value))
        self.count_in += len(pairs)
        self.count_out += len(out)
        return out

    async def _one(self, message: Any) -> tuple[bool, Any]:
        try:
            body = self.body.evaluate(message) if self.body is not None else message
        except ExpressionError as error:
            return False, f"body: {error}"
        delay = self.backoff
        reason = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(delay)
                delay *= 2
            self.calls += 1
            try:
                status, content = await self.client.request(
                    self.method, self.url, None if self.method == "GET" else orjson.dumps(body)
                )
            except HttpFailure as error:
                timed_out = "timed out" if error.timed_out else f"failed: {error}"
                reason = f"call to {self.url} {timed_out}"
                continue
            if status >= 500 or status == 429:
                reason = f"call to {self.url} answered {status}"
                continue
            if status >= 400:
                return False, f"call to {self.url} answered {status}"
            try:
                data = orjson.loads(content) if content else None
            except orjson.JSONDecodeError:
                return False, f"call to {self.url} answered with a body that is not JSON"
            try:
                return True, self.result.evaluate(message, {"response": data})
            except ExpressionError as error:
                return False, f"result: {error}"
        return False, f"{reason} ({self.retries + 1} attempts)"

    async def close(self) -> None:
        await self.client.close()


RUNNERS: dict[str, type[StepRunner]] = {
    "validate": ValidateRunner,
    "filter": FilterRunner,
    "transform": TransformRunner,
    "set": SetRunner,
    "rename": RenameRunner,
    "remove": RemoveRunner,
    "convert": ConvertRunner,
    "window": WindowRunner,
    "call": CallRunner,
}


def build_step(step: Step, on_error: str, timeout: float) -> StepRunner:
    return RUNNERS[step.kind](step, on_error, timeout)
