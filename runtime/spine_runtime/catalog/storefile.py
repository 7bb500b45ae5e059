"""External entries on disk (`storeFile`), so a restart of the catalog keeps them.

One JSON document `{"services": [...]}` in the API's own JSON, replaced atomically (written to
a temporary file in the same folder, flushed to disk, then renamed over the old one), so a crash
leaves either the old or the new file. `service.CatalogService` saves after each write and
expiry and loads at start; an entry that no longer validates is skipped with a log line.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from spine_runtime.catalog.entries import (
    BadServiceBody,
    CatalogEntry,
    ServiceWrite,
    external_entry,
    parse_time,
)

log = logging.getLogger(__name__)


def save_entries(path: Path, entries: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w") as file:
            json.dump({"services": entries}, file, separators=(",", ":"))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power loss
    finally:
        os.close(directory)


def load_entries(path: Path) -> list[CatalogEntry]:
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as error:
        log.error("Cannot read the catalog's store file %s, starting empty: %s", path, error)
        return []
    services = document.get("services") if isinstance(document, dict) else None
    if not isinstance(services, list):
        log.error("The catalog's store file %s holds no services list, starting empty", path)
        return []
    entries = []
    for index, wire in enumerate(services):
        try:
            entries.append(_entry_from_wire(wire))
        except (BadServiceBody, KeyError, TypeError, ValueError) as error:
            log.warning("Skipped services[%d] of the store file %s: %s", index, path, error)
    return entries


def _entry_from_wire(wire: dict[str, Any]) -> CatalogEntry:
    write = ServiceWrite.model_validate(wire)
    if write.id is None or write.ttl is None:
        raise ValueError("an external entry needs an id and a ttl")
    created = parse_time(wire["createdAt"])
    return external_entry(write.id, write, write.ttl, parse_time(wire["updatedAt"]), created)
