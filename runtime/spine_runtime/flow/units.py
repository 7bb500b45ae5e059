"""The unit table of the `convert` step: a small set of units a plant uses, by quantity.

Each unit is an affine map to its quantity's base unit (value * factor + offset), so any two
units of one quantity convert both ways. Unit symbols follow UCUM/QUDT spelling where it is
plain ASCII (degC, degF, K, bar, psi, Pa...). The config model refuses a pair of units that is
unknown or of different quantities; tests/unit/test_flow_units.py checks each against a
reference value.
"""

from __future__ import annotations

# unit -> (quantity, factor to the base unit, offset added after the factor)
UNITS: dict[str, tuple[str, float, float]] = {
    # temperature, base K
    "K": ("temperature", 1.0, 0.0),
    "degC": ("temperature", 1.0, 273.15),
    "degF": ("temperature", 5.0 / 9.0, 273.15 - 32.0 * 5.0 / 9.0),
    # pressure, base Pa
    "Pa": ("pressure", 1.0, 0.0),
    "kPa": ("pressure", 1e3, 0.0),
    "MPa": ("pressure", 1e6, 0.0),
    "bar": ("pressure", 1e5, 0.0),
    "mbar": ("pressure", 1e2, 0.0),
    "psi": ("pressure", 6894.757293168361, 0.0),
    # length, base m
    "m": ("length", 1.0, 0.0),
    "mm": ("length", 1e-3, 0.0),
    "cm": ("length", 1e-2, 0.0),
    "in": ("length", 0.0254, 0.0),
    "ft": ("length", 0.3048, 0.0),
    # mass, base kg
    "kg": ("mass", 1.0, 0.0),
    "g": ("mass", 1e-3, 0.0),
    "t": ("mass", 1e3, 0.0),
    "lb": ("mass", 0.45359237, 0.0),
    # time, base s
    "s": ("time", 1.0, 0.0),
    "ms": ("time", 1e-3, 0.0),
    "min": ("time", 60.0, 0.0),
    "h": ("time", 3600.0, 0.0),
    # speed, base m/s
    "m/s": ("speed", 1.0, 0.0),
    "km/h": ("speed", 1000.0 / 3600.0, 0.0),
    "m/min": ("speed", 1.0 / 60.0, 0.0),
    "mph": ("speed", 0.44704, 0.0),
    # rotational speed, base 1/s
    "rpm": ("rotation", 1.0 / 60.0, 0.0),
    "Hz": ("rotation", 1.0, 0.0),
    # power, base W
    "W": ("power", 1.0, 0.0),
    "kW": ("power", 1e3, 0.0),
    "hp": ("power", 745.6998715822702, 0.0),
    # energy, base J
    "J": ("energy", 1.0, 0.0),
    "kJ": ("energy", 1e3, 0.0),
    "kWh": ("energy", 3.6e6, 0.0),
    # volume flow, base m3/h
    "m3/h": ("flow", 1.0, 0.0),
    "l/min": ("flow", 0.06, 0.0),
    "gal/min": ("flow", 0.003785411784 * 60, 0.0),  # US gallon
}


def conversion_problem(source: str, target: str) -> str | None:
    """Why `source` cannot be converted to `target`, or None when it can."""
    known = ", ".join(UNITS)
    if source not in UNITS:
        return f"unknown unit {source!r} (known: {known})"
    if target not in UNITS:
        return f"unknown unit {target!r} (known: {known})"
    if UNITS[source][0] != UNITS[target][0]:
        return (
            f"{source} is a {UNITS[source][0]} and {target} a {UNITS[target][0]}: "
            "they do not convert"
        )
    return None


def converter(source: str, target: str) -> tuple[float, float]:
    """(factor, offset) such that value_in_target = value_in_source * factor + offset."""
    _, factor_in, offset_in = UNITS[source]
    _, factor_out, offset_out = UNITS[target]
    return factor_in / factor_out, (offset_in - offset_out) / factor_out
