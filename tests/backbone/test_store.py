"""The SQLite buffer: durability settings, dedup, states, quota and eviction, recovery."""

from __future__ import annotations

import sqlite3
import time

import pytest

from agent import store as store_module
from agent.capture import Capture
from agent.scenes import scene_jpeg
from agent.store import MIGRATIONS, Store, StoreError


def cap(unit="u1", ref="1", jpeg=None, at=None) -> Capture:
    return Capture(unit, ref, "serial", jpeg or scene_jpeg(int(ref), (160, 120)), at or time.time())


def test_wal_and_full_sync_and_schema_version(tmp_path):
    store = Store(tmp_path / "b.db")
    with store.read() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store.schema_version == len(MIGRATIONS)


def test_retransmit_is_stored_once(tmp_path):
    store = Store(tmp_path / "b.db")
    c = cap()
    first, again = store.add_capture(c), store.add_capture(c)
    assert not first.duplicate and again.duplicate and again.capture_id == first.capture_id
    assert store.queue_summary()["by_state"]["received"]["count"] == 1
    assert store.read_image(first.capture_id) == c.jpeg


def test_same_capture_id_with_other_bytes_is_kept_not_dropped(tmp_path):
    store = Store(tmp_path / "b.db")
    a = store.add_capture(cap(ref="5", jpeg=scene_jpeg(1, (64, 64))))
    b = store.add_capture(cap(ref="5", jpeg=scene_jpeg(2, (64, 64))))
    assert b.id_reuse and not b.duplicate and a.capture_id != b.capture_id
    assert store.queue_summary()["pending"] == 2


def test_illegal_state_move_is_refused(tmp_path):
    store = Store(tmp_path / "b.db")
    cid = store.add_capture(cap()).capture_id
    with pytest.raises(StoreError, match="expected"), store.transaction() as conn:
        store.set_state(conn, cid, "uploaded", expect=("analysed",))
    assert store.get_capture(cid)["state"] == "received"
    with pytest.raises(StoreError, match="no capture 'nope'"), store.transaction() as conn:
        store.set_state(conn, "nope", "failed")
    with store.transaction() as conn:  # a legal move: one statement, and it sticks
        store.set_state(conn, cid, "failed", expect=("received",), error="why")
    row = store.get_capture(cid)
    assert (row["state"], row["error"]) == ("failed", "why")


def test_a_batch_answer_moves_the_pending_and_drops_only_blurred_originals(tmp_path):
    store = Store(tmp_path / "b.db")
    ids = [store.add_capture(cap(ref=str(i))).capture_id for i in range(1, 5)]
    with store.transaction() as conn:
        conn.execute("UPDATE captures SET upload_variant = 'blurred' WHERE id = ?", (ids[0],))
        conn.execute(
            "INSERT INTO images (capture_id, variant, bytes, jpeg) VALUES (?, 'blurred', 1, x'00')",
            (ids[0],),
        )
        store.set_state(conn, ids[3], "failed", error="gone bad")
    with store.transaction() as conn:
        moved = store.finish_uploads(conn, ids)
    assert moved == set(ids[:3])  # the failed one stays failed
    assert [store.get_capture(i)["state"] for i in ids] == ["uploaded"] * 3 + ["failed"]
    assert store.read_image(ids[0]) is None and store.read_image(ids[0], "blurred") == b"\x00"
    assert all(store.read_image(i) is not None for i in ids[1:])


def _set(store, cid, state, empty=None):
    with store.transaction() as conn:
        conn.execute("UPDATE captures SET state = ?, empty = ? WHERE id = ?", (state, empty, cid))


def test_eviction_order_uploaded_then_empty_oldest_first(tmp_path):
    store = Store(tmp_path / "b.db", quota_bytes=1 << 30)
    now = time.time()
    ids = {}
    for i, (state, empty) in enumerate(
        [
            ("analysed", 1),
            ("uploaded", None),
            ("analysed", 0),
            ("uploaded", None),
            ("received", None),
            ("analysed", 1),
        ]
    ):
        ids[i] = store.add_capture(cap(ref=str(i), at=now + i)).capture_id
        _set(store, ids[i], state, empty)
    per = store.image_bytes() // 6
    # room for about four: the two uploaded go first
    store.quota_bytes = store.image_bytes() - per - 10
    store.evict()
    evicted = {i for i, cid in ids.items() if store.get_capture(cid)["state"] == "evicted"}
    assert evicted == {1, 3}
    # squeeze to one: then the empty frames (oldest first); detections and unanalysed stay
    store.quota_bytes = per
    store.evict()
    evicted = {i for i, cid in ids.items() if store.get_capture(cid)["state"] == "evicted"}
    assert evicted == {0, 1, 3, 5}
    assert store.read_image(ids[2]) is not None and store.read_image(ids[4]) is not None
    alarms = store.alarms()
    assert [a["kind"] for a in alarms] == ["storage_quota"]
    assert store.read_image(ids[0]) is None and store.get_capture(ids[0]) is not None


def test_alarm_clears_when_the_buffer_fits_again(tmp_path):
    store = Store(tmp_path / "b.db", quota_bytes=1 << 20)
    store.add_capture(cap())
    store.quota_bytes = 10
    store.evict()
    assert store.alarms()
    store.quota_bytes = 1 << 30
    store.evict()
    assert store.alarms() == []


def test_corrupt_database_is_moved_aside_and_a_fresh_one_made(tmp_path, caplog):
    path = tmp_path / "buffer.db"
    store = Store(path)
    store.add_capture(cap())
    store.close()
    data = bytearray(path.read_bytes())
    data[0:16] = b"this is not sql!"
    path.write_bytes(bytes(data))
    fresh = Store(path)
    assert fresh.recovered_from is not None and fresh.recovered_from.exists()
    assert fresh.recovered_from.read_bytes()[:16] == b"this is not sql!"  # nothing deleted
    assert fresh.queue_summary()["pending"] == 0
    assert [a["kind"] for a in fresh.alarms()] == ["database_recovered"]
    assert "corrupt" in caplog.text


def test_damaged_pages_are_caught_by_quick_check(tmp_path):
    path = tmp_path / "buffer.db"
    store = Store(path)
    for i in range(30):
        store.add_capture(cap(ref=str(i)))
    store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    data = bytearray(path.read_bytes())
    page = 4096
    for off in range(page * 2, min(len(data), page * 6)):
        data[off] = 0x55
    path.write_bytes(bytes(data))
    fresh = Store(path)
    assert fresh.recovered_from is not None


def test_an_unopenable_path_is_not_mistaken_for_corruption(tmp_path):
    path = tmp_path / "buffer.db"
    path.mkdir()  # cannot be opened as a database, but it is not a corrupt one either
    with pytest.raises(sqlite3.OperationalError):
        Store(path)
    assert path.is_dir() and not list(tmp_path.glob("*.corrupt-*"))


def test_readonly_view_cannot_write(tmp_path):
    Store(tmp_path / "b.db").add_capture(cap())
    ro = Store(tmp_path / "b.db", readonly=True)
    assert ro.queue_summary()["pending"] == 1
    with pytest.raises(StoreError, match="read-only"):
        ro.add_capture(cap(ref="2"))


def test_a_burst_of_captures_looks_at_the_disk_once_not_for_each(tmp_path, monkeypatch):
    """statvfs and the reserve's stat for every capture were a tenth of ingest's Python time;
    far from the limit the store counts down what it adds and looks again only now and then."""
    store = Store(tmp_path / "b.db", min_free_bytes=0)
    real = store.disk_free
    assert real() > 1 << 30, "this test needs 1 GiB free where pytest puts its temp files"
    looks: list[int] = []
    monkeypatch.setattr(store, "disk_free", lambda: looks.append(1) or real())
    # the estimate is also renewed every _ROOM_LOOK_S: a slow machine must not add looks here
    monkeypatch.setattr(store_module, "_ROOM_LOOK_S", 3600.0)
    for i in range(50):
        store.add_capture(cap(ref=str(i)))
    assert len(looks) == 1


def test_near_the_free_space_limit_every_capture_looks_at_the_disk(tmp_path, monkeypatch):
    real_free = Store(tmp_path / "probe.db").disk_free()
    # a limit 16 MiB under what is free now: inside the slack, so no estimate is trusted
    store = Store(tmp_path / "b.db", min_free_bytes=real_free - (16 << 20))
    real = store.disk_free
    looks: list[int] = []
    monkeypatch.setattr(store, "disk_free", lambda: looks.append(1) or real())
    for i in range(20):
        store.add_capture(cap(ref=str(i)))
    assert len(looks) >= 20


def test_only_a_transaction_asked_not_to_be_durable_skips_the_fsync(tmp_path):
    """durable=False commits at synchronous=NORMAL (no fsync in WAL mode) and puts FULL back,
    also after an error; every other transaction, acknowledgements' included, stays at FULL."""
    store = Store(tmp_path / "b.sqlite3")
    full, normal = 2, 1
    with store.transaction() as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == full
        conn.execute("CREATE TABLE notes (key TEXT, value TEXT)")
    with store.transaction(durable=False) as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == normal
        conn.execute("INSERT INTO notes (key, value) VALUES ('k', 'v')")
    with pytest.raises(RuntimeError), store.transaction(durable=False) as conn:
        raise RuntimeError("a failure inside")
    with store.transaction() as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == full
        assert conn.execute("SELECT value FROM notes WHERE key = 'k'").fetchone()[0] == "v"
