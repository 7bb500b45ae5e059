"""The SSE change stream: fan each committed change out to the open `text/event-stream` clients.

The API's stream handler registers an `SseClient` (with its `ids`, `fields` and `filter`); the
service calls `SseHub.publish` once per committed change. An event is serialised once for every
client without a field selection, and a client that falls too far behind is dropped rather than
allowed to hold memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson

from spine_runtime.twin.fields import Selection, select
from spine_runtime.twin.rql import Node, matches
from spine_runtime.twin.state import Outcome

log = logging.getLogger(__name__)

MAX_QUEUED_EVENTS = 10_000


class SseClient:
    """One open stream: what it wants, and the events queued for it."""

    def __init__(
        self,
        ids: frozenset[str] | None = None,
        selection: Selection | None = None,
        query: Node | None = None,
    ) -> None:
        self.ids = ids
        self.selection = selection
        self.query = query
        self.wakeup = asyncio.Event()
        self.closed = False
        self._chunks: list[bytes] = []

    def push(self, chunk: bytes) -> None:
        if self.closed:
            return
        if len(self._chunks) >= MAX_QUEUED_EVENTS:
            log.warning("Closed an SSE stream that fell %d events behind", len(self._chunks))
            self.close()
            return
        self._chunks.append(chunk)
        self.wakeup.set()

    def take(self) -> bytes:
        """Everything queued, as one write."""
        self.wakeup.clear()
        chunks, self._chunks = self._chunks, []
        return b"".join(chunks)

    def close(self) -> None:
        self.closed = True
        self.wakeup.set()


def event_chunk(document: dict[str, Any]) -> bytes:
    # orjson never writes a newline, so the JSON is one `data:` line.
    return b"data: " + orjson.dumps(document) + b"\n\n"


class SseHub:
    def __init__(self) -> None:
        self.clients: set[SseClient] = set()

    def add(self, client: SseClient) -> None:
        self.clients.add(client)

    def remove(self, client: SseClient) -> None:
        self.clients.discard(client)

    def publish(self, outcome: Outcome, full_document: Callable[[], dict[str, Any]]) -> None:
        """Queue one change for every client that wants it."""
        if not self.clients:
            return
        plain: bytes | None = None
        partial: dict[str, Any] | None = None
        full: dict[str, Any] | None = None
        for client in list(self.clients):
            if client.ids is not None and outcome.thing_id not in client.ids:
                continue
            if client.query is not None:
                if full is None:
                    full = full_document()
                if not matches(client.query, full):
                    continue
            if partial is None:
                partial = outcome.partial()
            if client.selection is None:
                if plain is None:
                    plain = event_chunk(partial)
                client.push(plain)
                continue
            chosen = select(partial, client.selection)
            if chosen:
                client.push(event_chunk(chosen))

    def close_all(self) -> None:
        for client in list(self.clients):
            client.close()
