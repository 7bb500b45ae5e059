"""Read planning: the fewest Modbus requests and S7 multi-variable reads for a set of tags."""

from __future__ import annotations

from collections.abc import Hashable

import pytest

from spine_runtime.gateway.planner import (
    S7_MAX_ITEMS,
    Read,
    S7Request,
    Span,
    coalesce,
    plan_modbus_reads,
    plan_s7_reads,
    s7_item_limit,
)

HOLDING = (1, "holding")
INPUT = (1, "input")
COILS = (1, "coil")


def spans(block: Hashable, *offsets_and_counts: tuple[int, int]) -> list[Span]:
    return [Span(f"{block}@{o}", block, o, c) for o, c in offsets_and_counts]


def ranges(reads: list[Read]) -> list[tuple[object, int, int]]:
    return [(read.block, read.start, read.count) for read in reads]


def test_contiguous_registers_cost_one_read() -> None:
    reads = plan_modbus_reads(spans(HOLDING, *[(100 + i, 1) for i in range(100)]))
    assert ranges(reads) == [(HOLDING, 100, 100)]
    assert len(reads[0].members) == 100


def test_near_contiguous_registers_join_across_small_gaps_only() -> None:
    reads = plan_modbus_reads(spans(HOLDING, (0, 2), (4, 2), (30, 1), (31, 4)), max_gap_registers=5)
    assert ranges(reads) == [(HOLDING, 0, 6), (HOLDING, 30, 5)]
    assert ranges(plan_modbus_reads(spans(HOLDING, (0, 2), (4, 2)), max_gap_registers=0)) == [
        (HOLDING, 0, 2),
        (HOLDING, 4, 2),
    ]


def test_a_read_never_exceeds_125_registers() -> None:
    reads = plan_modbus_reads(spans(HOLDING, *[(i, 1) for i in range(300)]))
    assert ranges(reads) == [(HOLDING, 0, 125), (HOLDING, 125, 125), (HOLDING, 250, 50)]
    # a multi-register value is never split across two reads
    reads = plan_modbus_reads(spans(HOLDING, *[(2 * i, 2) for i in range(100)]))
    assert all(read.count <= 125 for read in reads)
    assert ranges(reads)[0] == (HOLDING, 0, 124)
    assert sum(len(read.members) for read in reads) == 100


def test_a_device_limit_below_125_is_respected() -> None:
    reads = plan_modbus_reads(spans(HOLDING, *[(i, 1) for i in range(100)]), max_registers=32)
    assert [read.count for read in reads] == [32, 32, 32, 4]


def test_coils_and_discrete_inputs_join_up_to_2000_bits() -> None:
    reads = plan_modbus_reads(
        spans(COILS, *[(i, 1) for i in range(0, 4000, 2)]),
        max_gap_bits=1,
        bit_blocks=frozenset({COILS}),
    )
    assert [read.count for read in reads] == [1999, 1999]  # bits 0..1998 hold 1000 tags
    assert sum(len(read.members) for read in reads) == 2000
    assert [
        r.count
        for r in plan_modbus_reads(
            spans(COILS, *[(i, 1) for i in range(2001)]), bit_blocks=frozenset({COILS})
        )
    ] == [2000, 1]


def test_each_unit_and_table_is_planned_apart() -> None:
    other_unit = (2, "holding")
    reads = plan_modbus_reads(
        spans(HOLDING, (0, 1), (1, 1))
        + spans(INPUT, (0, 1), (1, 1))
        + spans(other_unit, (0, 1), (1, 1))
    )
    assert sorted(ranges(reads), key=repr) == sorted(
        [(HOLDING, 0, 2), (INPUT, 0, 2), (other_unit, 0, 2)], key=repr
    )


def test_overlapping_and_duplicate_tags_share_a_read() -> None:
    reads = plan_modbus_reads(spans(HOLDING, (10, 2), (10, 1), (11, 1), (10, 4)))
    assert ranges(reads) == [(HOLDING, 10, 4)]
    assert len(reads[0].members) == 4


def test_runs_split_a_read_at_its_gaps() -> None:
    (read,) = plan_modbus_reads(spans(HOLDING, (0, 2), (5, 1), (6, 2)), max_gap_registers=10)
    assert ranges(read.runs()) == [(HOLDING, 0, 2), (HOLDING, 5, 3)]


def test_a_value_larger_than_one_read_is_an_error() -> None:
    with pytest.raises(ValueError, match="more than one read of 2"):
        coalesce(spans(HOLDING, (0, 4)), max_count=2, max_gap=0)


def test_s7_tags_of_one_db_join_into_one_item_and_dbs_stay_apart() -> None:
    db1, db2 = ("DB", 1), ("DB", 2)
    requests = plan_s7_reads(spans(db1, (0, 2), (2, 1), (4, 4)) + spans(db2, (0, 4)), pdu_size=240)
    assert len(requests) == 1
    assert ranges(requests[0].items) == [(db1, 0, 8), (db2, 0, 4)]


def test_s7_requests_respect_the_item_limit() -> None:
    # 50 DBs, one tag each: 20 items per request at most
    requests = plan_s7_reads([Span(i, ("DB", i + 1), 0, 4) for i in range(50)], pdu_size=960)
    assert [len(request.items) for request in requests] == [20, 20, 10]
    assert s7_item_limit(240) == 19  # (240 - 12) // 12 address specifications fit
    assert s7_item_limit(480) == S7_MAX_ITEMS


def test_s7_requests_respect_the_pdu_size_of_request_and_response() -> None:
    pdu = 240
    requests = plan_s7_reads([Span(i, ("DB", i + 1), 0, 100) for i in range(5)], pdu_size=pdu)
    assert all(request.response_size <= pdu for request in requests)
    assert all(request.request_size <= pdu for request in requests)
    assert [len(request.items) for request in requests] == [2, 2, 1]
    # one long range is cut into items that each fit a response
    (request, *rest) = plan_s7_reads(spans(("DB", 1), *[(i, 1) for i in range(600)]), pdu_size=pdu)
    assert all(item.count <= pdu - 19 for r in [request, *rest] for item in r.items)


def test_s7_response_size_counts_fill_bytes() -> None:
    request = S7Request([Read("a", 0, 1), Read("b", 0, 1)])
    assert request.response_size == 14 + (4 + 1 + 1) + (4 + 1)
