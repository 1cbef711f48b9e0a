"""The batch upload's storage steps: multipart splitting, durable batch writes, grouped inserts."""

from __future__ import annotations

import os
import stat
from typing import Any

import pytest
import requests

from cloud.db import open_database
from cloud.db.sqlite import SQLiteDatabase
from cloud.multipart import MultipartError, PartTooLarge, parse_parts
from cloud.storage.local import LocalStore
from cloud.storage.pack import PackStore
from tests.cloud.cloud_helpers import capture_row


def encoded(parts: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    files = [(name, (f"{name}.bin", data, "application/octet-stream")) for name, data in parts]
    prepared = requests.Request("POST", "http://x/", files=files).prepare()
    return prepared.body, prepared.headers["Content-Type"]


def test_parts_come_back_byte_for_byte_even_when_they_contain_the_boundary():
    boundary = b"wildcam-0123"
    tricky = b"\xff\xd8\xff\r\n--" + boundary + b"X not a delimiter\r\n-" + boundary
    body = (
        b'--wildcam-0123\r\nContent-Disposition: form-data; name="manifest"\r\n\r\n{}'
        b'\r\n--wildcam-0123\r\nContent-Disposition: form-data; name="img"; '
        b'filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        + tricky
        + b"\r\n--wildcam-0123--\r\n"
    )
    ctype = "multipart/form-data; boundary=wildcam-0123"
    parts = parse_parts(ctype, body, max_part_bytes=1000, max_parts=5)
    assert list(parts) == ["manifest", "img"]
    assert bytes(parts["manifest"].data) == b"{}"
    assert bytes(parts["img"].data) == tricky


@pytest.mark.parametrize("cut", [1, 10, 60, -40, -10, -3])
def test_a_body_cut_anywhere_is_refused(cut):
    body, ctype = encoded([("manifest", b"{}"), ("img", b"\xff\xd8\xff" + b"a" * 30)])
    with pytest.raises(MultipartError):
        parse_parts(ctype, body[:cut], max_part_bytes=1000, max_parts=5)


def test_part_over_the_limit_names_the_part():
    body, ctype = encoded([("manifest", b"{}"), ("big", b"a" * 2000)])
    with pytest.raises(PartTooLarge, match="'big'"):
        parse_parts(ctype, body, max_part_bytes=1000, max_parts=5)


def test_same_part_name_twice_is_refused():
    body, ctype = encoded([("a", b"1"), ("a", b"2")])
    with pytest.raises(MultipartError, match="twice"):
        parse_parts(ctype, body, max_part_bytes=1000, max_parts=5)


def test_batch_write_syncs_each_image_then_renames_then_syncs_the_folders(tmp_path, monkeypatch):
    store = LocalStore(tmp_path / "objects", fsync=True)
    events: list[tuple[str, int, bool]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        info = os.fstat(fd)
        events.append(("fsync", info.st_ino, stat.S_ISDIR(info.st_mode)))
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append(("rename", os.stat(src).st_ino, False))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    keys = [f"captures/st-1/c{i}.full-0123456789abcdef.jpg" for i in range(3)]
    store.put_many([(key, memoryview(b"\xff\xd8\xff" + bytes([i]))) for i, key in enumerate(keys)])

    files = [(tmp_path / "objects" / key).stat().st_ino for key in keys]
    folders = {
        (tmp_path / "objects" / sub).stat().st_ino for sub in ("", "captures", "captures/st-1")
    }
    order = [(kind, ino) for kind, ino, _ in events]
    for ino in files:
        # Each image is on disk before it gets its name.
        assert order.index(("fsync", ino)) < order.index(("rename", ino))
    synced_folders = {ino for kind, ino, is_dir in events if kind == "fsync" and is_dir}
    # The folder holding the names, and the parents of the folders made for it, are synced...
    assert synced_folders == folders
    # ...after the last rename, so the names are durable when put_many returns.
    last_rename = max(i for i, (kind, _, _) in enumerate(events) if kind == "rename")
    assert all(
        i > last_rename for i, (kind, _, is_dir) in enumerate(events) if kind == "fsync" and is_dir
    )
    assert [(tmp_path / "objects" / k).read_bytes()[-1] for k in keys] == [0, 1, 2]
    assert not [p for p in (tmp_path / "objects").rglob(".*.tmp")]


def test_failed_batch_write_leaves_no_temp_files(tmp_path, monkeypatch):
    store = LocalStore(tmp_path / "objects", fsync=True)

    def broken(fd: int) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError):
        store.put_many([("captures/st-1/a.jpg", b"1"), ("captures/st-1/b.jpg", b"2")])
    assert [p.name for p in (tmp_path / "objects").rglob("*") if p.is_file()] == []


def test_grouped_insert_reports_each_row_and_keeps_the_first_copy(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 'cloud.sqlite3'}")
    try:
        assert db.insert_captures([capture_row("a", ["fox"]), capture_row("b")]) == [True, True]
        assert db.insert_captures(
            [capture_row("c", ["deer"]), capture_row("a", ["owl"]), capture_row("c", ["elk"])]
        ) == [
            True,
            False,
            False,
        ]
        held = {r.capture_id: [d["label"] for d in r.detections] for r in db.query_captures()}
        assert held == {"a": ["fox"], "b": [], "c": ["deer"]}
    finally:
        db.close()


def test_a_group_of_captures_is_one_statement_per_table_not_one_per_row(tmp_path, monkeypatch):
    # each statement step hands the GIL to the event loop and back: rows go in multi-row INSERTs
    statements: list[str] = []
    real = SQLiteDatabase.connect

    def connect(self: SQLiteDatabase) -> Any:
        conn = real(self)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(SQLiteDatabase, "connect", connect)
    db = open_database(f"sqlite:///{tmp_path / 'cloud.sqlite3'}")
    store = PackStore(tmp_path / "objects", index=tmp_path / "cloud.sqlite3")
    try:
        rows = [capture_row(f"c{n}", ["fox", "owl"], f"st/c{n}.jpg") for n in range(5)]
        with store.storing([(row.image_key, b"\xff\xd8") for row in rows]) as name:
            statements.clear()
            assert db.insert_captures(rows, also=name) == [True] * 5
        inserts = [s.split("(")[0].split()[-1] for s in statements if "INSERT" in s]
        assert inserts == ["captures", "detections", "pack_objects"]
    finally:
        store.close()
        db.close()
