"""The convert step's unit table against reference values (NIST SP 811 factors)."""

from __future__ import annotations

import pytest

from spine_runtime.flow.units import UNITS, conversion_problem, converter

REFERENCE = [
    (100.0, "degC", "degF", 212.0),
    (32.0, "degF", "degC", 0.0),
    (-40.0, "degC", "degF", -40.0),
    (0.0, "degC", "K", 273.15),
    (1.0, "bar", "psi", 14.503773773),
    (100.0, "psi", "bar", 6.894757293),
    (1.0, "MPa", "bar", 10.0),
    (1013.25, "mbar", "kPa", 101.325),
    (1.0, "in", "mm", 25.4),
    (1.0, "ft", "m", 0.3048),
    (1.0, "lb", "kg", 0.45359237),
    (2.5, "t", "kg", 2500.0),
    (90.0, "min", "h", 1.5),
    (1500.0, "ms", "s", 1.5),
    (36.0, "km/h", "m/s", 10.0),
    (60.0, "mph", "km/h", 96.56064),
    (120.0, "m/min", "m/s", 2.0),
    (3000.0, "rpm", "Hz", 50.0),
    (1.0, "hp", "kW", 0.745699872),
    (1.0, "kWh", "kJ", 3600.0),
    (60.0, "l/min", "m3/h", 3.6),
    (1.0, "gal/min", "l/min", 3.785411784),
]


@pytest.mark.parametrize(("value", "source", "target", "expected"), REFERENCE)
def test_reference_values(value: float, source: str, target: str, expected: float):
    factor, offset = converter(source, target)
    assert value * factor + offset == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_every_unit_round_trips_through_its_base():
    for unit, (quantity, _, _) in UNITS.items():
        base = next(name for name, spec in UNITS.items() if spec[0] == quantity)
        there, back = converter(unit, base), converter(base, unit)
        assert (123.4 * there[0] + there[1]) * back[0] + back[1] == pytest.approx(123.4)


def test_problems_are_named():
    assert conversion_problem("degC", "degF") is None
    assert "unknown unit 'kelvin'" in str(conversion_problem("kelvin", "K"))
    assert "bar a pressure" in str(conversion_problem("degC", "bar"))
