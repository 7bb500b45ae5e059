"""JSONata engines for flows: µs per evaluation of typical IIoT expressions, compiled once.

Measures the candidates that are installed (only jlens is a dependency; install the others
with pip to compare: jsonatapy, jsonata2py, jsonata-python) on a ~200-byte reading, with the
input parsed by orjson once per evaluation as the engine does (bytes -> orjson -> expression ->
orjson). Also says which report an error's position. Prints a Markdown table:

    python -m benchmarks.flow_jsonata [--rounds 20000]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
from collections.abc import Callable
from typing import Any

import orjson

MESSAGE = orjson.dumps(
    {
        "thing": "press-1",
        "ts": "2026-11-22T19:45:01.123Z",
        "value": {"temperature": 190.5, "pressure": 120.3, "speed": 31},
        "seq": 1,
        "pad": "x" * 60,
    }
)
EXPRESSIONS = {
    "filter": 'value.temperature > 100 and thing = "press-1"',
    "transform": '{"thing": thing, "temp": $round((value.temperature - 32) * 5 / 9, 2), '
    '"alarm": value.temperature > 180, "ts": ts}',
    "merge": '$merge([$, {"line": "A"}])',
}


def candidates() -> dict[str, Callable[[str], Callable[[Any], Any]]]:
    found: dict[str, Callable[[str], Callable[[Any], Any]]] = {}
    for name, make in (
        ("jlens", lambda m: lambda source: m.Expression(source).evaluate),
        ("jsonatapy", lambda m: lambda source: m.compile(source).evaluate),
        ("jsonata2py", lambda m: lambda source: m.compile(source).evaluate),
        ("jsonata", lambda m: lambda source: m.Jsonata(source).evaluate),  # jsonata-python
    ):
        try:
            found[name] = make(importlib.import_module(name))
        except ImportError:
            continue
    return found


def per_call_us(function: Callable[[], Any], rounds: int) -> float:
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(rounds // 5):
            function()
        samples.append((time.perf_counter() - start) / (rounds // 5) * 1e6)
    return statistics.median(samples)


def error_position(compile_: Callable[[str], Any]) -> str:
    try:
        compile_("value >")
    except Exception as error:
        position = getattr(error, "position", None)
        return "yes" if isinstance(position, int) or "position" in str(error) else "no"
    return "no error"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20_000)
    args = parser.parse_args()
    print("| engine | " + " | ".join(f"{name} µs" for name in EXPRESSIONS) + " | error position |")
    print("|---|" + "---|" * (len(EXPRESSIONS) + 1))
    for name, compile_ in candidates().items():
        rounds = args.rounds if name != "jsonata" else max(200, args.rounds // 50)
        figures = []
        for source in EXPRESSIONS.values():
            evaluate = compile_(source)
            figures.append(
                per_call_us(lambda e=evaluate: orjson.dumps(e(orjson.loads(MESSAGE))), rounds)
            )
        cells = " | ".join(f"{figure:.1f}" for figure in figures)
        print(f"| {name} | {cells} | {error_position(compile_)} |")


if __name__ == "__main__":
    main()
