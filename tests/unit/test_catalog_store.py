"""The catalog's entries: owned ones protected, external ones bounded and expiring, and the
announcements each change calls for; write bodies refused naming the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from spine_operator.desired.haproxy import ROLES_HEADER as PROXY_ROLES_HEADER
from spine_runtime.catalog.api import ROLES_HEADER
from spine_runtime.catalog.entries import (
    MAX_WRITE_BYTES,
    BadServiceBody,
    parse_service_write,
)
from spine_runtime.catalog.store import CatalogStore, WriteRefused
from spine_runtime.catalog.storefile import load_entries, save_entries
from spine_runtime.config.catalog import ServiceEntry

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
DEEP_SCHEMA: dict[str, object] = {"leaf": 1}
for _ in range(24):
    DEEP_SCHEMA = {"properties": DEEP_SCHEMA}


def owned(service_id: str, **changes: object) -> ServiceEntry:
    return ServiceEntry.model_validate(
        {"id": service_id, "type": "spine.http", "owner": f"ServiceRegistration/{service_id}"}
        | changes
    )


def write(body: dict[str, object], max_ttl: int = 600):
    return parse_service_write(json.dumps(body).encode(), max_ttl)


def kinds(changes) -> list[tuple[str, str, str]]:
    return [(change.kind, change.entry.type, change.entry.id) for change in changes]


def test_the_catalog_reads_the_roles_header_the_proxy_sets() -> None:
    assert ROLES_HEADER == PROXY_ROLES_HEADER


def test_owned_set_replacement_announces_exactly_what_changed() -> None:
    store = CatalogStore(10, 600)
    assert kinds(store.replace_owned([owned("a"), owned("b")], NOW)) == [
        ("alive", "spine.http", "a"),
        ("alive", "spine.http", "b"),
    ]
    later = NOW + timedelta(minutes=1)
    changes = store.replace_owned([owned("a"), owned("b", type="plant.press"), owned("c")], later)
    assert kinds(changes) == [
        ("dead", "spine.http", "b"),  # its old topic names the old type
        ("alive", "plant.press", "b"),
        ("alive", "spine.http", "c"),
    ]
    assert store.get("a", later).updated == NOW  # unchanged: same timestamps
    assert store.get("b", later).created == NOW and store.get("b", later).updated == later
    assert kinds(store.replace_owned([owned("c")], later)) == [
        ("dead", "spine.http", "a"),
        ("dead", "plant.press", "b"),
    ]
    assert [entry.id for entry in store.visible(later)] == ["c"]


def test_writes_never_replace_or_delete_an_owned_entry() -> None:
    store = CatalogStore(10, 600)
    store.replace_owned([owned("twin", owner="Spine/default")], NOW)
    for attempt in (
        lambda: store.write("twin", write({"type": "x"}), NOW),
        lambda: store.delete("twin", NOW),
    ):
        with pytest.raises(WriteRefused) as refusal:
            attempt()
        assert refusal.value.status == 409
        assert "belongs to Spine/default" in refusal.value.message
    assert store.get("twin", NOW).owner == "Spine/default"


def test_an_owned_entry_displaces_an_external_one_of_its_id() -> None:
    store = CatalogStore(10, 600)
    store.write("orders", write({"type": "erp"}), NOW)
    changes = store.replace_owned([owned("orders")], NOW)
    assert kinds(changes) == [("dead", "erp", "orders"), ("alive", "spine.http", "orders")]
    assert store.external == {}


def test_external_entries_expire_at_updated_plus_ttl() -> None:
    store = CatalogStore(10, 600)
    entry, created, changes = store.write(None, write({"type": "erp", "ttl": 30}), NOW)
    assert created and kinds(changes) == [("alive", "erp", entry.id)]
    assert entry.expires == NOW + timedelta(seconds=30)
    renewed, created, _ = store.write(
        entry.id, write({"type": "erp", "ttl": 30}), NOW + timedelta(seconds=20)
    )
    assert not created and renewed.created == NOW
    assert renewed.expires == NOW + timedelta(seconds=50)
    assert store.next_expiry() == renewed.expires
    assert store.get(entry.id, NOW + timedelta(seconds=49)) is not None
    assert store.get(entry.id, NOW + timedelta(seconds=50)) is None  # gone from reads at once
    assert store.visible(NOW + timedelta(seconds=50)) == []
    assert kinds(store.expire(NOW + timedelta(seconds=50))) == [("dead", "erp", entry.id)]
    assert store.external == {}
    default_ttl, _, _ = store.write("x", write({"type": "erp"}), NOW)
    assert default_ttl.ttl == 600


def test_external_entries_are_bounded() -> None:
    store = CatalogStore(2, 600)
    store.write("a", write({"type": "erp", "ttl": 10}), NOW)
    store.write("b", write({"type": "erp"}), NOW)
    with pytest.raises(WriteRefused, match="maximum of 2 external services") as refusal:
        store.write("c", write({"type": "erp"}), NOW)
    assert refusal.value.status == 409
    store.write("b", write({"type": "erp", "title": "replacing is fine"}), NOW)
    # an expired entry frees its place
    store.write("c", write({"type": "erp"}), NOW + timedelta(seconds=10))
    with pytest.raises(WriteRefused, match="not found") as missing:
        store.delete("a", NOW + timedelta(seconds=10))
    assert missing.value.status == 404


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "body: not valid JSON"),
        (b"null", "body: must be a JSON object"),
        (b"[" * 3000 + b"]" * 3000, "body: nested deeper than 32 levels"),
        (json.dumps({"type": "x", "meta": {"a": [[[[[1]]]]]}}).encode(), "meta: nested deeper"),
        (json.dumps({"type": "x", "meta": {"a": "b" * 9000}}).encode(), "meta: 9008 bytes"),
        (
            json.dumps(
                {
                    "type": "x",
                    "apis": [
                        {
                            "id": "a",
                            "protocol": "HTTP",
                            "url": "u",
                            "spec": {"mediaType": "m", "schema": DEEP_SCHEMA},
                        }
                    ],
                }
            ).encode(),
            "apis[0].spec.schema: nested deeper than 24 levels",
        ),
        (json.dumps({"type": "x", "ttl": 601}).encode(), "ttl: 601 is out of range"),
        (json.dumps({"type": "x", "ttl": "soon"}).encode(), "ttl: Input should be a valid integer"),
        (json.dumps({"type": "a/b"}).encode(), "type: 'a/b' is invalid"),
        (json.dumps({"type": "x", "id": "a+b"}).encode(), "id: 'a+b' is invalid"),
        (json.dumps({"type": "x", "doc": "a\nb"}).encode(), "doc: 'a\\nb' is invalid"),
        (
            json.dumps(
                {
                    "type": "x",
                    "apis": [{"id": str(i), "protocol": "HTTP", "url": "u"} for i in range(33)],
                }
            ).encode(),
            "apis: List should have at most 32",
        ),
        (b" " * (MAX_WRITE_BYTES + 1), "body: larger than 65536 bytes"),
    ],
)
def test_bad_bodies_are_refused_naming_the_field(raw, message) -> None:
    with pytest.raises(BadServiceBody) as refusal:
        parse_service_write(raw, 600)
    assert str(refusal.value).startswith(message), str(refusal.value)


def test_read_only_fields_sent_back_are_ignored() -> None:
    body = write({"type": "erp", "createdAt": "2000-01-01T00:00:00Z", "expiresAt": "x"})
    store = CatalogStore(10, 600)
    entry, _, _ = store.write("a", body, NOW)
    assert entry.to_wire()["createdAt"] == "2026-01-01T12:00:00.000Z"


def test_the_store_file_round_trips_and_skips_what_it_cannot_use(tmp_path) -> None:
    store = CatalogStore(10, 600)
    entry, _, _ = store.write("a", write({"type": "erp", "meta": {"k": [1, 2]}}), NOW)
    path = tmp_path / "sub" / "store.json"
    save_entries(path, [entry.to_wire(), {"id": "broken"}])
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary file left
    loaded = load_entries(path)
    assert [item.to_wire() for item in loaded] == [entry.to_wire()]
    again = CatalogStore(10, 600)
    again.replace_owned([owned("x")], NOW)
    assert again.load_external(loaded, NOW) == 1
    assert again.load_external(loaded, NOW + timedelta(seconds=600)) == 0
    path.write_text("{corrupt")
    assert load_entries(path) == []
    assert load_entries(tmp_path / "missing.json") == []
