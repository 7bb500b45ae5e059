"""Paging and path filters of the catalog's read API, pure: no I/O, no aiohttp.

`GET /?page=&per_page=` and `GET /{path}/{op}/{value}` (LinkSmart Service Catalog's filter API)
call `parse_paging`, `parse_filter` and `matches` from `catalog.api`; the unit tests call them
directly. Errors are `QueryError`s whose message names the parameter, answered with a 400.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

# LinkSmart's MaxPerPage: the default and the largest page.
MAX_PER_PAGE = 100
FILTER_OPERATORS = ("equals", "prefix", "suffix", "contains")
MAX_PATH_SEGMENTS = 8
MAX_PATH_LENGTH = 256
MAX_VALUE_LENGTH = 1024
# More digits than any page number that can hold an entry: refused before int() works on it.
MAX_NUMBER_DIGITS = 9

T = TypeVar("T")


class QueryError(ValueError):
    """A query the catalog cannot answer; the message names the parameter."""


def _positive_integer(name: str, raw: str | None, default: int) -> int:
    if raw is None or raw == "":
        return default
    text = raw.strip()
    if not text.isdigit() or len(text) > MAX_NUMBER_DIGITS:
        raise QueryError(f"Invalid value for parameter {name}: {raw[:40]!r} is not an integer")
    return int(text)


def parse_paging(page: str | None, per_page: str | None) -> tuple[int, int]:
    """(page, per_page) from the query string: page from 1, per_page from 1 to 100 (100 if
    unset), as LinkSmart's ParsePagingParams; anything else is a QueryError."""
    page_number = _positive_integer("page", page, 1)
    size = _positive_integer("per_page", per_page, MAX_PER_PAGE)
    if page_number < 1:
        raise QueryError("page parameter must be positive")
    if size < 1:
        raise QueryError("per_page parameter must be positive")
    if size > MAX_PER_PAGE:
        raise QueryError(f"per_page must be less than or equal to {MAX_PER_PAGE}")
    return page_number, size


def page_of(items: Sequence[T], page: int, per_page: int) -> list[T]:
    """The requested page; past the last page it is empty (LinkSmart answers the same)."""
    start = (page - 1) * per_page
    return list(items[start : start + per_page])


@dataclass(frozen=True)
class PathFilter:
    """`/{path}/{op}/{value}`: a dot path into the service JSON, an operator and a value."""

    path: tuple[str, ...]
    operator: str
    value: str

    def __call__(self, document: Any) -> bool:
        return matches(document, self.path, self.operator, self.value)


def parse_filter(path: str, operator: str, value: str) -> PathFilter:
    if operator not in FILTER_OPERATORS:
        raise QueryError(
            f"Unknown filter operator {operator[:40]!r}: use one of {', '.join(FILTER_OPERATORS)}"
        )
    if len(path) > MAX_PATH_LENGTH:
        raise QueryError(f"filter path is longer than {MAX_PATH_LENGTH} characters")
    segments = tuple(path.split("."))
    if any(not segment for segment in segments):
        raise QueryError(f"filter path {path[:60]!r} has an empty segment (e.g. '..')")
    if len(segments) > MAX_PATH_SEGMENTS:
        raise QueryError(f"filter path has more than {MAX_PATH_SEGMENTS} segments")
    if len(value) > MAX_VALUE_LENGTH:
        raise QueryError(f"filter value is longer than {MAX_VALUE_LENGTH} characters")
    return PathFilter(segments, operator, value)


def matches(document: Any, path: Sequence[str], operator: str, value: str) -> bool:
    """Whether any value at `path` compares true with `value`, ignoring case.

    Arrays are transparent: `apis.protocol` looks at the protocol of every API, and a path
    ending at an array of scalars looks at every element. Numbers and booleans compare as
    their JSON text (`true`, `5`, `2.5`); objects and null never match.
    """
    wanted = value.casefold()
    for found in _values_at(document, tuple(path)):
        text = found.casefold()
        if (
            (operator == "equals" and text == wanted)
            or (operator == "prefix" and text.startswith(wanted))
            or (operator == "suffix" and text.endswith(wanted))
            or (operator == "contains" and wanted in text)
        ):
            return True
    return False


def _values_at(node: Any, path: tuple[str, ...]) -> Iterator[str]:
    # Iterative, so a deep document cannot exhaust the stack; the path bounds the depth anyway.
    stack: list[tuple[Any, tuple[str, ...]]] = [(node, path)]
    while stack:
        current, rest = stack.pop()
        if isinstance(current, list):
            stack.extend((element, rest) for element in reversed(current))
        elif not rest:
            text = _scalar_text(current)
            if text is not None:
                yield text
        elif isinstance(current, dict) and rest[0] in current:
            stack.append((current[rest[0]], rest[1:]))


def _scalar_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return None
