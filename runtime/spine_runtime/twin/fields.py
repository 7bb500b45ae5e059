"""Ditto's `fields=` selector: which parts of a thing's JSON a response carries.

The HTTP API (GET things, search, SSE) parses the parameter once with `parse_fields` and applies
it to each thing with `select`. Syntax, as in Ditto: a comma-separated list of slash paths, a
path optionally followed by a parenthesised list that applies below it, e.g.
`thingId,attributes/line,features/temperature(properties/value),_revision`.
"""

from __future__ import annotations

import re
from typing import Any

MAX_LENGTH = 4096
MAX_DEPTH = 16

_SEGMENT = re.compile(r"[^,()/\s]+")

# A selection: for each key, True for "all of it" or a nested selection.
Selection = dict[str, Any]


class FieldsError(ValueError):
    """A `fields` parameter that cannot be parsed."""


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.position = 0

    def fail(self, expected: str) -> FieldsError:
        found = self.text[self.position : self.position + 20] or "the end"
        return FieldsError(
            f"fields: expected {expected} at position {self.position}, found {found!r}"
        )

    def items(self, depth: int, into: Selection) -> None:
        if depth > MAX_DEPTH:
            raise FieldsError(f"fields: nested more than {MAX_DEPTH} levels deep")
        while True:
            self.item(depth, into)
            if self.text.startswith(",", self.position):
                self.position += 1
                continue
            return

    def item(self, depth: int, into: Selection) -> None:
        segments = [self.segment()]
        while self.text.startswith("/", self.position):
            self.position += 1
            segments.append(self.segment())
        node = into
        for segment in segments[:-1]:
            child = node.get(segment)
            if child is True:
                return  # an ancestor is already selected whole
            node = node.setdefault(segment, {})
        last = segments[-1]
        if self.text.startswith("(", self.position):
            self.position += 1
            child = node.get(last)
            if child is True:
                nested: Selection = {}
                self.items(depth + 1, nested)
            else:
                self.items(depth + 1, node.setdefault(last, {}))
            if not self.text.startswith(")", self.position):
                raise self.fail("')'")
            self.position += 1
        else:
            node[last] = True

    def segment(self) -> str:
        match = _SEGMENT.match(self.text, self.position)
        if not match:
            raise self.fail("a field name")
        self.position = match.end()
        return match.group()


def parse_fields(text: str) -> Selection:
    """Parse a `fields` parameter into a selection; FieldsError if malformed."""
    if len(text) > MAX_LENGTH:
        raise FieldsError(f"fields is longer than {MAX_LENGTH} characters")
    parser = _Parser(text)
    selection: Selection = {}
    parser.items(0, selection)
    if parser.position != len(text):
        raise parser.fail("',' or the end")
    return selection


def select(document: dict[str, Any], selection: Selection) -> dict[str, Any]:
    """The parts of `document` the selection names; missing ones are left out."""
    result: dict[str, Any] = {}
    for key, wanted in selection.items():
        if key not in document:
            continue
        value = document[key]
        if wanted is True:
            result[key] = value
        elif isinstance(value, dict):
            chosen = select(value, wanted)
            if chosen:
                result[key] = chosen
    return result
