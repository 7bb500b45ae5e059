"""JSONata as flows use it, checked against the language's documented behaviour.

The cases are written here from the JSONata documentation (docs.jsonata.org: path operators,
functions) for the constructs and functions the README lists for flows; they are not copied from
the official test suite. They pin the engine (`jlens`, see expressions.py): an upgrade that
changes any of these results fails here first.
"""

from __future__ import annotations

from typing import Any

import pytest

from spine_runtime.flow.expressions import (
    MAX_EXPRESSION_CHARS,
    ExpressionError,
    compile_expression,
    truthy,
)

READING = {
    "thing": "press-1",
    "value": {"temperature": 81.5, "pressure": 190.25, "speed": 30},
    "tags": ["hot", "line-1"],
    "samples": [
        {"t": 1, "v": 10},
        {"t": 2, "v": 20},
        {"t": 3, "v": 60},
    ],
    "unit": "degC",
    "ok": True,
}

# (expression, expected result); None stands for an undefined result.
CASES: list[tuple[str, Any]] = [
    # paths, predicates, wildcards
    ("value.temperature", 81.5),
    ("value.missing", None),
    ("samples[1].v", 20),
    ("samples[-1].v", 60),
    ("samples[v > 15].t", [2, 3]),
    ("samples[v > 50].t", 3),  # a single match is a value, not an array
    ("samples.v", [10, 20, 60]),
    ("value.*", [81.5, 190.25, 30]),
    ("$count(samples[v > 100])", 0),
    # operators
    ("value.temperature > 80 and ok", True),
    ("value.speed * 2 + 1", 61),
    ("value.speed % 7", 2),
    ("7 / 2", 3.5),
    ('thing & "/" & unit', "press-1/degC"),
    ('"hot" in tags', True),
    ('value.temperature > 100 ? "critical" : "normal"', "normal"),
    ("[1..4]", [1, 2, 3, 4]),
    ('{"t": value.temperature, "p": value.pressure}', {"t": 81.5, "p": 190.25}),
    ('samples.{"at": t}', [{"at": 1}, {"at": 2}, {"at": 3}]),
    ("($x := value.speed; $x * $x)", 900),
    # numeric functions
    ("$round(123.456, 2)", 123.46),
    ("$round(11.5)", 12),
    ("$round(12.5)", 12),  # half to even, as documented
    ("$round(1234.5678, -2)", 1200),
    ("$floor(-1.5)", -2),
    ("$ceil(1.2)", 2),
    ("$abs(-3)", 3),
    ("$power(2, 10)", 1024),
    ("$sqrt(16)", 4),
    ('$number("42.5")', 42.5),
    # aggregation
    ("$sum(samples.v)", 90),
    ("$average(samples.v)", 30),
    ("$max(samples.v)", 60),
    ("$min(samples.v)", 10),
    ("$count(samples)", 3),
    # strings
    ("$string(value.speed)", "30"),
    ("$uppercase(unit)", "DEGC"),
    ('$lowercase("ABC")', "abc"),
    ("$substring(thing, 0, 5)", "press"),
    ('$substringAfter(thing, "-")', "1"),
    ('$substringBefore(thing, "-")', "press"),
    ('$contains(thing, "press")', True),
    ('$split("a,b,c", ",")', ["a", "b", "c"]),
    ('$join(tags, "+")', "hot+line-1"),
    ("$length(thing)", 7),
    ('$trim("  a  b ")', "a b"),
    ('$replace(thing, "-", "_")', "press_1"),
    # objects and arrays
    ("$exists(value.temperature)", True),
    ("$exists(value.nothing)", False),
    ("$keys(value)", ["temperature", "pressure", "speed"]),
    ('$lookup(value, "speed")', 30),
    ('$merge([{"a": 1}, {"b": 2}, {"a": 3}])', {"a": 3, "b": 2}),
    ("$append([1, 2], 3)", [1, 2, 3]),
    ("$map(samples.v, function($x) { $x / 10 })", [1, 2, 6]),
    ("$filter(samples, function($s) { $s.v >= 20 }).t", [2, 3]),
    ("$reduce(samples.v, function($a, $b) { $a + $b })", 90),
    ("$sort([3, 1, 2])", [1, 2, 3]),
    ("$distinct([1, 1, 2])", [1, 2]),
    ("$type(value)", "object"),
    ('$boolean("")', False),
    ("$not(ok)", False),
]


@pytest.mark.parametrize(("source", "expected"), CASES)
def test_documented_behaviour(source: str, expected: Any):
    assert compile_expression(source).evaluate(READING) == expected


def test_bindings_are_variables():
    expression = compile_expression('$merge([$, {"contact": $response.name}])')
    result = expression.evaluate({"thing": "p1"}, {"response": {"name": "Ada"}})
    assert result == {"thing": "p1", "contact": "Ada"}


@pytest.mark.parametrize(
    ("source", "code", "position"),
    [
        ("value >", "S0207", 7),
        ("$round(", "S0203", 7),
        ("samples[", "S0203", 8),
        ('{"a": }', "S0211", 7),
    ],
)
def test_compile_errors_say_where(source: str, code: str, position: int):
    with pytest.raises(ExpressionError) as caught:
        compile_expression(source)
    assert (caught.value.code, caught.value.position) == (code, position)
    assert f"at position {position}" in str(caught.value)


def test_run_time_errors_are_expression_errors_with_a_code():
    with pytest.raises(ExpressionError) as caught:
        compile_expression('value.speed + "fast"').evaluate(READING)
    assert caught.value.code == "T2002"


def test_an_endless_expression_is_stopped():
    endless = compile_expression("($f := function($x) { $f($x + 1) }; $f(0))").with_timeout(0.2)
    with pytest.raises(ExpressionError):
        endless.evaluate({})


def test_huge_results_are_refused():
    with pytest.raises(ExpressionError):
        compile_expression("[1..10000000]").evaluate({})


def test_length_and_emptiness_are_bounded():
    with pytest.raises(ExpressionError, match="longer than"):
        compile_expression("1" * (MAX_EXPRESSION_CHARS + 1))
    with pytest.raises(ExpressionError, match="empty"):
        compile_expression("  ")


@pytest.mark.parametrize(
    "value", [None, True, False, 0, 1, -2.5, "", "x", [], [0], [0, 1], [[], ""], {}, {"a": 1}]
)
def test_filter_truth_is_jsonatas_boolean(value: Any):
    assert truthy(value) == compile_expression("$boolean($v)").evaluate(None, {"v": value})
