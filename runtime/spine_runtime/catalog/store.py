"""The catalog's entries in memory, pure: owned ones from the config, external ones with a ttl.

Every change returns the announcements it calls for (`Change`: alive or dead), so the service
publishes exactly what changed. Owned entries can never be replaced or deleted through a write
(`WriteRefused`, 409 as LinkSmart answers a conflict); an owned entry that arrives with the id
of an external one displaces it. `service.CatalogService` drives it; unit tests call it directly.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from spine_runtime.catalog.entries import CatalogEntry, ServiceWrite, external_entry, owned_body
from spine_runtime.config.catalog import ServiceEntry

log = logging.getLogger(__name__)


class WriteRefused(Exception):
    """A write the catalog will not make: its HTTP status and a message a person can act on."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Change:
    kind: Literal["alive", "dead"]
    entry: CatalogEntry


class CatalogStore:
    def __init__(self, max_external_entries: int, max_ttl_seconds: int) -> None:
        self.max_external_entries = max_external_entries
        self.max_ttl_seconds = max_ttl_seconds
        self.owned: dict[str, CatalogEntry] = {}
        self.external: dict[str, CatalogEntry] = {}

    # reads ----------------------------------------------------------------------------------

    def visible(self, now: datetime) -> list[CatalogEntry]:
        """Every live entry, ordered by id (LinkSmart keeps its services sorted by id too)."""
        live = [entry for entry in self.external.values() if not entry.expired(now)]
        return sorted([*self.owned.values(), *live], key=lambda entry: entry.id)

    def get(self, service_id: str, now: datetime) -> CatalogEntry | None:
        entry = self.owned.get(service_id) or self.external.get(service_id)
        if entry is None or entry.expired(now):
            return None
        return entry

    def next_expiry(self) -> datetime | None:
        return min((e.expires for e in self.external.values() if e.expires), default=None)

    # owned entries --------------------------------------------------------------------------

    def replace_owned(self, entries: Sequence[ServiceEntry], now: datetime) -> list[Change]:
        """Take a new config's entries as the owned set; alive for new and changed ones, dead
        for removed ones (and for an external entry an owned one displaces)."""
        changes: list[Change] = []
        fresh: dict[str, CatalogEntry] = {}
        for entry in entries:
            if entry.id in fresh:
                log.warning(
                    "Ignored a second catalog entry %s (from %s): %s has it",
                    entry.id,
                    entry.owner,
                    fresh[entry.id].owner,
                )
                continue
            body = owned_body(entry)
            old = self.owned.get(entry.id)
            if old is not None and old.body == body and old.owner == entry.owner:
                fresh[entry.id] = old
                continue
            new = CatalogEntry(
                body=body,
                owner=entry.owner,
                created=old.created if old is not None else now,
                updated=now,
            )
            fresh[entry.id] = new
            if old is not None and old.type != new.type:
                changes.append(Change("dead", old))  # its alive topic names the old type
            displaced = self.external.pop(entry.id, None)
            if displaced is not None:
                log.warning(
                    "%s now owns the id %s: removed the external entry of that id",
                    entry.owner,
                    entry.id,
                )
                if displaced.type != new.type:
                    changes.append(Change("dead", displaced))
            changes.append(Change("alive", new))
        changes.extend(
            Change("dead", old) for service_id, old in self.owned.items() if service_id not in fresh
        )
        self.owned = fresh
        return changes

    # external entries -----------------------------------------------------------------------

    def load_external(self, entries: Iterable[CatalogEntry], now: datetime) -> int:
        """Entries read back from the store file: the live ones whose id no owned entry has."""
        loaded = 0
        for entry in entries:
            if entry.expired(now) or entry.id in self.owned or entry.id in self.external:
                continue
            self.external[entry.id] = entry
            loaded += 1
        return loaded

    def write(
        self, service_id: str | None, write: ServiceWrite, now: datetime
    ) -> tuple[CatalogEntry, bool, list[Change]]:
        """Create (POST: no id; PUT: a new id) or replace an external entry.

        Returns the entry, whether it was created, and the announcements (expiries included).
        """
        changes = self.expire(now)
        if service_id is None:
            service_id = str(uuid.uuid4())
        owned = self.owned.get(service_id)
        if owned is not None:
            raise WriteRefused(409, _owned_message(service_id, owned, "replaced"))
        existing = self.external.get(service_id)
        if existing is None and len(self.external) >= self.max_external_entries:
            raise WriteRefused(
                409,
                f"The catalog holds its maximum of {self.max_external_entries} external "
                "services: delete one or wait until one expires",
            )
        ttl = write.ttl if write.ttl is not None else self.max_ttl_seconds
        entry = external_entry(
            service_id, write, ttl, now, created=existing.created if existing else None
        )
        if existing is not None and existing.type != entry.type:
            changes.append(Change("dead", existing))
        self.external[service_id] = entry
        changes.append(Change("alive", entry))
        return entry, existing is None, changes

    def delete(self, service_id: str, now: datetime) -> list[Change]:
        changes = self.expire(now)
        owned = self.owned.get(service_id)
        if owned is not None:
            raise WriteRefused(409, _owned_message(service_id, owned, "deleted"))
        entry = self.external.pop(service_id, None)
        if entry is None:
            raise WriteRefused(404, f"Service with id {service_id} is not found")
        changes.append(Change("dead", entry))
        return changes

    def expire(self, now: datetime) -> list[Change]:
        expired = [entry for entry in self.external.values() if entry.expired(now)]
        for entry in expired:
            del self.external[entry.id]
            log.info("Service %s expired", entry.id)
        return [Change("dead", entry) for entry in expired]


def _owned_message(service_id: str, entry: CatalogEntry, verb: str) -> str:
    return (
        f"Service {service_id} belongs to {entry.owner} and cannot be {verb} through the "
        f"catalog API: change or delete {entry.owner} instead"
    )
