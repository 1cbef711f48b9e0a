"""A damaged buffer loses nothing silently: the WAL checked before SQLite opens it, and salvage."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.capture import Capture
from agent.pagescan import PageFile
from agent.scenes import scene_jpeg
from agent.store import Store
from agent.walcheck import FRAME_HEADER, WAL_HEADER, check_wal

CAPTURES = 60


def power_cut_copy(tmp_path: Path, name: str = "cut") -> Path:
    """A buffer of 60 acknowledged captures as a power cut leaves it: db, WAL and index on disk,
    nothing checkpointed (the files are copied while the store is still open)."""
    live = tmp_path / "live" / "buffer.db"
    store = Store(live)
    for i in range(CAPTURES):
        store.add_capture(Capture("u1", str(i), "serial", scene_jpeg(i, (160, 120)), time.time()))
    out = tmp_path / name
    out.mkdir()
    for suffix in ("", "-wal", "-shm"):
        shutil.copyfile(f"{live}{suffix}", out / f"buffer.db{suffix}")
    store.close()
    return out / "buffer.db"


def wal_of(db: Path) -> Path:
    return db.with_name(db.name + "-wal")


def shm_of(db: Path) -> Path:
    return db.with_name(db.name + "-shm")


def sqlite_count(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT count(*) FROM captures").fetchone()[0]
    finally:
        conn.close()


@pytest.fixture(scope="module")
def cut(tmp_path_factory) -> Path:
    return power_cut_copy(tmp_path_factory.mktemp("wal"))


def copy_of(db: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    out.mkdir()
    for suffix in ("", "-wal", "-shm"):
        shutil.copyfile(f"{db}{suffix}", out / f"buffer.db{suffix}")
    return out / "buffer.db"


def test_a_clean_power_cut_is_not_damage(cut, tmp_path):
    db = copy_of(cut, tmp_path)
    check = check_wal(wal_of(db), shm_of(db))
    assert check is not None and not check.damaged and check.frames_lost == 0
    # frames past the replayed ones are an older generation (the WAL restarts after a checkpoint)
    assert 0 < check.replayed <= check.frames
    assert sqlite_count(db) == CAPTURES


def test_a_torn_uncommitted_tail_is_not_damage(cut, tmp_path):
    db = copy_of(cut, tmp_path)
    check = check_wal(wal_of(db), shm_of(db))
    assert check is not None
    # a transaction cut off mid-write: a frame of this generation, no commit, garbage checksum
    header = wal_of(db).read_bytes()[:WAL_HEADER]
    salts = struct.unpack(">2I", header[16:24])
    frame = struct.pack(">6I", 7, 0, *salts, 1, 2) + os.urandom(check.page_size)
    with wal_of(db).open("ab") as f:
        f.write(frame + frame[: check.page_size // 2])
    again = check_wal(wal_of(db), shm_of(db))
    assert again is not None and not again.damaged


def current_middle(db: Path) -> int:
    """A byte offset in the middle of the WAL's current generation (the frames SQLite replays)."""
    check = check_wal(wal_of(db), shm_of(db))
    assert check is not None and check.replayed > 4
    return WAL_HEADER + (check.replayed // 2) * (FRAME_HEADER + check.page_size)


def overwrite_middle(db: Path) -> None:
    wal = bytearray(wal_of(db).read_bytes())
    middle = current_middle(db) + 100
    wal[middle : middle + 5000] = os.urandom(5000)
    wal_of(db).write_bytes(wal)


def test_overwritten_middle_of_the_wal_is_found_with_the_frames_lost(cut, tmp_path):
    db = copy_of(cut, tmp_path)
    overwrite_middle(db)
    check = check_wal(wal_of(db), shm_of(db))
    assert check is not None and check.damaged
    assert check.lost_commits > 0 and check.frames_lost > 0
    # the fault itself: SQLite replays up to the bad frame and says nothing
    assert sqlite_count(db) < CAPTURES


def test_a_wal_cut_to_half_is_found_by_its_index(cut, tmp_path):
    db = copy_of(cut, tmp_path)
    wal = wal_of(db).read_bytes()
    wal_of(db).write_bytes(wal[: current_middle(db)])
    check = check_wal(wal_of(db), shm_of(db))
    assert check is not None and check.damaged
    assert check.frames_lost == check.shm_frames - check.replayed > 0


@settings(max_examples=150, deadline=None)
@given(
    frames=st.integers(0, 12),
    cut_at=st.integers(0, 4096),
    flips=st.lists(st.integers(0, 10**6), max_size=8),
    noise=st.binary(max_size=64),
)
def test_wal_reader_never_crashes_on_damaged_bytes(
    cut, tmp_path_factory, frames, cut_at, flips, noise
):
    folder = tmp_path_factory.mktemp("fuzz", numbered=True)
    real = wal_of(cut).read_bytes()
    raw = bytearray(real[: WAL_HEADER + frames * (FRAME_HEADER + 4096) + cut_at] + noise)
    for flip in flips:
        raw[flip % len(raw)] ^= 0xFF
    (folder / "x.db-wal").write_bytes(raw)
    shutil.copyfile(shm_of(cut), folder / "x.db-shm")
    check = check_wal(folder / "x.db-wal", folder / "x.db-shm")
    if check is not None:
        assert 0 <= check.replayed <= check.frames
        assert check.frames_lost >= 0
        if not flips and not noise:  # only cut short: every byte kept is whole
            assert check.lost == 0 and check.damaged_frames == 0


def damaged_file(tmp_path: Path) -> Path:
    """A buffer file quick_check rejects: three pages in the middle overwritten."""
    live = tmp_path / "old" / "buffer.db"
    store = Store(live)
    for i in range(CAPTURES):
        store.add_capture(Capture("u1", str(i), "serial", scene_jpeg(i, (160, 120)), time.time()))
    store.close()  # checkpointed: everything is in the one file
    data = bytearray(live.read_bytes())
    pages = len(data) // 4096
    for page in (pages // 3, pages // 2, 2 * pages // 3):
        data[page * 4096 : (page + 1) * 4096] = os.urandom(4096)
    bad = tmp_path / "buffer.db.corrupt-test"
    bad.write_bytes(data)
    conn = sqlite3.connect(bad)
    with pytest.raises(sqlite3.DatabaseError):
        conn.execute("PRAGMA quick_check").fetchall()
    conn.close()
    return bad


def salvage_cli(bad: Path, data_dir: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "agent", "buffer", "salvage", str(bad), "--data-dir", str(data_dir)]
        + ["--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_salvage_reads_a_rejected_file_back_exactly_once(tmp_path):
    bad = damaged_file(tmp_path)
    first = salvage_cli(bad, tmp_path / "station")
    assert first["rows"] == CAPTURES
    assert first["restored"] >= CAPTURES - 5  # three bad pages cost at most a few captures
    assert first["restored"] + first["lost"] == CAPTURES
    second = salvage_cli(bad, tmp_path / "station")
    assert second["restored"] == 0 and second["already"] == first["restored"]
    live = Store(tmp_path / "station" / "buffer.db", check_on_start=True)
    try:
        rows = live.captures_in_state("received", limit=1000)
        assert len(rows) == first["restored"]
        for row in rows:  # every image that came back is the one its sha256 names
            image = live.read_image(row["id"])
            assert image is not None
            assert hashlib.sha256(image).hexdigest() == row["sha256"]
    finally:
        live.close()


def alarm(store: Store, kind: str) -> dict | None:
    return next((a for a in store.alarms() if a["kind"] == kind), None)


def test_station_on_a_damaged_wal_keeps_copies_raises_the_alarm_and_salvages(
    cut, tmp_path, make_station
):
    db = copy_of(cut, tmp_path)
    overwrite_middle(db)
    expected = check_wal(wal_of(db), shm_of(db))
    assert expected is not None and expected.damaged
    station = make_station(path=tmp_path, station={"data_dir": str(db.parent)})
    raised = alarm(station.store, "database_recovered")
    assert raised is not None, station.store.alarms()
    assert f"{expected.frames_lost} frames" in raised["message"]
    kept = sorted(p.name for p in db.parent.glob("buffer.db.damaged-*"))
    assert len(kept) >= 2 and any(n.endswith("-wal") for n in kept), kept
    held = station.store.queue_summary()["by_state"]["received"]["count"]
    assert held >= CAPTURES - 2, held  # SQLite alone keeps fewer than half of them


def test_station_on_a_rejected_file_salvages_it_into_the_fresh_buffer(tmp_path, make_station):
    bad = damaged_file(tmp_path)
    data_dir = tmp_path / "station-qc"
    data_dir.mkdir()
    shutil.copyfile(bad, data_dir / "buffer.db")
    station = make_station(path=tmp_path, station={"data_dir": str(data_dir)})
    raised = alarm(station.store, "database_recovered")
    assert raised is not None and "restored" in raised["message"]
    held = station.store.queue_summary()["by_state"]["received"]["count"]
    assert held >= CAPTURES - 5


@pytest.fixture(scope="module")
def whole_file(tmp_path_factory) -> bytes:
    live = tmp_path_factory.mktemp("pages") / "buffer.db"
    store = Store(live)
    for i in range(CAPTURES):
        store.add_capture(Capture("u1", str(i), "serial", scene_jpeg(i, (160, 120)), time.time()))
    store.close()
    return live.read_bytes()


def test_page_scan_reads_every_row_of_a_whole_file(whole_file):
    captures = [v for _, v in PageFile(whole_file).rows() if len(v) >= 18 and v[12] == "received"]
    assert len({v[0] for v in captures}) == CAPTURES


@settings(max_examples=150, deadline=None)
@given(
    flips=st.lists(st.tuples(st.integers(0, 10**7), st.integers(1, 255)), max_size=40),
    cut_at=st.integers(0, 10**7),
)
def test_page_scan_never_crashes_on_damaged_bytes(whole_file, flips, cut_at):
    data = bytearray(whole_file[: max(100, cut_at % (len(whole_file) + 1))])
    for where, xor in flips:
        data[where % len(data)] ^= xor
    for _rowid, values in PageFile(bytes(data)).rows():
        assert isinstance(values, list)
