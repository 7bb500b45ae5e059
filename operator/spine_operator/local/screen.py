"""What `spine up` shows: a short header, then processes and live values redrawn in place.

On a terminal the live part (processes, the twin's values, the last few events) is redrawn in
place once a second, never scrolled. When stdout is not a terminal (a pipe, a CI log) it prints
plain lines instead: each event as it happens and the values at most every `plain_every`
seconds, and only when they changed. Pure formatting plus writes to one stream; `up.py` feeds it.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from spine_operator.local.supervisor import Workload

UNITS = {"degC": "°C", "degF": "°F", "percent": "%"}
MAX_THING_COLUMNS = 4


@dataclass
class ValueTable:
    """The twin's current values: rows are properties, columns are things."""

    things: list[str]  # thing names, in column order
    properties: list[tuple[str, str]]  # (name, unit)
    values: dict[str, dict[str, Any]] = field(default_factory=dict)  # thing -> feature -> part
    error: str = ""

    def cell(self, thing: str, prop: str) -> str:
        feature = self.values.get(thing, {}).get(prop)
        if not isinstance(feature, dict):
            return "-"
        reported = (feature.get("properties") or {}).get("value")
        desired = feature.get("desiredProperties") or {}
        text = format_value(reported)
        if desired.get("status") == "pending":
            text += f" → {format_value(desired.get('value'))}"
        elif desired.get("status") == "failed":
            text += f" (set {format_value(desired.get('value'))} failed)"
        return text


def format_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def clock() -> str:
    return time.strftime("%H:%M:%S")


class Screen:
    def __init__(
        self, stream: TextIO | None = None, live: bool | None = None, plain_every: float = 10.0
    ) -> None:
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.plain_every = plain_every
        self.events: deque[str] = deque(maxlen=5)
        self._drawn = 0
        self._last_plain = -plain_every
        self._last_lines: list[str] = []

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (BrokenPipeError, ValueError):  # the reader went away; keep running
            pass

    def line(self, text: str = "") -> None:
        """A line above the live part (it scrolls)."""
        self._clear_live()
        self._write(text + "\n")

    def event(self, text: str) -> None:
        stamped = f"{clock()} {text}"
        self.events.append(stamped)
        if not self.live:
            self._write(stamped + "\n")

    def _clear_live(self) -> None:
        if self.live and self._drawn:
            # up to the first line of the live part, then clear to the end of the screen
            self._write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def update(self, workloads: list[Workload], table: ValueTable | None) -> None:
        if self.live:
            width = shutil.get_terminal_size((100, 40)).columns
            lines = [line[: width - 1] for line in live_lines(workloads, table, self.events)]
            self._clear_live()
            self._write("".join(line + "\n" for line in lines))
            self._drawn = len(lines)
            return
        now = time.monotonic()
        if table is None or now - self._last_plain < self.plain_every:
            return
        lines = plain_value_lines(table)
        if lines != self._last_lines:  # a line only when something changed
            self._last_plain, self._last_lines = now, lines
            for line in lines:
                self._write(f"{clock()} {line}\n")

    def close(self) -> None:
        self._drawn = 0


def process_lines(workloads: list[Workload]) -> list[str]:
    rows = [("process", "state", "pid", "restarts", "address")]
    for workload in workloads:
        state = workload.state
        if state == "restarting" and workload.last_exit:
            state = f"restarting ({workload.last_exit})"
        rows.append(
            (
                workload.name,
                state,
                str(workload.pid or "-"),
                str(workload.restarts),
                workload.address,
            )
        )
        # A host's runtimes share its process: its pid, state and restarts are theirs.
        for member in workload.members:
            pid = str(workload.pid or "-")
            rows.append((f"  {member.name}", f"in {workload.name}", pid, "", member.address))
    return table_lines(rows)


def table_lines(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[index]) for row in rows) for index in range(len(rows[0]))]
    return [
        "  "
        + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def value_lines(table: ValueTable) -> list[str]:
    things = table.things[:MAX_THING_COLUMNS]
    rows = [("", *things)]
    for name, unit in table.properties:
        label = f"{name} ({UNITS.get(unit, unit)})" if unit else name
        rows.append((label, *(table.cell(thing, name) for thing in things)))
    lines = table_lines(rows)
    if any(not table.values.get(thing) for thing in things):
        lines.append("  (-: nothing reported yet)")
    if len(table.things) > MAX_THING_COLUMNS:
        lines.append(f"  ... and {len(table.things) - MAX_THING_COLUMNS} more things")
    return lines


def live_lines(
    workloads: list[Workload], table: ValueTable | None, events: deque[str] | list[str]
) -> list[str]:
    lines = ["", *process_lines(workloads), ""]
    if table is not None:
        lines.append(f"Live values from the twin ({clock()}):")
        lines += value_lines(table) if not table.error else [f"  ({table.error})"]
        lines.append("")
    if events:
        lines.append("Events:")
        lines += [f"  {event}" for event in events]
        lines.append("")
    lines.append("Ctrl-C stops everything.")
    return lines


def plain_value_lines(table: ValueTable) -> list[str]:
    if table.error:
        return [f"values: ({table.error})"]
    return [
        f"{thing}: "
        + " ".join(
            f"{name}={table.cell(thing, name).replace(' ', '')}" for name, _ in table.properties
        )
        for thing in table.things
    ]
