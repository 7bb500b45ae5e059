"""Model patterns: refused when they nest unbounded quantifiers or need backtracking, and a
pattern that passes still cannot block the twin, because values are matched with RE2."""

from __future__ import annotations

import time

import pytest

from spine_operator.api.twinmodel import TwinModelSpec
from spine_runtime.config.twin import (
    PropertySchema,
    ThingModel,
    nested_unbounded_quantifier,
    pattern_problem,
)
from spine_runtime.twin.state import Change
from spine_runtime.twin.validation import ModelValidator, Rejection


@pytest.mark.parametrize(
    ("pattern", "nested"),
    [
        (r"^(a+)+$", "(a+)+"),
        (r"^(a*)*$", "(a*)*"),
        (r"(x*y)*", "(x*y)*"),
        (r"^(?:a|b+)+$", "(?:a|b+)+"),
        (r"^((ab)+c)*$", "((ab)+c)*"),
        (r"^([a-z]+\.)*[a-z]+$", "([a-z]+\\.)*"),
        (r"^(a+){2,}$", "(a+){2,}"),
        (r"^(a+?)+?$", "(a+?)+"),
        (r"^(\d+)+$", "(\\d+)+"),
    ],
)
def test_nested_unbounded_quantifiers_are_found(pattern: str, nested: str) -> None:
    assert nested_unbounded_quantifier(pattern) == nested
    problem = pattern_problem(pattern)
    assert problem is not None and "repeats a group that holds an unbounded quantifier" in problem


@pytest.mark.parametrize(
    "pattern",
    [
        r"^[A-Z]",
        r"^[a-z]+$",
        r"^(ab)+$",
        r"^(a|b)*$",
        r"^(a+)?$",
        r"^(\d+\.){3}\d+$",
        r"^[(+]+$",  # a class holds no group or quantifier
        r"^\(a+\)+$",  # escaped parentheses are literals
        r"^(a{1,3})+$",
        r"^x{2,5}$",
        r"^a{,3}$",
    ],
)
def test_patterns_without_nesting_pass(pattern: str) -> None:
    assert pattern_problem(pattern) is None


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"(?=a)b", "RE2"),
        (r"(a)\1", "RE2"),
        (r"(?<!a)b", "RE2"),
        (r"a{1001}", "RE2"),
        (r"(", "is not a regular expression"),
    ],
)
def test_patterns_re2_cannot_run_are_refused(pattern: str, reason: str) -> None:
    problem = pattern_problem(pattern)
    assert problem is not None and reason in problem


def test_a_twinmodel_with_a_redos_pattern_is_refused_when_applied() -> None:
    """The operator validates TwinModel specs with the runtime's PropertySchema."""
    with pytest.raises(ValueError, match=r"pattern '\^\(a\+\)\+\$' repeats a group"):
        TwinModelSpec.model_validate(
            {"properties": {"code": {"type": "string", "pattern": "^(a+)+$"}}}
        )
    with pytest.raises(ValueError, match="RE2"):
        PropertySchema.model_validate({"type": "string", "pattern": "(?=x)"})


@pytest.mark.parametrize("pattern", [r"^(a|aa)*$", r"^(a|a)*b$", r"^(.*a){12}$"])
def test_a_pattern_that_passes_still_takes_linear_time(pattern: str) -> None:
    """Alternation with overlap is exponential for a backtracking engine but passes the nesting
    check; RE2 matches it in time linear in the value (Python's re took seconds at 30 chars)."""
    assert pattern_problem(pattern) is None
    model = ThingModel.model_validate(
        {"name": "m", "properties": {"code": {"type": "string", "pattern": pattern}}}
    )
    validator = ModelValidator(model)
    started = time.perf_counter()
    for length in (30, 1_000, 100_000):
        with pytest.raises(Rejection, match="does not match"):
            validator.check(Change("code", "a" * length + "!"))
    assert time.perf_counter() - started < 1.0
    validator.check(Change("code", "a" * 30 + ("b" if "b" in pattern else "")))


def test_an_enum_value_is_checked_against_the_pattern_with_re2() -> None:
    with pytest.raises(ValueError, match="does not match"):
        PropertySchema.model_validate(
            {"type": "string", "pattern": "^(a|aa)*$", "enum": ["a" * 40 + "!"]}
        )
