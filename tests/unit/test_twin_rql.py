"""The twin's RQL subset: parsing, printing, evaluation, and clear errors for anything else."""

from __future__ import annotations

import contextlib
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spine_runtime.twin import rql
from spine_runtime.twin.rql import Comparison, Exists, In, Logical, Not, ParseError, matches, parse

THING = {
    "thingId": "plant_a:press-1",
    "definition": "press:1.2.0",
    "attributes": {"line": "A", "serial": "X123", "tags": ["hot", "big"]},
    "features": {
        "temperature": {"properties": {"value": 81.5, "timestamp": "2026-11-22T19:45:01.123Z"}},
        "targetSpeed": {"properties": {"value": 30}, "desiredProperties": {"value": 40}},
        "running": {"properties": {"value": True}},
        "mode": {"properties": {"value": "auto"}},
        "empty": {"properties": {}},
    },
    "_revision": 17,
    "_modified": "2026-11-22T19:45:01.130Z",
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("eq(features/temperature/properties/value,81.5)", True),
        ("eq(features/temperature/properties/value,81)", False),
        ("eq(features/targetSpeed/properties/value,30.0)", True),  # 30 equals 30.0
        ("eq(features/running/properties/value,true)", True),
        ("eq(features/running/properties/value,1)", False),  # true is not 1
        ("eq(features/targetSpeed/properties/value,true)", False),
        ('eq(attributes/line,"A")', True),
        ('eq(thingId,"plant_a:press-1")', True),
        ("ne(features/temperature/properties/value,80)", True),
        ("ne(features/empty/properties/value,80)", True),  # absent: ne matches, as in Ditto
        ("gt(features/temperature/properties/value,80)", True),
        ("ge(features/targetSpeed/properties/value,30)", True),
        ("lt(features/targetSpeed/properties/value,30)", False),
        ("le(features/targetSpeed/properties/value,30)", True),
        ('gt(attributes/line,"0")', True),  # strings compare as strings
        ('gt(features/temperature/properties/value,"80")', False),  # no order across kinds
        ("gt(features/empty/properties/value,1)", False),
        ('in(attributes/line,"B","A")', True),
        ('in(attributes/line,"B","C")', False),
        ("exists(features/targetSpeed/desiredProperties/value)", True),
        ("exists(features/temperature/desiredProperties)", False),
        ('like(thingId,"plant_a:press-*")', True),
        ('like(attributes/serial,"X?23")', True),
        ('like(attributes/serial,"x*")', False),
        ('eq(attributes/tags/1,"big")', True),
        ("eq(_revision,17)", True),
        ('gt(_modified,"2026-01-01")', True),
        ('and(eq(attributes/line,"A"),gt(features/temperature/properties/value,80))', True),
        ('and(eq(attributes/line,"B"),gt(features/temperature/properties/value,80))', False),
        ('or(eq(attributes/line,"B"),exists(features/mode))', True),
        ('not(eq(attributes/line,"A"))', False),
        ("not(exists(attributes/nothing))", True),
        (' and( eq(attributes/line , "A") , not( eq(_revision, 3) ) ) ', True),
        ("eq(features/mode/properties/value,null)", False),
    ],
)
def test_evaluation(text: str, expected: bool) -> None:
    assert matches(parse(text), THING) is expected


def test_parse_builds_the_tree() -> None:
    node = parse('and(eq(attributes/line,"A"),in(_revision,1,2.5),not(exists(features/x)))')
    assert node == Logical(
        "and",
        (
            Comparison("eq", ("attributes", "line"), "A"),
            In(("_revision",), (1, 2.5)),
            Not(Exists(("features", "x"))),
        ),
    )


def test_strings_are_json_strings() -> None:
    node = parse(r'eq(attributes/name,"a \"quoted\" \\ line\nnext \u00e9")')
    assert isinstance(node, Comparison)
    assert node.value == 'a "quoted" \\ line\nnext é'
    assert parse(rql.to_text(node)) == node


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected an operator"),
        ("eq(", "expected a property path"),
        ("eq(a", "expected ','"),
        ("eq(a,)", "expected a value"),
        ("eq(a,1", "expected ')'"),
        ("eq(a,1))", "expected the end of the filter"),
        ("equals(a,1)", "unknown operator 'equals'"),
        ("EQ(a,1)", "expected an operator"),
        ("eq(a,'x')", "expected a value"),
        ('eq(a,"unterminated)', "expected a complete JSON string"),
        ("eq(a,1e999)", "out of range"),
        ("eq(a,01)", "expected ')'"),
        ("in(a)", "at least one value"),
        ("like(a,1)", "like needs a string pattern"),
        ("and()", "expected an operator"),
        ("not(eq(a,1),eq(b,2))", "expected ')'"),
        ("eq(a//b,1)", "expected ','"),
        ("eq(/a,1)", "expected a property path"),
        ("not(" * 40 + "exists(a)" + ")" * 40, "nested more than 32 levels"),
        ("eq(a," + "1" * 50 + ")", "too long"),
        ("or(" + ",".join(["exists(a)"] * 2000) + ")", "longer than 8192"),
    ],
)
def test_parse_errors_say_where_and_what(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(text)


# property-based -------------------------------------------------------------------------------

segments = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ0123456789_-.:@$", min_size=1, max_size=8
)
paths = st.lists(segments, min_size=1, max_size=4).map(tuple)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
comparisons = st.builds(
    Comparison, st.sampled_from(["eq", "ne", "gt", "ge", "lt", "le"]), paths, scalars
)
likes = st.builds(
    lambda path, pattern: Comparison("like", path, pattern, rql.like_pattern(pattern)),
    paths,
    st.text(max_size=8),
)
leaves = st.one_of(
    comparisons,
    likes,
    st.builds(In, paths, st.lists(scalars, min_size=1, max_size=4).map(tuple)),
    st.builds(Exists, paths),
)
trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.builds(
            Logical,
            st.sampled_from(["and", "or"]),
            st.lists(children, min_size=1, max_size=4).map(tuple),
        ),
        st.builds(Not, children),
    ),
    max_leaves=12,
)


@given(trees)
@settings(max_examples=120, deadline=None)
def test_printed_trees_parse_back_to_the_same_tree(node: rql.Node) -> None:
    text = rql.to_text(node)
    parsed = parse(text)
    assert parsed == node
    assert rql.to_text(parsed) == text  # also the same value types (True is not 1 here)


RQL_ALPHABET = st.sampled_from(list('eqnegtlinotandorexistslike(),"/\\ 0123456789.-+eE_ab:*?'))


@given(st.text(RQL_ALPHABET, max_size=80) | st.text(max_size=80))
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_text_parses_or_raises_a_parse_error(text: str) -> None:
    try:
        node = parse(text)
    except ParseError as error:
        assert str(error)
        return
    matches(node, THING)  # whatever parses also evaluates without raising


@given(trees, st.data())
@settings(max_examples=120, deadline=None)
def test_damaged_filters_fail_only_with_parse_errors(node: rql.Node, data: st.DataObject) -> None:
    text = rql.to_text(node)
    position = data.draw(st.integers(min_value=0, max_value=len(text)))
    damage = data.draw(st.sampled_from(["delete", "insert", "truncate"]))
    if damage == "delete":
        text = text[:position] + text[position + 1 :]
    elif damage == "insert":
        text = text[:position] + data.draw(st.sampled_from(list('(),"/ x1\\'))) + text[position:]
    else:
        text = text[:position]
    with contextlib.suppress(ParseError):
        parse(text)


json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(segments, children, max_size=3)
    ),
    max_leaves=10,
)


@given(trees, st.dictionaries(segments, json_values, max_size=4))
@settings(max_examples=120, deadline=None)
def test_evaluation_never_raises(node: rql.Node, document: dict) -> None:
    assert matches(node, document) in (True, False)


def test_like_runs_in_linear_time_and_treats_every_other_character_literally() -> None:
    """With a backtracking engine `*a*a*a*a*b` took 1.5 s on 180 characters (a power of the
    number of `*`); RE2 takes time linear in the value."""
    started = time.perf_counter()
    assert rql.like_pattern("*a" * 50 + "*b").fullmatch("a" * 100_000) is None
    assert time.perf_counter() - started < 1.0
    special = "x?\\1 (.)[]{2}$^|+\n\\x{41}é😀*"
    assert rql.like_pattern(special).fullmatch("xY\\1 (.)[]{2}$^|+\n\\x{41}é😀tail")
    assert rql.like_pattern(special).fullmatch("xY\\1 (.)[]{2}$^|+\n\\A" + "é😀") is None
    assert rql.like_pattern("a?b").fullmatch("a\nb")
