"""The catalog's paging and path filters (LinkSmart's semantics, case-insensitive)."""

from __future__ import annotations

import pytest

from spine_runtime.catalog.query import (
    MAX_PER_PAGE,
    QueryError,
    matches,
    page_of,
    parse_filter,
    parse_paging,
)

SERVICE = {
    "id": "press-telemetry",
    "type": "plant.Telemetry",
    "meta": {
        "line": "A",
        "floor": 2,
        "ratio": 2.5,
        "critical": True,
        "tags": ["Press", "Line-A"],
        "none": None,
        "nested": {"deep": {"value": "X"}},
    },
    "apis": [
        {"id": "http", "protocol": "HTTP", "url": "https://proxy/telemetry"},
        {"id": "events", "protocol": "MQTT", "url": "mqtt://broker:1883", "meta": {"qos": 1}},
    ],
}


@pytest.mark.parametrize(
    ("page", "per_page", "expected"),
    [
        (None, None, (1, MAX_PER_PAGE)),
        ("", "", (1, MAX_PER_PAGE)),
        ("3", "25", (3, 25)),
        (" 2 ", "100", (2, 100)),
        ("1", "1", (1, 1)),
    ],
)
def test_paging_defaults_and_bounds(page, per_page, expected) -> None:
    assert parse_paging(page, per_page) == expected


@pytest.mark.parametrize(
    ("page", "per_page", "message"),
    [
        ("0", None, "page parameter must be positive"),
        (None, "0", "per_page parameter must be positive"),
        (None, "101", "per_page must be less than or equal to 100"),
        ("-1", None, "Invalid value for parameter page: '-1'"),
        ("1.5", None, "Invalid value for parameter page"),
        ("x", None, "Invalid value for parameter page"),
        ("9" * 10, None, "Invalid value for parameter page"),
        (None, "ten", "Invalid value for parameter per_page"),
    ],
)
def test_paging_refuses_bad_values_naming_the_parameter(page, per_page, message) -> None:
    with pytest.raises(QueryError, match=message.replace(".", r"\.")):
        parse_paging(page, per_page)


def test_pages_cut_the_list_and_run_out_empty() -> None:
    items = list(range(5))
    assert page_of(items, 1, 2) == [0, 1]
    assert page_of(items, 3, 2) == [4]
    assert page_of(items, 4, 2) == []
    assert page_of(items, 1, 100) == items


@pytest.mark.parametrize(
    ("path", "operator", "value", "expected"),
    [
        ("id", "equals", "press-telemetry", True),
        ("id", "equals", "PRESS-TELEMETRY", True),  # case-insensitive
        ("id", "equals", "press", False),
        ("type", "prefix", "PLANT.", True),
        ("type", "prefix", "telemetry", False),
        ("type", "suffix", "telemetry", True),
        ("type", "suffix", "plant", False),
        ("type", "contains", "NT.TEL", True),
        ("type", "contains", "xyz", False),
        ("apis.protocol", "equals", "mqtt", True),  # any element of the array
        ("apis.protocol", "equals", "http", True),
        ("apis.protocol", "equals", "coap", False),
        ("apis.meta.qos", "equals", "1", True),
        ("apis.url", "prefix", "mqtt://", True),
        ("meta.tags", "equals", "line-a", True),  # an array of scalars at the end of the path
        ("meta.floor", "equals", "2", True),
        ("meta.ratio", "equals", "2.5", True),
        ("meta.critical", "equals", "TRUE", True),
        ("meta.none", "equals", "none", False),
        ("meta.nested", "contains", "deep", False),  # objects never match
        ("meta.nested.deep.value", "equals", "x", True),
        ("meta.missing", "contains", "", False),
        ("meta", "contains", "", False),
        ("id", "contains", "", True),
    ],
)
def test_filter_operators(path, operator, value, expected) -> None:
    assert parse_filter(path, operator, value)(SERVICE) is expected
    assert matches(SERVICE, path.split("."), operator, value) is expected


@pytest.mark.parametrize(
    ("path", "operator", "value", "message"),
    [
        ("type", "regex", "x", "Unknown filter operator 'regex': use one of equals, prefix"),
        ("type", "Equals", "x", "Unknown filter operator 'Equals'"),
        ("meta..line", "equals", "x", "has an empty segment"),
        (".type", "equals", "x", "has an empty segment"),
        (".".join("a" * 9), "equals", "x", "more than 8 segments"),
        ("a" * 300, "equals", "x", "longer than 256 characters"),
        ("type", "equals", "x" * 1025, "filter value is longer than 1024 characters"),
    ],
)
def test_filter_refuses_bad_queries(path, operator, value, message) -> None:
    with pytest.raises(QueryError, match=message):
        parse_filter(path, operator, value)


def test_filter_walks_a_deep_document_without_recursion() -> None:
    document: object = "end"
    for _ in range(5000):
        document = [document]
    assert matches({"a": document}, ["a"], "equals", "end")
