"""The catalog process's core: the store, its file, announcements, probes, expiry and status.

`main.py` builds one `CatalogService`, gives `apply_config` to the ConfigSource (file watch and
the operator's push) and its read and write methods to `api.py`. Changes reach MQTT in the
order they happened; writes are saved to `storeFile` before they are answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spine_runtime.catalog.announce import Announcer, Key
from spine_runtime.catalog.entries import CatalogEntry, ServiceWrite
from spine_runtime.catalog.metrics import CatalogMetrics
from spine_runtime.catalog.probes import NO_PROBE, Prober
from spine_runtime.catalog.store import CatalogStore, Change
from spine_runtime.catalog.storefile import load_entries, save_entries
from spine_runtime.common.configsource import ConfigError
from spine_runtime.config.catalog import CatalogConfig

log = logging.getLogger(__name__)

# The expiry task wakes at the next expiry, and at least this often (a clock step is caught).
EXPIRY_CHECK_MAX_SECONDS = 30.0


def utc_now() -> datetime:
    return datetime.now(UTC)


class CatalogService:
    def __init__(
        self,
        config: CatalogConfig,
        config_digest: Callable[[], str],
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.config = config
        self.config_digest = config_digest
        self.clock = clock
        self.metrics = CatalogMetrics()
        self.store = CatalogStore(config.max_external_entries, config.max_ttl_seconds)
        # The store file is where it was at start: moving it needs a restart (said in the log).
        self.store_file = Path(config.store_file) if config.store_file else None
        self.prober = Prober(self.metrics)
        self.announcer: Announcer | None = None
        self.started = False
        self._expiry_wakeup = asyncio.Event()
        self._expiry_task: asyncio.Task[None] | None = None
        self._save_lock = asyncio.Lock()
        self._generation = 0
        self._saved_generation = 0

    # lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        now = self.clock()
        if self.store_file is not None:
            entries = await asyncio.to_thread(load_entries, self.store_file)
            loaded = self.store.load_external(entries, now)
            log.info("Loaded %d external services from %s", loaded, self.store_file)
        self.store.replace_owned(self.config.entries, now)
        self._start_announcer(self.config)  # announces everything once connected
        self.prober.update(self.config.entries)
        self._count_entries()
        self._expiry_task = asyncio.create_task(self._expire_forever(), name="catalog-expiry")
        self.started = True

    async def stop(self) -> None:
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task
        await self.prober.stop()
        if self.announcer is not None:
            await self.announcer.stop()

    def _start_announcer(self, config: CatalogConfig) -> None:
        if config.mqtt is None:
            self.announcer = None
            return
        self.announcer = Announcer(
            config.mqtt,
            config.announce_prefix,
            self._current_announcements,
            self._announced,
            self.metrics,
        )
        self.announcer.start()

    async def apply_config(self, config: CatalogConfig) -> None:
        """A new config: its entries replace the owned set; settings apply at once."""
        if config.http != self.config.http:
            log.warning("The catalog's http settings change only with a restart")
        if config.store_file != self.config.store_file:
            log.warning("The catalog's storeFile changes only with a restart")
        mqtt_changed = (config.mqtt, config.announce_prefix) != (
            self.config.mqtt,
            self.config.announce_prefix,
        )
        if mqtt_changed and config.mqtt is not None:
            # Checked before anything changes: a config is applied whole or not at all.
            try:
                config.mqtt.password()
            except OSError as error:
                raise ConfigError(
                    f"mqtt.passwordFile: cannot read {config.mqtt.password_file}: {error.strerror}"
                ) from None
        self.store.max_external_entries = config.max_external_entries
        self.store.max_ttl_seconds = config.max_ttl_seconds
        changes = self.store.replace_owned(config.entries, self.clock())
        self.config = config
        if mqtt_changed:
            if self.announcer is not None:
                await self.announcer.stop()
            self._start_announcer(config)
        self._announce(changes)
        self.prober.update(config.entries)
        self._count_entries()

    # reads ----------------------------------------------------------------------------------

    def visible(self) -> list[CatalogEntry]:
        return self.store.visible(self.clock())

    def get(self, service_id: str) -> CatalogEntry | None:
        return self.store.get(service_id, self.clock())

    # writes (the API checked the role and parsed the body) -----------------------------------

    async def write(self, service_id: str | None, write: ServiceWrite) -> tuple[CatalogEntry, bool]:
        now = self.clock()
        changes = self._expire(now)
        try:
            entry, created, written = self.store.write(service_id, write, now)
        finally:
            if changes:
                await self._after_change(changes)
        await self._after_change(written)
        self._expiry_wakeup.set()  # the new expiry may be the next one
        return entry, created

    async def delete(self, service_id: str) -> None:
        now = self.clock()
        changes = self._expire(now)
        try:
            changes += self.store.delete(service_id, now)
        finally:
            if changes:
                await self._after_change(changes)

    def _expire(self, now: datetime) -> list[Change]:
        changes = self.store.expire(now)
        self.metrics.expired.inc(len(changes))
        return changes

    async def _after_change(self, changes: list[Change]) -> None:
        self._announce(changes)
        self._count_entries()
        self._generation += 1
        await self._save()

    async def _save(self) -> None:
        """Write the external entries; concurrent writers share one save of the newest state."""
        if self.store_file is None:
            return
        async with self._save_lock:
            generation = self._generation
            if generation == self._saved_generation:
                return
            snapshot = [entry.to_wire() for entry in self.store.external.values()]
            await asyncio.to_thread(save_entries, self.store_file, snapshot)
            self._saved_generation = generation

    async def _expire_forever(self) -> None:
        while True:
            changes = self._expire(self.clock())
            if changes:
                try:
                    await self._after_change(changes)
                except OSError as error:
                    log.error("Cannot save the catalog's store file: %s", error)
            next_expiry = self.store.next_expiry()
            wait = EXPIRY_CHECK_MAX_SECONDS
            if next_expiry is not None:
                wait = min(max((next_expiry - self.clock()).total_seconds(), 0.0), wait)
            self._expiry_wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._expiry_wakeup.wait(), wait + 0.01)

    # announcements --------------------------------------------------------------------------

    def _announce(self, changes: list[Change]) -> None:
        announcer = self.announcer
        if announcer is None:
            return
        for change in changes:
            key: Key = (change.entry.type, change.entry.id)
            if change.kind == "alive":
                announcer.alive(key, change.entry.payload())
            else:
                announcer.dead(key, change.entry.payload())

    def _current_announcements(self) -> dict[Key, bytes]:
        return {(entry.type, entry.id): entry.payload() for entry in self.visible()}

    def _announced(self, key: Key) -> bool:
        entry = self.get(key[1])
        return entry is not None and entry.type == key[0]

    # health and status ----------------------------------------------------------------------

    def _count_entries(self) -> None:
        now = self.clock()
        external = sum(not entry.expired(now) for entry in self.store.external.values())
        self.metrics.entries.labels("owned").set(len(self.store.owned))
        self.metrics.entries.labels("external").set(external)

    def healthy(self) -> bool:
        return self.started and self._expiry_task is not None and not self._expiry_task.done()

    def status(self) -> dict[str, Any]:
        entries = []
        for entry in sorted(self.store.owned.values(), key=lambda e: e.id):
            result = self.prober.results.get(entry.id, NO_PROBE)
            entries.append(
                {
                    "id": entry.id,
                    "owner": entry.owner,
                    "reachable": result.reachable,
                    "detail": result.detail,
                }
            )
        announcer = self.announcer
        return {
            "ready": self.started,
            "entries": entries,
            "externalEntries": len(self.store.external),
            "mqttConnected": None if announcer is None else announcer.connected,
            "configDigest": self.config_digest(),
        }
