"""Read planning: cover a set of tags with the fewest requests the protocol allows.

The Modbus and S7 drivers call these once per connection (S7 after it knows the PDU size the
PLC negotiated) and then repeat the plan every poll cycle. Pure functions, unit-tested.

Modbus: one read covers one unit and one table; contiguous and near-contiguous addresses join
when the span stays within the protocol's limit (125 registers, 2000 bits) and each gap is at
most `max_gap`. Sorted by offset, extending the current read while it fits is optimal: any
plan must start a read at the lowest uncovered offset, and the greedy read reaches furthest.
S7: tags of one area and DB join into items the same way; items are then packed into requests
within the item limit and the PDU size, for both the request and its response.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

MODBUS_MAX_REGISTERS = 125  # Modbus Application Protocol 1.1b3, function 0x03/0x04
MODBUS_MAX_BITS = 2000  # function 0x01/0x02

S7_REQUEST_HEADER = 10 + 2  # job header + (function, item count)
S7_REQUEST_ITEM = 12  # one address specification
S7_RESPONSE_HEADER = 12 + 2  # ack-data header (with error class and code) + (function, count)
S7_RESPONSE_ITEM = 4  # return code, transport size, length; then data, padded to even length
S7_MAX_ITEMS = 20  # what S7-300/400/1200/1500 accept per request with their usual PDU sizes


@dataclass(frozen=True)
class Span:
    """What one tag needs: `count` registers, bits or bytes from `offset` in one block."""

    key: Any  # what the caller maps the data back to (the gateway: the tag)
    block: Hashable  # Modbus: (unit, table); S7: (area, db number)
    offset: int
    count: int

    @property
    def end(self) -> int:
        return self.offset + self.count


@dataclass
class Read:
    """One request (Modbus) or one item (S7): a block range and the tags it serves."""

    block: Hashable
    start: int
    count: int
    members: list[Span] = field(default_factory=list)

    @property
    def end(self) -> int:
        return self.start + self.count

    def runs(self) -> list[Read]:
        """The same members split at every gap: the plan for a device that refuses gaps."""
        return coalesce(self.members, max_count=self.count, max_gap=0)


def coalesce(spans: Iterable[Span], max_count: int, max_gap: int) -> list[Read]:
    """Fewest reads covering every span, each within `max_count` and bridging gaps <= max_gap."""
    reads: list[Read] = []
    ordered = sorted(spans, key=lambda span: (repr(span.block), span.offset, -span.count))
    for block, members in groupby(ordered, key=lambda span: span.block):
        current: Read | None = None
        for span in members:
            if span.count > max_count:
                raise ValueError(
                    f"{span.key} needs {span.count}, more than one read of {max_count}"
                )
            if current is not None:
                gap = span.offset - current.end
                new_end = max(current.end, span.end)
                if gap <= max_gap and new_end - current.start <= max_count:
                    current.count = new_end - current.start
                    current.members.append(span)
                    continue
            current = Read(block, span.offset, span.count, [span])
            reads.append(current)
    return reads


def plan_modbus_reads(
    spans: Iterable[Span],
    *,
    max_registers: int = MODBUS_MAX_REGISTERS,
    max_bits: int = MODBUS_MAX_BITS,
    max_gap_registers: int = 16,
    max_gap_bits: int = 256,
    bit_blocks: frozenset[Hashable] = frozenset(),
) -> list[Read]:
    """Modbus reads; a span whose block is in `bit_blocks` counts bits, others registers."""
    all_spans = list(spans)
    bits = [span for span in all_spans if span.block in bit_blocks]
    registers = [span for span in all_spans if span.block not in bit_blocks]
    return coalesce(registers, min(max_registers, MODBUS_MAX_REGISTERS), max_gap_registers) + (
        coalesce(bits, min(max_bits, MODBUS_MAX_BITS), max_gap_bits)
    )


@dataclass
class S7Request:
    items: list[Read] = field(default_factory=list)

    @property
    def request_size(self) -> int:
        return S7_REQUEST_HEADER + S7_REQUEST_ITEM * len(self.items)

    @property
    def response_size(self) -> int:
        size = S7_RESPONSE_HEADER
        for index, item in enumerate(self.items):
            size += S7_RESPONSE_ITEM + item.count
            if item.count % 2 and index < len(self.items) - 1:
                size += 1
        return size


def s7_item_limit(pdu_size: int, max_items: int = S7_MAX_ITEMS) -> int:
    return max(1, min(max_items, (pdu_size - S7_REQUEST_HEADER) // S7_REQUEST_ITEM))


def plan_s7_reads(
    spans: Iterable[Span], *, pdu_size: int, max_items: int = S7_MAX_ITEMS, max_gap: int = 16
) -> list[S7Request]:
    """S7 multi-variable reads: items within one response's room, requests within the limits."""
    # An item's data must fit one response on its own (and leave room for its fill byte).
    max_item_bytes = pdu_size - S7_RESPONSE_HEADER - S7_RESPONSE_ITEM - 1
    items = coalesce(spans, max_count=max_item_bytes, max_gap=max_gap)
    item_limit = s7_item_limit(pdu_size, max_items)
    requests: list[S7Request] = []
    current = S7Request()
    for item in items:
        candidate = S7Request([*current.items, item])
        if current.items and (
            len(candidate.items) > item_limit or candidate.response_size > pdu_size
        ):
            requests.append(current)
            candidate = S7Request([item])
        current = candidate
    if current.items:
        requests.append(current)
    return requests
