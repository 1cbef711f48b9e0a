"""Schema migrations registered by each table's owner: order, upgrades of old buffers, refusals."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import agent.store as store_module
from agent.store import Store, StoreError
from agent.upload import ledger  # registers the upload tables, as the daemon does

V2_DUMP = Path(__file__).parent / "fixtures" / "buffer-v2.sql"
UPLOADED = "u1-1-bdcd18358569"  # the fixture's capture held by aws
PENDING = "u1-2-61258354381b"


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> list[store_module.Migration]:
    """A private copy of the registry, so a test's owners do not reach other tests' stores."""
    copy = list(store_module.MIGRATIONS)
    monkeypatch.setattr(store_module, "MIGRATIONS", copy)
    return copy


def _v2_buffer(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(V2_DUMP.read_text())
    conn.close()
    return path


def _applied(store: Store) -> list[tuple[str, int]]:
    with store.read() as conn:
        rows = conn.execute("SELECT owner, version FROM schema_migrations ORDER BY rowid")
        return [(r[0], r[1]) for r in rows]


def _registered() -> list[tuple[str, int]]:
    return [(m.owner, m.version) for m in store_module.MIGRATIONS]


def test_a_v2_buffer_from_before_the_registry_opens_with_its_rows_intact(tmp_path):
    path = _v2_buffer(tmp_path / "buffer.db")
    store = Store(path)
    assert _applied(store)[:2] == [("store", 1), ("upload", 1)]  # recorded, not run again
    assert sorted(_applied(store)) == sorted(_registered())  # other owners' tables added
    with store.read() as conn:
        seeded = conn.execute("SELECT count(*) FROM schema_migrations WHERE applied_at = 0")
        assert seeded.fetchone()[0] == 2
    assert store.schema_version == len(_registered())
    assert store.get_capture(UPLOADED)["state"] == "uploaded"
    assert store.read_image(PENDING).startswith(b"\xff\xd8\xff")
    with store.read() as conn:
        assert ledger.held_counts(conn) == {"aws": 1}
        assert ledger.traffic_on(conn, "2026-05-28")["aws"]["bytes"] == 4096
    # and the upgraded buffer works: the pending capture can be delivered and recorded
    with store.transaction() as conn:
        ledger.record_held(conn, "aws", PENDING, "full", 0.0)
        assert store.finish_upload(conn, PENDING)
    store.close()
    again = Store(path)
    assert sorted(_applied(again)) == sorted(_registered())
    assert again.queue_summary()["by_state"]["uploaded"]["count"] == 2


def test_a_new_owner_migration_is_applied_once_after_the_existing_ones(tmp_path, registry):
    path = _v2_buffer(tmp_path / "buffer.db")
    Store.register_migration("example", 1, "CREATE TABLE example_history (at REAL NOT NULL);")
    store = Store(path)
    assert _applied(store)[:2] == [("store", 1), ("upload", 1)]
    assert _applied(store)[-1] == ("example", 1)
    assert store.schema_version == len(registry)
    store.close()
    assert sorted(_applied(Store(path))) == sorted(_registered())


def test_a_fresh_buffer_gets_every_registered_migration_in_order(tmp_path, registry):
    Store.register_migration("example", 1, "CREATE TABLE example_history (at REAL NOT NULL);")
    Store.register_migration("example", 2, "ALTER TABLE example_history ADD COLUMN soc REAL;")
    store = Store(tmp_path / "buffer.db")
    assert _applied(store) == _registered()
    assert _applied(store)[0] == ("store", 1)  # the store's own tables first
    assert _applied(store)[-2:] == [("example", 1), ("example", 2)]
    assert store.schema_version == len(registry)
    with store.transaction() as conn:
        conn.execute("INSERT INTO example_history (at, soc) VALUES (1.0, 0.5)")


def test_versions_of_an_owner_must_be_registered_in_order(registry):
    with pytest.raises(StoreError, match="example 2 registered after example 0"):
        Store.register_migration("example", 2, "CREATE TABLE p (x);")
    Store.register_migration("example", 1, "CREATE TABLE p (x);")
    Store.register_migration("example", 1, "CREATE TABLE p (x);")  # the same again: a reload
    with pytest.raises(StoreError, match="registered twice"):
        Store.register_migration("example", 1, "CREATE TABLE q (x);")


def test_a_buffer_from_newer_software_is_refused_not_touched(tmp_path, registry):
    path = tmp_path / "buffer.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_migrations VALUES ('upload', 2, 0)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="upload is at version 2, newer than this software"):
        Store(path)


def test_a_pre_registry_buffer_with_an_unknown_version_is_refused(tmp_path):
    path = tmp_path / "buffer.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 7")
    conn.close()
    with pytest.raises(StoreError, match="version 7 is newer"):
        Store(path)
