"""The RQL subset of Ditto's search: parse a `filter=` expression, print it, evaluate it.

The HTTP API parses `GET /api/2/search/things?filter=...` (and the SSE `filter=`) with `parse`
and evaluates the tree against each thing's JSON with `matches`. Anything malformed raises
`ParseError` with the position, never another exception. Supported, as in Ditto:
eq, ne, gt, ge, lt, le, in, like, exists, and, or, not; values are JSON literals.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import re2

MAX_LENGTH = 8192
MAX_DEPTH = 32

COMPARISONS = ("eq", "ne", "gt", "ge", "lt", "le", "like")
LOGICAL = ("and", "or")

Scalar = str | int | float | bool | None


class ParseError(ValueError):
    """An RQL expression that cannot be parsed; the message says where and what was expected."""


@dataclass(frozen=True)
class Comparison:
    op: str
    path: tuple[str, ...]
    value: Scalar
    pattern: Any = field(default=None, compare=False, repr=False)  # an RE2 program


@dataclass(frozen=True)
class In:
    path: tuple[str, ...]
    values: tuple[Scalar, ...]


@dataclass(frozen=True)
class Exists:
    path: tuple[str, ...]


@dataclass(frozen=True)
class Logical:
    op: str
    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    operand: Node


Node = Comparison | In | Exists | Logical | Not

_WHITESPACE = re.compile(r"[ \t\r\n]*")
_NAME = re.compile(r"[a-z]+")
# A path segment: anything that cannot end it or start a value.
_PATH = re.compile(r"[^,()\"\s/]+(?:/[^,()\"\s/]+)*")
_STRING = re.compile(r'"(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"')
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_LITERALS: dict[str, Scalar] = {"true": True, "false": False, "null": None}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.position = 0

    def fail(self, expected: str) -> ParseError:
        found = self.text[self.position : self.position + 20]
        where = f"{found!r}" if found else "the end"
        return ParseError(f"expected {expected} at position {self.position}, found {where}")

    def skip_space(self) -> None:
        match = _WHITESPACE.match(self.text, self.position)
        if match:
            self.position = match.end()

    def expect(self, char: str) -> None:
        self.skip_space()
        if not self.text.startswith(char, self.position):
            raise self.fail(repr(char))
        self.position += 1

    def peek(self, char: str) -> bool:
        self.skip_space()
        return self.text.startswith(char, self.position)

    def query(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise ParseError(f"the filter is nested more than {MAX_DEPTH} levels deep")
        self.skip_space()
        match = _NAME.match(self.text, self.position)
        if not match:
            raise self.fail("an operator such as eq, and or exists")
        op = match.group()
        self.position = match.end()
        self.expect("(")
        node: Node
        if op in COMPARISONS:
            path = self.path()
            self.expect(",")
            value = self.value()
            pattern = None
            if op == "like":
                if not isinstance(value, str):
                    raise ParseError('like needs a string pattern such as "press-*"')
                pattern = like_pattern(value)
            node = Comparison(op, path, value, pattern)
        elif op == "in":
            path = self.path()
            values = []
            while self.peek(","):
                self.expect(",")
                values.append(self.value())
            if not values:
                raise self.fail("',' and at least one value")
            node = In(path, tuple(values))
        elif op == "exists":
            node = Exists(self.path())
        elif op in LOGICAL:
            operands = [self.query(depth + 1)]
            while self.peek(","):
                self.expect(",")
                operands.append(self.query(depth + 1))
            node = Logical(op, tuple(operands))
        elif op == "not":
            node = Not(self.query(depth + 1))
        else:
            self.position = match.start()
            raise ParseError(
                f"unknown operator {op!r} at position {self.position}: use one of "
                "eq, ne, gt, ge, lt, le, in, like, exists, and, or, not"
            )
        self.expect(")")
        return node

    def path(self) -> tuple[str, ...]:
        self.skip_space()
        match = _PATH.match(self.text, self.position)
        if not match:
            raise self.fail("a property path such as features/temperature/properties/value")
        self.position = match.end()
        return tuple(match.group().split("/"))

    def value(self) -> Scalar:
        self.skip_space()
        text, start = self.text, self.position
        if text.startswith('"', start):
            match = _STRING.match(text, start)
            if not match:
                raise self.fail("a complete JSON string")
            self.position = match.end()
            try:
                return str(json.loads(match.group()))
            except ValueError:
                raise self.fail("a valid JSON string") from None
        match = _NUMBER.match(text, start)
        if match:
            self.position = match.end()
            token = match.group()
            if "." in token or "e" in token or "E" in token:
                number = float(token)
                if number in (float("inf"), float("-inf")):
                    raise ParseError(f"number {token[:40]} at position {start} is out of range")
                return number
            if len(token) > 40:
                raise ParseError(f"number at position {start} is too long")
            return int(token)
        for word, literal in _LITERALS.items():
            if text.startswith(word, start):
                self.position = start + len(word)
                return literal
        raise self.fail('a value: a "string", a number, true, false or null')


def parse(text: str) -> Node:
    """Parse an RQL filter; raises ParseError for anything else."""
    if not isinstance(text, str):
        raise ParseError("the filter must be text")
    if len(text) > MAX_LENGTH:
        raise ParseError(f"the filter is longer than {MAX_LENGTH} characters")
    parser = _Parser(text)
    node = parser.query(0)
    parser.skip_space()
    if parser.position != len(text):
        raise parser.fail("the end of the filter")
    return node


def _like_options() -> Any:
    options = re2.Options()
    options.dot_nl = True  # `*` and `?` match any character, a newline too
    options.log_errors = False
    return options


LIKE_OPTIONS = _like_options()


def like_pattern(pattern: str) -> Any:
    """Ditto's `like`: `*` any characters, `?` one character, everything else literal.

    Compiled for RE2: with a backtracking engine, `like(x,"*a*a*a*a*b")` took 1.5 s against
    one 180-character value, growing as a power of the number of `*`, from an unauthenticated
    search. Every other character is written as `\\x{...}`, so nothing in it is syntax."""
    parts = [
        ".*" if char == "*" else "." if char == "?" else f"\\x{{{ord(char):x}}}" for char in pattern
    ]
    return re2.compile("".join(parts), LIKE_OPTIONS)


def _literal(value: Scalar) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def to_text(node: Node) -> str:
    """The RQL text of a tree; `parse(to_text(node)) == node`."""
    if isinstance(node, Comparison):
        return f"{node.op}({'/'.join(node.path)},{_literal(node.value)})"
    if isinstance(node, In):
        values = ",".join(_literal(value) for value in node.values)
        return f"in({'/'.join(node.path)},{values})"
    if isinstance(node, Exists):
        return f"exists({'/'.join(node.path)})"
    if isinstance(node, Logical):
        return f"{node.op}({','.join(to_text(operand) for operand in node.operands)})"
    return f"not({to_text(node.operand)})"


# evaluation ---------------------------------------------------------------------------------------

_MISSING = object()


def resolve(document: Any, path: tuple[str, ...]) -> Any:
    """The value at a slash path of a JSON document, or the `_MISSING` marker."""
    current = document
    for segment in path:
        if isinstance(current, dict):
            current = current.get(segment, _MISSING)
            if current is _MISSING:
                return _MISSING
        elif isinstance(current, list) and segment.isdigit():
            index = int(segment)
            if index >= len(current):
                return _MISSING
            current = current[index]
        else:
            return _MISSING
    return current


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(held: Any, wanted: Scalar) -> bool:
    if isinstance(held, bool) or isinstance(wanted, bool):
        return type(held) is type(wanted) and held == wanted
    if _is_number(held) and _is_number(wanted):
        return bool(held == wanted)
    return type(held) is type(wanted) and held == wanted


def _ordered(op: str, held: Any, wanted: Scalar) -> bool:
    if not (
        (_is_number(held) and _is_number(wanted))
        or (isinstance(held, str) and isinstance(wanted, str))
    ):
        return False  # values of different kinds are not ordered: no match, as in Ditto
    if op == "gt":
        return bool(held > wanted)
    if op == "ge":
        return bool(held >= wanted)
    if op == "lt":
        return bool(held < wanted)
    return bool(held <= wanted)


def matches(node: Node, document: Any) -> bool:
    """Whether a thing's JSON satisfies the filter.

    `ne` and `not` also match a thing that lacks the property, as Ditto's search does.
    """
    if isinstance(node, Comparison):
        held = resolve(document, node.path)
        if node.op == "ne":
            return held is _MISSING or not _equal(held, node.value)
        if held is _MISSING:
            return False
        if node.op == "eq":
            return _equal(held, node.value)
        if node.op == "like":
            return (
                isinstance(held, str)
                and node.pattern is not None
                and node.pattern.fullmatch(held) is not None
            )
        return _ordered(node.op, held, node.value)
    if isinstance(node, In):
        held = resolve(document, node.path)
        return held is not _MISSING and any(_equal(held, value) for value in node.values)
    if isinstance(node, Exists):
        return resolve(document, node.path) is not _MISSING
    if isinstance(node, Logical):
        if node.op == "and":
            return all(matches(operand, document) for operand in node.operands)
        return any(matches(operand, document) for operand in node.operands)
    return not matches(node.operand, document)
