"""S7 face of the simulated press: DB1 on python-snap7's (pure Python, threaded) server.

`SimApp` starts it and calls `sync` every tick: under the DB's lock it first takes the
setpoints a client wrote since the last tick (the bytes differ from what was last written),
then writes the whole DB from the physics, so a client never reads a half-updated DB.
Counting: snap7 reports each read or written item through its public event callback
(`read_item`, `write_item`); it has no per-request hook, so request PDUs (`read`, `write`) are
counted by a thin subclass over its request dispatcher (see `CountingS7Server`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

import snap7
from snap7 import SrvArea, SrvEvent
from snap7.error import S7ConnectionError

from spine_runtime.sim.addressmap import (
    S7_DB_NUMBER,
    S7_RUNNING_BYTE,
    S7_TARGET_SPEED,
    s7_db_image,
    s7_setpoints,
)
from spine_runtime.sim.config import S7Settings
from spine_runtime.sim.counting import RequestCounts
from spine_runtime.sim.physics import PressPhysics, clamp_target_speed

log = logging.getLogger(__name__)

PROTOCOL = "s7"

# snap7 event codes (as in the C library's s7_server.h).
EVENT_DATA_READ = 0x00020000
EVENT_DATA_WRITE = 0x00040000

# S7comm header: protocol id 0x32, then the PDU type; a job's parameters start at byte 10
# with the function code (0x04 read variable, 0x05 write variable).
S7_PROTOCOL_ID = 0x32
S7_PDU_TYPE_JOB = 0x01
S7_JOB_PARAMETERS = 10
S7_FUNCTIONS = {0x04: "read", 0x05: "write"}

STOP_TIMEOUT_SECONDS = 1.5


def s7_request_kind(pdu: bytes) -> str | None:
    """The kind of an S7comm request PDU to count, or None for set-up and everything else."""
    if len(pdu) <= S7_JOB_PARAMETERS or pdu[0] != S7_PROTOCOL_ID or pdu[1] != S7_PDU_TYPE_JOB:
        return None
    return S7_FUNCTIONS.get(pdu[S7_JOB_PARAMETERS])


class CountingS7Server(snap7.Server):
    """snap7's server with a count of request PDUs.

    Overrides `_process_request`, a private method of python-snap7 3.x (checked on 3.3): its
    event callback reports items, so a multi-variable read of N items would otherwise look like
    N requests. If a later version renames the method, the override is never called and only
    the item counts remain; `request_counting_works` tells.
    """

    def __init__(self, counts: RequestCounts) -> None:
        super().__init__(log=False)
        self.counts = counts
        self.request_counting_works = hasattr(snap7.Server, "_process_request")

    def _process_request(
        self, request_data: bytes, client_address: tuple[str, int]
    ) -> bytes | None:
        kind = s7_request_kind(request_data)
        if kind is not None:
            self.counts.count(PROTOCOL, kind)
        result: bytes | None = super()._process_request(request_data, client_address)
        return result


class S7PressServer:
    """Serves DB1 and keeps it equal to the physics, picking up client setpoint writes."""

    def __init__(self, settings: S7Settings, physics: PressPhysics, counts: RequestCounts) -> None:
        self.settings = settings
        self.physics = physics
        self.counts = counts
        self._server: CountingS7Server | None = None
        self._db = s7_db_image(physics.snapshot())
        self._last_written = bytes(self._db)

    def start(self) -> None:
        server = CountingS7Server(self.counts)
        server.register_area(SrvArea.DB, S7_DB_NUMBER, self._db)
        server.set_events_callback(self._on_event)
        try:
            server.start_to(self.settings.host, self.settings.port)
        except S7ConnectionError as error:
            # Callers handle a port that cannot be bound as the OSError it is.
            raise OSError(str(error).removeprefix("Failed to start server: ")) from error
        self._server = server
        log.info(
            "S7 listening on %s:%s (DB%s, %s bytes)",
            self.settings.host,
            self.settings.port,
            S7_DB_NUMBER,
            len(self._db),
        )
        if not server.request_counting_works:
            log.warning("This python-snap7 has no request hook: S7 requests are counted as items")

    async def stop(self) -> None:
        """Stop, waiting at most STOP_TIMEOUT_SECONDS: snap7 joins each connected client's
        thread for up to a second, and those threads are daemons that die with the process."""
        server, self._server = self._server, None
        if server is None:
            return
        loop = asyncio.get_running_loop()
        stopped = asyncio.Event()

        def stop_server() -> None:
            try:
                server.stop()
            finally:
                with contextlib.suppress(RuntimeError):  # the loop may be gone by then
                    loop.call_soon_threadsafe(stopped.set)

        threading.Thread(target=stop_server, name="s7-stop", daemon=True).start()
        try:
            await asyncio.wait_for(stopped.wait(), STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            log.warning("S7 server still closing client connections; not waiting for them")

    def _on_event(self, event: SrvEvent) -> None:
        if event.EvtCode == EVENT_DATA_READ:
            self.counts.count(PROTOCOL, "read_item")
        elif event.EvtCode == EVENT_DATA_WRITE:
            self.counts.count(PROTOCOL, "write_item")

    def sync(self) -> None:
        """Feed client setpoint writes into the physics, then refresh DB1 from it."""
        server = self._server
        if server is None:
            return
        server.lock_area(SrvArea.DB, S7_DB_NUMBER)
        try:
            self._take_client_writes()
            image = s7_db_image(self.physics.snapshot())
            self._db[:] = image
            self._last_written = bytes(image)
        finally:
            server.unlock_area(SrvArea.DB, S7_DB_NUMBER)

    def _take_client_writes(self) -> None:
        setpoints = slice(S7_TARGET_SPEED, S7_RUNNING_BYTE + 1)
        if self._db[setpoints] == self._last_written[setpoints]:
            return
        target_speed, running = s7_setpoints(self._db)
        last_target_speed, last_running = s7_setpoints(self._last_written)
        if target_speed != last_target_speed:
            # A DB write cannot be refused, so the PLC program limits the setpoint.
            self.physics.set_target_speed(clamp_target_speed(target_speed))
        if running != last_running:
            self.physics.set_running(running)
