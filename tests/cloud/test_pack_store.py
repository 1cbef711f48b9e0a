"""The pack store: batches appended to a pack file, named by the index once both are durable."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cloud.config import load_config
from cloud.db import Database, open_database
from cloud.errors import BackendUnavailable, NotFound
from cloud.storage import open_store
from cloud.storage import pack as pack_module
from cloud.storage.local import LocalStore
from cloud.storage.pack import PackStore
from tests.cloud.cloud_helpers import capture_row
from tests.helpers import tmpfs

ROOT = Path(__file__).parents[2]


def images(n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    return [
        (f"st/2026/{seed}-{i}.jpg", bytes([i + seed]) * (1000 + i) + b"\xff\xd9") for i in range(n)
    ]


def test_a_batch_is_one_pack_file_and_every_object_reads_back(tmp_path):
    store = PackStore(tmp_path / "objects")
    batch = images(10)
    store.put_many(batch)
    assert len(list((tmp_path / "objects" / "packs").iterdir())) == 1
    for key, data in batch:
        assert store.get(key) == data
        assert store.size(key) == len(data)
    assert store.read_range("st/2026/0-3.jpg", 10, 19) == batch[3][1][10:20]
    assert store.read_range("st/2026/0-3.jpg", 1000, 10**6) == batch[3][1][1000:]
    with pytest.raises(NotFound):
        store.get("st/2026/missing.jpg")


def test_objects_survive_reopening_the_store(tmp_path):
    PackStore(tmp_path / "objects").put_many(images(3))
    again = PackStore(tmp_path / "objects")
    assert again.get("st/2026/0-2.jpg") == images(3)[2][1]


def test_a_pack_file_goes_when_its_last_object_is_deleted_or_replaced(tmp_path):
    store = PackStore(tmp_path / "objects")
    packs = tmp_path / "objects" / "packs"
    store.put_many(images(2))
    store.delete("st/2026/0-0.jpg")
    assert len(list(packs.iterdir())) == 1  # the other object still lives in it
    store.put("st/2026/0-1.jpg", b"\xff\xd8new\xff\xd9")  # replaced: the old pack is unused
    assert store.get("st/2026/0-1.jpg") == b"\xff\xd8new\xff\xd9"
    assert len(list(packs.iterdir())) == 1
    store.delete("st/2026/0-1.jpg")
    store.delete("st/2026/0-1.jpg")  # a missing object is not an error
    assert list(packs.iterdir()) == []


def test_unsafe_keys_are_refused_before_anything_is_written(tmp_path):
    store = PackStore(tmp_path / "objects")
    with pytest.raises(ValueError, match="unsafe object key"):
        store.put_many([("ok.jpg", b"a"), ("../escape.jpg", b"b")])
    assert list((tmp_path / "objects" / "packs").iterdir()) == []


def test_a_crash_before_the_index_commit_leaves_no_object_and_no_half_one(tmp_path):
    # the process dies (SIGKILL-like os._exit) right after the pack file is durable
    child = textwrap.dedent(
        f"""
        import os
        from cloud.storage.pack import PackStore
        store = PackStore({str(tmp_path / "objects")!r})
        store.put_many([("st/kept.jpg", b"kept")])
        store._transaction = lambda: os._exit(9)
        store.put_many([("st/lost.jpg", b"lost"), ("st/kept.jpg", b"overwritten")])
        """
    )
    done = subprocess.run([sys.executable, "-c", child], cwd=ROOT, timeout=60)
    assert done.returncode == 9
    store = PackStore(tmp_path / "objects")
    with pytest.raises(NotFound):
        store.get("st/lost.jpg")
    assert store.get("st/kept.jpg") == b"kept"


def test_a_full_disk_is_backend_unavailable_and_keeps_what_was_stored(tmp_path):
    with tmpfs(tmp_path / "small", "1m") as root:
        store = PackStore(root / "objects")
        store.put_many(images(5))
        kept = sum(len(data) for _, data in images(5))
        with pytest.raises(BackendUnavailable, match="pack store"):
            for n in range(100):
                store.put_many([(f"st/big-{n}.jpg", os.urandom(200_000))])
                kept += 200_000
        assert store.get("st/2026/0-4.jpg") == images(5)[4][1]
        packs = list((root / "objects" / "packs").iterdir())
        assert sum(p.stat().st_size for p in packs) == kept  # the failed write was cut off
        store.put_many([("st/after.jpg", b"\xff\xd8after")])  # appends after the cut
        assert store.get("st/after.jpg") == b"\xff\xd8after"
        store.close()


def test_batches_append_to_one_pack_until_it_is_full(tmp_path, monkeypatch):
    monkeypatch.setattr(pack_module, "PACK_BYTES", 25_000)
    store = PackStore(tmp_path / "objects")
    for seed in range(4):
        store.put_many(images(10, seed * 10))  # about 10 KB a batch
    packs = sorted((tmp_path / "objects" / "packs").iterdir(), key=lambda p: p.stat().st_mtime)
    assert len(packs) == 2  # the third batch passed 25 KB: the fourth starts a new pack
    for seed in range(4):
        for key, data in images(10, seed * 10):
            assert store.get(key) == data


def test_another_process_never_removes_the_pack_this_one_appends_to(tmp_path):
    writer = PackStore(tmp_path / "objects")
    writer.put_many([("st/a.jpg", b"a")])
    other = PackStore(tmp_path / "objects")  # e.g. the CLI beside the running service
    other.delete("st/a.jpg")  # the writer's pack is unreferenced, but it still appends to it
    writer.put_many([("st/b.jpg", b"b")])
    assert PackStore(tmp_path / "objects").get("st/b.jpg") == b"b"
    writer.delete("st/b.jpg")  # the writer itself lets it go
    assert list((tmp_path / "objects" / "packs").iterdir()) == []


def test_calls_from_several_threads_write_side_by_side(tmp_path):
    store = PackStore(tmp_path / "objects")
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda seed: store.put_many(images(5, seed * 5)), range(8)))
    for seed in range(8):
        for key, data in images(5, seed * 5):
            assert store.get(key) == data
    packs = list((tmp_path / "objects" / "packs").iterdir())
    assert len(packs) == 1
    assert packs[0].stat().st_size == sum(len(d) for s in range(8) for _, d in images(5, s * 5))


def shared(tmp_path: Path) -> tuple[Database, PackStore]:
    """A database and a pack store keeping its index in it, as `open_store` makes them."""
    db = open_database(f"sqlite:///{tmp_path / 'cloud.sqlite3'}")
    return db, PackStore(tmp_path / "objects", index=tmp_path / "cloud.sqlite3")


def test_with_the_index_in_the_database_images_are_named_in_the_rows_transaction(
    tmp_path, monkeypatch
):
    db, store = shared(tmp_path)
    own_commits = []
    real = store._transaction
    monkeypatch.setattr(store, "_transaction", lambda: own_commits.append(1) or real())
    batch = images(3)
    with store.storing(batch) as name:
        assert (
            db.insert_captures([capture_row(k, image_key=k) for k, _ in batch], also=name)
            == [True] * 3
        )
    assert own_commits == []  # one commit for images and rows: the database's
    for key, data in batch:
        assert store.get(key) == data
    assert not (tmp_path / "objects" / "pack-index.sqlite3").exists()
    assert PackStore(tmp_path / "objects", index=tmp_path / "cloud.sqlite3").get(batch[0][0])


def test_a_rolled_back_transaction_names_no_image_and_cuts_its_bytes(tmp_path):
    db, store = shared(tmp_path)
    store.put_many([("st/kept.jpg", b"kept")])

    def name_then_fail(cur):
        name(cur)
        raise OSError(5, "I/O error")

    with pytest.raises(OSError), store.storing(images(2)) as name:
        db.insert_captures([capture_row("c", image_key=images(2)[0][0])], also=name_then_fail)
    assert db.query_captures() == []
    for key, _ in images(2):
        with pytest.raises(NotFound):
            store.get(key)
    (pack,) = (tmp_path / "objects" / "packs").iterdir()
    assert pack.stat().st_size == len(b"kept")  # the failed batch's bytes were cut off
    assert store.get("st/kept.jpg") == b"kept"


@pytest.mark.parametrize("commits", [False, True])
def test_a_crash_leaves_rows_and_images_both_there_or_both_gone(tmp_path, commits):
    # the process dies (SIGKILL-like os._exit) inside the transaction, or right after it
    child = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from tests.cloud.cloud_helpers import capture_row
        from tests.cloud.test_pack_store import images, shared
        db, store = shared(Path({str(tmp_path)!r}))
        with store.storing(images(3)) as name:
            rows = [capture_row(key, image_key=key) for key, _ in images(3)]
            db.insert_captures(rows, also=name if {commits} else lambda cur: (name(cur), os._exit(9)))
            os._exit(9)
        """
    )
    done = subprocess.run([sys.executable, "-c", child], cwd=ROOT, timeout=60)
    assert done.returncode == 9
    db, store = shared(tmp_path)
    held = {row.capture_id: row.image_key for row in db.query_captures()}
    for key, data in images(3):
        if key in held:
            assert store.get(key) == data
        else:
            with pytest.raises(NotFound):
                store.get(key)
    assert len(held) == (3 if commits else 0)


def test_an_index_an_earlier_version_kept_beside_the_packs_is_taken_over(tmp_path):
    root = tmp_path / "objects"
    (root / "packs").mkdir(parents=True)
    (root / "packs" / "old.pack").write_bytes(b"\xff\xd8one\xff\xd8two")
    old = sqlite3.connect(root / "index.sqlite3")
    old.execute("CREATE TABLE objects (key TEXT PRIMARY KEY, pack TEXT, offset INT, size INT)")
    old.executemany(
        "INSERT INTO objects VALUES (?, ?, ?, ?)",
        [("st/one.jpg", "old.pack", 0, 5), ("st/two.jpg", "old.pack", 5, 5)],
    )
    old.commit()
    old.close()
    db, store = shared(tmp_path)
    assert store.get("st/one.jpg") == b"\xff\xd8one" and store.get("st/two.jpg") == b"\xff\xd8two"
    assert not (root / "index.sqlite3").exists()
    store.delete("st/one.jpg")
    store.delete("st/two.jpg")
    assert list((root / "packs").iterdir()) == []


def test_images_a_one_file_per_image_store_wrote_are_still_read_and_deleted(tmp_path):
    # the pack store became the default over data dirs the local store filled
    LocalStore(tmp_path / "objects").put_many(images(2))
    store = PackStore(tmp_path / "objects")
    key, data = images(2)[0]
    assert store.get(key) == data
    assert store.size(key) == len(data)
    assert store.read_range(key, 1, 3) == data[1:4]
    store.put(key, b"\xff\xd8newer")  # written again: the pack's copy is the one read
    assert store.get(key) == b"\xff\xd8newer"
    store.delete(key)
    with pytest.raises(NotFound):
        store.get(key)
    assert not (tmp_path / "objects" / key).exists()
    assert store.get(images(2)[1][0]) == images(2)[1][1]


def test_the_default_store_serves_a_data_dir_the_one_file_per_image_default_wrote(tmp_path):
    config = load_config(env={}, data_dir=str(tmp_path))
    LocalStore(config.storage_path()).put("captures/st-1/old.jpg", b"\xff\xd8old")
    db = open_database(config.database_url())
    store = open_store(config)
    try:
        assert store.get("captures/st-1/old.jpg") == b"\xff\xd8old"
        store.put("captures/st-1/new.jpg", b"\xff\xd8new")
        assert not (config.storage_path() / "captures/st-1/new.jpg").exists()  # in a pack
        assert store.get("captures/st-1/new.jpg") == b"\xff\xd8new"
    finally:
        store.close()
        db.close()
