"""What a wakeup costs on this machine, apart from any engine: the floor under "CPU per message"
at a steady 2,000 msg/s, where nearly every message wakes the flow engine (benchmarks/reports/
flow.md).

Times, in this process's CPU time (user + system, as the flow benchmark reads the engine's):
  * `sleep`: a `time.sleep(gap)` alone, i.e. going to sleep and being woken, per wakeup;
  * `work`: a fixed piece of work a relay flow does per message (orjson in, a small transform,
    orjson out), run back to back, and then with a sleep of `gap` after each item (its sleep's
    own cost taken off): how much more the same work costs when the CPU went idle in between
    (caches and frequency).

Run from the repository root: python -m benchmarks.wakeup_cost [--items 4000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import orjson

PAYLOAD = orjson.dumps(
    {
        "seq": 1,
        "sent": 1.0,
        "value": {"temperature": 180.5, "pressure": 2.5, "speed": 40},
        "thing": "press-1",
        "pad": "x" * 80,
    }
)


def work() -> None:
    message = orjson.loads(PAYLOAD)
    value = message["value"]
    orjson.dumps(
        {
            "seq": message["seq"],
            "thing": message["thing"],
            "celsius": round((value["temperature"] - 32) * 5 / 9, 2),
            "hot": value["temperature"] > 170,
            "pressure": value["pressure"],
            "speed": value["speed"],
        }
    )


def cpu_per_item(items: int, gap: float, with_work: bool) -> float:
    """Microseconds of this process's CPU time per item."""
    start = time.process_time()
    for _ in range(items):
        if with_work:
            work()
        if gap:
            time.sleep(gap)
    return (time.process_time() - start) / items * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"{os.cpu_count()} cores, load {' '.join(load)}, {args.items} items per figure")
    print("| round | gap ms | sleep alone µs | work back to back µs | work between sleeps µs |")
    print("|---|---|---|---|---|")
    for round_ in range(1, args.rounds + 1):
        hot = cpu_per_item(args.items, 0.0, True)
        for gap in (0.0005, 0.002):
            sleep = cpu_per_item(args.items, gap, False)
            both = cpu_per_item(args.items, gap, True)
            print(
                f"| {round_} | {gap * 1000:.1f} | {sleep:.1f} | {hot:.1f} | {both - sleep:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
