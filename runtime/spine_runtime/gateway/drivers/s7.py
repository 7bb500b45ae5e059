"""Siemens S7 driver on python-snap7: multi-variable reads within the PDU, bit-exact writes.

The connection runner drives it. python-snap7 provides the ISO-on-TCP session, the PDU size
negotiation and the request encoders; its async client reads variables one request each, so
this driver sends the multi-variable read itself and parses each item's return code, so one
missing DB fails only its own tags. A BOOL is written with the BIT transport size, which a PLC
applies to that bit alone (no read-modify-write of the byte). S7-1200/1500 answer only with
PUT/GET access enabled and only for non-optimized DBs (README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from typing import Any, cast

from snap7 import AsyncClient
from snap7.datatypes import S7Area as WireArea
from snap7.datatypes import S7WordLen
from snap7.error import S7Error

from spine_runtime.gateway.addresses import S7Address, S7Area
from spine_runtime.gateway.codec import decode_s7, encode_s7
from spine_runtime.gateway.drivers.base import (
    BoundTag,
    ConnectionLost,
    Driver,
    PeerRefused,
    PollGroup,
    Reading,
)
from spine_runtime.gateway.planner import S7Request, Span, plan_s7_reads

WIRE_AREAS = {
    S7Area.DB: WireArea.DB,
    S7Area.M: WireArea.MK,
    S7Area.I: WireArea.PE,
    S7Area.Q: WireArea.PA,
}
ACK_DATA = 0x03
ITEM_OK = 0xFF
ITEM_ERRORS = {
    0x01: "hardware error",
    0x03: "access to the object is not allowed (protection level, or PUT/GET access off)",
    0x05: "address out of range (is the DB that long, and not optimized?)",
    0x06: "data type not supported",
    0x07: "data type inconsistent",
    0x0A: "object does not exist (no such DB?)",
}
HEADER_ERRORS = {
    0x8104: "the PLC does not allow this service: on an S7-1200/1500 enable PUT/GET access "
    "(README.md, S7)",
    0x8500: "the request exceeds the negotiated PDU size",
    0xD602: "the PLC is password protected",
}


def s7_location(tag: BoundTag) -> S7Address:
    location = tag.address.location
    assert isinstance(location, S7Address)
    return location


def header_of(pdu: bytes) -> tuple[int, int, int, int]:
    """(pdu type, parameter length, data length, error word) of an ack or ack-data PDU."""
    if len(pdu) < 12 or pdu[0] != 0x32:
        raise ConnectionLost("the PLC sent a malformed S7 response")
    _, pdu_type, _, _, param_length, data_length, error_class, error_code = struct.unpack(
        ">BBHHHHBB", pdu[:12]
    )
    return pdu_type, param_length, data_length, error_class << 8 | error_code


def split_items(pdu: bytes, count: int) -> list[tuple[int, bytes]]:
    """The (return code, data) of each item of a read response."""
    _, param_length, _, _ = header_of(pdu)
    offset = 12 + param_length
    items = []
    for index in range(count):
        if offset + 4 > len(pdu):
            raise ConnectionLost("the PLC sent a truncated S7 read response")
        code, transport, length = struct.unpack(">BBH", pdu[offset : offset + 4])
        offset += 4
        # Lengths are in bits for bit/byte/integer transport sizes, in bytes for the others.
        size = (length + 7) // 8 if transport in (0x03, 0x04, 0x05) else length
        items.append((code, pdu[offset : offset + size]))
        offset += size
        if size % 2 and index < count - 1:
            offset += 1
    return items


class S7Driver(Driver):
    protocol = "s7"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = self.connection.s7
        assert settings is not None
        self.settings = settings
        self.client: AsyncClient | None = None
        self.pdu_size = 240
        self.lock = asyncio.Lock()

    @staticmethod
    def span_of(tag: BoundTag) -> Span:
        location = s7_location(tag)
        assert tag.address.value_type is not None
        return Span(
            tag,
            (location.area, location.db_number),
            location.byte_offset,
            tag.address.value_type.size,
        )

    def plan(self, tags: list[BoundTag]) -> list[S7Request]:
        return plan_s7_reads(
            [self.span_of(tag) for tag in tags],
            pdu_size=self.pdu_size,
            max_items=self.settings.max_items_per_read,
            max_gap=self.settings.max_gap_bytes,
        )

    async def connect(self) -> None:
        client = AsyncClient()
        self.client = client
        try:
            # asyncio.timeout, not wait_for, here and below: 3.11's wait_for can lose a cancel.
            async with asyncio.timeout(self.settings.timeout):
                await client.connect(
                    self.settings.host, self.settings.rack, self.settings.slot, self.settings.port
                )
        except (TimeoutError, S7Error, OSError) as error:
            raise ConnectionLost(
                f"cannot open an S7 session with {self.settings.host}:{self.settings.port} "
                f"(rack {self.settings.rack}, slot {self.settings.slot}): {error or 'timeout'}"
            ) from error
        self.pdu_size = int(client.pdu_length)
        self.groups = self.group_by_interval()
        for group in self.groups:
            group.plan = self.plan(group.tags)

    async def close(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            with contextlib.suppress(TimeoutError, S7Error, OSError):
                async with asyncio.timeout(2):
                    await client.disconnect()

    async def _exchange(self, request: bytes) -> bytes:
        client = self.client
        if client is None or client.connection is None:
            raise ConnectionLost("not connected")
        connection = client.connection
        expected = struct.unpack(">H", request[4:6])[0]
        try:
            async with self.lock:
                await connection.send_data(request)
                for _ in range(4):  # a late answer to a timed-out request may come first
                    async with asyncio.timeout(self.settings.timeout):
                        pdu = await connection.receive_data()
                    if len(pdu) >= 6 and struct.unpack(">H", pdu[4:6])[0] == expected:
                        return pdu
        except (TimeoutError, S7Error, OSError) as error:
            raise ConnectionLost(f"S7 request failed: {error or 'timeout'}") from error
        raise ConnectionLost("the PLC's responses do not match the requests")

    async def poll(self, group: PollGroup) -> list[Reading]:
        readings: list[Reading] = []
        for request in group.plan:
            readings += await self._read(request)
        group.requests_last_cycle = len(group.plan)
        return readings

    async def _read(self, request: S7Request) -> list[Reading]:
        assert self.client is not None
        wire = self.client.protocol.build_multi_read_request(
            [
                (int(WIRE_AREAS[area]), db_number, item.start, item.count)
                for item in request.items
                for area, db_number in [cast(tuple[S7Area, int], item.block)]
            ]
        )
        started = time.monotonic()
        try:
            pdu = await self._exchange(wire)
        except ConnectionLost:
            self.record_read(False, time.monotonic() - started)
            raise
        source_time = time.time()
        pdu_type, _, _, error = header_of(pdu)
        if error or pdu_type != ACK_DATA:
            self.record_read(False, time.monotonic() - started)
            reason = HEADER_ERRORS.get(error, f"S7 error {error:#06x}")
            if error == 0x8104:
                raise PeerRefused(reason)
            return [
                Reading(
                    span.key,
                    error=f"the PLC refused the read: {reason}",
                    reason="s7_error",
                    source_time=source_time,
                )
                for item in request.items
                for span in item.members
            ]
        self.record_read(True, time.monotonic() - started)
        readings = []
        for item, (code, data) in zip(
            request.items, split_items(pdu, len(request.items)), strict=True
        ):
            area, db_number = cast(tuple[S7Area, int], item.block)
            if code != ITEM_OK or len(data) < item.count:
                where = f"DB{db_number}" if area is S7Area.DB else str(area)
                message = (
                    f"the PLC refused {where} bytes {item.start}..{item.end - 1}: "
                    f"{ITEM_ERRORS.get(code, f'return code {code:#04x}')}"
                )
                readings += [
                    Reading(
                        span.key, error=message, reason="s7_item_error", source_time=source_time
                    )
                    for span in item.members
                ]
                continue
            for span in item.members:
                tag: BoundTag = span.key
                assert tag.address.value_type is not None
                at = span.offset - item.start
                value = decode_s7(data[at:], tag.address.value_type, s7_location(tag).bit)
                readings.append(Reading(tag, value, source_time=source_time))
        return readings

    async def write(self, tag: BoundTag, raw: Any) -> None:
        assert self.client is not None
        location = s7_location(tag)
        value_type = tag.address.value_type
        assert value_type is not None
        area = WIRE_AREAS[location.area]
        protocol = self.client.protocol
        if value_type.is_bool:
            assert location.bit is not None
            request = protocol.build_write_request(
                area,
                location.db_number,
                location.byte_offset * 8 + location.bit,
                S7WordLen.BIT,
                bytes([1 if raw else 0]),
            )
        else:
            request = protocol.build_write_request(
                area,
                location.db_number,
                location.byte_offset,
                S7WordLen.BYTE,
                encode_s7(raw, value_type),
            )
        pdu = await self._exchange(request)
        _, param_length, _, error = header_of(pdu)
        if error:
            raise ValueError(
                f"the PLC refused the write to {location}: "
                f"{HEADER_ERRORS.get(error, f'S7 error {error:#06x}')}"
            )
        code = pdu[12 + param_length] if len(pdu) > 12 + param_length else 0
        if code != ITEM_OK:
            raise ValueError(
                f"the PLC refused the write to {location}: "
                f"{ITEM_ERRORS.get(code, f'return code {code:#04x}')}"
            )

    async def read_back(self, tag: BoundTag) -> Reading:
        readings = await self.poll(PollGroup(0, [tag], self.plan([tag])))
        return readings[0]
