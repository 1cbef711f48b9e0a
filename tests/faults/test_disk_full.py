"""A full disk never stops the station: the data folder on a small tmpfs that really fills."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from agent.capture import Capture
from agent.daemon import Station
from agent.scenes import scene_jpeg
from agent.store import StorageFull, Store
from tests.conftest import station_config
from tests.helpers import metric, tmpfs, wait_for


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk", "2m") as mount:
        yield mount


def upload(station, n: int) -> requests.Response:
    files = {
        "metadata": (None, json.dumps({"device_id": "ab", "timestamp": 1000 + n})),
        "image": ("c.jpg", scene_jpeg(n, (640, 480), quality=95), "image/jpeg"),
    }
    return requests.post(
        f"http://{station.config.http.listen}/api/detections", files=files, timeout=30
    )


def test_http_intake_answers_sqlite_disk_full_with_507_and_a_reason(make_station, small_disk):
    # min_free_bytes = 0: no reserve, so SQLite itself runs into the full disk
    station = make_station("min_free_bytes = 0", path=small_disk)
    answers = [upload(station, n) for n in range(30)]
    codes = [r.status_code for r in answers]
    assert set(codes) <= {201, 507}, codes
    full = [r.json() for r in answers if r.status_code == 507]
    assert full, f"the disk never filled: {codes}"
    assert all(body["reason"] == "storage_full" for body in full)
    assert any("disk is full" in body["error"] for body in full)
    rejected = metric(station, "fieldstation_rejected_total", path="http", reason="storage_full")
    assert rejected == len(full)
    base = f"http://{station.config.http.listen}"
    status = requests.post(
        f"{base}/api/cameras/ab/status",
        json={"battery_level": 5, "battery_voltage": 3.3},
        timeout=10,
    )
    assert status.status_code in (200, 507), status.text


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(disk: Path) -> Path:
    """Take every free byte of the disk with a file (another program's logs, say)."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f:
        while free_bytes(disk):
            try:
                f.write(b"\0" * min(1 << 20, free_bytes(disk)))
            except OSError:  # the last partial block
                f.write(b"\0" * 512)
    return filler


def test_station_starts_on_a_full_disk_and_recovers_by_itself(tmp_path):
    with tmpfs(tmp_path / "disk", "4m") as disk:
        extra = 'min_free_bytes = "512 KiB"\nreserve_bytes = "1 MiB"\nevict_interval_s = 1'
        config = station_config(disk, extra)
        first = Station(config)
        first.start()
        assert upload(first, 1).status_code == 201
        first.stop()
        filler = fill(disk)
        assert free_bytes(disk) == 0
        station = Station(config)  # today: "disk I/O error" / a masked ROLLBACK error, exit 1
        try:
            station.start()
            assert "storage_full" in {a["kind"] for a in station.store.alarms()}
            refused = upload(station, 2)
            assert refused.status_code == 507 and refused.json()["reason"] == "storage_full"
            assert metric(station, "fieldstation_alarm", kind="storage_full") == 1
            filler.unlink()  # space comes back: no restart, no operator
            wait_for(lambda: upload(station, 3).status_code == 201, 20, "captures accepted again")
            wait_for(
                lambda: "storage_full" not in {a["kind"] for a in station.store.alarms()},
                20,
                "the storage alarm to clear",
            )
        finally:
            station.stop()


def status_of(station) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "status", "--data-dir", str(station.config.station.data_dir),
         "--http", station.config.http.listen],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_status_says_unwell_while_the_disk_refuses_captures(tmp_path):
    """A monitoring script that runs `fieldstation status` learns of a full disk by its exit code,
    not only by reading the alarm lines; once space comes back it is 0 again."""
    with tmpfs(tmp_path / "disk", "4m") as disk:
        extra = 'min_free_bytes = "512 KiB"\nreserve_bytes = "1 MiB"\nevict_interval_s = 1'
        station = Station(station_config(disk, extra))
        station.start()
        try:
            assert status_of(station).returncode == 0
            filler = fill(disk)
            assert upload(station, 1).status_code == 507
            shown = status_of(station)
            assert shown.returncode == 1, shown.stdout + shown.stderr
            assert "storage_full" in shown.stdout
            filler.unlink()
            wait_for(lambda: upload(station, 2).status_code == 201, 20, "captures accepted again")
            wait_for(lambda: status_of(station).returncode == 0, 30, "status to say all is well")
        finally:
            station.stop()


def test_eviction_gives_the_space_back_to_the_filesystem(tmp_path):
    with tmpfs(tmp_path / "disk", "8m") as disk:
        store = Store(disk / "buffer.db", min_free_bytes=0, reserve_bytes=0)
        try:
            ids = [
                store.add_capture(
                    Capture("u1", str(i), "serial", scene_jpeg(i, (640, 480), 95), time.time())
                ).capture_id
                for i in range(40)
            ]
            with store.transaction() as conn:
                for capture_id in ids:
                    store.set_state(conn, capture_id, "uploaded")
            images = store.image_bytes()
            before = free_bytes(disk)
            assert store.evict(target_bytes=0) == len(ids)
            after = free_bytes(disk)
            # today: the file never shrinks and the WAL grows, so free space falls instead
            assert after - before >= images // 2, (before, after, images)
        finally:
            store.close()


def test_sqlite_disk_full_reaches_every_ingest_path_as_storage_full(tmp_path):
    # serial and MQTT NAK `storage_full` on StorageFull; before, SQLite's own error was a
    # `storage_error` NAK (or, over HTTP, a bare 500)
    with tmpfs(tmp_path / "disk", "2m") as disk:
        store = Store(disk / "buffer.db", min_free_bytes=0)
        try:
            with pytest.raises(StorageFull):
                for i in range(40):
                    jpeg = scene_jpeg(i, (640, 480), 95)
                    store.add_capture(Capture("u1", str(i), "serial", jpeg, time.time()))
            assert "storage_full" in {a["kind"] for a in store.alarms()}
        finally:
            store.close()
