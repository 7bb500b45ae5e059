"""API models: defaults that work, and error messages that name the field and say what to fix."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from spine_operator.api.common import parse_quantity
from spine_operator.api.spine import SpineSpec
from spine_operator.errors import InvalidSpec


def message_for(spec: dict) -> str:
    with pytest.raises(ValidationError) as caught:
        SpineSpec.model_validate(spec)
    return InvalidSpec.of(caught.value).message


def test_empty_spec_is_a_complete_default() -> None:
    spec = SpineSpec.model_validate({})
    assert spec.broker.persistence.size == "1Gi"
    assert spec.broker.persistence.retain_on_delete is True
    assert spec.broker.limits.max_queued_messages == 100_000  # not mosquitto's 1000
    assert spec.broker.tls is None and spec.broker.admin_secret_name is None


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"broker": {"persistence": {"size": "512Ki"}}},
            "spec.broker.persistence.size: must be at least 1Mi",
        ),
        (
            {"broker": {"persistence": {"size": "1 Gi"}}},
            "spec.broker.persistence.size: '1 Gi' is invalid: it must be a Kubernetes quantity",
        ),
        (
            {"broker": {"tls": {"secretName": "My_Secret"}}},
            "spec.broker.tls.secretName: 'My_Secret' is invalid: it must be a Kubernetes object",
        ),
        (
            {"broker": {"limits": {"persistentClientExpiration": "forever"}}},
            "spec.broker.limits.persistentClientExpiration: 'forever' is invalid: it must be a",
        ),
        (
            {"broker": {"limits": {"maxInflightMessages": 0}}},
            "spec.broker.limits.maxInflightMessages: Input should be greater than or equal to 1",
        ),
        ({"broker": {"bogus": True}}, "spec.broker.bogus: Extra inputs are not permitted"),
    ],
)
def test_errors_name_the_field_and_the_fix(spec, expected) -> None:
    assert expected in message_for(spec)


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\x00b", "listener 1884\n"])
def test_values_that_reach_mosquitto_conf_cannot_carry_a_new_line(value) -> None:
    for spec in (
        {"broker": {"image": value}},
        {"broker": {"adminSecretName": value}},
        {"broker": {"persistence": {"storageClassName": value}}},
        {"broker": {"limits": {"persistentClientExpiration": value}}},
    ):
        with pytest.raises(ValidationError):
            SpineSpec.model_validate(spec)


def test_quantities_compare_across_units() -> None:
    assert parse_quantity("1Gi") == parse_quantity("1024Mi")
    assert parse_quantity("2G") > parse_quantity("1Gi")
    assert parse_quantity("500m") * 2 == 1
    with pytest.raises(ValueError):
        parse_quantity("1 Gi")
